"""Read side for one workspace: lead profiles with explanations, the lead filters the reports share,
and the engagement curve."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

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
from qualify.domain.records import ACCOUNT_FIELDS, LEAD_FIELDS, check_storable
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
    row = repo.find_lead_row(conn, key)
    if row is None:
        raise NotFound(f"no lead {key!r} (give an email, an external id, or #id)")
    record = repo.lead_from_row(row)
    assert record.id is not None
    model = uow.active_model()
    account = repo.accounts_by_id(conn, [record.account_id]).get(record.account_id) if record.account_id else None
    fit = score_fit(model, profile_values(record.lead, account))
    at = now.timestamp()
    events = repo.lead_events(conn, record.id, newest_first=False)  # in the order they were applied
    awarded = [
        AwardedEvent(
            r.occurred_at.timestamp(),
            r.type,
            r.properties,
            tuple(Award(a[0], a[1]) for a in r.awards),
        )
        for r in events
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
        # a page of them newest first, as `repo.lead_events` orders them
        for r in sorted(events, key=lambda r: (r.occurred_at, r.id), reverse=True)[
            timeline_offset : timeline_offset + timeline_limit
        ]
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
    return LeadProfile(
        lead_dict,
        account_dict,
        record.state.stage.value,
        datetime.fromtimestamp(record.state.stage_entered, now.tzinfo),
        scores,
        list(fit.contributions),
        engagement_parts,
        timeline,
        len(events),
        history,
        owner=row.owner,
        owner_rule=row.owner_rule,
        owner_assigned_at=row.owner_assigned_at,
        sla_due_at=row.sla_due_at,
        prediction=predictions.explain_lead(uow, record.id, row),
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
