"""Web tracking: page views of anonymous visitors, and their stitching onto a lead when one identifies.

A visitor is a random id that the snippet (`/t/qualify.js`) keeps in the browser. Until it
identifies (a form with an email), its page views wait in `visitor_events`; identifying ingests
them onto the lead through the ordinary event use case, with their original times and a stable
event id (`web:<browser event id>`), and marks them stitched, in the same transaction as the
link — so a retried identification or a replayed page view never counts twice. After that, the
visitor's page views go straight onto its lead.

Times are the server's receive time: a browser's clock can be off by hours, and engagement decay
and funnel times must not depend on it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import Connection, delete, func, insert, select, update

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.adapters.repository import LeadRecord
from qualify.domain.errors import InvalidInput
from qualify.domain.records import Event, Lead, normalise_email
from qualify.service.lifecycle.events import ACCEPTED, DUPLICATE, ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.unit_of_work import UnitOfWork, utcnow

# --- limits (documented in docs/tracking.md) ---------------------------------------------------
VISITOR_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"  # the snippet makes 32 hex characters
EVENT_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
MAX_URL = 2048
MAX_TITLE = 300
MAX_NAME = 100
MAX_FORM = 100
MAX_BODY = 16 * 1024  # bytes of one request
# A visitor that never identifies cannot fill the store: beyond this, its page views are dropped.
# It also bounds the work (and the transaction) of stitching one visitor.
MAX_ANONYMOUS_EVENTS = 500

EVENT_PREFIX = "web:"  # event ids on leads: web:<the id the browser made>
_VISITOR = re.compile(VISITOR_PATTERN)
_EVENT_ID = re.compile(EVENT_ID_PATTERN)
# Query parameters never kept in a page's URL: a form that submits by GET puts its fields there.
_PERSONAL_PARAMETERS = frozenset(
    [
        "email",
        "e_mail",
        "mail",
        "name",
        "full_name",
        "first_name",
        "firstname",
        "fname",
        "given_name",
        "last_name",
        "lastname",
        "lname",
        "surname",
        "family_name",
        "phone",
        "tel",
        "mobile",
        "password",
    ]
)
# Query parameters copied into their own properties: `campaign` is what first-touch attribution reads.
_UTM = {"utm_campaign": "campaign", "utm_source": "utm_source", "utm_medium": "utm_medium"}

PageViewStatus = Literal["stored", "ingested", "duplicate", "dropped"]
IdentifyStatus = Literal["identified", "unknown_lead"]


@dataclass(frozen=True, slots=True)
class PageView:
    """One page view, as the browser reported it (checked by `page_view`)."""

    visitor: str
    event_id: str
    url: str
    title: str | None = None
    referrer: str | None = None


@dataclass(frozen=True, slots=True)
class Identification:
    """A visitor saying who it is: a form with an email was submitted (checked by `identification`)."""

    visitor: str
    event_id: str
    email: str
    first_name: str | None = None
    last_name: str | None = None
    url: str | None = None
    title: str | None = None
    form: str | None = None


@dataclass(frozen=True, slots=True)
class PageViewOutcome:
    status: PageViewStatus
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class IdentifyOutcome:
    status: IdentifyStatus
    lead_id: int | None
    stitched: int  # anonymous page views ingested onto the lead by this call
    relinked: bool = False  # the visitor was another lead's until now


# --- validation --------------------------------------------------------------------------------


def check_visitor(value: str) -> str:
    if not isinstance(value, str) or not _VISITOR.match(value):
        raise InvalidInput("visitor must be 16 to 64 characters of A-Z, a-z, 0-9, _ and -", field="visitor")
    return value


def check_event_id(value: str) -> str:
    if not isinstance(value, str) or not _EVENT_ID.match(value):
        raise InvalidInput("event_id must be 8 to 64 characters of A-Z, a-z, 0-9, _ and -", field="event_id")
    return value


def clean_url(value: str, field: str = "url") -> str:
    """An absolute http(s) URL without its fragment, and without query parameters that carry
    personal data: a value with an email address in it, or a field named like a person's (a form
    that submits by GET puts its fields in the next page's URL; they are no page's identity)."""
    if len(value) > MAX_URL:
        raise InvalidInput(f"{field} is longer than {MAX_URL} characters", field=field)
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"{field} must be an absolute http(s) URL", field=field)
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if "@" not in v and k.lower().replace("-", "_") not in _PERSONAL_PARAMETERS]
    cleaned = urlencode(kept) if len(kept) != len(query) else parts.query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, cleaned, ""))


def _text(value: str | None, field: str, limit: int) -> str | None:
    if value is None:
        return None
    value = " ".join(value.split())  # titles and names arrive with newlines and runs of spaces
    if len(value) > limit:
        raise InvalidInput(f"{field} is longer than {limit} characters", field=field)
    return value or None


def page_view(visitor: str, event_id: str, url: str, title: str | None = None, referrer: str | None = None) -> PageView:
    """A checked page view, or `InvalidInput` naming the bad field."""
    return PageView(
        visitor=check_visitor(visitor),
        event_id=check_event_id(event_id),
        url=clean_url(url),
        title=_text(title, "title", MAX_TITLE),
        # A referrer is often empty (typed URL, strict referrer policy): that is not an error.
        referrer=clean_url(referrer, "referrer") if referrer else None,
    )


def identification(
    visitor: str,
    event_id: str,
    email: str,
    *,
    first_name: str | None = None,
    last_name: str | None = None,
    url: str | None = None,
    title: str | None = None,
    form: str | None = None,
) -> Identification:
    """A checked identification, or `InvalidInput` naming the bad field."""
    return Identification(
        visitor=check_visitor(visitor),
        event_id=check_event_id(event_id),
        email=normalise_email(email),
        first_name=_text(first_name, "first_name", MAX_NAME),
        last_name=_text(last_name, "last_name", MAX_NAME),
        url=clean_url(url) if url else None,
        title=_text(title, "title", MAX_TITLE),
        form=_text(form, "form", MAX_FORM),
    )


def page_properties(url: str | None, title: str | None, referrer: str | None = None) -> dict[str, Any]:
    """The event properties of a page: url (what the scoring model matches), title, referrer, and
    the campaign of its UTM parameters."""
    properties: dict[str, Any] = {}
    if url:
        properties["url"] = url
        for key, value in parse_qsl(urlsplit(url).query):
            if key in _UTM and value and _UTM[key] not in properties:
                properties[_UTM[key]] = value[:200]
    if title:
        properties["title"] = title
    if referrer:
        properties["referrer"] = referrer
    return properties


# --- use cases ---------------------------------------------------------------------------------


def record_page_view(
    uow: UnitOfWork, view: PageView, *, now: datetime | None = None, create_unknown: bool = True
) -> PageViewOutcome:
    """Store a page view of an anonymous visitor, or ingest it onto the lead of an identified one.

    Idempotent by the browser's event id: a replay answers `duplicate` and changes nothing.
    """
    now = now or utcnow()
    properties = page_properties(view.url, view.title, view.referrer)
    return record_visitor_event(
        uow, view.visitor, view.event_id, "page_view", now, properties, now=now, create_unknown=create_unknown
    )


def record_visitor_event(
    uow: UnitOfWork,
    visitor_id: str,
    event_id: str,
    type: str,
    occurred_at: datetime,
    properties: dict[str, Any],
    *,
    now: datetime,
    create_unknown: bool = True,
    prefix: str = EVENT_PREFIX,
    by: str = "web",
) -> PageViewOutcome:
    """An event of an anonymous visitor (a page view, or any event a tracking library sends):
    kept until the visitor identifies, or ingested onto its lead (id `prefix` + `event_id`) once
    it has. Idempotent by `event_id`."""
    conn = uow.connection
    table = schema.visitor_events
    if conn.execute(select(table.c.id).where(table.c.event_id == event_id)).first() is not None:
        return PageViewOutcome("duplicate", "event_id already recorded")
    visitor = _visitor_for_update(conn, visitor_id, now)
    if visitor.lead_id is not None:
        lead = _lead_ref(conn, visitor.lead_id)
        if lead is None:
            # Its lead was erased: the person's traces are gone, and later visits are not collected.
            return PageViewOutcome("dropped", "the visitor's lead was erased")
        event = Event(prefix + event_id, type, occurred_at, *lead, properties=properties)
        [outcome] = ingest_events(uow, [event], create_unknown=create_unknown, now=now, by=by, accounts_later=True)
        if outcome.status == ACCEPTED:
            return PageViewOutcome("ingested")
        return PageViewOutcome("duplicate" if outcome.status == DUPLICATE else "dropped", outcome.reason)
    waiting = conn.execute(
        select(func.count()).select_from(table).where(table.c.visitor_id == visitor_id, table.c.stitched_at.is_(None))
    ).scalar_one()
    if waiting >= MAX_ANONYMOUS_EVENTS:
        return PageViewOutcome("dropped", f"the visitor has {MAX_ANONYMOUS_EVENTS} events waiting already")
    conn.execute(
        insert(table).values(
            visitor_id=visitor_id, event_id=event_id, type=type, occurred_at=occurred_at, properties=properties
        )
    )
    return PageViewOutcome("stored")


def identify(
    uow: UnitOfWork, who: Identification, *, now: datetime | None = None, create_unknown: bool = True
) -> IdentifyOutcome:
    """Link the visitor to the lead of `who.email` (created when unknown, if `create_unknown`) and
    stitch its anonymous page views onto that lead, in this one transaction.

    The page views keep their original times and get the event id `web:<browser event id>`; the
    form submit itself is an event too (`form_submit`, at `now`). Rows ingested, or found already
    ingested, are marked stitched, so a retry finds nothing left to do and double counts nothing.

    A visitor that identifies with another email than before moves to the newest lead: its later
    page views go there; what was stitched onto the earlier lead stays there (it was that person's
    browsing as far as anyone could tell then).
    """
    now = now or utcnow()
    submit = page_properties(who.url, who.title)
    if who.form:
        submit["form"] = who.form
    # What the form says of the person is anyone's word: kept on the submit as it was sent, and put
    # on the lead only where the lead has nothing yet (`_fill_profile`).
    submit.update({f"submitted_{k}": v for k, v in (("first_name", who.first_name), ("last_name", who.last_name)) if v})
    form_submit = Event(EVENT_PREFIX + who.event_id, "form_submit", now, who.email, properties=submit)
    outcome, waiting, record = _stitch(
        uow, who.visitor, (who.email, None), [form_submit], now, create_unknown, EVENT_PREFIX, "web"
    )
    if record is not None:
        _fill_profile(uow, record.lead, who, waiting, now)
    return outcome


def link_visitor(
    uow: UnitOfWork,
    visitor_id: str,
    lead: tuple[str | None, str | None],
    *,
    now: datetime,
    create_unknown: bool = True,
    prefix: str = EVENT_PREFIX,
    by: str = "web",
) -> IdentifyOutcome:
    """Link a visitor to the lead named by (email, external id) and stitch the events it recorded
    anonymously onto that lead (ids `prefix` + theirs), in this one transaction."""
    return _stitch(uow, visitor_id, lead, [], now, create_unknown, prefix, by)[0]


def _stitch(
    uow: UnitOfWork,
    visitor_id: str,
    lead: tuple[str | None, str | None],
    also: list[Event],
    now: datetime,
    create_unknown: bool,
    prefix: str,
    by: str,
) -> tuple[IdentifyOutcome, Sequence[Any], LeadRecord | None]:
    """The visitor's waiting events and `also` ingested onto the lead, the waiting ones marked
    stitched and the visitor linked to the lead; with the waiting rows and the lead's record."""
    conn = uow.connection
    visitor = _visitor_for_update(conn, visitor_id, now)
    table = schema.visitor_events
    waiting = conn.execute(
        select(table.c.id, table.c.event_id, table.c.type, table.c.occurred_at, table.c.properties)
        .where(table.c.visitor_id == visitor_id, table.c.stitched_at.is_(None))
        .order_by(table.c.occurred_at, table.c.id)
    ).all()
    events = [
        Event(prefix + row.event_id, row.type, row.occurred_at, *lead, properties=dict(row.properties))
        for row in waiting
    ]
    outcomes = ingest_events(uow, [*events, *also], create_unknown=create_unknown, now=now, by=by, accounts_later=True)
    record = repo.lead_by_key(conn, *lead)  # after ingestion: it may have just been created
    if record is None or record.id is None:
        return IdentifyOutcome("unknown_lead", None, 0), waiting, None
    done = [row.id for row, outcome in zip(waiting, outcomes, strict=False) if outcome.status in (ACCEPTED, DUPLICATE)]
    for part in repo.chunks(done):
        conn.execute(update(table).where(table.c.id.in_(part)).values(stitched_at=now))
    relinked = visitor.lead_id is not None and visitor.lead_id != record.id
    conn.execute(
        update(schema.visitors)
        .where(schema.visitors.c.id == visitor_id)
        .values(
            lead_id=record.id,
            identified_at=now if visitor.lead_id != record.id else visitor.identified_at,
            last_seen_at=now,
        )
    )
    stitched = sum(outcome.status == ACCEPTED for outcome in outcomes[: len(waiting)])
    return IdentifyOutcome("identified", record.id, stitched, relinked), waiting, record


