"""Email end to end, as processes: `qualify worker` sends through a real SMTP server on loopback,
and the links in the mail as received are followed against a running `qualify serve`."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from qualify.adapters import schema
from qualify.bootstrap import open_workspace
from qualify.domain.records import Lead
from qualify.service.email.outbox import enqueue
from qualify.service.email.templates import EmailTemplate, save_templates
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings
from tests.e2e.test_serve import SCRIPT, Server, run
from tests.integration.test_email import SmtpServer

TEMPLATE = EmailTemplate(
    name="guide",
    subject="{{ first_name }}, your guide",
    text="Hello {{ first_name }}, the guide: https://acme.example/guide\nUnsubscribe: {{ unsubscribe_url }}\n",
    html='<p>Hello {{ first_name }}, <a href="https://acme.example/guide?from=email">the guide</a>.</p>',
)


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[Server, Workspace]]:
    run("init", "--db", database_url)
    server = Server(database_url)
    server.start()
    workspace = open_workspace(Settings(database_url=database_url, public_url=server.url))
    try:
        yield server, workspace
    finally:
        workspace.close()
        server.stop()


def test_mail_sent_by_the_worker_is_tracked_by_the_server(served: tuple[Server, Workspace]) -> None:
    server, workspace = served
    now = datetime.now(UTC)
    with workspace.unit_of_work() as uow:
        save_templates(uow.connection, [TEMPLATE], now)
        upsert_leads(uow, [Lead(email="ada@acme.com", first_name="Ada")])
        lead_id = uow.connection.execute(select(schema.leads.c.id)).scalar_one()
        queued = enqueue(uow.connection, workspace.settings, lead_id=lead_id, template="guide", now=now)
    assert queued.status == "pending"

    smtp = SmtpServer()
    smtp.start()
    try:
        env = os.environ | {
            "QUALIFY_SMTP_HOST": "127.0.0.1",
            "QUALIFY_SMTP_PORT": str(smtp.port),
            "QUALIFY_SMTP_SECURITY": "none",
            "QUALIFY_SMTP_PASSWORD": "never-printed-anywhere",
            "QUALIFY_EMAIL_FROM": "Acme <news@acme.example>",
            "QUALIFY_PUBLIC_URL": server.url,
        }
        done = subprocess.run(
            [SCRIPT, "worker", "--once", "--db", workspace.settings.database_url],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "never-printed-anywhere" not in done.stdout + done.stderr
    finally:
        smtp.stop()
    [(_, recipients, message)] = smtp.inbox.received
    assert recipients == ["ada@acme.com"] and message["Subject"] == "Ada, your guide"
    html: Any = message.get_body(("html",))
    body = html.get_content()
    [pixel] = re.findall(r'<img src="([^"]+)"', body)
    [click] = [link.replace("&amp;", "&") for link in re.findall(r'href="([^"]+)"', body)]
    unsubscribe = message["List-Unsubscribe"].strip()[1:-1]
    assert pixel.startswith(f"{server.url}/e/o/") and click.startswith(f"{server.url}/e/c/")

    with httpx.Client(timeout=10) as client:
        image = client.get(pixel)
        assert image.status_code == 200 and image.headers["content-type"] == "image/gif"
        followed = client.get(click, follow_redirects=False)
        assert followed.status_code == 302
        assert followed.headers["location"] == "https://acme.example/guide?from=email"
        one_click = client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})  # RFC 8058, as a mail client
        assert one_click.status_code == 200

    with workspace.unit_of_work(read_only=True) as uow:
        e = schema.events
        kinds = [row.type for row in uow.connection.execute(select(e.c.type).where(e.c.lead_id == lead_id))]
        sent = uow.connection.execute(select(schema.emails).where(schema.emails.c.id == queued.id)).one()
        lead = uow.connection.execute(select(schema.leads).where(schema.leads.c.id == lead_id)).one()
    assert sorted(kinds) == ["email_click", "email_open", "unsubscribe"]
    assert sent.status == "sent" and sent.message_id == message["Message-ID"]
    assert lead.do_not_email is True
