"""Workflow email against a real store and a real SMTP server on loopback (aiosmtpd): rendering,
consent, delivery with retries, and the opens, clicks and unsubscribes that come back."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from qualify.adapters import schema
from qualify.domain.errors import InvalidInput, NotFound
from qualify.domain.records import Account, Lead
from qualify.entrypoints.api.app import create_app
from qualify.service.email.links import add_open_pixel, link_signature, rewrite_links
from qualify.service.email.outbox import REASON_DO_NOT_EMAIL, REASON_ERASED, REASON_NO_ADDRESS, enqueue
from qualify.service.email.reading import forget_lead_emails, list_emails
from qualify.service.email.sending import claim_due, deliver_due
from qualify.service.email.templates import (
    EmailRenderError,
    EmailTemplate,
    list_templates,
    load_template,
    save_templates,
    template_problems,
)
from qualify.service.lifecycle.lead_admin import erase_lead
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

NOW = datetime.now(UTC).replace(microsecond=0)
PUBLIC = "https://track.acme.example"
ACME = Account(domain="acme.com", name="Acme", industry="software", employees=800, country="US")

WELCOME = EmailTemplate(
    name="welcome",
    subject="Hi {{ first_name }}, news for {{ company }}",
    text="Hello {{ first_name }},\n\nPricing: https://acme.example/pricing\n\nUnsubscribe: {{ unsubscribe_url }}\n",
    html=(
        "<html><body>\n"
        "<p>Hello {{ first_name }} ({{ title }}),</p>\n"
        '<p><a class="cta" href="https://acme.example/pricing?plan=pro&amp;seats={{ attributes.seats }}">Pricing</a>\n'
        '<a href="mailto:sales@acme.example">Write to us</a></p>\n'
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n'
        "</body></html>\n"
    ),
)


# --- a real SMTP server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Inbox:
    """An aiosmtpd handler that keeps what it receives, or refuses recipients with `refuse`."""

    received: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    refuse: str | None = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def with_settings(workspace: Workspace, port: int | None, **changes: Any) -> Workspace:
    """The same store, with SMTP settings pointing at the loopback server (none: sending off)."""
    values: dict[str, Any] = {
        "database_url": workspace.settings.database_url,
        "public_url": PUBLIC,
        "email_from": "Acme Marketing <news@acme.example>",
        "smtp_security": "none",
        "smtp_timeout": 5,
    }
    if port is not None:
        values.update(smtp_host="127.0.0.1", smtp_port=port)
    values.update(changes)
    return Workspace(Settings(**values), workspace.engine, pipeline=workspace.pipeline)


# --- helpers ------------------------------------------------------------------------------------------


def add_lead(workspace: Workspace, email: str | None = "jane@acme.com", **fields: Any) -> int:
    values: dict[str, Any] = {
        "email": email,
        "first_name": "Jane",
        "last_name": "Doe",
        "title": "VP <Marketing>",
        "seniority": "vp",
        "attributes": {"seats": 25},
        "created_at": NOW - timedelta(days=3),
    }
    values.update(fields)
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(**values)], accounts=[ACME], now=NOW - timedelta(days=3))
        leads = schema.leads
        key = leads.c.email == email if email else leads.c.external_id == values["external_id"]
        return int(uow.connection.execute(select(leads.c.id).where(key)).scalar_one())


def queue(workspace: Workspace, lead_id: int, template: str = "welcome", now: datetime = NOW) -> Any:
    with workspace.unit_of_work() as uow:
        return enqueue(uow.connection, workspace.settings, lead_id=lead_id, template=template, now=now)


def email_row(workspace: Workspace, email_id: int) -> Any:
    with workspace.unit_of_work(read_only=True) as uow:
        return uow.connection.execute(select(schema.emails).where(schema.emails.c.id == email_id)).one()


def lead_row(workspace: Workspace, lead_id: int) -> Any:
    with workspace.unit_of_work(read_only=True) as uow:
        return uow.connection.execute(select(schema.leads).where(schema.leads.c.id == lead_id)).one()


def stored_events(workspace: Workspace, kind: str) -> list[Any]:
    e = schema.events
    with workspace.unit_of_work(read_only=True) as uow:
        return list(uow.connection.execute(select(e).where(e.c.type == kind).order_by(e.c.id)))


def save(workspace: Workspace, *templates: EmailTemplate) -> None:
    with workspace.unit_of_work() as uow:
        save_templates(uow.connection, templates or [WELCOME], NOW)


def local(url: str) -> str:
    """A tracking url as the test client asks for it: its path and query."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC, url
    return parts.path + (f"?{parts.query}" if parts.query else "")


