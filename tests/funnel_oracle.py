"""The funnel report as it was computed before it moved into the store's SQL: every stage history
row read in Python, lead by lead. Kept as the oracle the SQL report is tested against
(tests/integration/test_funnel_sql.py), not used by the product. It fills the product's
FunnelReport and reads its constants: only the counting is its own."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select

from qualify.adapters import schema
from qualify.domain.lifecycle import FUNNEL, Actor, Stage
from qualify.domain.statistics import counted_rate, percentile, wilson_interval
from qualify.service.reading.funnel import NURTURE_ORIGINS, SLA_OUTCOMES, FunnelReport
from qualify.service.reading.queries import lead_filters
from qualify.service.unit_of_work import UnitOfWork, utcnow


class Move(NamedTuple):
    """One entry of a lead's stage history, as the funnel reads it."""

    to_stage: str
    at: datetime
    reason: str | None
    from_stage: str  # "" for the lead's first entry
    actor: str


def funnel(
    uow: UnitOfWork,
    *,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    now: datetime | None = None,
    where: Mapping[str, str] | None = None,
) -> FunnelReport:
    """The funnel of leads created in [created_from, created_to) (all leads by default), as of `now`;
    `where` keeps only the leads whose `source`, `channel`, `persona`, `owner` or first-touch
    `campaign` is the value given."""
    conn = uow.connection
    leads, history = schema.leads, schema.stage_history
    lead_query = select(leads.c.id, leads.c.stage).where(*lead_filters(created_from, created_to, where))
    stage_of = {row.id: row.stage for row in conn.execute(lead_query)}
    current = Counter(stage_of.values())
    entries: dict[int, list[Move]] = defaultdict(list)
    rows = conn.execute(
        select(
            history.c.lead_id,
            history.c.to_stage,
            history.c.at,
            history.c.reason,
            history.c.from_stage,
            history.c.actor,
        ).order_by(history.c.lead_id, history.c.at, history.c.id)
    )
    # People's reason codes, counted per move (e.g. mql->nurture: bad_timing); the model's and
    # the timers' reasons are sentences with numbers in them, counted by kind instead.
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    automatic: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    decision_hours: list[float] = []
    mql_since: dict[int, datetime] = {}
    for lead_id, to_stage, at, reason, from_stage, actor in rows:
        if lead_id in stage_of:
            entries[lead_id].append(Move(to_stage, at, reason, from_stage or "", actor))
            if to_stage == Stage.MQL:
                mql_since[lead_id] = at
            elif from_stage == Stage.MQL and actor == Actor.USER:
                decisions[to_stage] += 1
                if lead_id in mql_since:
                    decision_hours.append((at - mql_since[lead_id]).total_seconds() / 3600)
            if to_stage in (Stage.NURTURE, Stage.DISQUALIFIED) and reason:
                if actor == Actor.USER:
                    reasons[f"{from_stage or ''}->{to_stage}"][reason] += 1
                elif to_stage == Stage.NURTURE:
                    automatic["decayed_out"] += 1
    reached: Counter[str] = Counter()
    both: Counter[tuple[str, str]] = Counter()
    durations: dict[str, list[float]] = defaultdict(list)
    recycled: Counter[str] = Counter()
    for lead_id, stays in entries.items():
        seen = {s for s, *_ in stays} | {Stage.LEAD.value}
        for stage in {s for s, *_ in stays}:
            reached[stage] += 1
        for here, there in itertools.pairwise(FUNNEL):
            both[here.value, there.value] += here.value in seen and there.value in seen
        for (stage, start, *_), (_next, end, *_rest) in itertools.pairwise(stays):
            durations[stage].append((end - start).total_seconds() / 86_400)
        nurtured = False
        for stage, _at, _reason, from_stage, _actor in stays:
            if stage == Stage.NURTURE:
                nurtured = True
            if nurtured and stage == Stage.MQL and from_stage == Stage.NURTURE:
                recycled["requalified"] += 1
        if nurtured:
            recycled["nurtured"] += 1
        del lead_id
    reached[Stage.LEAD] = max(reached[Stage.LEAD], len(stage_of))
    conversion = []
    for here, there in itertools.pairwise(FUNNEL):
        base = reached[here]
        conversion.append(
            {
                "from": here.value,
                "to": there.value,
                "from_count": base,
                "to_count": both[here.value, there.value],
                "rate": round(both[here.value, there.value] / base, 4) if base else None,
                "interval_95": wilson_interval(both[here.value, there.value], base),
            }
        )
    days = {stage.value: _summary(durations.get(stage.value, [])) for stage in Stage}
    return FunnelReport(
        total_leads=len(stage_of),
        current={s.value: current.get(s.value, 0) for s in Stage},
        reached={s.value: reached.get(s.value, 0) for s in Stage},
        conversion=conversion,
        days_in_stage=days,
        recycled=dict(recycled) | dict(automatic),
        reasons={k: dict(v.most_common()) for k, v in reasons.items()},
        acceptance=_acceptance(decisions, decision_hours),
        sla=sla_compliance(uow, created_from=created_from, created_to=created_to, now=now or utcnow(), where=where),
        nurture_loop=nurture_loop(entries.values()),
    )


