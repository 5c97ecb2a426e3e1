"""The account funnel: accounts by stage now and reached, conversion from each stage to the next
with 95 % intervals, days in each stage (velocity), sales' reasons, and which roles of the buying
group were covered when accounts became opportunities, for those won against those lost.

Read from `accounts` and `account_stage_history` (one query each, rows in time order), counted
in Python: a workspace has far fewer accounts than leads or events.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from qualify.adapters import schema
from qualify.domain.account_stages import AccountStage
from qualify.domain.statistics import counted_rate, percentile, wilson_interval
from qualify.service.unit_of_work import UnitOfWork

ACCOUNT_FUNNEL = tuple(AccountStage)
SECONDS_PER_DAY = 86_400.0
OUTCOMES = ("won", "lost", "open")


@dataclass
class AccountFunnel:
    total_accounts: int
    current: dict[str, int]
    reached: dict[str, int]
    conversion: list[dict[str, Any]]
    days_in_stage: dict[str, dict[str, float | int | None]]
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    # Of the accounts that became opportunities, by how it ended: how many, the roles covered
    # then on average, and each role's share of them where it was covered.
    coverage: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def account_funnel(uow: UnitOfWork) -> AccountFunnel:
    """The account funnel of the workspace, from every account's stage history."""
    conn = uow.connection
    a, h = schema.accounts, schema.account_stage_history
    current = Counter({s.value: 0 for s in AccountStage})
    current.update(dict(conn.execute(select(a.c.stage, func.count()).group_by(a.c.stage)).all()))
    total = sum(current.values())
    moves: dict[int, list[Any]] = defaultdict(list)
    for row in conn.execute(
        select(h.c.account_id, h.c.from_stage, h.c.to_stage, h.c.at, h.c.actor, h.c.reason, h.c.roles).order_by(
            h.c.account_id, h.c.at, h.c.id
        )
    ):
        moves[row.account_id].append(row)
    reached: dict[str, set[int]] = {s.value: set() for s in AccountStage}
    stays: dict[str, list[float]] = defaultdict(list)
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    ended: dict[str, list[list[str]]] = {outcome: [] for outcome in OUTCOMES}  # roles at opportunity
    for account_id, history in moves.items():
        entered_at: datetime | None = None
        at_opportunity: list[str] | None = None
        for move in history:
            reached[move.to_stage].add(account_id)
            if entered_at is not None and move.from_stage is not None:
                stays[move.from_stage].append((move.at - entered_at).total_seconds() / SECONDS_PER_DAY)
            entered_at = move.at
            if move.actor == "user" and move.reason and move.to_stage == AccountStage.ENGAGED.value:
                reasons[f"{move.from_stage}->{move.to_stage}"][move.reason] += 1
            if move.to_stage == AccountStage.OPPORTUNITY.value:
                at_opportunity = list(move.roles or [])
            elif at_opportunity is not None and move.from_stage == AccountStage.OPPORTUNITY.value:
                outcome = "won" if move.to_stage == AccountStage.CUSTOMER.value else "lost"
                ended[outcome].append(at_opportunity)
                at_opportunity = None
        if at_opportunity is not None:
            ended["open"].append(at_opportunity)
    counts = {stage: len(ids) for stage, ids in reached.items()}
    counts[AccountStage.TARGET.value] = total  # every account starts there, moved or not
    conversion = []
    for before, after in itertools.pairwise(ACCOUNT_FUNNEL):
        if before is AccountStage.TARGET:
            base, both = total, counts[after.value]
        else:
            base = counts[before.value]
            both = len(reached[before.value] & reached[after.value])
        conversion.append(
            {
                "from": before.value,
                "to": after.value,
                "from_count": base,
                "to_count": both,
                "rate": round(both / base, 4) if base else None,
                "interval_95": wilson_interval(both, base),
            }
        )
    days = {
        stage.value: {
            "count": len(stays[stage.value]),
            "median": round(percentile(stays[stage.value], 0.5), 2) if stays[stage.value] else None,
            "p90": round(percentile(stays[stage.value], 0.9), 2) if stays[stage.value] else None,
        }
        for stage in AccountStage
    }
    coverage: dict[str, dict[str, Any]] = {}
    for outcome, role_lists in ended.items():
        named = Counter(role for roles in role_lists for role in roles)
        coverage[outcome] = {
            "accounts": len(role_lists),
            "mean_roles": round(sum(len(r) for r in role_lists) / len(role_lists), 2) if role_lists else None,
            "roles": {role: counted_rate(n, len(role_lists)) for role, n in sorted(named.items())},
        }
    return AccountFunnel(
        total,
        dict(current),
        counts,
        conversion,
        days,
        {k: dict(v.most_common()) for k, v in sorted(reasons.items())},
        coverage,
    )