def html_links(html: str) -> list[str]:
    import re

    return re.findall(r'href="([^"]*)"', html)


# --- templates -----------------------------------------------------------------------------------------


def test_templates_are_saved_replaced_listed_and_checked(workspace: Workspace) -> None:
    save(workspace, WELCOME, EmailTemplate("follow-up", "Still there, {{ first_name }}?", "Text only."))
    with workspace.unit_of_work(read_only=True) as uow:
        assert [t.name for t in list_templates(uow.connection)] == ["follow-up", "welcome"]
        assert load_template(uow.connection, "welcome") == WELCOME
        assert load_template(uow.connection, "nope") is None
    changed = EmailTemplate("welcome", "Welcome, {{ name }}", "Body")
    save(workspace, changed)
    with workspace.unit_of_work(read_only=True) as uow:
        assert load_template(uow.connection, "welcome") == changed
    broken = EmailTemplate("broken", "Hi {{ first_name }", "ok")
    with pytest.raises(InvalidInput) as refused, workspace.unit_of_work() as uow:
        save_templates(uow.connection, [EmailTemplate("fine", "s", "t"), broken], NOW)
    assert refused.value.field == "templates.broken" and "subject, line 1" in refused.value.message
    with workspace.unit_of_work(read_only=True) as uow:  # all or none: "fine" was not saved either
        assert load_template(uow.connection, "fine") is None


def test_template_problems_name_the_part_and_line() -> None:
    assert template_problems(WELCOME) == []
    problems = template_problems(
        EmailTemplate(
            "bad name!",
            "Hello {{ first_name }",
            "Line one\n{% if stage == 'mql' %}\nno end",
            "<p>\n\n{{ config }}</p>",
        )
    )
    assert problems[0].startswith("name: 'bad name!'")
    assert any(p.startswith("subject, line 1: unexpected '}'") for p in problems), problems
    assert any(p.startswith("text, line 2: Unexpected end of template") and "endif" in p for p in problems), problems
    assert "html, line 3: unknown name 'config'" in problems
    assert template_problems(EmailTemplate("x", " ", "")) == [
        "subject: empty",
        "text: empty (every email has a plain-text body)",
    ]


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ attributes.update({'seats': 1}) }}",
        "{{ 'x' * 100000000 }}",
        "{{ 9 ** 99999999 }}",
    ],
)
def test_template_injection_is_refused_with_its_line(source: str) -> None:
    [problem] = template_problems(EmailTemplate("evil", "Hi", f"line one\n{source}"))
    assert problem.startswith("text, line 2:"), problem
    assert "unsafe" in problem or "larger than" in problem or "more than" in problem, problem


def test_injection_stored_behind_the_checks_fails_safely_at_render(workspace: Workspace) -> None:
    lead_id = add_lead(workspace)
    cases = {
        "mro": ("{{ ''.__class__.__mro__ }}", "access to attribute '__class__' of 'str' object is unsafe"),
        "config": ("{{ config }}", "unknown name 'config'"),
        "context": ("{{ self._TemplateReference__context }}", "is unsafe"),
        "globals": ("{{ lipsum.__globals__['os'] }}", "access to attribute '__globals__'"),
    }
    with workspace.unit_of_work() as uow:  # written straight into the table, as if the checks were bypassed
        for name, (text, _) in cases.items():
            uow.connection.execute(
                schema.email_templates.insert().values(name=name, subject="s", text=text, updated_at=NOW)
            )
    for name, (_, expected) in cases.items():
        with pytest.raises(EmailRenderError) as failed:
            queue(workspace, lead_id, name)
        assert f"template {name!r}: text, line 1: " in str(failed.value) and expected in str(failed.value)
    with workspace.unit_of_work(read_only=True) as uow:
        assert list_emails(uow.connection) == []  # nothing was queued


