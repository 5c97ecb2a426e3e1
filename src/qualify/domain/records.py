"""Accounts, leads and events: the things Qualify scores."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from qualify.domain.errors import InvalidInput

# A deliberately small list: the providers that make up most personal addresses.
# A model can add more with a disqualify or fit rule on `email_domain`.
FREE_MAIL_DOMAINS = frozenset(
    {
        "aol.com",
        "gmail.com",
        "googlemail.com",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "hotmail.com",
        "hotmail.co.uk",
        "hotmail.fr",
        "icloud.com",
        "live.com",
        "mac.com",
        "mail.com",
        "mail.ru",
        "me.com",
        "msn.com",
        "outlook.com",
        "proton.me",
        "protonmail.com",
        "qq.com",
        "rediffmail.com",
        "web.de",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.co.in",
        "yahoo.fr",
        "yandex.ru",
        "yandex.com",
        "zoho.com",
        "163.com",
        "126.com",
    }
)

# The person's and the company's own fields, in the order the store and the docs list them.
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

# --- limits (docs/api.md "Limits", docs/import.md) ---------------------------------------------------
# The longest text each field may hold: the widths of the store's columns, so that no value the
# checks let through is refused (PostgreSQL) or kept whole (SQLite) by the store after the fact.
LEAD_TEXT_LIMITS = {
    "email": 254,
    "external_id": 200,
    "first_name": 200,
    "last_name": 200,
    "title": 300,
    "seniority": 60,
    "department": 120,
    "country": 64,
    "source": 200,
    "channel": 200,
}
ACCOUNT_TEXT_LIMITS = {"domain": 253, "name": 300, "industry": 120, "country": 64}
MAX_EVENT_ID = 200
# Attributes (leads, accounts) and event properties are free JSON objects, bounded so that every
# engine stores them and reads them back: nesting (the object itself is level 1) and size as JSON.
MAX_DOCUMENT_DEPTH = 32
MAX_DOCUMENT_CHARS = 65_536
# Times: before 1900 is a typo or a zero date (Excel's day 0), never a lead's activity.
EARLIEST_TIME = datetime(1900, 1, 1, tzinfo=UTC)

_EMAIL = re.compile(
    r"^[^@\s<>(),;:\"\[\]]+@([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+)$"
)


def normalise_email(raw: str) -> str:
    """Lower-case and trim an address, refusing what is not one.

    >>> normalise_email("  Jane.Doe@ACME.com ")
    'jane.doe@acme.com'
    """
    email = raw.strip().lower()
    if len(email) > LEAD_TEXT_LIMITS["email"]:
        raise InvalidInput(
            f"not an email address: {len(email):,} characters, the limit is {LEAD_TEXT_LIMITS['email']}: {_cut(raw)!r}",
            field="email",
        )
    if not _EMAIL.match(email) or any(_invisible(c) for c in email):
        raise InvalidInput(f"not an email address: {raw!r}", field="email")
    return email


def _invisible(char: str) -> bool:
    """Control and format characters (NUL, zero-width space, direction marks): never in an address."""
    return unicodedata.category(char) in ("Cc", "Cf", "Co", "Cs", "Zl", "Zp", "Zs")


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# NUL and halves of surrogate pairs: PostgreSQL stores neither in text or JSON (SQLite would).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable(text: str) -> str | None:
    """Why the text cannot be stored, or None."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    what = (
        "a NUL character (\\x00)" if found.group() == "\x00" else f"half a surrogate pair (\\u{ord(found.group()):04x})"
    )
    return f"contains {what} at position {found.start() + 1}, which cannot be stored"


def check_storable(value: str | None, name: str) -> str | None:
    """A text every engine can store (no NUL, no half surrogate pair); raise `InvalidInput` naming `name`."""
    if value is not None and (problem := _unstorable(value)):
        raise InvalidInput(problem, field=name)
    return value


def check_text(value: str | None, name: str, limit: int) -> str | None:
    """A text field within its length and storable on every engine; raise `InvalidInput` naming `name`."""
    if value is not None and len(value) > limit:
        raise InvalidInput(f"{len(value):,} characters; the limit is {limit:,}: {_cut(value)!r}", field=name)
    return check_storable(value, name)