def _acceptance(decisions: Counter[str], hours: list[float]) -> dict[str, Any]:
    """What sales decided about the MQLs they were handed: accepted (SQL), rejected (nurture) or
    disqualified, as shares of the decisions, and the hours from MQL to the decision."""
    decided = sum(decisions.values())

    def share(stage: Stage) -> dict[str, Any]:
        return counted_rate(decisions.get(stage.value, 0), decided)

    return {
        "decided": decided,
        "accepted": share(Stage.SQL),
        "rejected": share(Stage.NURTURE),
        "disqualified": share(Stage.DISQUALIFIED),
        "hours_to_decision": _summary(hours),
    }


def nurture_origin(move: Move) -> str:
    """Why a lead entered nurture, from the move's previous stage and actor: sales rejected the MQL
    (a person), the decay-out timer sent it back (the system), or a deal was lost as SQL or as
    opportunity."""
    if move.from_stage == Stage.MQL:
        return "rejected_mql" if move.actor == Actor.USER else "decayed_out"
    if move.from_stage == Stage.SQL:
        return "lost_sql"
    if move.from_stage == Stage.OPPORTUNITY:
        return "lost_opportunity"
    return "other"


def nurture_loop(histories: Iterable[list[Move]]) -> dict[str, Any]:
    """The nurture loop of the leads whose histories (each in time order) are given.

    Every entry into nurture is one trial: it ends when the lead moves again, back to MQL
    (*recycled*) or out (disqualified), or is still open. The recycle rate is recycled / entries,
    with its Wilson interval, overall, per origin and per people's reason code; the days to MQL
    run from the entry into nurture to the move back. An entry that is still open counts as not
    recycled (yet), so recent entries pull the rate down: `open` says how many there are.

    `after_mql` answers whether recycled leads are worth sales' time: each stay that starts with
    an entry into MQL (the lead's first one, or one from nurture) owns what the lead reached
    until its next entry into MQL, and the shares that reached SQL and customer are compared
    between first-time and recycled MQLs.
    """
    entries = 0
    leads = 0
    outcomes: Counter[str] = Counter()
    days: list[float] = []
    origin_entries: Counter[str] = Counter()
    origin_recycled: Counter[str] = Counter()
    origin_days: dict[str, list[float]] = defaultdict(list)
    reason_entries: Counter[str] = Counter()
    reason_recycled: Counter[str] = Counter()
    after: dict[str, Counter[str]] = {"first_time": Counter(), "recycled": Counter()}
    for moves in histories:
        nurtured = False
        first_mql = True
        for i, move in enumerate(moves):
            if move.to_stage == Stage.NURTURE:
                nurtured = True
                entries += 1
                origin = nurture_origin(move)
                origin_entries[origin] += 1
                reason = move.reason if move.actor == Actor.USER else None  # people's reason codes only
                if reason:
                    reason_entries[reason] += 1
                ended = moves[i + 1] if i + 1 < len(moves) else None
                if ended is None:
                    outcomes["open"] += 1
                elif ended.to_stage == Stage.MQL:
                    outcomes["recycled"] += 1
                    origin_recycled[origin] += 1
                    if reason:
                        reason_recycled[reason] += 1
                    waited = (ended.at - move.at).total_seconds() / 86_400
                    days.append(waited)
                    origin_days[origin].append(waited)
                else:
                    outcomes["disqualified" if ended.to_stage == Stage.DISQUALIFIED else "other"] += 1
            elif move.to_stage == Stage.MQL:
                kind = "recycled" if move.from_stage == Stage.NURTURE else "first_time" if first_mql else None
                first_mql = False
                if kind is None:  # a second entry into MQL from elsewhere: not a lifecycle move
                    continue
                stay = list(itertools.takewhile(lambda m: m.to_stage != Stage.MQL, moves[i + 1 :]))
                reached = {m.to_stage for m in stay}
                after[kind]["mqls"] += 1
                after[kind]["open"] += not stay
                after[kind]["sql"] += Stage.SQL in reached
                after[kind]["customer"] += Stage.CUSTOMER in reached
        leads += nurtured
    origins = [name for name in NURTURE_ORIGINS if name != "other" or origin_entries[name]]
    return {
        "entries": entries,
        "leads": leads,
        "recycled": counted_rate(outcomes["recycled"], entries),
        "disqualified": outcomes["disqualified"],
        "open": outcomes["open"],
        "days_to_mql": _summary(days),
        "by_origin": {
            origin: {
                "entries": origin_entries[origin],
                "recycled": counted_rate(origin_recycled[origin], origin_entries[origin]),
                "days_to_mql": _summary(origin_days[origin]),
            }
            for origin in origins
        },
        "by_reason": {
            reason: {"entries": count, "recycled": counted_rate(reason_recycled[reason], count)}
            for reason, count in reason_entries.most_common()
        },
        "after_mql": {
            kind: {
                "mqls": counts["mqls"],
                "open": counts["open"],
                "sql": counted_rate(counts["sql"], counts["mqls"]),
                "customer": counted_rate(counts["customer"], counts["mqls"]),
            }
            for kind, counts in after.items()
        },
    }


