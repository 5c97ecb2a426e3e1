"""The outbox: announcements written in the same transaction as the change they announce.

Each announcement becomes one row in `webhook_deliveries` per active subscription that wants
its kind; the worker delivers them (qualify.service.integrations.webhooks). Kinds:

- `stage.changed`: any stage change;
- `lead.mql`: a lead became MQL (also announced as stage.changed);
- `sla.breached`: an MQL was neither accepted nor rejected in time;
- `score.crossed:<N>`: the lead's score (fit + engagement) rose from below N to N or more;
- `workflow.notify`: a workflow step asks the lead's owner to look at it;
- `account.stage.changed`: the model, its people's stages or a person's action moved an account (docs/accounts.md);
- `account.mqa`: an account became MQA, a marketing-qualified account (also announced as
  account.stage.changed);
- `account.sla.breached`: an MQA was neither accepted nor rejected in time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from qualify.adapters import schema
from qualify.adapters.repository import LeadRecord
from qualify.domain.account_stages import AccountStage
from qualify.domain.errors import InvalidInput
from qualify.domain.lifecycle import Stage
from qualify.service.pipeline import Run

STAGE_CHANGED, BECAME_MQL, SLA_BREACHED, SCORE_CROSSED = "stage.changed", "lead.mql", "sla.breached", "score.crossed"
WORKFLOW_NOTIFY = "workflow.notify"
ACCOUNT_STAGE_CHANGED, BECAME_MQA, ACCOUNT_SLA_BREACHED = "account.stage.changed", "account.mqa", "account.sla.breached"
ACCOUNT_KINDS = (ACCOUNT_STAGE_CHANGED, BECAME_MQA, ACCOUNT_SLA_BREACHED)
KINDS = (STAGE_CHANGED, BECAME_MQL, SLA_BREACHED, f"{SCORE_CROSSED}:<N>", WORKFLOW_NOTIFY, *ACCOUNT_KINDS)
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STATUSES = (PENDING, DELIVERED, DEAD)


def normalise_kind(kind: str) -> str:
    """The kind as announcements spell it, or `InvalidInput` naming the kinds there are.

    `score.crossed:50.0` becomes `score.crossed:50`: crossings are announced with the
    threshold written by `format(t, "g")`, and a subscription must match that text exactly.
    """
    kind = kind.strip()
    if kind in (STAGE_CHANGED, BECAME_MQL, SLA_BREACHED, WORKFLOW_NOTIFY, *ACCOUNT_KINDS):
        return kind
    name, _, threshold = kind.partition(":")
    if name == SCORE_CROSSED and threshold:
        try:
            value = float(threshold)
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return f"{SCORE_CROSSED}:{value:g}"
    raise InvalidInput(f"unknown kind {kind!r}; expected one of: {', '.join(KINDS)}", field="kinds")


@dataclass(frozen=True, slots=True)
class Announcement:
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Subscription:
    id: int
    kinds: frozenset[str]
    thresholds: tuple[float, ...]  # from kinds score.crossed:<N>


def active_subscriptions(conn: Connection) -> list[Subscription]:
    subs = schema.webhook_subscriptions
    out = []
    for row in conn.execute(select(subs.c.id, subs.c.kinds).where(subs.c.active)):
        kinds = frozenset(str(k) for k in row.kinds)
        thresholds = tuple(float(k.split(":", 1)[1]) for k in kinds if k.startswith("score.crossed:"))
        out.append(Subscription(row.id, kinds, thresholds))
    return out


def enqueue(
    conn: Connection,
    announcements: Sequence[Announcement],
    now: datetime,
    subscriptions: list[Subscription] | None = None,
) -> int:
    """Write a pending delivery for every subscription that wants each announcement; return how many."""
    if not announcements:
        return 0
    subscriptions = active_subscriptions(conn) if subscriptions is None else subscriptions
    rows = [
        {
            "subscription_id": sub.id,
            "kind": a.kind,
            "payload": a.payload,
            "created_at": now,
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
        }
        for a in announcements
        for sub in subscriptions
        if a.kind in sub.kinds
    ]
    if rows:
        conn.execute(schema.webhook_deliveries.insert(), rows)
    return len(rows)


def score_crossings(
    subscriptions: list[Subscription], lead: dict[str, Any], before: float | None, after: float, at: datetime
) -> list[Announcement]:
    """`score.crossed:<N>` for each threshold the score rose through (from below to at or above)."""
    start = before if before is not None else float("-inf")
    crossed = sorted({t for sub in subscriptions for t in sub.thresholds if start < t <= after})
    return [
        Announcement(
            f"{SCORE_CROSSED}:{t:g}",
            {"lead": lead, "threshold": t, "before": before, "after": round(after, 4), "at": at.isoformat()},
        )
        for t in crossed
    ]


def react(run: Run) -> None:
    """Reaction `announcements`: stage changes, new MQLs and score crossings into the outbox,
    in the change's transaction, for the subscriptions that want them; nothing of history (a
    move dated before the pipeline's cutoff, a crossing by a lead whose change is all history)."""
    if not run.configured.webhooks:
        return
    conn, changed = run.uow.connection, run.changed
    subscriptions = active_subscriptions(conn)
    if not subscriptions:
        return
    announcements: list[Announcement] = []
    for move in changed.moves:
        values = move.values
        if values["from_stage"] is None or run.is_history(values["at"]):  # a lead created; history
            continue
        payload = {"lead": _lead_ref(move.record), **_history_payload(values)}
        announcements.append(Announcement(STAGE_CHANGED, payload))
        if values["to_stage"] == Stage.MQL.value:
            announcements.append(Announcement(BECAME_MQL, payload))
    for row in changed.account_moves:
        if run.is_history(row["at"]):
            continue
        payload = account_move_payload(row)
        announcements.append(Announcement(ACCOUNT_STAGE_CHANGED, payload))
        if row["to_stage"] == AccountStage.MQA.value:
            announcements.append(Announcement(BECAME_MQA, payload))
    if any(sub.thresholds for sub in subscriptions):
        records = {r.id: r for r in changed.records}
        for lead_id, before, after in changed.scores:
            if run.lead_is_history(lead_id):
                continue
            announcements += score_crossings(subscriptions, _lead_ref(records[lead_id]), before, after, changed.now)
    enqueue(conn, announcements, changed.now, subscriptions)


def account_move_payload(row: dict[str, Any]) -> dict[str, Any]:
    """An account's stage change as announced: the account, the move, and its scores then."""
    return {
        "account": {"id": row["account_id"], "domain": row["domain"]},
        "from": row["from_stage"],
        "to": row["to_stage"],
        "at": row["at"].isoformat(),
        "actor": row["actor"],
        "by": row["by"],
        "reason": row["reason"],
        "note": row["note"],
        "owner": row.get("owner"),
        "scores": {
            "fit": row["fit_score"],
            "engagement": row["engagement_score"],
            "covered_roles": row["covered_roles"],
        },
        "model_version": row["model_version"],
    }


def _lead_ref(record: LeadRecord) -> dict[str, Any]:
    return {"id": record.id, "email": record.lead.email, "external_id": record.lead.external_id}


def _history_payload(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "from": values["from_stage"],
        "to": values["to_stage"],
        "at": values["at"].isoformat(),
        "actor": values["actor"],
        "by": values["by"],
        "reason": values["reason"],
        "note": values["note"],
        "scores": {
            "fit": values["fit_score"],
            "grade": values["fit_grade"],
            "engagement": values["engagement_score"],
            "persona": values["persona"],
        },
        "model_version": values["model_version"],
    }
