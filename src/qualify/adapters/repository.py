"""Rows in, domain objects out: the store's queries, in SQLAlchemy Core for speed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, or_, select, update

from qualify.adapters import schema
from qualify.domain.engagement import EngagementState
from qualify.domain.evaluator import LeadState
from qualify.domain.lifecycle import Stage
from qualify.domain.records import Account, Lead

# Stay below every engine's limit on bound parameters in one statement.
CHUNK = 500

LEAD_FIELDS = (
    "email",
    "external_id",
    "first_name",
    "last_name",
    "title",
    "seniority",
    "department",
    "country",
    "source",
    "channel",
    "do_not_email",
    "do_not_call",
)
ACCOUNT_FIELDS = ("name", "industry", "employees", "revenue", "country")


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(slots=True)
class LeadRecord:
    """A stored lead with its scoring state, as the use cases change it."""

    id: int | None
    lead: Lead
    account_id: int | None
    created_at: datetime
    state: LeadState
    model_version: str | None = None
    changed: bool = False


def lead_from_row(row: Row[Any]) -> LeadRecord:
    m = row._mapping
    lead = Lead(
        email=m["email"],
        external_id=m["external_id"],
        first_name=m["first_name"],
        last_name=m["last_name"],
        title=m["title"],
        seniority=m["seniority"],
        department=m["department"],
        country=m["country"],
        source=m["source"],
        channel=m["channel"],
        created_at=m["created_at"],
        do_not_email=m["do_not_email"],
        do_not_call=m["do_not_call"],
        attributes=dict(m["attributes"] or {}),
    )
    state = LeadState(
        stage=Stage(m["stage"]),
        stage_entered=m["stage_entered_at"].timestamp(),
        fit=m["fit_score"],
        grade=m["fit_grade"],
        persona=m["persona"],
        engagement=EngagementState.from_json(m["engagement_state"]),
        last_event=m["last_event_at"].timestamp() if m["last_event_at"] else None,
    )
    return LeadRecord(m["id"], lead, m["account_id"], m["created_at"], state, m["model_version"])


def lead_values(record: LeadRecord, *, scored_at: datetime, now: datetime) -> dict[str, Any]:
    """The row for `record`; engagement_score is its value at `scored_at`."""
    lead, state = record.lead, record.state
    values: dict[str, Any] = {name: getattr(lead, name) for name in LEAD_FIELDS}
    values["do_not_email"] = bool(lead.do_not_email)
    values["do_not_call"] = bool(lead.do_not_call)
    values.update(
        attributes=lead.attributes,
        account_id=record.account_id,
        created_at=record.created_at,
        updated_at=now,
        stage=state.stage.value,
        stage_entered_at=datetime.fromtimestamp(state.stage_entered, scored_at.tzinfo),
        persona=state.persona,
        fit_score=state.fit,
        fit_grade=state.grade,
        engagement_score=state.engagement_at(scored_at.timestamp()),
        engagement_state=state.engagement.to_json(),
        scored_at=scored_at,
        last_event_at=datetime.fromtimestamp(state.last_event, scored_at.tzinfo)
        if state.last_event is not None
        else None,
        model_version=record.model_version,
    )
    return values


def find_leads(conn: Connection, emails: Iterable[str], external_ids: Iterable[str]) -> list[LeadRecord]:
    out: list[LeadRecord] = []
    for column, keys in (
        (schema.leads.c.email, sorted(set(emails))),
        (schema.leads.c.external_id, sorted(set(external_ids))),
    ):
        for part in chunks(keys):
            out += [lead_from_row(r) for r in conn.execute(select(schema.leads).where(column.in_(part)))]
    return out


def find_lead(conn: Connection, key: str) -> LeadRecord | None:
    """A lead by email, external id, or `#<id>`."""
    leads = schema.leads
    if key.startswith("#") and key[1:].isdigit():
        condition = leads.c.id == int(key[1:])
    else:
        condition = or_(leads.c.email == key.strip().lower(), leads.c.external_id == key.strip())
    row = conn.execute(select(leads).where(condition)).first()
    return lead_from_row(row) if row else None


def insert_leads(conn: Connection, records: list[LeadRecord], *, scored_at: datetime, now: datetime) -> None:
    if not records:
        return
    rows = [lead_values(r, scored_at=scored_at, now=now) for r in records]
    ids = (
        conn.execute(schema.leads.insert().returning(schema.leads.c.id, sort_by_parameter_order=True), rows)
        .scalars()
        .all()
    )
    for record, new_id in zip(records, ids, strict=True):
        record.id = new_id
        record.changed = False


def update_leads(conn: Connection, records: list[LeadRecord], *, scored_at: datetime, now: datetime) -> None:
    if not records:
        return
    rows = []
    for record in records:
        values = lead_values(record, scored_at=scored_at, now=now)
        values["b_id"] = record.id
        rows.append(values)
        record.changed = False
    statement = update(schema.leads).where(schema.leads.c.id == bindparam("b_id"))
    conn.execute(statement, rows)


def account_from_row(row: Row[Any]) -> Account:
    m = row._mapping
    return Account(
        domain=m["domain"],
        name=m["name"],
        industry=m["industry"],
        employees=m["employees"],
        revenue=m["revenue"],
        country=m["country"],
        attributes=dict(m["attributes"] or {}),
    )


def find_accounts(conn: Connection, domains: Iterable[str]) -> dict[str, tuple[int, Account]]:
    out: dict[str, tuple[int, Account]] = {}
    for part in chunks(sorted(set(domains))):
        for row in conn.execute(select(schema.accounts).where(schema.accounts.c.domain.in_(part))):
            out[row.domain] = (row.id, account_from_row(row))
    return out


def accounts_by_id(conn: Connection, ids: Iterable[int]) -> dict[int, Account]:
    out: dict[int, Account] = {}
    for part in chunks(sorted(set(ids))):
        for row in conn.execute(select(schema.accounts).where(schema.accounts.c.id.in_(part))):
            out[row.id] = account_from_row(row)
    return out


def account_values(account: Account) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(account, name) for name in ACCOUNT_FIELDS}
    values["domain"] = account.domain
    values["attributes"] = account.attributes
    return values


def insert_accounts(conn: Connection, accounts: list[Account], now: datetime) -> list[int]:
    if not accounts:
        return []
    rows = [{**account_values(a), "created_at": now, "updated_at": now} for a in accounts]
    statement = schema.accounts.insert().returning(schema.accounts.c.id, sort_by_parameter_order=True)
    return list(conn.execute(statement, rows).scalars().all())


def update_accounts(conn: Connection, accounts: list[tuple[int, Account]], now: datetime) -> None:
    if not accounts:
        return
    rows = [{**account_values(a), "updated_at": now, "b_id": i} for i, a in accounts]
    conn.execute(update(schema.accounts).where(schema.accounts.c.id == bindparam("b_id")), rows)


def existing_event_ids(conn: Connection, event_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    column = schema.events.c.event_id
    for part in chunks(list(event_ids)):
        found.update(conn.execute(select(column).where(column.in_(part))).scalars())
    return found


def insert_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(schema.events.insert(), rows)


def insert_history(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(schema.stage_history.insert(), rows)


def awards_between(conn: Connection, lead_id: int, start: datetime, end: datetime) -> list[list[Any]]:
    """The awards of a lead's events in [start, end): for per-day caps of late events."""
    e = schema.events
    rows = conn.execute(
        select(e.c.awards).where(e.c.lead_id == lead_id, e.c.occurred_at >= start, e.c.occurred_at < end)
    )
    return [award for (awards,) in rows for award in awards]


def lead_events(
    conn: Connection,
    lead_id: int,
    *,
    limit: int | None = None,
    offset: int = 0,
    newest_first: bool = True,
) -> list[Row[Any]]:
    e = schema.events
    order = (e.c.occurred_at.desc(), e.c.id.desc()) if newest_first else (e.c.id,)
    statement = select(e).where(e.c.lead_id == lead_id).order_by(*order).offset(offset)
    if limit is not None:
        statement = statement.limit(limit)
    return list(conn.execute(statement))


def count_events(conn: Connection, lead_id: int) -> int:
    e = schema.events
    return int(conn.execute(select(func.count()).select_from(e).where(e.c.lead_id == lead_id)).scalar_one())


def lead_history(conn: Connection, lead_id: int) -> list[Row[Any]]:
    h = schema.stage_history
    return list(conn.execute(select(h).where(h.c.lead_id == lead_id).order_by(h.c.at, h.c.id)))
