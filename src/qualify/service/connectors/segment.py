"""Segment's tracking API, which RudderStack speaks too: its messages as Qualify's events, profile
changes, accounts, stitched visitors and merges (docs/integrations.md).

A message is one call of the spec (`track`, `page`, `screen`, `identify`, `group`, `alias`).
`read_message` checks one and says what was wrong with the field, as the event API does;
`apply_messages` applies a batch in order, in one transaction:

- `track`, `page` and `screen` are events (`page_view`, `screen_view`, or the track's name in
  lower_snake_case, or the type `QUALIFY_SEGMENT_EVENTS` maps the name to), with their
  properties, and the campaign and page of their context;
- `identify` writes its traits on the lead (the reserved traits on its fields, the rest as
  attributes) and links its `anonymousId` to it; RudderStack's libraries send the traits in the
  context, where they are read too;
- `group` writes the traits of the group on the account of the group's domain;
- `alias` links the `previousId` to the `userId`: a visitor's anonymous events move onto the
  lead, and a lead known by the previous id is merged into the other.

The lead of a message is the email of its traits (the message's, else its context's), else its
`userId` (an email when it is one, else the lead's external id). A message with neither but an
`anonymousId` belongs to a visitor: kept, as the web snippet's page views are, until an
`identify` or `alias` names the person, then stitched onto the lead with their times.

The event id is the `messageId` (a retry of the library is a duplicate); without one it is
derived from the content. The time is the spec's: a device's clock is corrected by the skew
between the message's `sentAt` and its receipt (`timestamp = receivedAt - (sentAt -
originalTimestamp)`), `timestamp` as sent when there is no `sentAt`, the receipt without either.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from qualify.adapters import repository as repo
from qualify.domain.errors import InvalidInput, QualifyError
from qualify.domain.records import (
    Account,
    Event,
    Lead,
    account_domain_for,
    check_account,
    check_event_keys,
    derived_event_id,
    make_event,
    normalise_domain,
    normalise_email,
)
from qualify.service.imports.files import RowConverter
from qualify.service.imports.mapping import load_mapping
from qualify.service.lifecycle.events import ACCEPTED, DUPLICATE, REJECTED, ingest_events
from qualify.service.lifecycle.lead_admin import merge_leads
from qualify.service.lifecycle.leads import upsert_accounts, upsert_leads
from qualify.service.unit_of_work import UnitOfWork
from qualify.service.web_tracking.visitors import link_visitor, record_visitor_event

Kind = Literal["track", "page", "screen", "identify", "group", "alias"]
KINDS: tuple[Kind, ...] = ("track", "page", "screen", "identify", "group", "alias")
MAX_MESSAGE = 32 * 1024  # bytes of one message, as the spec limits it
MAX_BATCH = 500 * 1024  # bytes of one batch request
MAX_ID = 200
VISITOR_PREFIX = "seg-"  # a visitor of Segment's: seg- and a hash of its anonymousId
BY = "segment"

# Segment's specced event names (the Email and B2B specs) as Qualify's types; QUALIFY_SEGMENT_EVENTS
# adds to them. Any other name becomes its own type, in lower_snake_case.
EVENT_TYPES: dict[str, str] = {
    "Email Opened": "email_open",
    "Email Link Clicked": "email_click",
    "Email Bounced": "bounce",
    "Unsubscribed": "unsubscribe",
    "Demo Requested": "demo_request",
    "Quote Requested": "quote_request",
    "Form Submitted": "form_submit",
    "Webinar Attended": "webinar_attended",
    "Meeting Booked": "meeting",
    "Content Downloaded": "content_download",
}
# Traits with a field of their own on the lead (the spec's reserved traits); the rest are attributes.
_LEAD_TRAITS = {
    "firstName": "first_name",
    "first_name": "first_name",
    "lastName": "last_name",
    "last_name": "last_name",
    "title": "title",
    "country": "country",
}
_NOT_ATTRIBUTES = {"email", "name", "address", *_LEAD_TRAITS}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class Message:
    """One call of the spec, checked."""

    index: int
    kind: Kind
    event_id: str | None  # messageId (None: derived from the content)
    email: str | None
    user_id: str | None
    anonymous_id: str | None
    occurred_at: datetime
    type: str | None = None  # the event type of a track, page or screen
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    group_id: str | None = None
    previous_id: str | None = None
    device_time: datetime | None = None  # the time as the device sent it: a derived id's, stable on a retry

    @property
    def lead_key(self) -> tuple[str | None, str | None]:
        """(email, external id) of the message's lead; (None, None) for an anonymous visitor's."""
        if self.email is not None:
            return self.email, self.user_id if self.user_id and not _EMAIL.match(self.user_id) else None
        if self.user_id is not None:
            return (normalise_email(self.user_id), None) if _EMAIL.match(self.user_id) else (None, self.user_id)
        return None, None


@dataclass(frozen=True, slots=True)
class Outcome:
    index: int
    message_id: str | None
    status: Literal["accepted", "duplicate", "rejected", "stored"]
    reason: str | None = None
    field: str | None = None


def visitor_of(anonymous_id: str) -> str:
    """The visitor id of an anonymousId: any text a library makes, as a fixed-size key of its own."""
    return VISITOR_PREFIX + hashlib.sha256(anonymous_id.encode("utf-8")).hexdigest()[:40]


# --- reading ------------------------------------------------------------------------------------


def read_message(
    item: Any,
    index: int,
    *,
    received_at: datetime,
    kind: Kind | None = None,
    sent_at: Any = None,
    event_types: Mapping[str, str] = EVENT_TYPES,
    measure: bool = True,
) -> Message:
    """One message of a request, checked (`InvalidInput` naming the field). `kind` is the route's
    (a batch's messages say theirs in `type`); `sent_at` the batch's `sentAt` when the message has none.
    `measure`: hold it to `MAX_MESSAGE` (not needed where the whole request was within it)."""
    if not isinstance(item, dict):
        raise InvalidInput("a message must be a JSON object", field="")
    if measure and len(json.dumps(item, separators=(",", ":"), ensure_ascii=False, default=str).encode()) > MAX_MESSAGE:
        raise InvalidInput(f"a message may be at most {MAX_MESSAGE // 1024} KB", field="")
    said = item.get("type")
    if kind is None:
        if said not in KINDS:
            raise InvalidInput(f"type must be one of {', '.join(KINDS)}", field="type")
        kind = said
    message_id = _id(item.get("messageId"), "messageId")
    check_event_keys((), message_id)
    context = _object(item.get("context"), "context")
    traits = _object(item.get("traits"), "traits")
    context_traits = _object(context.get("traits"), "context.traits")
    email = _email(traits.get("email"), "traits.email") or _email(context_traits.get("email"), "context.traits.email")
    if kind == "identify":  # RudderStack's libraries send an identify's traits in its context alone
        traits = {**context_traits, **traits}
    user_id = _id(item.get("userId"), "userId")
    anonymous_id = _id(item.get("anonymousId"), "anonymousId")
    device_time = _device_time(item)
    occurred_at = _occurred_at(
        item, device_time, sent_at if item.get("sentAt") is None else item.get("sentAt"), received_at
    )
    properties = _object(item.get("properties"), "properties")
    event_type = None
    if kind == "track":
        name = item.get("event")
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("a track call needs its event name", field="event")
        event_type = event_types.get(name.strip()) or snake_case(name)
    elif kind in ("page", "screen"):
        event_type = f"{kind}_view"
        properties = _page(kind, item, properties, context)
    if kind in ("track", "page", "screen"):
        campaign = _object(context.get("campaign"), "context.campaign")
        if campaign.get("name") and "campaign" not in properties:
            properties["campaign"] = campaign["name"]
    group_id = _id(item.get("groupId"), "groupId")
    previous_id = _id(item.get("previousId"), "previousId")
    if kind == "group" and group_id is None:
        raise InvalidInput("a group call needs its groupId", field="groupId")
    if kind == "alias" and (previous_id is None or user_id is None):
        raise InvalidInput("an alias call needs its previousId and userId", field="previousId")
    if kind != "alias" and user_id is None and anonymous_id is None and email is None:
        raise InvalidInput("a message needs a userId or an anonymousId", field="userId")
    return Message(
        index, kind, message_id, email, user_id, anonymous_id, occurred_at, event_type, properties, traits,
        group_id, previous_id, device_time,
    )  # fmt: skip


def snake_case(name: str) -> str:
    """`Demo Requested` → `demo_requested`: an event name as a Qualify type (a-z, 0-9, _)."""
    words = re.sub(r"([a-z])([A-Z])", r"\1_\2", name.strip())
    text = re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_")
    if not text:
        raise InvalidInput(f"event name {name!r} has no letter or digit to make a type of", field="event")
    return ("e_" + text if text[0].isdigit() else text)[:64]


def _id(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput(f"{name} must be a string", field=name)
    text = str(value).strip()
    if len(text) > MAX_ID:
        raise InvalidInput(f"{name} must be at most {MAX_ID} characters", field=name)
    return text or None


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} must be an object", field=name)
    return dict(value)


def _email(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _EMAIL.match(value.strip()):
        raise InvalidInput("not an email address", field=name)
    return normalise_email(value)


def _time(value: Any, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput("must be an ISO 8601 date-time", field=name)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(f"not an ISO 8601 date-time: {value[:40]!r}", field=name) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _device_time(item: dict[str, Any]) -> datetime | None:
    return _time(item.get("originalTimestamp"), "originalTimestamp") or _time(item.get("timestamp"), "timestamp")


def _occurred_at(item: dict[str, Any], device: datetime | None, sent_at: Any, received_at: datetime) -> datetime:
    """The spec's time: the device's corrected by the skew between its `sentAt` and the receipt.
    A message relayed by Segment (a webhook destination: it carries Segment's `receivedAt`) has
    its `timestamp` corrected already, and keeps it."""
    timestamp = _time(item.get("timestamp"), "timestamp")
    if item.get("receivedAt") is not None and timestamp is not None:
        return timestamp
    sent = _time(sent_at, "sentAt")
    if device is None:
        return received_at
    if sent is None:
        return device
    try:
        return received_at - (sent - device)
    except OverflowError:
        raise InvalidInput("sentAt and the time of the message are too far apart to be dates", field="sentAt") from None


def _page(kind: str, item: dict[str, Any], properties: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """A page's (or screen's) properties: its name, and the url, path, title and referrer of the
    page the context names where the properties do not say them."""
    out = dict(properties)
    if isinstance(item.get("name"), str) and item["name"]:
        out.setdefault("name", item["name"])
    if kind == "page":
        page = _object(context.get("page"), "context.page")
        for key in ("url", "path", "title", "referrer"):
            if key not in out and isinstance(page.get(key), str) and page[key]:
                out[key] = page[key]
    return out


# --- applying -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Run:
    """What every message of one request is applied with."""

    uow: UnitOfWork
    create_unknown: bool
    now: datetime
    by: str
    traits: RowConverter | None
    may_merge: bool


def apply_messages(
    uow: UnitOfWork,
    messages: list[Message],
    *,
    create_unknown: bool = True,
    now: datetime,
    by: str = BY,
    traits: RowConverter | None = None,
    may_merge: bool = False,
) -> list[Outcome]:
    """Apply checked messages in their order; one outcome each. Runs of events for known people
    are ingested as one batch, as `POST /v1/events` does; any other message in a savepoint of its
    own, so that one rejected leaves nothing half done. `traits`: the mapping an identify's traits
    go through (`traits_mapping`), instead of the built-in conventions. `may_merge`: an alias may
    merge two existing leads (a key that may write leads; a browser's public write key may not)."""
    context = _Run(uow, create_unknown, now, by, traits, may_merge)
    outcomes: list[Outcome] = []
    run: list[tuple[Message, Event]] = []

    def flush() -> None:
        if run:
            results = ingest_events(
                uow, [e for _, e in run], create_unknown=create_unknown, now=now, by=by, accounts_later=True
            )
            for (message, event), result in zip(run, results, strict=True):
                outcomes.append(Outcome(message.index, event.event_id, result.status, result.reason, result.field))
            run.clear()

    for message in messages:
        try:
            if message.kind in ("track", "page", "screen") and message.lead_key != (None, None):
                run.append((message, _event(message, now, *message.lead_key)))
                continue
        except InvalidInput as error:
            outcomes.append(Outcome(message.index, message.event_id, REJECTED, str(error), error.field))
            continue
        flush()
        outcomes.append(_in_savepoint(context, message))
    flush()
    return sorted(outcomes, key=lambda o: o.index)


class _Undone(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


def _in_savepoint(context: _Run, message: Message) -> Outcome:
    """One message applied in a savepoint: rejected, what it wrote is undone."""
    try:
        with context.uow.connection.begin_nested():
            outcome = _HANDLERS[message.kind](context, message)
            if outcome.status == REJECTED:
                raise _Undone(outcome)
            return outcome
    except _Undone as undone:
        return undone.outcome
    except InvalidInput as error:
        return Outcome(message.index, message.event_id, REJECTED, str(error), error.field)


def _event(message: Message, now: datetime, email: str | None, external_id: str | None) -> Event:
    """The message's event for the lead (email, external id). Without a messageId its id is derived
    from what the device sent (its time as sent, not as corrected on arrival), so a retry matches."""
    assert message.type is not None
    event = make_event(
        message.event_id, message.type, message.occurred_at, email=email, external_id=external_id,
        properties=message.properties, received_at=now,
    )  # fmt: skip
    if message.event_id is None:
        basis = derived_event_id(message.type, email, external_id, message.device_time, event.properties)
        event = replace(event, event_id=basis)
    return event


def _anonymous_event(context: _Run, message: Message) -> Outcome:
    """An event of a visitor nobody has named yet: kept for the lead it turns out to be."""
    assert message.anonymous_id is not None and message.type is not None
    visitor = visitor_of(message.anonymous_id)
    # Checked as any event is (its type, its properties), named by the visitor for a derived id.
    event = _event(message, context.now, None, visitor)
    stored = record_visitor_event(
        context.uow, visitor, event.event_id, event.type, event.occurred_at, event.properties, now=context.now,
        create_unknown=context.create_unknown, prefix="", by=context.by,
    )  # fmt: skip
    status: Literal["accepted", "duplicate", "rejected", "stored"] = {
        "stored": "stored",
        "ingested": ACCEPTED,
        "duplicate": DUPLICATE,
        "dropped": REJECTED,
    }[stored.status]
    return Outcome(message.index, event.event_id, status, stored.reason, None if status != REJECTED else "anonymousId")


def _identify(context: _Run, message: Message) -> Outcome:
    email, external_id = message.lead_key
    if email is None and external_id is None:
        # Traits of someone nobody has named: nothing to keep them on until they are named.
        return Outcome(message.index, message.event_id, REJECTED, "an identify needs a userId or an email", "userId")
    if not context.create_unknown and _lead_id(context.uow, email, external_id) is None:
        reason = "no such lead, and QUALIFY_CREATE_UNKNOWN_LEADS is off"
        return Outcome(message.index, message.event_id, REJECTED, reason, "userId")
    try:
        lead = _lead_from_traits(email, external_id, message.traits, context.traits)
    except InvalidInput as error:
        return _refused_by(message, {0: error})
    written = upsert_leads(context.uow, [lead], now=context.now, by=context.by)
    if written.errors:  # the traits do not fit the lead (another external id, a field too long…)
        return _refused_by(message, written.errors)
    if message.anonymous_id is not None:
        link_visitor(
            context.uow, visitor_of(message.anonymous_id), (email, external_id), now=context.now,
            create_unknown=context.create_unknown, prefix="", by=context.by,
        )  # fmt: skip
    return Outcome(message.index, message.event_id, ACCEPTED)


def _group(context: _Run, message: Message) -> Outcome:
    traits = message.traits
    email, _ = message.lead_key
    website = traits.get("website") or traits.get("domain")
    domain = _domain(website) if isinstance(website, str) and website else account_domain_for(email)
    if domain is None:
        reason = "a group needs traits.website (or domain), or a user with a company email"
        return Outcome(message.index, message.event_id, REJECTED, reason, "traits.website")
    known = {"name", "industry", "employees", "country", "website", "domain", "address", "plan"}
    account = Account(
        domain=domain,
        name=_text(traits.get("name")),
        industry=_text(traits.get("industry")),
        employees=_count(traits.get("employees"), "traits.employees"),
        country=_text(traits.get("country") or _object(traits.get("address"), "traits.address").get("country")),
        attributes={
            "segment_group_id": message.group_id,
            **{k: v for k, v in traits.items() if k not in known},
        },
    )
    try:
        check_account(account)
    except InvalidInput as error:
        return Outcome(message.index, message.event_id, REJECTED, str(error), f"traits.{error.field}")
    written = upsert_accounts(context.uow, [account], now=context.now, by=context.by)
    if written.errors:
        return _refused_by(message, written.errors)
    return Outcome(message.index, message.event_id, ACCEPTED)


def _alias(context: _Run, message: Message) -> Outcome:
    """The previous id is the same person as the user id: a visitor's events move onto the lead;
    a lead known by the previous id is merged into the user's (by a key that may write leads)."""
    assert message.previous_id is not None and message.user_id is not None
    uow = context.uow
    email, external_id = message.lead_key
    previous = Message(message.index, "alias", None, None, message.previous_id, None, message.occurred_at)
    before = _lead_id(uow, *previous.lead_key)
    if before is None:
        link_visitor(
            uow, visitor_of(message.previous_id), (email, external_id), now=context.now,
            create_unknown=context.create_unknown, prefix="", by=context.by,
        )  # fmt: skip
        return Outcome(message.index, message.event_id, ACCEPTED)
    after = _lead_id(uow, email, external_id)
    if after == before:
        return Outcome(message.index, message.event_id, ACCEPTED)  # merged already: an alias sent again
    if not context.may_merge:
        reason = "merging two leads needs a key that may write leads; this one may only ingest"
        return Outcome(message.index, message.event_id, REJECTED, reason, "previousId")
    if after is None:
        if not context.create_unknown:
            reason = "no lead for the userId, and QUALIFY_CREATE_UNKNOWN_LEADS is off"
            return Outcome(message.index, message.event_id, REJECTED, reason, "userId")
        upsert_leads(uow, [Lead(email=email, external_id=external_id)], now=context.now, by=context.by)
        after = _lead_id(uow, email, external_id)
    try:
        merge_leads(uow, f"#{after}", f"#{before}", by=context.by, now=context.now)
    except QualifyError as error:
        return Outcome(message.index, message.event_id, REJECTED, str(error), "previousId")
    return Outcome(message.index, message.event_id, ACCEPTED)


def _refused_by(message: Message, errors: dict[int, InvalidInput]) -> Outcome:
    """A message rejected for what an upsert refused in it, the field named under its traits."""
    refused = next(iter(errors.values()))
    field = f"traits.{refused.field}" if refused.field else "traits"
    return Outcome(message.index, message.event_id, REJECTED, str(refused), field)


_HANDLERS: dict[str, Callable[[_Run, Message], Outcome]] = {
    "track": _anonymous_event,
    "page": _anonymous_event,
    "screen": _anonymous_event,
    "identify": _identify,
    "group": _group,
    "alias": _alias,
}


def traits_mapping(path: Path) -> RowConverter:
    """The leads mapping an identify's traits go through (QUALIFY_SEGMENT_TRAITS), read once per
    change of the file; its problems named with their line and key (`MappingError`)."""
    stamp = path.stat().st_mtime_ns if path.is_file() else None
    cached = _TRAITS.get(path)
    if cached is None or cached[0] != stamp:
        mapping = load_mapping(path)
        if mapping.kind != "leads":  # so that its fields are checked against a lead's when it is read
            raise InvalidInput(f"{path}: a traits mapping says `kind: leads` (its fields are a lead's)", field="kind")
        cached = _TRAITS[path] = (stamp, RowConverter(mapping, "leads", mapping.fields, source="segment"))
    return cached[1]


_TRAITS: dict[Path, tuple[int | None, RowConverter]] = {}


MAX_FLATTENED = 8  # levels of nested traits a mapping can name; deeper ones stay objects


def flattened(traits: dict[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Nested traits as the columns a mapping names: `{"company": {"name": …}}` → `company.name`."""
    out: dict[str, Any] = {}
    for key, value in traits.items():
        if isinstance(value, dict) and depth < MAX_FLATTENED:
            out.update(flattened(value, f"{prefix}{key}.", depth + 1))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _lead_from_traits(
    email: str | None, external_id: str | None, traits: dict[str, Any], mapping: RowConverter | None = None
) -> Lead:
    if mapping is not None:
        converted = mapping.convert(flattened(traits), fixed={"email": email, "external_id": external_id})
        if not isinstance(converted, Lead):
            raise InvalidInput("QUALIFY_SEGMENT_TRAITS is not a leads mapping", field="traits")
        return converted
    fields: dict[str, Any] = {}
    for trait, name in _LEAD_TRAITS.items():
        if isinstance(traits.get(trait), str) and traits[trait].strip():
            fields.setdefault(name, traits[trait].strip())
    if "first_name" not in fields and isinstance(traits.get("name"), str) and traits["name"].strip():
        first, _, last = traits["name"].strip().partition(" ")
        fields["first_name"], fields["last_name"] = first, last.strip() or None
    address = _object(traits.get("address"), "traits.address")
    if "country" not in fields and isinstance(address.get("country"), str) and address["country"].strip():
        fields["country"] = address["country"].strip()
    attributes = {k: v for k, v in traits.items() if k not in _NOT_ATTRIBUTES and v is not None}
    return Lead(email=email, external_id=external_id, attributes=attributes, **fields)


def _lead_id(uow: UnitOfWork, email: str | None, external_id: str | None) -> int | None:
    """The id of the lead an email (else an external id) names exactly, merged ones included; never
    read as `#id` or `ext:` key syntax: a stream's ids are anyone's words."""
    found = repo.lead_by_key(uow.connection, email, external_id)
    return found.id if found is not None else None


def _domain(website: str) -> str | None:
    try:
        return normalise_domain(website)
    except InvalidInput:
        raise InvalidInput(f"not a web domain: {website[:80]!r}", field="traits.website") from None


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


MAX_EMPLOYEES = 10_000_000


def _count(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput("must be a number", field=name) from None
    if not 0 <= number <= MAX_EMPLOYEES:  # inf and nan too
        raise InvalidInput(f"must be a number from 0 to {MAX_EMPLOYEES:,}", field=name)
    return int(number)
