"""Sending the emails that are due, through SMTP, by the leased delivery of qualify.service.delivery.

The worker calls `deliver_due` once per pass; it claims due rows (`pending` -> `sending`,
committed), re-checks consent, sends each through SMTP and records the result: `sent`, `pending`
again with a later due time (a transient failure), `failed` (a permanent one, or the last
attempt) or `skipped`.

Delivery is at most once: a row a crashed worker left in `sending` becomes `unknown` and is
never sent again, so nobody gets the same email twice (docs/email.md says why).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from sqlalchemy import Connection, select, update

from qualify.adapters import schema
from qualify.adapters.smtp import ERROR_TEXT, SmtpResult, SmtpSender, SmtpUnavailable
from qualify.service import delivery
from qualify.service.email.links import unsubscribe_url
from qualify.service.email.outbox import (
    FAILED,
    PENDING,
    REASON_ERASED,
    SENDING,
    SENT,
    SKIPPED,
    UNKNOWN,
    consent_problem,
)
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

log = logging.getLogger(__name__)

# The outbox as leased delivery sees it: claimed rows are `sending`, and one whose claim ran out
# becomes `unknown`, never due again (at most once).
QUEUE = delivery.Queue(schema.emails, pending=PENDING, done=SENT, dead=FAILED, leased=SENDING, abandoned=UNKNOWN)
ABANDONED_REASON = "the worker stopped while sending; not sent again"


@dataclass(slots=True)
class EmailSummary:
    """What one `deliver_due` did: sent, put back for a retry, failed for good, skipped at send
    time, found abandoned in `sending` (now `unknown`), and held because sending is off."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0
    unknown: int = 0
    held: int = 0

    @property
    def busy(self) -> bool:
        return any((self.sent, self.retrying, self.failed, self.skipped, self.unknown))


@dataclass(frozen=True, slots=True)
class EmailClaim:
    """A due email this worker has claimed (`sending`), with what it needs to send it."""

    id: int
    token: str
    lead_id: int
    template: str
    to_address: str
    subject: str
    body_text: str
    body_html: str | None
    attempts: int


def mark_abandoned(conn: Connection, now: datetime) -> int:
    """Rows whose claim ran out while `sending` (the worker died mid-send) become `unknown`.

    Whether the server took such an email cannot be known; sending it again could mail the
    person twice, so it is not sent again (at most once)."""
    return delivery.expire_leases(conn, QUEUE, now, reason=ABANDONED_REASON)


def claim_due(conn: Connection, now: datetime, *, limit: int, lease: float) -> list[EmailClaim]:
    """Take up to `limit` due pending emails for this worker (`sending` until `now + lease`).

    FOR UPDATE SKIP LOCKED: two workers on PostgreSQL claim different rows; SQLite has one
    writer at a time, which serialises the claims anyway.
    """
    ids = delivery.claim(conn, QUEUE, now, limit=limit, lease=lease)
    if not ids:
        return []
    e = schema.emails
    rows = conn.execute(
        select(
            e.c.id, e.c.token, e.c.lead_id, e.c.template, e.c.to_address, e.c.subject, e.c.body_text, e.c.body_html,
            e.c.attempts,
        )
        .where(e.c.id.in_(ids), e.c.status == SENDING)
        .order_by(e.c.next_attempt_at, e.c.id)
    )  # fmt: skip
    return [EmailClaim(*row) for row in rows]


def message_id(token: str, sender: str) -> str:
    """The Message-ID of an email: the same on every attempt (so a receiver can tell a repeat), and
    not the token itself (which opens the tracking links)."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "qualify.invalid"
    return f"<qualify.{hashlib.sha256(token.encode()).hexdigest()[:24]}@{domain}>"


def build_message(claim: EmailClaim, settings: Settings, now: datetime) -> EmailMessage:
    """The MIME message: text (and HTML as an alternative), with the one-click unsubscribe headers."""
    assert settings.email_from is not None
    message = EmailMessage()
    message["From"] = settings.email_from
    message["To"] = claim.to_address
    message["Subject"] = claim.subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(claim.token, settings.email_from)
    message["List-Unsubscribe"] = f"<{unsubscribe_url(settings.public_url, claim.token)}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(claim.body_text)
    if claim.body_html is not None:
        message.add_alternative(claim.body_html, subtype="html")
    return message


def _consent_now(conn: Connection, lead_id: int) -> str | None:
    """Consent as it is at send time: an unsubscribe since the email was queued stops it."""
    leads = schema.leads
    row = conn.execute(
        select(leads.c.erased_at, leads.c.do_not_email, leads.c.email).where(leads.c.id == lead_id)
    ).first()
    return REASON_ERASED if row is None else consent_problem(row)


_RESULTS: dict[str, delivery.Result] = {"sent": "done", "transient": "failed", "permanent": "refused"}


def _record(conn: Connection, claim: EmailClaim, outcome: SmtpResult, settings: Settings, now: datetime) -> str:
    """Write one attempt's result; returns the status the email has now."""
    assert settings.email_from is not None or outcome.status != "sent"
    return delivery.record_attempt(
        conn,
        QUEUE,
        claim.id,
        attempts=claim.attempts,
        result=_RESULTS[outcome.status],
        now=now,
        policy=delivery.email_policy(settings),
        values={"last_error": outcome.error},
        done={"sent_at": now, "message_id": message_id(claim.token, settings.email_from or ""), "reason": None},
        refused={"reason": "refused by the SMTP server"},
        exhausted=lambda attempts: {"reason": f"gave up after {attempts} attempts"},
    )


