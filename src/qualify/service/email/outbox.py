"""The email outbox: render now, send later.

A workflow step `send_email: <template>` calls `enqueue` inside its own transaction: the template
is rendered then, with the lead's fields as they are at that moment, and one `emails` row is
written, `pending` (or `skipped` with the reason consent or the lead's data gave). The worker
sends it later (qualify.service.email.sending).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select

from qualify.adapters import schema
from qualify.domain.errors import NotFound
from qualify.service.email.links import add_open_pixel, link_key, open_url, rewrite_links, unsubscribe_url
from qualify.service.email.templates import (
    SUBJECT_MAX,
    EmailRenderError,
    EmailTemplate,
    load_template,
    render_part,
)
from qualify.settings import Settings

PENDING, SENDING, SENT, SKIPPED, FAILED, UNKNOWN = "pending", "sending", "sent", "skipped", "failed", "unknown"
STATUSES = (PENDING, SENDING, SENT, SKIPPED, FAILED, UNKNOWN)

# Why an email was not sent, as `emails.reason` says it.
REASON_ERASED = "lead erased"
REASON_DO_NOT_EMAIL = "lead has do_not_email"
REASON_NO_ADDRESS = "lead has no email address"


@dataclass(frozen=True, slots=True)
class QueuedEmail:
    id: int
    status: str
    reason: str | None


def _lead_row(conn: Connection, lead_id: int) -> Row[Any] | None:
    leads, accounts = schema.leads, schema.accounts
    statement = (
        select(
            leads,
            accounts.c.name.label("account_name"),
            accounts.c.domain.label("account_domain"),
            accounts.c.industry.label("account_industry"),
            accounts.c.employees.label("account_employees"),
            accounts.c.revenue.label("account_revenue"),
            accounts.c.country.label("account_country"),
        )
        .select_from(leads.outerjoin(accounts, accounts.c.id == leads.c.account_id))
        .where(leads.c.id == lead_id)
    )
    return conn.execute(statement).first()


def consent_problem(row: Any) -> str | None:
    """Why this lead must not be emailed now, or None. `row` has erased_at, do_not_email and email."""
    if row.erased_at is not None:
        return REASON_ERASED
    if row.do_not_email:
        return REASON_DO_NOT_EMAIL
    if not row.email:
        return REASON_NO_ADDRESS
    return None


def lead_context(row: Row[Any], unsubscribe: str) -> dict[str, Any]:
    """What a template can use: the lead's fields, its account, and the unsubscribe link.

    Plain values only (strings, numbers, dicts of them), so the sandbox has nothing of the
    application to reach through them.
    """
    m = row._mapping
    account = {
        "name": m["account_name"],
        "domain": m["account_domain"],
        "industry": m["account_industry"],
        "employees": m["account_employees"],
        "revenue": m["account_revenue"],
        "country": m["account_country"],
    }
    first, last = m["first_name"], m["last_name"]
    context = {
        name: m[name]
        for name in (
            "first_name", "last_name", "email", "title", "seniority", "department", "country", "source", "channel",
            "owner", "stage", "persona", "fit_grade",
        )
    }  # fmt: skip
    context.update(
        name=" ".join(p for p in (first, last) if p) or None,
        fit_score=round(float(m["fit_score"] or 0), 1),
        engagement_score=round(float(m["engagement_score"] or 0), 1),
        company=account["name"] or account["domain"],
        account=account,
        attributes=dict(m["attributes"] or {}),
        unsubscribe_url=unsubscribe,
    )
    return context


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None


def render_email(
    template: EmailTemplate, context: Mapping[str, Any], *, public_url: str, key: bytes, token: str
) -> RenderedEmail:
    """Render the three parts for one lead; the HTML gets tracked links and the open pixel.

    The text body keeps its links as written: it is what a careful reader checks before clicking,
    and a redirect there would be a long opaque address. Clicks are counted from the HTML part.
    """
    try:
        subject = " ".join(render_part("subject", template.subject, context).split())  # one line: no header injection
        if len(subject) > SUBJECT_MAX:
            subject = subject[: SUBJECT_MAX - 1] + "…"
        text = render_part("text", template.text, context)
        body_html = None
        if template.html is not None:
            body_html = render_part("html", template.html, context)
            body_html = add_open_pixel(rewrite_links(body_html, public_url, key, token), open_url(public_url, token))
    except EmailRenderError as error:
        raise EmailRenderError(f"template {template.name!r}: {error}") from None
    return RenderedEmail(subject, text, body_html)


def enqueue(
    conn: Connection,
    settings: Settings,
    *,
    lead_id: int,
    template: str,
    now: datetime,
    enrolment_id: int | None = None,
    step: int | None = None,
) -> QueuedEmail:
    """Render `template` for the lead now and queue it: one `emails` row, `pending`, or `skipped`
    with the reason when the lead may not or cannot be emailed (erased, do_not_email, no address).

    Raises NotFound for an unknown lead or template, and EmailRenderError when the template cannot
    be rendered for this lead: both are mistakes to fix, not a lead's choice to record. The same
    enrolment and step queue one email only: a second call returns the first row.
    """
    e = schema.emails
    if enrolment_id is not None and step is not None:
        existing = conn.execute(
            select(e.c.id, e.c.status, e.c.reason).where(e.c.enrolment_id == enrolment_id, e.c.step == step)
        ).first()
        if existing is not None:
            return QueuedEmail(existing.id, existing.status, existing.reason)
    row = _lead_row(conn, lead_id)
    if row is None:
        raise NotFound(f"no lead with id {lead_id}")
    found = load_template(conn, template)
    if found is None:
        raise NotFound(f"no email template named {template!r}")
    token = secrets.token_urlsafe(24)
    values: dict[str, Any] = {
        "token": token, "lead_id": lead_id, "enrolment_id": enrolment_id, "step": step, "template": template,
        "created_at": now, "attempts": 0, "next_attempt_at": now,
    }  # fmt: skip
    reason = consent_problem(row)
    if reason is not None:
        # Nothing rendered: a person who may not be emailed leaves no copy of an email behind.
        values.update(to_address=row.email or "", subject="", body_text="", status=SKIPPED, reason=reason)
    else:
        key = link_key(conn)
        assert key is not None
        context = lead_context(row, unsubscribe_url(settings.public_url, token))
        rendered = render_email(found, context, public_url=settings.public_url, key=key, token=token)
        values.update(
            to_address=row.email,
            subject=rendered.subject,
            body_text=rendered.text,
            body_html=rendered.html,
            status=PENDING,
            reason=None,
        )
    new_id = conn.execute(e.insert().values(**values).returning(e.c.id)).scalar_one()
    return QueuedEmail(new_id, values["status"], values["reason"])