def _summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "median": None, "p90": None}
    return {"count": len(values), "median": round(percentile(values, 0.5), 2), "p90": round(percentile(values, 0.9), 2)}


def sla_compliance(
    uow: UnitOfWork,
    *,
    now: datetime,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    where: Mapping[str, str] | None = None,
) -> dict[str, int | float | None]:
    """How the SLA clocks of the leads created in [created_from, created_to) ended, as of `now`.

    A clock is a lead's `sla_due_at` (the handoff sets one when a lead becomes MQL; a lead
    that requalifies gets a new one), so each lead counts once, for its latest clock. Its MQL
    stay is the last entry into `mql` at or before the due time; how the stay ended decides:

    - `met`: a person moved the lead out of MQL (accept, reject, disqualify) by the due time;
    - `breached`: the lead was still MQL at the due time (whatever happened after);
    - `open`: still MQL, and the due time is still ahead;
    - `stopped`: the lead left MQL before the due time without a person (decay-out, a
      disqualify rule, a fast track to SQL): nobody had to answer.

    `compliance` is met / (met + breached), or None when no clock has ended either way.
    """
    leads, history = schema.leads, schema.stage_history
    clocked = [leads.c.sla_due_at.is_not(None), *lead_filters(created_from, created_to, where)]
    clocks = {row.id: (row.stage, row.sla_due_at) for row in uow.connection.execute(
        select(leads.c.id, leads.c.stage, leads.c.sla_due_at).where(*clocked)
    )}  # fmt: skip
    moves: dict[int, list[tuple[str, datetime, str]]] = defaultdict(list)
    rows = uow.connection.execute(
        select(history.c.lead_id, history.c.to_stage, history.c.at, history.c.actor)
        .join(leads, leads.c.id == history.c.lead_id)
        .where(*clocked)
        .order_by(history.c.lead_id, history.c.at, history.c.id)
    )
    for lead_id, to_stage, at, actor in rows:
        moves[lead_id].append((to_stage, at, actor))
    outcomes = Counter(_sla_outcome(stage, due, moves[lead_id], now) for lead_id, (stage, due) in clocks.items())
    decided = outcomes["met"] + outcomes["breached"]
    return {
        "clocks": len(clocks),
        **{name: outcomes[name] for name in SLA_OUTCOMES},
        "compliance": round(outcomes["met"] / decided, 4) if decided else None,
    }


def _sla_outcome(stage_now: str, due: datetime, moves: list[tuple[str, datetime, str]], now: datetime) -> str:
    entries = [i for i, (to_stage, at, _) in enumerate(moves) if to_stage == Stage.MQL and at <= due]
    entries = entries or [i for i, (to_stage, *_) in enumerate(moves) if to_stage == Stage.MQL]
    if not entries:  # a clock without an MQL entry in the history: judge by the stage it is in
        exit_move = None if stage_now == Stage.MQL else ("", due, "")
    else:
        following = moves[entries[-1] + 1 : entries[-1] + 2]
        exit_move = following[0] if following else None
    if exit_move is None:
        return "open" if now < due else "breached"
    _, left_at, actor = exit_move
    if left_at > due:
        return "breached"
    return "met" if actor == Actor.USER else "stopped"
