"""Lists of leads: filters, sorting and keyset (cursor) pagination that stays stable under writes."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, literal, or_, select

from qualify.adapters import schema
from qualify.domain.errors import InvalidInput
from qualify.domain.lifecycle import Stage
from qualify.domain.records import check_storable
from qualify.domain.scoring_model import GRADES

_leads = schema.leads
# Sorts are descending unless asked otherwise, then by id so that ties have a fixed order. A lead
# with no probability sorts as -1, one with no event by its creation: keys are never NULL, so
# the keyset comparison of the next page holds.
SORTS: dict[str, ColumnElement[Any]] = {
    "score": (_leads.c.fit_score + _leads.c.engagement_score),
    "fit": _leads.c.fit_score,
    "engagement": _leads.c.engagement_score,
    "probability": func.coalesce(_leads.c.probability, literal(-1.0)),
    "created": _leads.c.created_at,
    "updated": _leads.c.updated_at,
    "activity": func.coalesce(_leads.c.last_event_at, _leads.c.created_at),
}
_TIME_SORTS = ("created", "updated", "activity")
MAX_SEARCH = 200


@dataclass
class LeadFilter:
    """What to list. Scores are as last scored (`qualify score` or the latest event)."""

    stage: str | None = None
    grade: str | None = None
    persona: str | None = None
    owner: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    updated_from: datetime | None = None
    updated_to: datetime | None = None
    # Words to find in the name, email, external id, title or company (each word somewhere).
    search: str | None = None
    segment: str | None = None
    source: str | None = None
    campaign: str | None = None  # the `campaign` of the lead's first event that has one (first touch)
    min_probability: float | None = None
    max_probability: float | None = None
    active_from: datetime | None = None  # the lead's newest event
    active_to: datetime | None = None
    ids: tuple[int, ...] | None = None  # only these leads (a CRM push reads its leads' rows so)
    sort: str = "score"
    ascending: bool = False
    limit: int = 50
    offset: int = 0
    cursor: str | None = None


def list_leads(uow: Any, wanted: LeadFilter) -> list[dict[str, Any]]:
    """Leads matching the filter, best first; `score` is fit + engagement."""
    return list_page(uow, wanted)[0]


def list_page(uow: Any, wanted: LeadFilter) -> tuple[list[dict[str, Any]], str | None]:
    """One page and the cursor of the next one (None when this is the last)."""
    if wanted.sort not in SORTS:
        raise InvalidInput(f"unknown sort {wanted.sort!r}; expected one of: {', '.join(SORTS)}", field="sort")
    key = SORTS[wanted.sort]
    accounts = schema.accounts
    order = (key.asc(), _leads.c.id.desc()) if wanted.ascending else (key.desc(), _leads.c.id)
    statement = (
        select(
            _leads.c.id,
            _leads.c.email,
            _leads.c.external_id,
            _leads.c.first_name,
            _leads.c.last_name,
            _leads.c.title,
            accounts.c.name.label("account"),
            _leads.c.stage,
            _leads.c.stage_entered_at,
            _leads.c.owner,
            _leads.c.fit_score,
            _leads.c.fit_grade,
            _leads.c.persona,
            _leads.c.engagement_score,
            _leads.c.scored_at,
            _leads.c.probability,
            _leads.c.probability_at,
            _leads.c.predictive_version,
            _leads.c.created_at,
            _leads.c.updated_at,
            _leads.c.last_event_at,
            _leads.c.source,
            accounts.c.domain.label("account_domain"),
            key.label("sort_value"),
        )
        .select_from(_leads.outerjoin(accounts, _leads.c.account_id == accounts.c.id))
        .where(*_conditions(wanted, uow.connection.dialect.name))
        .order_by(*order)
        .limit(wanted.limit + 1)
    )
    if wanted.cursor:
        value, last_id = _decode(wanted.cursor, _cursor_kind(wanted), timed=wanted.sort in _TIME_SORTS)
        if wanted.ascending:
            statement = statement.where(or_(key > value, and_(key == value, _leads.c.id < last_id)))
        else:
            statement = statement.where(or_(key < value, and_(key == value, _leads.c.id > last_id)))
    elif wanted.offset:
        statement = statement.offset(wanted.offset)
    rows = [dict(r._mapping) for r in uow.connection.execute(statement)]
    more = len(rows) > wanted.limit
    rows = rows[: wanted.limit]
    for row in rows:
        row["score"] = round(row["fit_score"] + row["engagement_score"], 2)
    following = _encode(rows[-1]["sort_value"], rows[-1]["id"], _cursor_kind(wanted)) if more and rows else None
    for row in rows:
        del row["sort_value"]
    return rows, following


def count_leads(uow: Any, wanted: LeadFilter) -> int:
    """How many leads the filter matches, all pages together."""
    accounts = schema.accounts
    counted = (
        select(func.count())
        .select_from(_leads.outerjoin(accounts, _leads.c.account_id == accounts.c.id))
        .where(*_conditions(wanted, uow.connection.dialect.name))
    )
    return int(uow.connection.execute(counted).scalar() or 0)


def _cursor_kind(wanted: LeadFilter) -> str:
    """What a cursor is made for: its sort and direction (a cursor of another is refused)."""
    return f"{wanted.sort}:asc" if wanted.ascending else wanted.sort


def like_pattern(word: str) -> str:
    """A LIKE pattern finding `word` anywhere, its own % and _ taken literally."""
    return "%" + word.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def search_conditions(text: str, fields: tuple[Any, ...], dialect: str) -> list[ColumnElement[bool]]:
    """Each word of `text` (at most 8) somewhere in one of `fields`, whatever its case; `%` and
    `_` are themselves. SQLite's own LIKE ignores case already (ASCII, as its lower() does), and is
    2–3× faster than lower() on every field; PostgreSQL uses ILIKE."""
    if len(text) > MAX_SEARCH:
        raise InvalidInput(f"{len(text):,} characters; a search is at most {MAX_SEARCH}", field="search")
    out: list[ColumnElement[bool]] = []
    for word in text.split()[:8]:
        pattern = like_pattern(word)
        if dialect == "sqlite":
            out.append(or_(*(field.like(pattern, escape="\\") for field in fields)))
        else:
            out.append(or_(*(field.ilike(pattern, escape="\\") for field in fields)))
    return out


def _searched_fields() -> tuple[Any, ...]:
    accounts = schema.accounts
    return (
        _leads.c.email,
        _leads.c.person_email,
        _leads.c.external_id,
        _leads.c.first_name,
        _leads.c.last_name,
        _leads.c.title,
        accounts.c.name,
        accounts.c.domain,
    )


def _conditions(wanted: LeadFilter, dialect: str = "") -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = [_leads.c.erased_at.is_(None)]
    if wanted.ids is not None:
        out.append(_leads.c.id.in_(wanted.ids))
    for name in ("stage", "grade", "persona", "owner", "search", "segment", "source", "campaign"):
        # Values are bound as parameters, never spliced into SQL; but PostgreSQL refuses a text
        # holding NUL outright, so it is answered as the bad input it is, on every engine alike.
        check_storable(getattr(wanted, name), name)
    if wanted.stage:
        if wanted.stage not in {s.value for s in Stage}:
            raise InvalidInput(
                f"unknown stage {wanted.stage!r}; expected one of: {', '.join(s.value for s in Stage)}", field="stage"
            )
        out.append(_leads.c.stage == wanted.stage)
    if wanted.grade:
        if wanted.grade.upper() not in GRADES:
            raise InvalidInput(f"unknown grade {wanted.grade!r}; expected one of: {', '.join(GRADES)}", field="grade")
        out.append(_leads.c.fit_grade == wanted.grade.upper())
    score = SORTS["score"]
    for column, value, above in (
        (_leads.c.persona, wanted.persona, None),
        (_leads.c.owner, wanted.owner, None),
        (score, wanted.min_score, True),
        (score, wanted.max_score, False),
        (_leads.c.created_at, wanted.created_from, True),
        (_leads.c.created_at, wanted.created_to, False),
        (_leads.c.updated_at, wanted.updated_from, True),
        (_leads.c.updated_at, wanted.updated_to, False),
        (_leads.c.source, wanted.source, None),
        (_leads.c.probability, wanted.min_probability, True),
        (_leads.c.probability, wanted.max_probability, False),
        (_leads.c.last_event_at, wanted.active_from, True),
        (_leads.c.last_event_at, wanted.active_to, False),
    ):
        if value is None:
            continue
        out.append(column == value if above is None else (column >= value if above else column < value))
    if wanted.search and wanted.search.strip():
        out += search_conditions(wanted.search, _searched_fields(), dialect)
    if wanted.campaign:
        from qualify.service.reading.queries import first_campaigns

        first = first_campaigns()
        out.append(_leads.c.id.in_(select(first.c.lead_id).where(first.c.campaign == wanted.campaign)))
    if wanted.segment:
        members = schema.segment_members
        out.append(exists().where(members.c.lead_id == _leads.c.id, members.c.segment == wanted.segment))
    return out


def _encode(value: Any, lead_id: int, sort: str) -> str:
    shown = value.isoformat() if isinstance(value, datetime) else value
    raw = json.dumps([sort, shown, lead_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, sort: str, *, timed: bool) -> tuple[Any, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        made_for, value, lead_id = json.loads(base64.urlsafe_b64decode(padded))
        if made_for != sort or not isinstance(lead_id, int):
            raise ValueError("cursor of another sort")
        if timed:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                raise ValueError("a time without a zone")
            return moment, lead_id
        return float(value), lead_id
    except (ValueError, TypeError, json.JSONDecodeError):
        raise InvalidInput(
            "not a cursor this list gave out (or one for another sort): start again without it", field="cursor"
        ) from None


def display_name(first: str | None, last: str | None, email: str | None, external_id: str | None, lead_id: int) -> str:
    """What a page calls a lead: its name, else its email, external id or #id."""
    return " ".join(p for p in (first, last) if p) or email or external_id or f"#{lead_id}"


def names_of(uow: Any, lead_ids: list[int]) -> dict[int, str]:
    """`display_name` of each lead."""
    rows = uow.connection.execute(
        select(_leads.c.first_name, _leads.c.last_name, _leads.c.email, _leads.c.external_id, _leads.c.id).where(
            _leads.c.id.in_(sorted(set(lead_ids)))
        )
    )
    return {row.id: display_name(*row) for row in rows}