def test_links_are_rewritten_by_an_html_parser_and_the_rest_is_kept() -> None:
    key, token = b"k" * 32, "tok"
    body = (
        '<p>A <a href="https://x.example/a?b=1&amp;c=2" title="T">one</a>\n'
        "<A HREF='http://y.example/'>two</A> <a href=\"mailto:a@b.c\">mail</a> <a name=top>anchor</a>\n"
        f'<a href="{PUBLIC}/e/u/tok">unsub</a> <area href="https://z.example/map"/></p>'
    )
    rewritten = rewrite_links(body, PUBLIC, key, token)
    links = html_links(rewritten)
    tracked = [link.replace("&amp;", "&") for link in links if "/e/c/" in link]
    targets = [parse_qs(urlsplit(link).query)["u"][0] for link in tracked]
    assert targets == ["https://x.example/a?b=1&c=2", "http://y.example/", "https://z.example/map"]
    for link, target in zip(tracked, targets, strict=True):
        assert parse_qs(urlsplit(link).query)["s"] == [link_signature(key, token, target)]
    assert 'href="mailto:a@b.c"' in rewritten and f'href="{PUBLIC}/e/u/tok"' in rewritten
    assert "<a name=top>anchor</a>" in rewritten and 'title="T">one</a>' in rewritten
    assert rewritten.count("\n") == body.count("\n")
    assert add_open_pixel("<html><body>x</body></html>", "P").startswith('<html><body>x<img src="P"')
    assert add_open_pixel("no body", "P").startswith('no body<img src="P"')


# --- rendering and delivery ----------------------------------------------------------------------------------


def test_an_email_is_rendered_sent_opened_and_clicked(workspace: Workspace, smtp: SmtpServer) -> None:
    ws = with_settings(workspace, smtp.port)
    save(ws)
    lead_id = add_lead(ws)
    queued = queue(ws, lead_id)
    assert queued.status == "pending" and queued.reason is None
    summary = deliver_due(ws, NOW)
    assert (summary.sent, summary.retrying, summary.failed, summary.skipped) == (1, 0, 0, 0)

    [(sender, recipients, message)] = smtp.inbox.received
    row = email_row(ws, queued.id)
    assert (row.status, row.attempts, row.sent_at, row.last_error) == ("sent", 1, NOW, None)
    assert sender == "news@acme.example" and recipients == ["jane@acme.com"]
    assert message["To"] == "jane@acme.com" and message["From"] == "Acme Marketing <news@acme.example>"
    assert message["Subject"] == "Hi Jane, news for Acme"
    assert message["Message-ID"] == row.message_id and row.message_id.endswith("@acme.example>")
    unsubscribe = f"{PUBLIC}/e/u/{row.token}"
    assert message["List-Unsubscribe"].strip() == f"<{unsubscribe}>"  # folded onto its own line
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert text.startswith("Hello Jane,") and "Pricing: https://acme.example/pricing" in text
    assert f"Unsubscribe: {unsubscribe}" in text
    assert "(VP &lt;Marketing&gt;)" in html  # the lead's data is escaped in HTML
    assert f'<img src="{PUBLIC}/e/o/{row.token}.gif" width="1" height="1"' in html
    assert html.index("<img") < html.index("</body>")
    links = html_links(html)
    assert "https://acme.example/pricing" not in html and 'href="mailto:sales@acme.example"' in html
    assert f'href="{unsubscribe}"' in html  # our own link is not wrapped in a redirect
    [click] = [link.replace("&amp;", "&") for link in links if "/e/c/" in link]
    assert click.startswith(f"{PUBLIC}/e/c/{row.token}?u=")

    client = TestClient(create_app(workspace=ws))
    pixel = client.get(local(f"{PUBLIC}/e/o/{row.token}.gif"))
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    assert pixel.content.startswith(b"GIF89a") and "no-store" in pixel.headers["cache-control"]
    assert client.get(local(f"{PUBLIC}/e/o/{row.token}.gif")).status_code == 200  # a repeat within the hour
    [opened] = stored_events(ws, "email_open")
    assert opened.lead_id == lead_id and opened.properties["campaign"] == "welcome"
    assert opened.properties["email_id"] == queued.id and opened.awards == [["email open", 1.0]]

    followed = client.get(local(click), follow_redirects=False)
    assert followed.status_code == 302, followed.text
    assert followed.headers["location"] == "https://acme.example/pricing?plan=pro&seats=25"
    assert followed.headers["referrer-policy"] == "no-referrer"
    client.get(local(click), follow_redirects=False)  # a double click counts once
    [clicked] = stored_events(ws, "email_click")
    assert clicked.lead_id == lead_id and clicked.awards == [["email click", 3.0]]
    assert clicked.properties["url"] == "https://acme.example/pricing?plan=pro&seats=25"
    assert clicked.properties["campaign"] == "welcome"
    assert lead_row(ws, lead_id).engagement_score > 0


