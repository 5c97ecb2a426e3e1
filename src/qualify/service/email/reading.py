"""Reading the email outbox, and a lead's emails when leads are merged or erased."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, update

from qualify.adapters import schema
from qualify.domain.errors import InvalidInput
from qualify.service.email.outbox import PENDING, REASON_ERASED, SKIPPED, STATUSES


@dataclass(frozen=True, slots=True)
class EmailInfo:
    """One row of the email outbox as an operator sees it (no bodies)."""

    id: int
    lead_id: int
    template: str
    to_address: str
    subject: str
    status: str
    reason: str | None
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    sent_at: datetime | None
    last_error: str | None
    enrolment_id: int | None
    step: int | None


def list_emails(
    conn: Connection, *, status: str | None = None, lead_id: int | None = None, limit: int = 100
) -> list[EmailInfo]:
    """Emails, newest first, optionally of one status or one lead."""
    e = schema.emails
    statement = select(
        e.c.id, e.c.lead_id, e.c.template, e.c.to_address, e.c.subject, e.c.status, e.c.reason, e.c.created_at,
        e.c.attempts, e.c.next_attempt_at, e.c.sent_at, e.c.last_error, e.c.enrolment_id, e.c.step,
    ).order_by(e.c.id.desc()).limit(limit)  # fmt: skip
    if status is not None:
        if status not in STATUSES:
            raise InvalidInput(f"unknown status {status!r}; expected one of: {', '.join(STATUSES)}", field="status")
        statement = statement.where(e.c.status == status)
    if lead_id is not None:
        statement = statement.where(e.c.lead_id == lead_id)
    return [EmailInfo(**row._mapping) for row in conn.execute(statement)]


def move_lead_emails(conn: Connection, from_lead: int, to_lead: int) -> int:
    """A merge: the duplicate's emails become the kept lead's (and its tracking then scores that lead)."""
    e = schema.emails
    return int(conn.execute(update(e).where(e.c.lead_id == from_lead).values(lead_id=to_lead)).rowcount)


def forget_lead_emails(conn: Connection, lead_id: int) -> int:
    """An erasure: the lead's emails keep their status and times (for the counts) but lose the
    address, subject and bodies; those still waiting are skipped. Returns how many rows."""
    e = schema.emails
    conn.execute(
        update(e).where(e.c.lead_id == lead_id, e.c.status == PENDING).values(status=SKIPPED, reason=REASON_ERASED)
    )
    return int(
        conn.execute(
            update(e).where(e.c.lead_id == lead_id).values(to_address="", subject="", body_text="", body_html=None)
        ).rowcount
    )