def check_document(document: dict[str, Any], name: str) -> dict[str, Any]:
    """Attributes or properties within the nesting and size limits, with no NUL in a key or a text.

    Raises `InvalidInput` naming the place, such as `properties.page.tags.3`. Walks without
    recursion, so a document nested thousands deep is refused, not a crash.
    """
    stack: list[tuple[Any, str, int]] = [(document, name, 1)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, dict | list | tuple) and depth > MAX_DOCUMENT_DEPTH:
            raise InvalidInput(f"nested deeper than {MAX_DOCUMENT_DEPTH} levels of objects and lists", field=name)
        if isinstance(value, dict):
            for key, item in value.items():
                if problem := _unstorable(str(key)):
                    raise InvalidInput(f"the key {_cut(str(key))!r} {problem}", field=where)
                stack.append((item, f"{where}.{key}", depth + 1))
        elif isinstance(value, list | tuple):
            stack.extend((item, f"{where}.{index}", depth + 1) for index, item in enumerate(value))
        elif isinstance(value, str):
            check_storable(value, where)
    size = len(json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str))
    if size > MAX_DOCUMENT_CHARS:
        biggest = max(document, key=lambda k: len(json.dumps(document[k], ensure_ascii=False, default=str)))
        raise InvalidInput(
            f"{size:,} characters as JSON; the limit for all {name} together is {MAX_DOCUMENT_CHARS:,} "
            f"({biggest!r} is the largest)",
            field=f"{name}.{biggest}",
        )
    return document


def email_domain(email: str) -> str:
    return email.rsplit("@", 1)[1]


def account_domain_for(email: str | None) -> str | None:
    """The account domain a lead belongs to, or None for free-mail addresses."""
    if not email:
        return None
    domain = email_domain(email)
    return None if domain in FREE_MAIL_DOMAINS else domain


def normalise_domain(raw: str) -> str:
    domain = raw.strip().lower()
    domain = re.sub(r"^https?://", "", domain).split("/", 1)[0]
    domain = domain.removeprefix("www.")
    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+", domain):
        raise InvalidInput(f"not a web domain: {raw!r}", field="domain")
    return domain


def merge_into(stored: Lead | Account, incoming: Lead | Account, names: tuple[str, ...]) -> bool:
    """Copy what `incoming` says onto `stored`: an empty field keeps the stored value and
    attributes merge key by key. Returns whether anything changed."""
    changed = False
    for name in names:
        value = getattr(incoming, name)
        if value is not None and value != getattr(stored, name):
            setattr(stored, name, value)
            changed = True
    merged = {**stored.attributes, **incoming.attributes}
    if merged != stored.attributes:
        stored.attributes = merged
        changed = True
    return changed


def lead_key(email: str | None, external_id: str | None) -> str:
    """How a lead is named to people: its email, else `ext:<external id>`."""
    return email if email else f"ext:{external_id}"