def test_forged_or_unknown_tracking_links_are_refused(workspace: Workspace, smtp: SmtpServer) -> None:
    ws = with_settings(workspace, smtp.port)
    save(ws)
    queued = queue(ws, add_lead(ws))
    token = email_row(ws, queued.id).token
    client = TestClient(create_app(workspace=ws))
    with ws.unit_of_work(read_only=True) as uow:
        key = uow.connection.execute(
            select(schema.workspace_settings.c.value).where(schema.workspace_settings.c.key == "email_link_secret")
        ).scalar_one()
    good = link_signature(key.encode(), token, "https://acme.example/pricing")
    evil = quote("https://evil.example/phish", safe="")
    forged = client.get(f"/e/c/{token}?u={evil}&s={good}", follow_redirects=False)
    assert forged.status_code == 403 and "location" not in forged.headers
    assert "signature does not match" in forged.text
    assert client.get(f"/e/c/{token}?u={evil}", follow_redirects=False).status_code == 403
    other = link_signature(b"not the key", token, "https://evil.example/phish")
    assert client.get(f"/e/c/{token}?u={evil}&s={other}", follow_redirects=False).status_code == 403
    signed_js = link_signature(key.encode(), token, "javascript:alert(1)")
    js = client.get(f"/e/c/{token}?u={quote('javascript:alert(1)')}&s={signed_js}", follow_redirects=False)
    assert js.status_code == 403
    assert client.get(f"/e/c/unknown-token?u={evil}&s={good}", follow_redirects=False).status_code == 404
    assert client.get("/e/u/unknown-token").status_code == 404
    assert client.post("/e/u/unknown-token").status_code == 404
    unknown_pixel = client.get("/e/o/unknown-token.gif")
    assert unknown_pixel.status_code == 200 and unknown_pixel.content.startswith(b"GIF89a")
    assert stored_events(ws, "email_click") == [] and stored_events(ws, "email_open") == []
    spec = client.get("/openapi.json").json()
    tracking = {p: item for p, item in spec["paths"].items() if p.startswith("/e/")}
    assert set(tracking) == {"/e/o/{token}.gif", "/e/c/{token}", "/e/u/{token}"}
    assert all(op.get("x-public") is True for item in tracking.values() for op in item.values())


