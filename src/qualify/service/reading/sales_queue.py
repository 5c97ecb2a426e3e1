"""The sales queue: MQLs waiting for a decision, highest score first, each with three reasons.

Read in a few queries for the whole page (not lead by lead): the leads with their accounts, the
reason of their MQL move, and either the active predictive model's strongest contributions (one
batch explanation) or the largest engagement awards (one read of their events).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, literal, select

from qualify.adapters import schema
from qualify.domain.engagement import Award, AwardedEvent, EngagementState, explain_engagement
from qualify.domain.lifecycle import Stage
from qualify.service.predictions import serving as predictions
from qualify.service.reading.lead_list import display_name
from qualify.service.unit_of_work import UnitOfWork, utcnow

REASONS = 3


@dataclass
class QueueRow:
    id: int
    name: str
    email: str | None
    company: str
    stage: str
    grade: str
    fit: float
    engagement: float
    probability: float | None
    owner: str | None
    sla_due_at: datetime | None
    mql_since: datetime | None = None  # when it entered its stage (an MQL's time waiting)
    reasons: list[str] = field(default_factory=list)
    reasons_as_of: datetime | None = None  # the predictive reasons are that instant's, not now's


_leads = schema.leads
# The queue's orders: best first, the SLA due soonest (none last), the newest MQL, the likeliest.
SORTS: dict[str, tuple[ColumnElement[Any], ...]] = {
    "score": ((_leads.c.fit_score + _leads.c.engagement_score).desc(),),
    "due": (_leads.c.sla_due_at.is_(None), _leads.c.sla_due_at.asc()),
    "newest": (_leads.c.stage_entered_at.desc(),),
    "probability": (func.coalesce(_leads.c.probability, literal(-1.0)).desc(),),
}


def _waiting(owner: str | None, grade: str | None) -> list[ColumnElement[bool]]:
    """The MQLs the queue holds: not erased, of `owner` and of `grade` when given."""
    out = [_leads.c.erased_at.is_(None), _leads.c.stage == Stage.MQL.value]
    if owner is not None:
        out.append(_leads.c.owner == owner)
    if grade:
        out.append(_leads.c.fit_grade == grade)
    return out


def queue_owners(uow: UnitOfWork) -> list[str]:
    """The reps who have MQLs waiting, by name (the queue's owner filter)."""
    owner = _leads.c.owner
    rows = uow.connection.execute(
        select(owner).where(*_waiting(None, None), owner.is_not(None)).distinct().order_by(owner)
    ).scalars()
    return [o for o in rows if o]


def count_queue(uow: UnitOfWork, *, owner: str | None = None, grade: str | None = None) -> int:
    """How many MQLs wait (of `owner`, of `grade`), every page together."""
    return int(uow.connection.execute(select(func.count()).where(*_waiting(owner, grade))).scalar() or 0)


def sales_queue(
    uow: UnitOfWork,
    *,
    owner: str | None = None,
    ids: list[int] | None = None,
    limit: int = 50,
    offset: int = 0,
    sort: str = "score",
    grade: str | None = None,
    now: datetime | None = None,
) -> list[QueueRow]:
    """MQLs (of `owner`, or everyone's; of `grade`) in the `sort` order (`SORTS`), a page of
    `limit` from `offset`; or the leads `ids` whatever their stage (a row after a decision)."""
    now = now or utcnow()
    leads, accounts = schema.leads, schema.accounts
    query = (
        select(
            leads.c.id,
            leads.c.first_name,
            leads.c.last_name,
            leads.c.email,
            leads.c.external_id,
            leads.c.stage,
            leads.c.fit_grade,
            leads.c.fit_score,
            leads.c.engagement_state,
            leads.c.probability,
            leads.c.probability_at,
            leads.c.owner,
            leads.c.sla_due_at,
            leads.c.stage_entered_at,
            accounts.c.name.label("account_name"),
            accounts.c.domain,
        )
        .select_from(leads.outerjoin(accounts, leads.c.account_id == accounts.c.id))
        .where(leads.c.erased_at.is_(None))
    )
    if ids is not None:
        query = query.where(leads.c.id.in_(ids))
    else:
        order = SORTS.get(sort, SORTS["score"])
        query = query.where(*_waiting(owner, grade)).order_by(*order, leads.c.id).limit(limit).offset(offset)
    rows = uow.connection.execute(query).all()
    at = now.timestamp()
    out = [
        QueueRow(
            id=r.id,
            name=display_name(r.first_name, r.last_name, r.email, r.external_id, r.id),
            email=r.email,
            company=r.account_name or r.domain or "",
            stage=r.stage,
            grade=r.fit_grade,
            fit=r.fit_score,
            engagement=round(EngagementState.from_json(r.engagement_state).value_at(at), 2),
            probability=r.probability,
            owner=r.owner,
            sla_due_at=r.sla_due_at,
            mql_since=r.stage_entered_at,
        )
        for r in rows
    ]
    _add_reasons(uow, out, {r.id: r.probability_at for r in rows if r.probability is not None}, at)
    return out


def _add_reasons(uow: UnitOfWork, rows: list[QueueRow], scored: dict[int, datetime], at: float) -> None:
    if not rows:
        return
    ids = [row.id for row in rows]
    h = schema.stage_history
    why: dict[int, str] = {}
    for lead_id, reason in uow.connection.execute(
        select(h.c.lead_id, h.c.reason)
        .where(h.c.lead_id.in_(ids), h.c.to_stage == Stage.MQL.value)
        .order_by(h.c.at, h.c.id)
    ):
        if reason:
            why[lead_id] = reason  # the latest MQL move's
    more: dict[int, list[str]] = defaultdict(list)
    found = predictions.active_predictor(uow) if scored else None
    if found is not None:
        people = predictions.subjects(uow, scored.keys(), scored)
        for person, explanation in zip(people, found.explain(people), strict=True):
            more[person.lead_id] = [part.words for part in explanation.top(REASONS)[0]]
    else:
        model = uow.active_model()
        e = schema.events
        awarded: dict[int, list[AwardedEvent]] = defaultdict(list)
        for lead_id, occurred, kind, properties, awards in uow.connection.execute(
            select(e.c.lead_id, e.c.occurred_at, e.c.type, e.c.properties, e.c.awards).where(e.c.lead_id.in_(ids))
        ):
            if awards:
                awarded[lead_id].append(
                    AwardedEvent(occurred.timestamp(), kind, properties, tuple(Award(a[0], a[1]) for a in awards))
                )
        for lead_id, events in awarded.items():
            parts = sorted(explain_engagement(model, events, at), key=lambda c: -c.points)
            more[lead_id] = [part.text for part in parts[:REASONS]]
    for row in rows:
        row.reasons = ([why[row.id]] if row.id in why else []) + more.get(row.id, [])
        row.reasons = row.reasons[:REASONS]
        if found is not None and row.id in scored:
            row.reasons_as_of = scored[row.id]
