"""What the dashboard's pages read (entrypoints/web): the funnel page's report, weekly entries and
filter choices, and the insights page's rejection reasons; plain data for the templates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select

from qualify.adapters import schema
from qualify.service.reading.funnel import FunnelReport, funnel
from qualify.service.reading.queries import FILTERS, first_campaigns, lead_filters
from qualify.service.unit_of_work import UnitOfWork

WEEKS = 12  # the weekly entries shown on the funnel page


@dataclass(frozen=True, slots=True)
class FunnelView:
    """The funnel page: the funnel of the leads chosen, their MQL and SQL entries per week, and the
    values each filter can take."""

    report: FunnelReport
    weekly: list[dict[str, Any]]  # {week: Monday (ISO date), mql: n, sql: n}, oldest first
    choices: dict[str, list[str]]  # filter name → its values in the store, sorted


def funnel_view(
    uow: UnitOfWork,
    *,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    where: Mapping[str, str] | None = None,
) -> FunnelView:
    """The funnel of the leads created in [created_from, created_to) that hold `where`'s values
    (source, channel, persona, owner, campaign: first touch), with the page's other parts."""
    report = funnel(uow, created_from=created_from, created_to=created_to, where=where)
    weekly = weekly_entries(uow, lead_filters(created_from, created_to, where))
    return FunnelView(report, weekly, filter_choices(uow))


def weekly_entries(uow: UnitOfWork, conditions: list[ColumnElement[bool]]) -> list[dict[str, Any]]:
    """New MQLs and SQLs per ISO week of the leads the conditions keep (the last 12 weeks)."""
    h, leads = schema.stage_history, schema.leads
    query = (
        select(h.c.to_stage, h.c.at)
        .select_from(h.join(leads, leads.c.id == h.c.lead_id))
        .where(h.c.to_stage.in_(("mql", "sql")), *conditions)
    )
    weeks: dict[str, dict[str, int]] = {}
    for stage, at in uow.connection.execute(query):
        monday = (at - timedelta(days=at.weekday())).date().isoformat()
        weeks.setdefault(monday, {"mql": 0, "sql": 0})[stage] += 1
    return [{"week": week, **counts} for week, counts in sorted(weeks.items())[-WEEKS:]]


def filter_choices(uow: UnitOfWork) -> dict[str, list[str]]:
    """The values of each funnel filter, sorted: the distinct ones in the store (the campaign: of
    first touches), and for the persona the active model's personas (every lead is scored with it)."""
    leads = schema.leads
    columns: dict[str, Any] = {name: leads.c[name] for name in FILTERS if name not in ("campaign", "persona")}
    columns["campaign"] = first_campaigns().c.campaign
    out = {name: _distinct(uow, column) for name, column in columns.items()}
    out["persona"] = model_personas(uow)
    return {name: out[name] for name in FILTERS}


def model_personas(uow: UnitOfWork) -> list[str]:
    """The active scoring model's personas, sorted: what a lead's persona can be."""
    return sorted(p.name for p in uow.active_model().fit.personas)


def _distinct(uow: UnitOfWork, column: Any, limit: int | None = None) -> list[str]:
    """The distinct values of `column` in the store, sorted, empty ones left out."""
    query = select(column).where(column.is_not(None)).distinct().order_by(column).limit(limit)
    return [v for v in uow.connection.execute(query).scalars() if v]


def list_choices(uow: UnitOfWork) -> dict[str, list[str]]:
    """The values the lead list's filters offer: owners and sources in the store, the active
    model's personas, and the segments defined (each list sorted, at most 500)."""
    leads = schema.leads
    out = {name: _distinct(uow, leads.c[name], 500) for name in ("owner", "source")}
    out["persona"] = model_personas(uow)
    segments = schema.segments
    out["segment"] = list(uow.connection.execute(select(segments.c.name).order_by(segments.c.name)).scalars())
    return out


def rejection_reasons(uow: UnitOfWork) -> list[tuple[str, int]]:
    """Why people sent MQLs back to nurture (a rejection's reason code) and how often, commonest first."""
    h = schema.stage_history
    rows = uow.connection.execute(
        select(h.c.reason, func.count())
        .where(h.c.actor == "user", h.c.from_stage == "mql", h.c.to_stage == "nurture", h.c.reason.is_not(None))
        .group_by(h.c.reason)
        .order_by(func.count().desc(), h.c.reason)
    ).all()
    return [(reason, count) for reason, count in rows]
