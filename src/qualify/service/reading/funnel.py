"""The funnel report, counted by the store: stages now and reached, conversion, days in each
stage, sales' decisions on MQLs, SLA compliance and the nurture loop.

Every figure is one SQL statement over `leads` and `stage_history` (the same on SQLite and
PostgreSQL), so what comes back is a row per stage, reason or outcome, not the history. A lead's
moves are read in time order with window functions (the next move, the last MQL entry before,
the MQL stay a move belongs to), and only for the leads that moved: a lead whose one entry is its
creation adds to the counts of `lead` and nothing else. Medians and 90th percentiles are read by
rank (the two values around each) and interpolated as `domain.statistics.percentile` does; times
are differences of whole microseconds (`schema.epoch_micros`), so the figures equal a loop over
the rows in Python (tests/funnel_oracle.py, tested against this on generated histories).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    Select,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.sql.elements import Over
from sqlalchemy.sql.functions import FunctionElement

from qualify.adapters import schema
from qualify.adapters.schema import epoch_micros
from qualify.domain.lifecycle import FUNNEL, Actor, Stage
from qualify.domain.statistics import counted_rate, ranked_percentile, ranks_needed, wilson_interval
from qualify.service.reading.queries import lead_filters
from qualify.service.unit_of_work import UnitOfWork, utcnow

SLA_OUTCOMES = ("met", "breached", "open", "stopped")
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
QUANTILES = {"median": 0.5, "p90": 0.9}
SECONDS_PER_DAY, SECONDS_PER_HOUR = 86_400, 3_600


@dataclass
class FunnelReport:
    """Counts per stage now, and from the stage history: how many reached each stage,
    the conversion from each funnel stage to the next (of the leads that reached one, those that
    reached the next as well: a lead that skipped a stage, such as a deal sales found themselves,
    counts in the later stage's reach but in no conversion from the stage it never was in), days
    spent in each stage, how the
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
    conditions = lead_filters(created_from, created_to, where)
    moves = _moves(conditions)
    statement = union_all(
        *_counts(moves, conditions),
        *_percentile_parts(moves),
        _after_mql(moves),
        _sla(moves, conditions, now or utcnow()),
    )
    parts = _Parts()
    for row in uow.connection.execute(statement):
        parts.take(row)
    return parts.report()


# Every part of the report is a SELECT of these columns, so that one statement returns them all:
# the part's name, up to three texts (a stage, a reason, an outcome) and up to four numbers.
_TEXTS, _NUMBERS = ("a", "b", "c"), ("n", "k", "v", "w")


def _row(part: str, **values: ColumnElement[Any] | None) -> list[ColumnElement[Any]]:
    """The columns of one part's rows (those not given are NULL of their column's type)."""
    columns: list[ColumnElement[Any]] = [cast(literal(part), String).label("part")]
    columns += [cast(values.get(name, null()), String).label(name) for name in _TEXTS]
    columns += [cast(values.get(name, null()), BigInteger).label(name) for name in _NUMBERS]
    return columns


def _moves(conditions: list[ColumnElement[bool]]) -> CTE:
    """The stage history of the leads that `conditions` keep and that moved on from `lead`, each
    entry with what the report needs from its neighbours, in the lead's time order (at, then id):

    - `t`: when, in microseconds; `n`: its place in the lead's history (1: the first);
    - `next_stage`, `next_t`: the lead's next entry (none: this is the last);
    - `nurtured`: 1 when this entry or an earlier one is into nurture;
    - `mql_t`: when the latest earlier entry into MQL was (none: no earlier one);
    - `stay`: how many entries into MQL there were up to this one: the MQL stay it belongs to.

    Materialised once: every part of the report reads it.
    """
    h, leads = schema.stage_history, schema.leads
    # Nothing moves a lead back to `lead`: a lead still there has its creation as its one entry.
    moved = select(leads.c.id).where(leads.c.stage != Stage.LEAD.value, *conditions)

    def in_order(function: FunctionElement[Any], rows: tuple[int | None, int | None] | None = None) -> Over[Any]:
        return function.over(partition_by=h.c.lead_id, order_by=(h.c.at, h.c.id), rows=rows)

    t = epoch_micros(h.c.at)
    into_mql = h.c.to_stage == Stage.MQL.value
    return (
        select(
            h.c.lead_id,
            h.c.to_stage,
            func.coalesce(h.c.from_stage, "").label("from_stage"),
            h.c.actor,
            h.c.reason,
            t.label("t"),
            in_order(func.row_number()).label("n"),
            in_order(func.lead(h.c.to_stage)).label("next_stage"),
            in_order(func.lead(t)).label("next_t"),
            in_order(func.max(case((h.c.to_stage == Stage.NURTURE.value, 1), else_=0)), (None, 0)).label("nurtured"),
            in_order(func.max(case((into_mql, t))), (None, -1)).label("mql_t"),
            in_order(func.sum(case((into_mql, 1), else_=0)), (None, 0)).label("stay"),
        )
        .where(h.c.lead_id.in_(moved))
        .cte("moves")
        .prefix_with("MATERIALIZED")
    )


def _is_decision(m: Any) -> ColumnElement[bool]:
    """A person moved an MQL on (accepted, rejected or disqualified it)."""
    return and_(m.from_stage == Stage.MQL.value, m.actor == Actor.USER.value, m.to_stage != Stage.MQL.value)


def _origin(m: Any) -> ColumnElement[str]:
    """Why a lead entered nurture, from the move's previous stage and actor: sales rejected the MQL
    (a person), the decay-out timer sent it back (the system), or a deal was lost as SQL or as
    opportunity; `other` for what the lifecycle does not make (imported history, say)."""
    return case(
        (m.from_stage == Stage.MQL.value, case((m.actor == Actor.USER.value, "rejected_mql"), else_="decayed_out")),
        (m.from_stage == Stage.SQL.value, "lost_sql"),
        (m.from_stage == Stage.OPPORTUNITY.value, "lost_opportunity"),
        else_="other",
    )


def _counts(moves: CTE, conditions: list[ColumnElement[bool]]) -> list[Select[Any]]:
    """The counting parts: leads per stage now, leads that reached each stage, leads that reached
    both stages of each funnel step after MQL, people's reasons
    for sending leads to nurture or disqualifying them (the model's and the timers' reasons are
    sentences, counted by kind: `decayed_out`), sales' decisions on MQLs, the MQL entries from
    nurture after a stay in it (`requalified`), and the entries into nurture by origin, people's
    reason and how they ended."""
    m, leads = moves.c, schema.leads
    by_person = m.actor == Actor.USER.value
    has_reason = and_(m.reason.is_not(None), m.reason != "")
    into_nurture = m.to_stage == Stage.NURTURE.value
    decayed = and_(into_nurture, has_reason, ~by_person)
    requalified = and_(m.to_stage == Stage.MQL.value, m.from_stage == Stage.NURTURE.value, m.nurtured == 1)
    kind = case((decayed, "decayed_out"), (requalified, "requalified"))
    move = m.from_stage + "->" + m.to_stage
    origin = _origin(m)
    reason = case((and_(by_person, has_reason), m.reason))
    outcome = case(
        (m.next_stage.is_(None), "open"),
        (m.next_stage == Stage.MQL.value, "recycled"),
        (m.next_stage == Stage.DISQUALIFIED.value, "disqualified"),
        else_="other",
    )
    parked = m.to_stage.in_((Stage.NURTURE.value, Stage.DISQUALIFIED.value))
    later = FUNNEL[1:]  # every lead reached `lead`: its conversion to MQL is MQL's reach
    reach = (
        select(*(func.max(case((m.to_stage == s.value, 1), else_=0)).label(s.value) for s in later))
        .group_by(m.lead_id)
        .subquery()
    )
    both = [func.coalesce(func.sum(reach.c[a.value] * reach.c[b.value]), 0) for a, b in itertools.pairwise(later)]
    return [
        select(*_row("converted", **dict(zip(_NUMBERS, both, strict=True)))),
        select(*_row("current", a=leads.c.stage, n=func.count())).where(*conditions).group_by(leads.c.stage),
        select(*_row("reached", a=m.to_stage, n=func.count(m.lead_id.distinct()))).group_by(m.to_stage),
        select(*_row("reason", a=move, b=m.reason, n=func.count()))
        .where(parked, has_reason, by_person)
        .group_by(move, m.reason),
        select(*_row("decision", a=m.to_stage, n=func.count())).where(_is_decision(m)).group_by(m.to_stage),
        select(*_row("recycled", a=kind, n=func.count())).where(kind.is_not(None)).group_by(kind),
        select(*_row("nurture", a=origin, b=reason, c=outcome, n=func.count()))
        .where(into_nurture)
        .group_by(origin, reason, outcome),
    ]


def _percentile_parts(moves: CTE) -> list[Select[Any]]:
    """The spreads: days in each stage (to the lead's next entry), hours from MQL to sales'
    decision, and days from an entry into nurture back to MQL, per origin and overall."""
    m = moves.c
    recycled = and_(m.to_stage == Stage.NURTURE.value, m.next_stage == Stage.MQL.value)
    return [
        _ranks("days", m.to_stage, m.next_t - m.t, m.next_t.is_not(None)),
        _ranks("hours", literal("all"), m.t - m.mql_t, _is_decision(m), m.mql_t.is_not(None)),
        _ranks("nurture_days", _origin(m), m.next_t - m.t, recycled),
        _ranks("nurture_days", literal("*"), m.next_t - m.t, recycled),
    ]


def _ranks(part: str, group: ColumnElement[Any], value: ColumnElement[Any], *keep: ColumnElement[bool]) -> Select[Any]:
    """The values of each group that its median and 90th percentile are interpolated from: each
    with its 0-based rank `k` in the group, and the group's count `n`."""
    given = select(group.label("grp"), value.label("v")).where(*keep).subquery()
    last = func.count().over(partition_by=given.c.grp) - 1
    ranked = select(
        given.c.grp,
        given.c.v,
        (func.row_number().over(partition_by=given.c.grp, order_by=given.c.v) - 1).label("k"),
        last.label("last"),
    ).subquery()
    around = [ranked.c.last * num // den for num, den in ((1, 2), (9, 10))]  # floor(q × last), q = 0.5, 0.9
    return select(*_row(part, a=ranked.c.grp, n=ranked.c.last + 1, k=ranked.c.k, v=ranked.c.v)).where(
        or_(*(ranked.c.k.between(rank - 1, rank + 1) for rank in around))
    )


def _after_mql(moves: CTE) -> Select[Any]:
    """First-time and recycled MQL stays: how many, how many have no move after (open), and how
    many reached SQL and customer before the lead's next entry into MQL."""
    m = moves.c
    stays = (
        select(
            m.stay,
            func.max(case((m.to_stage == Stage.MQL.value, m.from_stage))).label("entered_from"),
            func.count().label("moves"),
            func.max(case((m.to_stage == Stage.SQL.value, 1), else_=0)).label("sql"),
            func.max(case((m.to_stage == Stage.CUSTOMER.value, 1), else_=0)).label("customer"),
        )
        .where(m.stay > 0)
        .group_by(m.lead_id, m.stay)
        .subquery()
    )
    kind = case((stays.c.entered_from == Stage.NURTURE.value, "recycled"), (stays.c.stay == 1, "first_time"))
    return (
        select(
            *_row(
                "after_mql",
                a=kind,
                n=func.count(),
                k=func.sum(case((stays.c.moves == 1, 1), else_=0)),
                v=func.sum(stays.c.sql),
                w=func.sum(stays.c.customer),
            )
        )
        .where(kind.is_not(None))
        .group_by(kind)
    )


def _sla(moves: CTE, conditions: list[ColumnElement[bool]], now: datetime) -> Select[Any]:
    """How each SLA clock ended (`sla_compliance`), counted by outcome. A clocked lead became MQL,
    so it moved on from `lead`: its history is in `moves`."""
    m, leads = moves.c, schema.leads
    due = leads.c.sla_due_at
    clocked = [due.is_not(None), *conditions]
    into_mql = m.to_stage == Stage.MQL.value
    # The stay's entry: the last into MQL by the due time, else the last into MQL at all.
    entry = (
        select(
            m.lead_id,
            func.coalesce(
                func.max(case((and_(into_mql, m.t <= epoch_micros(due)), m.n))), func.max(case((into_mql, m.n)))
            ).label("n"),
        )
        .join(leads, leads.c.id == m.lead_id)
        .where(due.is_not(None))
        .group_by(m.lead_id)
        .subquery("entry")
    )
    left = moves.alias("left_mql")  # the move that ended the stay, if any
    outcome = case(
        (and_(entry.c.n.is_(None), leads.c.stage != Stage.MQL.value), "stopped"),  # a clock without an MQL entry
        (left.c.lead_id.is_(None), case((due > now, "open"), else_="breached")),
        (left.c.t > epoch_micros(due), "breached"),
        (left.c.actor == Actor.USER.value, "met"),
        else_="stopped",
    )
    return (
        select(*_row("sla", a=outcome, n=func.count()))
        .select_from(
            leads.outerjoin(entry, entry.c.lead_id == leads.c.id).outerjoin(
                left, and_(left.c.lead_id == leads.c.id, left.c.n == entry.c.n + 1)
            )
        )
        .where(*clocked)
        .group_by(outcome)
    )


class _Parts:
    """The rows of the one statement, gathered by part, and the report made of them."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.reasons: dict[str, Counter[str]] = defaultdict(Counter)
        self.nurture: list[tuple[str, str | None, str, int]] = []
        self.ranks: dict[tuple[str, str], tuple[int, dict[int, int]]] = {}
        self.after: dict[str, tuple[int, int, int, int]] = {}
        self.converted: list[int] = []

    def take(self, row: Any) -> None:
        part = row.part
        if part == "converted":  # leads that reached both stages of each pair after MQL, in FUNNEL's order
            self.converted = [int(getattr(row, name)) for name in _NUMBERS]
        elif part in ("current", "reached", "decision", "recycled", "sla"):
            self.counts[part][row.a] += int(row.n)
        elif part == "reason":
            self.reasons[row.a][row.b] += int(row.n)
        elif part == "nurture":
            self.nurture.append((row.a, row.b, row.c, int(row.n)))
        elif part == "after_mql":
            self.after[row.a] = (int(row.n), int(row.k), int(row.v), int(row.w))
        else:
            self.ranks.setdefault((part, row.a), (int(row.n), {}))[1][int(row.k)] = int(row.v)

    def spread(self, part: str, group: str, unit: int) -> dict[str, float | int | None]:
        """Count, median and 90th percentile of a group's values (microseconds), in `unit`
        seconds rounded to 2 decimals."""
        found = self.ranks.get((part, group))
        if found is None:
            return {"count": 0, "median": None, "p90": None}
        count, by_rank = found
        out: dict[str, float | int | None] = {"count": count}
        for name, q in QUANTILES.items():
            assert all(r in by_rank for r in ranks_needed(count, q))
            out[name] = round(ranked_percentile(lambda r: by_rank[r] / 1_000_000 / unit, count, q), 2)
        return out

    def report(self) -> FunnelReport:
        current, reached, decisions = self.counts["current"], self.counts["reached"], self.counts["decision"]
        total = sum(current.values())
        reached[Stage.LEAD.value] = total  # every lead's history starts with its creation
        conversion = []
        onwards = [reached[Stage.MQL.value], *self.converted]
        for (here, there), went in zip(itertools.pairwise(FUNNEL), onwards, strict=True):
            base = reached[here.value]
            conversion.append(
                {
                    "from": here.value,
                    "to": there.value,
                    "from_count": base,
                    "to_count": went,
                    "rate": round(went / base, 4) if base else None,
                    "interval_95": wilson_interval(went, base),
                }
            )
        recycled = {"nurtured": reached[Stage.NURTURE.value], **self.counts["recycled"]}
        decided = sum(decisions.values())
        return FunnelReport(
            total_leads=total,
            current={s.value: current[s.value] for s in Stage},
            reached={s.value: reached[s.value] for s in Stage},
            conversion=conversion,
            days_in_stage={s.value: self.spread("days", s.value, SECONDS_PER_DAY) for s in Stage},
            recycled={name: n for name, n in recycled.items() if n},
            reasons={key: _by_count(counts) for key, counts in self.reasons.items()},
            acceptance={
                "decided": decided,
                "accepted": counted_rate(decisions[Stage.SQL.value], decided),
                "rejected": counted_rate(decisions[Stage.NURTURE.value], decided),
                "disqualified": counted_rate(decisions[Stage.DISQUALIFIED.value], decided),
                "hours_to_decision": self.spread("hours", "all", SECONDS_PER_HOUR),
            },
            sla=self.sla(),
            nurture_loop=self.nurture_loop(reached[Stage.NURTURE.value]),
        )

    def sla(self) -> dict[str, int | float | None]:
        sla = self.counts["sla"]
        ended = sla["met"] + sla["breached"]
        return {
            "clocks": sum(sla.values()),
            **{name: sla[name] for name in SLA_OUTCOMES},
            "compliance": round(sla["met"] / ended, 4) if ended else None,
        }

    def nurture_loop(self, leads: int) -> dict[str, Any]:
        """The nurture loop. Every entry into nurture is one trial: it ends when the lead moves
        again, back to MQL (*recycled*) or out (disqualified), or is still open. The recycle rate
        is recycled / entries, with its Wilson interval, overall, per origin and per people's
        reason code; the days to MQL run from the entry into nurture to the move back. An entry
        that is still open counts as not recycled (yet), so recent entries pull the rate down:
        `open` says how many there are.

        `after_mql` answers whether recycled leads are worth sales' time: each stay that starts
        with an entry into MQL (the lead's first one, or one from nurture) owns what the lead
        reached until its next entry into MQL, and the shares that reached SQL and customer are
        compared between first-time and recycled MQLs."""
        outcomes: Counter[str] = Counter()
        origin_entries: Counter[str] = Counter()
        origin_recycled: Counter[str] = Counter()
        reason_entries: Counter[str] = Counter()
        reason_recycled: Counter[str] = Counter()
        for origin, reason, outcome, n in self.nurture:
            back = n if outcome == "recycled" else 0
            outcomes[outcome] += n
            origin_entries[origin] += n
            origin_recycled[origin] += back
            if reason is not None:
                reason_entries[reason] += n
                reason_recycled[reason] += back
        entries = sum(outcomes.values())
        origins = [name for name in NURTURE_ORIGINS if name != "other" or origin_entries[name]]
        after = {}
        for kind in ("first_time", "recycled"):
            mqls, still, sql, customer = self.after.get(kind, (0, 0, 0, 0))
            after[kind] = {
                "mqls": mqls,
                "open": still,
                "sql": counted_rate(sql, mqls),
                "customer": counted_rate(customer, mqls),
            }
        return {
            "entries": entries,
            "leads": leads,
            "recycled": counted_rate(outcomes["recycled"], entries),
            "disqualified": outcomes["disqualified"],
            "open": outcomes["open"],
            "days_to_mql": self.spread("nurture_days", "*", SECONDS_PER_DAY),
            "by_origin": {
                name: {
                    "entries": origin_entries[name],
                    "recycled": counted_rate(origin_recycled[name], origin_entries[name]),
                    "days_to_mql": self.spread("nurture_days", name, SECONDS_PER_DAY),
                }
                for name in origins
            },
            "by_reason": {
                reason: {"entries": count, "recycled": counted_rate(reason_recycled[reason], count)}
                for reason, count in _by_count(reason_entries).items()
            },
            "after_mql": after,
        }


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
    conditions = lead_filters(created_from, created_to, where)
    parts = _Parts()
    for row in uow.connection.execute(_sla(_moves(conditions), conditions, now)):
        parts.take(row)
    return parts.sla()


def _by_count(counts: Mapping[str, int]) -> dict[str, int]:
    """Commonest first, ties by name."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
