"""Accounts, leads and events: the things Qualify scores."""

from __future__ import annotations

import re
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

_EMAIL = re.compile(
    r"^[^@\s<>(),;:\"\[\]]+@([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+)$"
)


def normalise_email(raw: str) -> str:
    """Lower-case and trim an address, refusing what is not one.

    >>> normalise_email("  Jane.Doe@ACME.com ")
    'jane.doe@acme.com'
    """
    email = raw.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise InvalidInput(f"not an email address: {raw!r}", field="email")
    return email


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


def as_utc(moment: datetime) -> datetime:
    """Refuse naive times: a time without a zone is ambiguous by hours."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(f"time has no time zone: {moment.isoformat()}", field="occurred_at")
    return moment.astimezone(UTC)


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
    event_id: str,
    type: str,
    occurred_at: datetime,
    *,
    email: str | None = None,
    external_id: str | None = None,
    properties: dict[str, Any] | None = None,
) -> Event:
    """Build a valid event or raise `InvalidInput` naming the bad field."""
    event_id = str(event_id).strip()
    if not event_id or len(event_id) > 200:
        raise InvalidInput("event_id must be 1 to 200 characters", field="event_id")
    if not _EVENT_TYPE.fullmatch(type):
        raise InvalidInput(f"event type {type!r} must be lower_snake_case (a-z, 0-9, _)", field="type")
    if email is not None:
        email = normalise_email(email)
    if external_id is not None:
        external_id = str(external_id).strip() or None
    if email is None and external_id is None:
        raise InvalidInput("an event needs the lead's email or external_id", field="email")
    return Event(
        event_id=event_id,
        type=type,
        occurred_at=as_utc(occurred_at),
        email=email,
        external_id=external_id,
        properties=dict(properties or {}),
    )