def test_unsubscribe_confirms_then_sets_do_not_email_once(workspace: Workspace, smtp: SmtpServer) -> None:
    ws = with_settings(workspace, smtp.port)
    save(ws)
    lead_id = add_lead(ws)
    queued = queue(ws, lead_id)
    token = email_row(ws, queued.id).token
    client = TestClient(create_app(workspace=ws))
    page = client.get(f"/e/u/{token}")
    assert page.status_code == 200 and f'<form method="post" action="/e/u/{token}">' in page.text
    assert "j…@acme.com" in page.text and "jane@acme.com" not in page.text
    assert lead_row(ws, lead_id).do_not_email is False  # a GET (a link scanner) changes nothing
    one_click = client.post(
        f"/e/u/{token}",
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200 and "unsubscribed" in one_click.text
    assert client.post(f"/e/u/{token}").status_code == 200  # the button pressed twice
    assert lead_row(ws, lead_id).do_not_email is True
    [event] = stored_events(ws, "unsubscribe")
    assert event.lead_id == lead_id and event.properties["campaign"] == "welcome"
    assert event.awards == [["unsubscribed", -20.0]]
    with ws.unit_of_work(read_only=True) as uow:
        audit = uow.connection.execute(
            select(schema.audit_log).where(schema.audit_log.c.action == "lead.unsubscribe")
        ).all()
    assert [(a.actor, a.target, a.details["email_id"]) for a in audit] == [("recipient", "jane@acme.com", queued.id)]
    # The email queued before the unsubscribe is stopped at send time; a new one is skipped at once.
    summary = deliver_due(ws, NOW)
    assert (summary.sent, summary.skipped) == (0, 1) and smtp.inbox.received == []
    assert email_row(ws, queued.id).reason == f"at send time: {REASON_DO_NOT_EMAIL}"
    later = queue(ws, lead_id)
    assert (later.status, later.reason) == ("skipped", REASON_DO_NOT_EMAIL)
    row = email_row(ws, later.id)
    assert (row.subject, row.body_text, row.body_html) == ("", "", None)


def test_leads_that_may_not_be_mailed_never_are(workspace: Workspace, smtp: SmtpServer) -> None:
    ws = with_settings(workspace, smtp.port)
    save(ws)
    opted_out = add_lead(ws, "no@acme.com", do_not_email=True)
    nameless = add_lead(ws, None, external_id="crm-7")
    erased = add_lead(ws, "gone@acme.com")
    with ws.unit_of_work() as uow:
        erase_lead(uow, "gone@acme.com", by="dpo")
    outcomes = [queue(ws, lead) for lead in (opted_out, nameless, erased)]
    assert [(q.status, q.reason) for q in outcomes] == [
        ("skipped", REASON_DO_NOT_EMAIL),
        ("skipped", REASON_NO_ADDRESS),
        ("skipped", REASON_ERASED),
    ]
    summary = deliver_due(ws, NOW + timedelta(hours=1))
    assert summary.sent == 0 and smtp.inbox.received == []
    with ws.unit_of_work() as uow:
        with pytest.raises(NotFound, match="no email template named 'nope'"):
            enqueue(uow.connection, ws.settings, lead_id=opted_out, template="nope", now=NOW)
        with pytest.raises(NotFound, match="no lead with id 999999"):
            enqueue(uow.connection, ws.settings, lead_id=999999, template="welcome", now=NOW)


def test_an_erasure_forgets_what_was_queued(workspace: Workspace, smtp: SmtpServer) -> None:
    ws = with_settings(workspace, smtp.port)
    save(ws)
    lead_id = add_lead(ws)
    queued = queue(ws, lead_id)
    with ws.unit_of_work() as uow:
        assert forget_lead_emails(uow.connection, lead_id) == 1
    row = email_row(ws, queued.id)
    assert (row.status, row.reason, row.to_address, row.subject, row.body_html) == (
        "skipped",
        REASON_ERASED,
        "",
        "",
        None,
    )
    assert deliver_due(ws, NOW).sent == 0 and smtp.inbox.received == []


def test_smtp_down_is_retried_with_backoff_then_delivered(workspace: Workspace) -> None:
    server = SmtpServer()  # its port, with nothing listening yet
    ws = with_settings(workspace, server.port)
    save(ws)
    queued = queue(ws, add_lead(ws))
    first = deliver_due(ws, NOW)
    assert (first.sent, first.retrying) == (0, 1)
    row = email_row(ws, queued.id)
    assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 1, NOW + timedelta(seconds=60))
    assert "ConnectionRefusedError" in row.last_error or "refused" in row.last_error.lower()
    assert deliver_due(ws, NOW + timedelta(seconds=30)).retrying == 0  # not due yet: not tried
    server.start()
    try:
        done = deliver_due(ws, NOW + timedelta(seconds=61))
        assert done.sent == 1 and len(server.inbox.received) == 1
        row = email_row(ws, queued.id)
        assert (row.status, row.attempts, row.sent_at) == ("sent", 2, NOW + timedelta(seconds=61))
        assert deliver_due(ws, NOW + timedelta(hours=1)).sent == 0 and len(server.inbox.received) == 1
    finally:
        server.stop()


