"""Web tracking in a real browser: a site on another origin includes the snippet from `qualify serve`;
its visitor browses anonymously, submits a form with an email, and keeps browsing.

Playwright drives the system's chromium. Where chromium is missing the test is skipped, unless
QUALIFY_REQUIRE_BROWSER=1 (CI, whose script installs it): then it fails.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.bootstrap import open_workspace
from qualify.domain.model_loader import default_model_text
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings
from tests.e2e.test_serve import Server, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
T = TypeVar("T")


def _browser_or_skip() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"no chromium at {CHROMIUM}: the web tracking browser test needs Debian's chromium"
    if os.environ.get("QUALIFY_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script src="{qualify}/t/qualify.js" async></script></head>
<body><h1>{title}</h1>{body}</body></html>
"""
FORM = """<form id="contact-us" action="thanks.html" method="get">
<label>Work email <input type="email" name="email" required></label>
<label>First name <input name="first_name"></label>
<label>Last name <input name="last_name"></label>
<button type="submit">Talk to sales</button>
</form>"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        del format, args  # the test's output stays readable


@pytest.fixture
def qualify(tmp_path: Path) -> Iterator[tuple[Server, Workspace]]:
    _browser_or_skip()
    url = f"sqlite:///{tmp_path / 'tracking.db'}"
    workspace = open_workspace(Settings(database_url=url), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text(), "default_model.yaml")
    running = Server(url)
    running.start()
    try:
        yield running, workspace
    finally:
        running.stop()
        workspace.close()


@pytest.fixture
def site(tmp_path: Path, qualify: tuple[Server, Workspace]) -> Iterator[str]:
    """A static site on a second origin (another port), whose pages include the snippet."""
    root = tmp_path / "site"
    root.mkdir()
    server, _ = qualify
    pages = {
        "index.html": ("Acme home", '<a href="pricing.html">Pricing</a>'),
        "pricing.html": ("Acme pricing", '<a href="contact.html">Contact sales</a>'),
        "contact.html": ("Contact sales", FORM),
        "thanks.html": ("Thank you", "<p>We will be in touch.</p>"),
        "docs.html": ("Acme docs", "<p>Getting started.</p>"),
    }
    for name, (title, body) in pages.items():
        (root / name).write_text(PAGE.format(title=title, qualify=server.url, body=body), encoding="utf-8")
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", free_port()), functools.partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def page() -> Iterator[Any]:
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser.new_context(viewport={"width": 1024, "height": 700}).new_page()
        finally:
            browser.close()


def eventually(read: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = 15) -> T:
    """Poll the store until `done` holds: beacons are delivered in the background."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last seen: {value!r}")
        time.sleep(0.1)


def anonymous(workspace: Workspace) -> list[Any]:
    table = schema.visitor_events
    with workspace.unit_of_work(read_only=True) as uow:
        return list(uow.connection.execute(select(table).order_by(table.c.occurred_at, table.c.id)).all())


def lead_events(workspace: Workspace, email: str) -> list[Any]:
    with workspace.unit_of_work(read_only=True) as uow:
        record = repo.find_lead(uow.connection, email)
        if record is None:
            return []
        events = schema.events
        query = select(events).where(events.c.lead_id == record.id).order_by(events.c.occurred_at, events.c.id)
        return list(uow.connection.execute(query).all())


def path_of(row: Any) -> str:
    return str(row.properties.get("url", "")).split("/")[-1]


def test_a_visitor_browses_identifies_with_a_form_and_its_history_lands_on_the_lead(
    page: Any, site: str, qualify: tuple[Server, Workspace]
) -> None:
    server, workspace = qualify
    assert not site.startswith(server.url)  # two origins: the snippet's requests are cross-origin

    page.goto(f"{site}/index.html")
    eventually(lambda: anonymous(workspace), lambda rows: len(rows) == 1, "the first page view")
    visitor = page.evaluate("window.qualify.visitor")
    assert len(visitor) == 32
    assert page.evaluate("localStorage.getItem('qualify_vid')") == visitor
    assert f"qualify_vid={visitor}" in page.evaluate("document.cookie")
    page.get_by_role("link", name="Pricing").click()
    eventually(lambda: anonymous(workspace), lambda rows: len(rows) == 2, "the pricing page view")
    page.get_by_role("link", name="Contact sales").click()
    before = eventually(lambda: anonymous(workspace), lambda rows: len(rows) == 3, "the contact page view")
    assert [path_of(r) for r in before] == ["index.html", "pricing.html", "contact.html"]
    assert {r.visitor_id for r in before} == {visitor}  # one visitor across the site's pages
    assert lead_events(workspace, "jane.doe@acme.com") == []  # anonymous so far

    page.get_by_label("Work email").fill("Jane.Doe@Acme.com")
    page.get_by_label("First name").fill("Jane")
    page.get_by_label("Last name").fill("Doe")
    page.get_by_role("button", name="Talk to sales").click()
    page.wait_for_url("**/thanks.html?*")
    # The thank-you page views too; it may reach Qualify just before or after the identification.
    events = eventually(
        lambda: lead_events(workspace, "jane.doe@acme.com"), lambda rows: len(rows) == 5, "the stitched history"
    )
    stitched = {r.event_id: r for r in anonymous(workspace)}
    assert [(e.type, path_of(e)) for e in events[:3]] == [
        ("page_view", "index.html"),
        ("page_view", "pricing.html"),
        ("page_view", "contact.html"),
    ]
    for event, original in zip(events[:3], before, strict=True):
        assert event.event_id == f"web:{original.event_id}"
        assert event.occurred_at == original.occurred_at  # the time of the visit, not of the stitching
        assert stitched[original.event_id].stitched_at is not None
    assert sorted(e.type for e in events[3:]) == ["form_submit", "page_view"]
    [submit] = [e for e in events if e.type == "form_submit"]
    assert submit.properties["form"] == "contact-us" and path_of(submit) == "contact.html"
    [thanks] = [e for e in events if path_of(e).startswith("thanks.html")]
    assert path_of(thanks) == "thanks.html"  # the form's fields in the site's URL are not kept
    assert [a[0] for e in events for a in e.awards].count("pricing page") == 1

    with workspace.unit_of_work(read_only=True) as uow:
        lead = repo.find_lead(uow.connection, "jane.doe@acme.com")
        [linked] = uow.connection.execute(select(schema.visitors)).all()
    assert lead is not None and (lead.lead.first_name, lead.lead.last_name) == ("Jane", "Doe")
    assert lead.created_at == before[0].occurred_at  # the lead dates from its first visit
    assert (linked.id, linked.lead_id) == (visitor, lead.id)

    # Identified now: the next page view goes onto the lead directly, never waiting anonymously.
    page.goto(f"{site}/docs.html")
    after = eventually(
        lambda: lead_events(workspace, "jane.doe@acme.com"), lambda rows: len(rows) == 6, "the docs page view"
    )
    assert (after[-1].type, path_of(after[-1])) == ("page_view", "docs.html")
    assert after[-1].event_id.removeprefix("web:") not in {r.event_id for r in anonymous(workspace)}
    assert after[-1].awards == [["page view", 1.0]]