def forget_visitors(uow: UnitOfWork, lead_id: int) -> int:
    """Delete the visitors linked to a lead and everything they recorded (for erasure): the
    browser keeps its random id, but it no longer names anything. Returns the visitors deleted."""
    conn = uow.connection
    ids = list(conn.execute(select(schema.visitors.c.id).where(schema.visitors.c.lead_id == lead_id)).scalars())
    for part in repo.chunks(ids):
        conn.execute(delete(schema.visitor_events).where(schema.visitor_events.c.visitor_id.in_(part)))
        conn.execute(delete(schema.visitors).where(schema.visitors.c.id.in_(part)))
    return len(ids)


def move_visitors(uow: UnitOfWork, from_lead: int, to_lead: int) -> int:
    """Point a merged-away lead's visitors at the lead it was merged into (for merging): their
    later page views land there, and the lead row can be deleted. Returns the visitors moved."""
    table = schema.visitors
    moved = uow.connection.execute(update(table).where(table.c.lead_id == from_lead).values(lead_id=to_lead))
    return int(moved.rowcount)


# --- helpers -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Visitor:
    lead_id: int | None
    identified_at: datetime | None


def _visitor_for_update(conn: Connection, visitor: str, now: datetime) -> _Visitor:
    """The visitor's row, created on first sight and locked until commit: a page view and an
    identification of the same visitor take turns, so none is stored anonymously after the
    identification has stitched (a racing insert of a new visitor fails and is retried)."""
    table = schema.visitors
    found = conn.execute(
        update(table)
        .where(table.c.id == visitor)
        .values(last_seen_at=now)
        .returning(table.c.lead_id, table.c.identified_at)
    ).first()
    if found is not None:
        return _Visitor(found.lead_id, found.identified_at)
    conn.execute(insert(table).values(id=visitor, first_seen_at=now, last_seen_at=now))
    return _Visitor(None, None)