def test_refusals_5xx_fail_and_4xx_retry(workspace: Workspace, smtp: SmtpServer) -> None:
    ws = with_settings(workspace, smtp.port, email_max_attempts=2)
    save(ws)
    lead_id = add_lead(ws)
    smtp.inbox.refuse = "550 5.1.1 <jane@acme.com>: no such user"
    refused = queue(ws, lead_id)
    assert deliver_due(ws, NOW).failed == 1
    row = email_row(ws, refused.id)
    assert (row.status, row.attempts, row.reason) == ("failed", 1, "refused by the SMTP server")
    assert row.last_error.startswith("SMTP 550 5.1.1") and row.sent_at is None
    smtp.inbox.refuse = "451 4.7.1 greylisted, try again later"
    later = queue(ws, lead_id)
    assert deliver_due(ws, NOW).retrying == 1
    assert email_row(ws, later.id).status == "pending"
    assert deliver_due(ws, NOW + timedelta(minutes=5)).failed == 1  # the second and last attempt
    row = email_row(ws, later.id)
    assert (row.status, row.attempts, row.reason) == ("failed", 2, "gave up after 2 attempts")
    assert row.last_error.startswith("SMTP 451") and smtp.inbox.received == []


def test_an_email_left_sending_by_a_crash_is_never_sent_again(workspace: Workspace, smtp: SmtpServer) -> None:
    ws = with_settings(workspace, smtp.port)
    save(ws)
    queued = queue(ws, add_lead(ws))
    with ws.unit_of_work() as uow:  # a worker claims it, then dies before recording anything
        [claim] = claim_due(uow.connection, NOW, limit=10, lease=600)
    assert claim.id == queued.id and email_row(ws, queued.id).status == "sending"
    assert deliver_due(ws, NOW + timedelta(seconds=599)).busy is False  # still within its claim
    summary = deliver_due(ws, NOW + timedelta(seconds=600))
    assert (summary.unknown, summary.sent) == (1, 0) and smtp.inbox.received == []
    row = email_row(ws, queued.id)
    assert row.status == "unknown" and "not sent again" in row.reason
    assert deliver_due(ws, NOW + timedelta(days=1)).busy is False and smtp.inbox.received == []


def test_sending_is_off_without_a_host(workspace: Workspace, caplog: pytest.LogCaptureFixture) -> None:
    ws = with_settings(workspace, None)
    save(ws)
    queued = queue(ws, add_lead(ws))
    with caplog.at_level(logging.WARNING, logger="qualify.service.email.sending"):
        summary = deliver_due(ws, NOW)
    assert (summary.held, summary.sent, summary.retrying) == (1, 0, 0)
    assert "QUALIFY_SMTP_HOST is not set" in caplog.text
    assert email_row(ws, queued.id).status == "pending"


