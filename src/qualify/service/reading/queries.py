"""Read side for one workspace: lead profiles with explanations, lead lists, the funnel."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, func, select

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.domain.engagement import (
    BONUS_AWARD,
    Award,
    AwardedEvent,
    award_half_life,
    decay_factor,
    explain_engagement,
)
from qualify.domain.errors import InvalidInput, NotFound
from qualify.domain.explain import Contribution
from qualify.domain.fit import profile_values, score_fit
from qualify.domain.lifecycle import FUNNEL, Actor, Stage
from qualify.domain.records import ACCOUNT_FIELDS, LEAD_FIELDS, check_storable
from qualify.domain.statistics import percentile, wilson_interval
from qualify.service.predictions import serving as predictions
from qualify.service.unit_of_work import UnitOfWork, utcnow

EXPLANATION_LINES = 12  # beyond these, smaller contributions are summed per rule


@dataclass
class LeadProfile:
    lead: dict[str, Any]
    account: dict[str, Any] | None
    stage: str
    stage_entered_at: datetime
    scores: dict[str, Any]
    fit_explanation: list[Contribution]
    engagement_explanation: list[Contribution]
    timeline: list[dict[str, Any]]
    events_total: int
    history: list[dict[str, Any]]
    # Handoff: the owner sales gave the lead, the routing rule that chose them, and the SLA clock.
    owner: str | None = None
    owner_rule: str | None = None
    owner_assigned_at: datetime | None = None
    sla_due_at: datetime | None = None
    # The active predictive model's probability with its strongest contributions; None without one.
    prediction: dict[str, Any] | None = None
    # The person's other leads (journeys: an earlier inquiry, a returning buyer), oldest first.
    journeys: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fit_explanation"] = [c.as_dict() for c in self.fit_explanation]
        out["engagement_explanation"] = [c.as_dict() for c in self.engagement_explanation]
        return out


def lead_profile(
    uow: UnitOfWork,
    key: str,
    *,
    now: datetime | None = None,
    timeline_limit: int = 20,
    timeline_offset: int = 0,
) -> LeadProfile:
    """Everything about one lead, with scores explained as of `now`."""
    now = now or utcnow()
    conn = uow.connection
    record = repo.find_lead(conn, key)
    if record is None:
        raise NotFound(f"no lead {key!r} (give an email, an external id, or #id)")
    assert record.id is not None
    model = uow.active_model()
    account = repo.accounts_by_id(conn, [record.account_id]).get(record.account_id) if record.account_id else None
    fit = score_fit(model, profile_values(record.lead, account))
    at = now.timestamp()
    awarded = [
        AwardedEvent(
            r.occurred_at.timestamp(),
            r.type,
            r.properties,
            tuple(Award(a[0], a[1]) for a in r.awards),
        )
        for r in repo.lead_events(conn, record.id, newest_first=False)
        if r.awards
    ]
    engagement_parts = _condense(explain_engagement(model, awarded, at))
    lead = record.lead
    lead_dict = {
        "id": record.id,
        **{name: getattr(lead, name) for name in LEAD_FIELDS},
        "attributes": lead.attributes,
        "created_at": record.created_at,
    }
    account_dict = None
    if account is not None:
        account_dict = {
            "id": record.account_id,
            "domain": account.domain,
            **{n: getattr(account, n) for n in ACCOUNT_FIELDS},
            "attributes": account.attributes,
        }
    timeline = [
        {
            "event_id": r.event_id,
            "type": r.type,
            "occurred_at": r.occurred_at,
            "properties": r.properties,
            "points": round(sum(a[1] for a in r.awards), 4),
        }
        for r in repo.lead_events(conn, record.id, limit=timeline_limit, offset=timeline_offset)
    ]
    history = [
        {
            "from": h.from_stage,
            "to": h.to_stage,
            "at": h.at,
            "actor": h.actor,
            "by": h.by,
            "reason": h.reason,
            "note": h.note,
            "fit": h.fit_score,
            "grade": h.fit_grade,
            "engagement": h.engagement_score,
        }
        for h in repo.lead_history(conn, record.id)
    ]
    scores = {
        "fit": round(fit.score, 2),
        "grade": fit.grade,
        "persona": fit.persona,
        "engagement": round(record.state.engagement_at(at), 2),
        "as_of": now,
        "model_version": model.version,
    }
    leads = schema.leads
    handoff = conn.execute(
        select(leads.c.owner, leads.c.owner_rule, leads.c.owner_assigned_at, leads.c.sla_due_at).where(
            leads.c.id == record.id
        )
    ).one()
    return LeadProfile(
        lead_dict,
        account_dict,
        record.state.stage.value,
        datetime.fromtimestamp(record.state.stage_entered, now.tzinfo),
        scores,
        list(fit.contributions),
        engagement_parts,
        timeline,
        repo.count_events(conn, record.id),
        history,
        owner=handoff.owner,
        owner_rule=handoff.owner_rule,
        owner_assigned_at=handoff.owner_assigned_at,
        sla_due_at=handoff.sla_due_at,
        prediction=predictions.explain_lead(uow, record.id),
        journeys=_journeys(conn, record),
    )


def _journeys(conn: Any, record: repo.LeadRecord) -> list[dict[str, Any]]:
    person = record.person_email or record.lead.email
    if not person:
        return []
    leads = schema.leads
    rows = conn.execute(
        select(
            leads.c.id, leads.c.external_id, leads.c.email, leads.c.stage, leads.c.created_at, leads.c.stage_entered_at
        )
        .where(leads.c.person_email == person, leads.c.id != record.id, leads.c.erased_at.is_(None))
        .order_by(leads.c.created_at, leads.c.id)
    )
    return [
        {
            "id": r.id,
            "external_id": r.external_id,
            "current": r.email is not None,
            "stage": r.stage,
            "created_at": r.created_at,
            "stage_entered_at": r.stage_entered_at,
        }
        for r in rows
    ]


def _condense(parts: list[Contribution]) -> list[Contribution]:
    """The largest contributions one by one, the rest summed per rule: still adds up."""
    ordered = sorted(parts, key=lambda c: abs(c.points), reverse=True)
    head, tail = ordered[:EXPLANATION_LINES], ordered[EXPLANATION_LINES:]
    grouped: dict[str, list[Contribution]] = defaultdict(list)
    for part in tail:
        grouped[part.rule].append(part)
    for rule, items in grouped.items():
        total = sum(c.points for c in items)
        head.append(Contribution(rule, total, f"{rule}: {len(items)} older or smaller award(s)"))
    return head


class Move(NamedTuple):
    """One entry of a lead's stage history, as the funnel reads it."""

    to_stage: str
    at: datetime
    reason: str | None
    from_stage: str  # "" for the lead's first entry
    actor: str