def _lead_ref(conn: Connection, lead_id: int) -> tuple[str | None, str | None] | None:
    """(email, external id) of a lead that still has one; None for an erased lead."""
    leads = schema.leads
    row = conn.execute(
        select(leads.c.email, leads.c.external_id, leads.c.erased_at).where(leads.c.id == lead_id)
    ).first()
    if row is None or row.erased_at is not None or (row.email is None and row.external_id is None):
        return None
    return row.email, row.external_id


def _fill_profile(uow: UnitOfWork, stored: Lead, who: Identification, waiting: Sequence[Any], now: datetime) -> None:
    """Names from the form where the lead has none, and a source for a lead that has none (a lead
    the form just created): the first page view's utm_source, else "website". A public form never
    replaces what a trusted source (an import, the API, a person) set: anyone may post it with
    anyone's email, and names go into outgoing email."""
    first_source = next((row.properties.get("utm_source") for row in waiting if row.properties.get("utm_source")), None)
    first_name = None if stored.first_name else who.first_name
    last_name = None if stored.last_name else who.last_name
    source = None if stored.source else (first_source or "website")
    if not (first_name or last_name or source):
        return
    lead = Lead(email=who.email, first_name=first_name, last_name=last_name, source=source)
    upsert_leads(uow, [lead], now=now, by="web")