def as_utc(moment: datetime, name: str = "occurred_at") -> datetime:
    """Refuse naive times (a time without a zone is ambiguous by hours) and times out of range."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(f"time has no time zone: {moment.isoformat()}", field=name)
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 is in the year 10000 in UTC
        raise InvalidInput(
            f"{moment.isoformat()} is out of range: in UTC it is outside the years 1-9999", field=name
        ) from None
    if utc < EARLIEST_TIME:
        raise InvalidInput(f"{moment.isoformat()} is before {EARLIEST_TIME.year}: a typo or a zero date?", field=name)
    return utc


@dataclass(slots=True)
class Account:
    """A company, keyed by its web domain."""

    domain: str
    name: str | None = None
    industry: str | None = None
    employees: int | None = None
    revenue: float | None = None
    country: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Lead:
    """A person, keyed by normalised email or by external id."""

    email: str | None = None
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    title: str | None = None
    seniority: str | None = None
    department: str | None = None
    country: str | None = None
    source: str | None = None
    channel: str | None = None
    created_at: datetime | None = None
    do_not_email: bool | None = None  # None: not said (an update leaves the stored value)
    do_not_call: bool | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.email is not None:
            self.email = normalise_email(self.email)
        if self.external_id is not None:
            self.external_id = str(self.external_id).strip() or None
        if self.email is None and self.external_id is None:
            raise InvalidInput("a lead needs an email or an external_id", field="email")
        for name, limit in LEAD_TEXT_LIMITS.items():
            check_text(getattr(self, name), name, limit)
        if self.created_at is not None:
            self.created_at = as_utc(self.created_at, "created_at")
        check_document(self.attributes, "attributes")

    @classmethod
    def stored(cls, **values: Any) -> Lead:
        """A lead read back from the store: already normalised, so not validated again."""
        lead = cls.__new__(cls)
        get = values.get
        lead.email, lead.external_id = get("email"), get("external_id")
        lead.first_name, lead.last_name, lead.title = get("first_name"), get("last_name"), get("title")
        lead.seniority, lead.department, lead.country = get("seniority"), get("department"), get("country")
        lead.source, lead.channel, lead.created_at = get("source"), get("channel"), get("created_at")
        lead.do_not_email, lead.do_not_call = get("do_not_email"), get("do_not_call")
        lead.attributes = get("attributes") or {}
        return lead

    @property
    def account_domain(self) -> str | None:
        return account_domain_for(self.email)

    @property
    def key(self) -> str:
        return lead_key(self.email, self.external_id)


@dataclass(frozen=True, slots=True)
class Event:
    """Something a lead did or that happened to it. Immutable; `event_id` makes it idempotent."""

    event_id: str
    type: str
    occurred_at: datetime
    email: str | None = None
    external_id: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)


_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def make_event(
    event_id: str | None,
    type: str,
    occurred_at: datetime | None,
    *,
    email: str | None = None,
    external_id: str | None = None,
    properties: dict[str, Any] | None = None,
    received_at: datetime | None = None,
) -> Event:
    """Build a valid event or raise `InvalidInput` naming the bad field.

    One rule for the API and the file import (docs/events.md): a time without a zone is UTC; an
    event without `occurred_at` happened when it was received (`received_at`); one without an
    `event_id` gets one derived from its content (`derived_event_id`), so that sending it again
    is a duplicate, not a second event."""
    given = occurred_at
    if occurred_at is None:
        if received_at is None:
            raise InvalidInput("no value: an event needs its occurred_at", field="occurred_at")
        occurred_at = received_at
    elif occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    if not _EVENT_TYPE.fullmatch(type):
        raise InvalidInput(f"event type {type!r} must be lower_snake_case (a-z, 0-9, _)", field="type")
    if email is not None:
        email = normalise_email(email)
    if external_id is not None:
        external_id = check_text(str(external_id).strip() or None, "external_id", LEAD_TEXT_LIMITS["external_id"])
    if email is None and external_id is None:
        raise InvalidInput("an event needs the lead's email or external_id", field="email")
    properties = check_document(dict(properties or {}), "properties")
    if event_id is None or not str(event_id).strip():
        if event_id is not None:
            raise InvalidInput(f"event_id must be 1 to {MAX_EVENT_ID} characters", field="event_id")
        event_id = derived_event_id(type, email, external_id, given, properties)
    event_id = str(event_id).strip()
    if len(event_id) > MAX_EVENT_ID:
        raise InvalidInput(f"event_id must be 1 to {MAX_EVENT_ID} characters", field="event_id")
    check_text(event_id, "event_id", MAX_EVENT_ID)
    return Event(
        event_id=event_id,
        type=type,
        occurred_at=as_utc(occurred_at),
        email=email,
        external_id=external_id,
        properties=properties,
    )


EVENT_FIELDS = ("event_id", "type", "occurred_at", "email", "external_id", "properties")
_EVENT_FIELDS_BY_LETTERS = {name.replace("_", ""): name for name in EVENT_FIELDS}


def check_event_keys(keys: Iterable[str], event_id: object = None) -> None:
    """Refuse (InvalidInput naming it) a top-level key of an event that is one of its own fields
    written another way (`eventId`, `occurredAt`, `External-ID`): taken for a property, it would
    leave the event with a derived id or the time of receipt. And an `event_id` of the `auto-`
    ids Qualify derives: a sender could otherwise take one before the event it belongs to."""
    for key in keys:
        meant = _EVENT_FIELDS_BY_LETTERS.get(key.lower().replace("_", "").replace("-", ""))
        if meant is not None and key != meant:
            raise InvalidInput(f"did you mean {meant!r}? (other top-level keys are properties)", field=key)
    if isinstance(event_id, str) and event_id.strip().lower().startswith("auto-"):
        raise InvalidInput("may not start with 'auto-': Qualify derives those ids from the content", field="event_id")


# When a sender sent (or a relay received) an event: a retry changes them, so they are kept as
# properties but do not count in an event's derived id.
DELIVERY_TIMES = frozenset({"sentAt", "sent_at", "receivedAt", "received_at"})


def derived_event_id(
    type: str, email: str | None, external_id: str | None, occurred_at: datetime | None, properties: dict[str, Any]
) -> str:
    """`auto-` and a hash of what an event says (its type, lead, time as given and properties but
    its delivery times): the same content gives the same id, so a retry is a duplicate. Two events
    that say exactly the same without a time are one: send `occurred_at` or an `event_id` to keep
    them apart."""
    moment = None
    if occurred_at is not None:
        moment = (occurred_at if occurred_at.tzinfo else occurred_at.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    said = {key: value for key, value in properties.items() if key not in DELIVERY_TIMES}
    content = json.dumps([type, email, external_id, moment, said], sort_keys=True, default=str)
    return "auto-" + hashlib.sha256(content.encode("utf-8")).hexdigest()[:40]


def check_account(account: Account) -> Account:
    """An account whose texts and attributes are within the limits (raises `InvalidInput` naming the field).

    Not a `__post_init__`: accounts read back from the store are not checked again."""
    for name, limit in ACCOUNT_TEXT_LIMITS.items():
        check_text(getattr(account, name), name, limit)
    check_document(account.attributes, "attributes")
    return account