@dataclass
class FunnelReport:
    """Counts per stage now, and from the stage history: how many reached each stage,
    the conversion from each funnel stage to the next, days spent in each stage, how the
    MQLs' SLA clocks ended (`sla_compliance`), and the nurture loop (`nurture_loop`)."""

    total_leads: int
    current: dict[str, int]
    reached: dict[str, int]
    conversion: list[dict[str, Any]]
    days_in_stage: dict[str, dict[str, float | int | None]]
    recycled: dict[str, int]
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    sla: dict[str, int | float | None] = field(default_factory=dict)
    acceptance: dict[str, Any] = field(default_factory=dict)
    nurture_loop: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
                    reasons[f"{from_stage}->{to_stage}"][reason] += 1
                elif to_stage == Stage.NURTURE:
                    automatic["decayed_out"] += 1
    reached: Counter[str] = Counter()
    durations: dict[str, list[float]] = defaultdict(list)
    recycled: Counter[str] = Counter()
    for lead_id, stays in entries.items():
        for stage in {s for s, *_ in stays}:
            reached[stage] += 1
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
                "to_count": reached[there],
                "rate": round(reached[there] / base, 4) if base else None,
                "interval_95": wilson_interval(reached[there], base),
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
        return _rate(decisions.get(stage.value, 0), decided)

    return {
        "decided": decided,
        "accepted": share(Stage.SQL),
        "rejected": share(Stage.NURTURE),
        "disqualified": share(Stage.DISQUALIFIED),
        "hours_to_decision": _summary(hours),
    }


