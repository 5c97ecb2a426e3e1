"""What comes back from an email: opens, clicks and unsubscribes, as events on its lead.

They go through `ingest_events`, so the active scoring model scores them:

- the open pixel (`/e/o/<token>.gif`) writes `email_open`, once per email per hour;
- a click (`/e/c/<token>?u=<url>&s=<signature>`) writes `email_click` with the url and
  `campaign` = the template, once per email, url and hour, and redirects only to a url signed
  with the workspace's link key (no open redirect);
- the unsubscribe link (`/e/u/<token>`, and the one-click POST of RFC 8058) sets the lead's
  `do_not_email` and writes `unsubscribe`, once per email.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, select, update

from qualify.adapters import schema
from qualify.domain.errors import NotFound, QualifyError
from qualify.domain.records import Event
from qualify.service.audit import record_audit
from qualify.service.email.links import InvalidLink, link_key, link_signature
from qualify.service.lifecycle.events import ingest_events
from qualify.service.unit_of_work import UnitOfWork, Workspace, retrying

log = logging.getLogger(__name__)

OPEN_WINDOW = 3600  # seconds: opens (and clicks of one url) of one email within one clock hour count once


@dataclass(frozen=True, slots=True)
class TrackedEmail:
    id: int
    lead_id: int
    template: str


def _by_token(conn: Connection, token: str) -> TrackedEmail | None:
    if not token or len(token) > 40:
        return None
    e = schema.emails
    row = conn.execute(select(e.c.id, e.c.lead_id, e.c.template).where(e.c.token == token)).first()
    return TrackedEmail(row.id, row.lead_id, row.template) if row is not None else None


def _lead_key(conn: Connection, lead_id: int) -> tuple[str | None, str | None] | None:
    """(email, external_id) that events find the lead by; None for an erased lead (no events)."""
    leads = schema.leads
    row = conn.execute(
        select(leads.c.email, leads.c.external_id, leads.c.erased_at).where(leads.c.id == lead_id)
    ).first()
    if row is None or row.erased_at is not None or not (row.email or row.external_id):
        return None
    return (row.email, None) if row.email else (None, row.external_id)


def _ingest_one(uow: UnitOfWork, email: TrackedEmail, event_id: str, kind: str, now: datetime, **props: Any) -> bool:
    """Ingest one event for the email's lead; False when it was a repeat (or the lead is erased)."""
    keys = _lead_key(uow.connection, email.lead_id)
    if keys is None:
        return False
    properties = {"campaign": email.template, "email_id": email.id, "channel": "email", **props}
    event = Event(event_id, kind, now, email=keys[0], external_id=keys[1], properties=properties)
    [outcome] = ingest_events(uow, [event], create_unknown=False, now=now, by="email")
    return outcome.status == "accepted"


def _window(now: datetime) -> int:
    return int(now.timestamp() // OPEN_WINDOW)


def record_open(workspace: Workspace, token: str, now: datetime) -> bool | None:
    """The pixel was fetched: `email_open` once per email per hour. None for an unknown token,
    False for a repeat, True when an event was written."""

    def use_case(uow: UnitOfWork) -> bool | None:
        email = _by_token(uow.connection, token)
        if email is None:
            return None
        return _ingest_one(uow, email, f"email-open:{email.id}:{_window(now)}", "email_open", now)

    return retrying(workspace, use_case)


def record_click(workspace: Workspace, token: str, url: str, signature: str, now: datetime) -> str:
    """A tracked link was followed: check its signature, write `email_click` (once per email, url
    and hour) and return where to send the reader. NotFound for an unknown token, InvalidLink
    for a url this workspace did not sign for this email.

    A failure to write the event (no active scoring model, the store busy) is logged and does not
    stop the reader: they still get where the email promised to take them.
    """
    with workspace.unit_of_work(read_only=True) as uow:
        found = _by_token(uow.connection, token)
        key = link_key(uow.connection, create=False)
    if found is None:
        raise NotFound("this link is not one of ours (unknown email)")
    if key is None or not hmac.compare_digest(link_signature(key, token, url), signature or ""):
        raise InvalidLink("this link's signature does not match its address: it was changed or forged")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidLink("only http and https addresses are followed")
    email = found
    event_id = f"email-click:{email.id}:{hashlib.sha256(url.encode()).hexdigest()[:16]}:{_window(now)}"
    try:
        retrying(workspace, lambda uow: _ingest_one(uow, email, event_id, "email_click", now, url=url))
    except QualifyError:
        log.exception("the click on email %d could not be recorded", email.id)
    return url


def unsubscribe_address(workspace: Workspace, token: str) -> str | None:
    """The address an unsubscribe link is for, partly hidden (`j…@acme.com`), for the confirmation
    page; None for an unknown token, "" when the lead has no address any more."""
    with workspace.unit_of_work(read_only=True) as uow:
        email = _by_token(uow.connection, token)
        if email is None:
            return None
        leads = schema.leads
        address = uow.connection.execute(select(leads.c.email).where(leads.c.id == email.lead_id)).scalar()
    if not address:
        return ""
    local, _, domain = str(address).partition("@")
    return f"{local[:1]}…@{domain}"


def unsubscribe(workspace: Workspace, token: str, now: datetime) -> bool:
    """Set the lead's `do_not_email` (committed first: consent is kept even if scoring fails), then
    write `unsubscribe`, once per email. False for an unknown token."""
    leads = schema.leads
    with workspace.unit_of_work() as uow:
        found = _by_token(uow.connection, token)
        if found is None:
            return False
        email = found
        changed = uow.connection.execute(
            update(leads)
            .where(leads.c.id == email.lead_id, leads.c.do_not_email.is_(False), leads.c.erased_at.is_(None))
            .values(do_not_email=True, updated_at=now)
        ).rowcount
        if changed:
            key = uow.connection.execute(
                select(leads.c.email, leads.c.external_id).where(leads.c.id == email.lead_id)
            ).one()
            record_audit(
                uow,
                actor="recipient",
                action="lead.unsubscribe",
                target=key.email or key.external_id,
                at=now,
                details={"lead_id": email.lead_id, "email_id": email.id, "template": email.template},
            )
    try:
        retrying(workspace, lambda uow: _ingest_one(uow, email, f"email-unsubscribe:{email.id}", "unsubscribe", now))
    except QualifyError:
        log.exception("the unsubscribe from email %d is kept but its event could not be recorded", email.id)
    return True