def test_a_workflow_step_queues_one_email(workspace: Workspace) -> None:
    ws = with_settings(workspace, None)
    save(ws)
    lead_id = add_lead(ws)
    with ws.unit_of_work() as uow:
        enrolment = uow.connection.execute(
            schema.workflow_enrolments.insert()
            .values(workflow="nurture", lead_id=lead_id, status="active", step=0, trigger="test", enrolled_at=NOW)
            .returning(schema.workflow_enrolments.c.id)
        ).scalar_one()
        first = enqueue(uow.connection, ws.settings, lead_id=lead_id, template="welcome", now=NOW,
                        enrolment_id=enrolment, step=0)  # fmt: skip
        again = enqueue(uow.connection, ws.settings, lead_id=lead_id, template="welcome", now=NOW,
                        enrolment_id=enrolment, step=0)  # fmt: skip
    assert again == first
    with ws.unit_of_work(read_only=True) as uow:
        [info] = list_emails(uow.connection, lead_id=lead_id)
        assert (info.enrolment_id, info.step, info.status) == (enrolment, 0, "pending")
        with pytest.raises(InvalidInput) as bad:
            list_emails(uow.connection, status="lost")
    assert bad.value.field == "status"


def test_two_workers_claim_different_emails(workspace: Workspace) -> None:
    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: the second claim waits instead of skipping")
    ws = with_settings(workspace, None)
    save(ws)
    ids = {queue(ws, add_lead(ws, f"p{n}@acme.com")).id for n in range(3)}
    with ws.unit_of_work() as first, ws.unit_of_work() as second:
        mine = claim_due(first.connection, NOW, limit=2, lease=60)
        theirs = claim_due(second.connection, NOW, limit=2, lease=60)
    assert len(mine) == 2 and len(theirs) == 1
    assert {c.id for c in mine} | {c.id for c in theirs} == ids


def test_unsubscribed_lead_changes_are_not_overwritten_by_scoring(workspace: Workspace, smtp: SmtpServer) -> None:
    """The unsubscribe event is scored after the flag is committed: the rescoring keeps the flag."""
    ws = with_settings(workspace, smtp.port)
    save(ws)
    lead_id = add_lead(ws)
    token = email_row(ws, queue(ws, lead_id).id).token
    client = TestClient(create_app(workspace=ws))
    client.post(f"/e/u/{token}")
    with ws.unit_of_work() as uow:  # an import that says nothing about consent leaves it as it is
        upsert_leads(uow, [Lead(email="jane@acme.com", title="CMO")])
        uow.connection.execute(update(schema.leads).where(schema.leads.c.id == lead_id).values(owner="sam"))
    assert lead_row(ws, lead_id).do_not_email is True
    assert queue(ws, lead_id).status == "skipped"