# Where a lead entering nurture came from, with the words the CLI and the dashboard show; `other`
# takes what the lifecycle does not make today (history imported from another system, say), so
# the entries always add up, and is reported only when there is some.
NURTURE_ORIGINS = {
    "rejected_mql": "rejected MQL",
    "decayed_out": "decayed out of MQL",
    "lost_sql": "lost as SQL",
    "lost_opportunity": "lost as opportunity",
    "other": "other",
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
        "recycled": _rate(outcomes["recycled"], entries),
        "disqualified": outcomes["disqualified"],
        "open": outcomes["open"],
        "days_to_mql": _summary(days),
        "by_origin": {
            origin: {
                "entries": origin_entries[origin],
                "recycled": _rate(origin_recycled[origin], origin_entries[origin]),
                "days_to_mql": _summary(origin_days[origin]),
            }
            for origin in origins
        },
        "by_reason": {
            reason: {"entries": count, "recycled": _rate(reason_recycled[reason], count)}
            for reason, count in reason_entries.most_common()
        },
        "after_mql": {
            kind: {
                "mqls": counts["mqls"],
                "open": counts["open"],
                "sql": _rate(counts["sql"], counts["mqls"]),
                "customer": _rate(counts["customer"], counts["mqls"]),
            }
            for kind, counts in after.items()
        },
    }


def _rate(count: int, total: int) -> dict[str, Any]:
    """A count out of `total`, its share rounded to 4 decimals and the share's Wilson interval."""
    return {
        "count": count,
        "rate": round(count / total, 4) if total else None,
        "interval_95": wilson_interval(count, total),
    }


def _summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "median": None, "p90": None}
    return {"count": len(values), "median": round(percentile(values, 0.5), 2), "p90": round(percentile(values, 0.9), 2)}


SLA_OUTCOMES = ("met", "breached", "open", "stopped")


FILTERS = ("source", "channel", "persona", "owner", "campaign")


def first_campaigns() -> Any:
    """A subquery of lead_id, campaign: the `campaign` property of each lead's earliest event that
    has one (first touch, as the batch side's `first_campaigns`)."""
    events = schema.events
    campaign = events.c.properties["campaign"].as_string()
    order = func.row_number().over(partition_by=events.c.lead_id, order_by=(events.c.occurred_at, events.c.id))
    ranked = (
        select(events.c.lead_id, campaign.label("campaign"), order.label("n")).where(campaign.is_not(None)).subquery()
    )
    return select(ranked.c.lead_id, ranked.c.campaign).where(ranked.c.n == 1).subquery()


def lead_filters(
    created_from: datetime | None, created_to: datetime | None, where: Mapping[str, str] | None
) -> list[ColumnElement[bool]]:
    """Conditions on leads: created in [created_from, created_to), and equal to `where`'s values."""
    leads = schema.leads
    out: list[ColumnElement[bool]] = []
    if created_from:
        out.append(leads.c.created_at >= created_from)
    if created_to:
        out.append(leads.c.created_at < created_to)
    for name, value in (where or {}).items():
        if name not in FILTERS:
            raise InvalidInput(f"cannot filter leads by {name!r}; expected one of: {', '.join(FILTERS)}", field=name)
        check_storable(value, name)  # bound as a parameter, but PostgreSQL refuses a NUL outright
        if name == "campaign":
            first = first_campaigns()
            out.append(leads.c.id.in_(select(first.c.lead_id).where(first.c.campaign == value)))
        else:
            out.append(leads.c[name] == value)
    return out


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


def engagement_over_time(
    uow: UnitOfWork, lead_id: int, *, points: int = 60, now: datetime | None = None
) -> list[tuple[datetime, float]]:
    """The lead's engagement at `points` instants from its creation to `now`: its stored awards,
    each decayed with its rule's half-life (the score-over-time chart of the lead page)."""
    now = now or utcnow()
    conn = uow.connection
    leads, events = schema.leads, schema.events
    created = conn.execute(select(leads.c.created_at).where(leads.c.id == lead_id)).scalar()
    if created is None:
        raise NotFound(f"no lead #{lead_id}")
    model = uow.active_model()
    half_lives = {
        name: award_half_life(model, name) for name in [r.name for r in model.engagement_rules] + [BONUS_AWARD]
    }
    awards = [
        (occurred.timestamp(), float(points_), half_lives.get(rule))
        for occurred, stored in conn.execute(
            select(events.c.occurred_at, events.c.awards).where(events.c.lead_id == lead_id)
        )
        for rule, points_ in (stored or [])
    ]
    start, end = created.timestamp(), max(now.timestamp(), created.timestamp() + 1)
    out = []
    for i in range(points):
        at = start + (end - start) * i / (points - 1)
        value = sum(p * decay_factor(at - t, h) for t, p, h in awards if t <= at)
        out.append((datetime.fromtimestamp(at, now.tzinfo), round(value, 2)))
    return out
