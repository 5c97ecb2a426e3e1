"""The CRM port: what the sync asks of a CRM, whichever vendor answers (HubSpot, Salesforce, ...).

A CRM client pulls an object's records changed since a cursor, page by page, and writes values
onto records in batches. Everything vendor-specific (the official client, paging, rate limits,
error bodies) stays in the vendor's module (`crm_hubspot`, `crm_salesforce`); the sync
(qualify.service.connectors.crm) sees only this module. A third CRM (Pipedrive, Odoo) is one more
module with a class that has the `CrmClient` methods, one line in `VENDORS`, its credentials in
the settings, and its default sync mapping in examples/crm/.

Records come flat: a property or field name to its value, a related record's fields under dotted
names (`Contact.Email`), so that an import mapping (docs/import.md) reads them like a file's row.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from qualify.domain.errors import QualifyError

if TYPE_CHECKING:
    from qualify.settings import Settings

# name -> "module:Class"; the module is imported only when that CRM is used (its client is large).
VENDORS = {
    "hubspot": "qualify.adapters.crm_hubspot:HubSpotClient",
    "salesforce": "qualify.adapters.crm_salesforce:SalesforceClient",
}
ERROR_TEXT = 300  # characters of a CRM's error kept in a push's `last_error`


class CrmError(QualifyError):
    """A CRM call that failed. `retryable`: a later attempt may succeed (a 429, a 5xx, a timeout);
    `retry_after`: seconds the CRM asked to wait; `auth`: the credentials were refused."""

    def __init__(
        self, message: str, *, retryable: bool = False, retry_after: float | None = None, auth: bool = False
    ) -> None:
        super().__init__(message[:ERROR_TEXT])
        self.message = message[:ERROR_TEXT]
        self.retryable = retryable
        self.retry_after = retry_after
        self.auth = auth


@dataclass(frozen=True, slots=True)
class Page:
    """One page of an object's changed records, oldest change first, and the cursor after it: the
    newest modification time on the page, as the CRM writes it (pulled again from there, so a
    record changed in the same instant as the cursor is never missed)."""

    records: list[dict[str, Any]]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A field Qualify writes on the CRM's records: its name, and its type for creating it."""

    name: str
    label: str
    type: str  # "number" | "text" | "datetime"


@dataclass(frozen=True, slots=True)
class PushItem:
    """Values to write on one person's record: found by `record_id` (the CRM's id, when the lead
    came from the CRM) or else by `email`."""

    lead_id: int
    record_id: str | None
    email: str | None
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PushResult:
    """What became of one `PushItem`: written (with the record's id), or refused with the reason
    (`retryable`: the CRM may take it later)."""

    lead_id: int
    record_id: str | None = None
    error: str | None = None
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class Account:
    """What `CrmClient.check` learnt: whom the credentials belong to, and the CRM's notes."""

    description: str
    notes: list[str] = field(default_factory=list)


class CrmClient(Protocol):
    """A CRM as the sync uses it. `people` is the object pushed to (HubSpot `contacts`,
    Salesforce `Lead`)."""

    name: str
    people: str
    id_field: str  # the field of a pulled record that holds its id
    push_limit: int  # records one push request may carry

    def check(self) -> Account: ...

    def pull(self, obj: str, fields: Sequence[str], since: str | None, dated: Sequence[str] = ()) -> Iterator[Page]:
        """The records changed at or after `since`, oldest change first, page by page, with `fields`
        (and `<field>@at` for each of `dated` where the CRM keeps when the field took its value)."""
        ...

    def ensure_fields(self, obj: str, fields: Sequence[FieldSpec], *, create: bool) -> list[str]: ...

    def push(self, obj: str, items: Sequence[PushItem]) -> list[PushResult]: ...

    def close(self) -> None: ...


def open_client(vendor: str, settings: Settings, **options: Any) -> CrmClient:
    """The client of `vendor`, with its credentials from `settings`; `CrmError` when they are missing."""
    try:
        target = VENDORS[vendor]
    except KeyError:
        raise CrmError(f"unknown CRM {vendor!r}; Qualify connects to: {', '.join(VENDORS)}") from None
    module, _, name = target.partition(":")
    client: CrmClient = getattr(importlib.import_module(module), name).from_settings(settings, **options)
    return client


def behind(cursor: str, seconds: float, *, floor: str | None = None) -> str:
    """A cursor `seconds` earlier (ISO-8601, UTC), never before `floor`: the next pull starts a
    little before the newest change seen, for records the CRM made visible late.

    >>> behind("2026-12-06T21:00:00.000Z", 120)
    '2026-12-06T20:58:00+00:00'
    """
    moment = _instant(cursor) - timedelta(seconds=seconds)
    if floor is not None and moment < _instant(floor):
        return floor
    return moment.isoformat()


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A record with its related records' fields under dotted names (`{"Contact": {"Email": x}}`
    becomes `{"Contact.Email": x}`), without the CRM's `attributes` bookkeeping.

    >>> flatten({"Id": "1", "attributes": {"type": "Opportunity"}, "Contact": {"Email": "a@b.co"}})
    {'Id': '1', 'Contact.Email': 'a@b.co'}
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "attributes":
            continue
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