def test_a_pass_that_breaks_puts_unsent_claims_back(
    workspace: Workspace, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qualify.service.email import sending as mail

    ws = with_settings(workspace, smtp.port)
    save(ws)
    ids = [queue(ws, add_lead(ws, f"p{n}@acme.com")).id for n in range(3)]
    real, checked = mail._consent_now, []

    def flaky(conn: Any, lead_id: int) -> str | None:
        checked.append(lead_id)
        if len(checked) == 2:
            raise RuntimeError("the store went away")
        return real(conn, lead_id)

    monkeypatch.setattr(mail, "_consent_now", flaky)
    with pytest.raises(RuntimeError):
        deliver_due(ws, NOW)
    assert [email_row(ws, i).status for i in ids] == ["sent", "pending", "pending"]
    assert len(smtp.inbox.received) == 1
    monkeypatch.setattr(mail, "_consent_now", real)
    assert deliver_due(ws, NOW).sent == 2 and len(smtp.inbox.received) == 3


def test_an_address_no_message_can_carry_fails_without_stopping_the_rest(
    workspace: Workspace, smtp: SmtpServer
) -> None:
    ws = with_settings(workspace, smtp.port)
    save(ws)
    broken = queue(ws, add_lead(ws, "a@acme.com")).id
    fine = queue(ws, add_lead(ws, "b@acme.com")).id
    with ws.unit_of_work() as uow:  # as if a row had been damaged: a header injection attempt
        uow.connection.execute(
            update(schema.emails)
            .where(schema.emails.c.id == broken)
            .values(to_address="a@acme.com\r\nBcc: x@evil.example")
        )
    summary = deliver_due(ws, NOW)
    assert (summary.failed, summary.sent) == (1, 1)
    row = email_row(ws, broken)
    assert row.status == "failed" and row.last_error.startswith("cannot build the message")
    assert email_row(ws, fine).status == "sent"
    assert [recipients for _, recipients, _ in smtp.inbox.received] == [["b@acme.com"]]


def test_email_settings_are_checked_and_the_password_stays_secret() -> None:
    from pydantic import ValidationError

    settings = Settings(public_url="https://qualify.acme.com/", smtp_password="hunter2-hunter2", email_from=" ")
    assert settings.public_url == "https://qualify.acme.com" and settings.email_from is None
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    for bad in ({"public_url": "qualify.acme.com"}, {"public_url": "https://x.example/?a=1"}, {"email_from": "nobody"},
                {"smtp_security": "ssl"}, {"smtp_port": 0}):  # fmt: skip
        with pytest.raises(ValidationError) as refused:
            Settings(**bad)
        assert next(iter(bad)) in str(refused.value)


# --- STARTTLS and TLS ------------------------------------------------------------------------------


@dataclass
class TlsInbox(Inbox):
    """Also notes whether each message came over an encrypted session, and who logged in."""

    encrypted: list[bool] = field(default_factory=list)
    logins: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # STARTTLS shows on the session; TLS from the first byte on the connection itself.
        self.encrypted.append(session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None)
        return await super().handle_DATA(server, session, envelope)

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append(data.login)
        return AuthResult(success=data.password == b"smtp-secret-1")


@pytest.fixture
def authority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """A throwaway certificate authority, trusted by this process as the system's CAs would be."""
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    return ca


def tls_server(ca: trustme.CA, *, implicit: bool) -> tuple[Controller, TlsInbox, int]:
    """An SMTP server with a certificate for 127.0.0.1: TLS from the first byte (`implicit`), or
    STARTTLS required before anything else, login included."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    inbox, port = TlsInbox(), free_port()
    options: dict[str, Any] = {"authenticator": inbox.authenticate}
    if implicit:
        # Encrypted from the first byte; aiosmtpd only counts STARTTLS as TLS for its AUTH rule.
        options.update(ssl_context=context, auth_require_tls=False)
    else:
        options.update(tls_context=context, require_starttls=True, auth_require_tls=True)
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    return controller, inbox, port


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_email_goes_encrypted_and_logs_in_only_over_tls(
    workspace: Workspace, authority: trustme.CA, security: str
) -> None:
    controller, inbox, port = tls_server(authority, implicit=security == "tls")
    try:
        ws = with_settings(
            workspace, port, smtp_security=security, smtp_username="qualify", smtp_password="smtp-secret-1"
        )
        save(ws)
        queued = queue(ws, add_lead(ws))
        assert deliver_due(ws, NOW).sent == 1
    finally:
        controller.stop()
    assert inbox.encrypted == [True] and inbox.logins == [b"qualify"]
    assert email_row(ws, queued.id).status == "sent" and len(inbox.received) == 1


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_a_certificate_that_is_not_trusted_stops_the_send(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, security: str
) -> None:
    controller, inbox, port = tls_server(trustme.CA(), implicit=security == "tls")  # an authority nobody trusts
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    try:
        ws = with_settings(
            workspace, port, smtp_security=security, smtp_username="qualify", smtp_password="smtp-secret-1"
        )
        save(ws)
        queued = queue(ws, add_lead(ws))
        summary = deliver_due(ws, NOW)
    finally:
        controller.stop()
    assert (summary.sent, summary.retrying) == (0, 1)  # tried again later: the certificate may be renewed
    row = email_row(ws, queued.id)
    assert row.status == "pending" and "CERTIFICATE_VERIFY_FAILED" in row.last_error, row.last_error
    assert inbox.received == [] and inbox.logins == []  # the password never went to that server