def _count(summary: EmailSummary, status: str) -> None:
    if status == SENT:
        summary.sent += 1
    elif status == FAILED:
        summary.failed += 1
    elif status == SKIPPED:
        summary.skipped += 1
    else:
        summary.retrying += 1


def count_due(conn: Connection, now: datetime) -> int:
    return delivery.count_due(conn, QUEUE, now)


def deliver_due(workspace: Workspace, now: datetime, *, limit: int = 100) -> EmailSummary:
    """Send up to `limit` emails due at `now` through SMTP; one pass of the worker.

    Claims are committed before anything is sent, and each result is committed on its own, so
    a crash loses at most the record of one send (that email becomes `unknown`, never resent).
    With no `QUALIFY_SMTP_HOST` (or no `QUALIFY_EMAIL_FROM`) sending is off: the due emails stay
    pending, counted as `held`, and a warning says why.
    """
    settings = workspace.settings
    summary = EmailSummary()
    with workspace.unit_of_work() as uow:
        summary.unknown = mark_abandoned(uow.connection, now)
    if summary.unknown:
        log.warning(
            "%d email(s) were left in 'sending' by a stopped worker: now 'unknown', not resent", summary.unknown
        )
    if not settings.smtp_host or not settings.email_from:
        with workspace.unit_of_work(read_only=True) as uow:
            summary.held = count_due(uow.connection, now)
        if summary.held:
            missing = "QUALIFY_SMTP_HOST" if not settings.smtp_host else "QUALIFY_EMAIL_FROM"
            log.warning("sending email is off (%s is not set): %d email(s) wait as pending", missing, summary.held)
        return summary
    with workspace.unit_of_work() as uow:
        claims = claim_due(uow.connection, now, limit=limit, lease=delivery.email_policy(settings).lease(limit))
    if not claims:
        return summary
    untouched = [claim.id for claim in claims]  # claimed, and not yet on their way to the server
    try:
        with SmtpSender(settings) as sender:
            _send_claims(workspace, sender, claims, untouched, summary, now)
    except BaseException:
        _release(workspace, untouched, now)
        raise
    return summary


def _send_claims(
    workspace: Workspace,
    sender: SmtpSender,
    claims: list[EmailClaim],
    untouched: list[int],
    summary: EmailSummary,
    now: datetime,
) -> None:
    settings = workspace.settings
    e = schema.emails
    unavailable: str | None = None
    for claim in claims:
        with workspace.unit_of_work() as uow:
            reason = _consent_now(uow.connection, claim.lead_id)
            if reason is not None:
                uow.connection.execute(
                    update(e).where(e.c.id == claim.id).values(status=SKIPPED, reason=f"at send time: {reason}")
                )
        untouched.remove(claim.id)
        if reason is not None:
            summary.skipped += 1
            continue
        outcome = SmtpResult("transient", unavailable)
        if unavailable is None:
            try:
                message = build_message(claim, settings, now)
            except (ValueError, TypeError) as error:  # an address or subject no message can carry
                outcome = SmtpResult("permanent", f"cannot build the message: {error}"[:ERROR_TEXT])
            else:
                try:
                    outcome = sender.send(message, claim.to_address)
                except SmtpUnavailable as error:
                    # No session at all: the rest of the claims wait too, without a connection attempt each.
                    unavailable = str(error)
                    outcome = SmtpResult("transient", unavailable)
                    log.warning("cannot use the SMTP server %s; the emails will be retried", unavailable)
        with workspace.unit_of_work() as uow:
            status = _record(uow.connection, claim, outcome, settings, now)
        _count(summary, status)


def _release(workspace: Workspace, ids: list[int], now: datetime) -> None:
    """After an error mid-pass: claims that never reached the SMTP server go back to pending, due
    now, rather than waiting to become `unknown` (best effort: with the store down they will)."""
    if not ids:
        return
    try:
        with workspace.unit_of_work() as uow:
            delivery.release(uow.connection, QUEUE, ids, now)
    except Exception:
        log.exception("could not put %d claimed email(s) back to pending", len(ids))
