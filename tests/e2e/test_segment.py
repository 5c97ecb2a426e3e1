"""Segment's and RudderStack's own Python libraries deliver into a running `qualify serve`.

No hand-written requests for the happy path: the vendors' clients (segment-analytics-python,
rudder-sdk-python) post as they would to Segment or a RudderStack data plane, with their write key
(a Qualify ingest key) as the Basic user name, RudderStack's gzipped. The suite then reads the
workspace: the stitched anonymous page views, the identified lead, the account of its group, the
events with their times, and a retried message that changed nothing.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from qualify.adapters import schema
from qualify.bootstrap import open_workspace
from qualify.service.admin.api_keys import create_key
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings
from tests.e2e.test_serve import Server, run

PAST = datetime(2026, 1, 12, 9, 30, tzinfo=UTC)


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[Server, Workspace, str]]:
    run("init", "--db", database_url)
    server = Server(database_url)
    server.start()
    workspace = open_workspace(Settings(database_url=database_url))
    with workspace.unit_of_work() as uow:
        key, _ = create_key(uow, "segment-source", "ingest")
    try:
        yield server, workspace, key
    finally:
        workspace.close()
        server.stop()


def _client(library: str, server: Server, key: str, errors: list[Any]) -> Any:
    if library == "segment":
        from segment.analytics import Client
    else:
        from rudderstack.analytics import Client
    # The libraries' own queue and consumer thread: a batch per flush, as in production.
    return Client(write_key=key, host=server.url, on_error=lambda error, batch: errors.append(error), max_retries=2)


def _events(workspace: Workspace, email: str) -> list[Any]:
    with workspace.unit_of_work(read_only=True) as uow:
        leads, events = schema.leads, schema.events
        lead_id = uow.connection.execute(select(leads.c.id).where(leads.c.email == email)).scalar_one()
        return list(
            uow.connection.execute(
                select(events.c.event_id, events.c.type, events.c.occurred_at, events.c.properties)
                .where(events.c.lead_id == lead_id)
                .order_by(events.c.occurred_at, events.c.id)
            )
        )


@pytest.mark.parametrize("library", ["segment", "rudderstack"])
def test_the_vendors_libraries_deliver_a_visitor_who_becomes_a_lead(
    library: str, served: tuple[Server, Workspace, str]
) -> None:
    server, workspace, key = served
    errors: list[Any] = []
    client = _client(library, server, key, errors)
    anonymous = f"{library}-anonymous-7f3a"
    email = f"jane.{library}@acme.com"
    client.page(anonymous_id=anonymous, name="Pricing", properties={"url": "https://acme.example/pricing?utm_x=1"})
    client.track(anonymous_id=anonymous, event="Pricing Calculator Used", properties={"seats": 25})
    client.flush()
    client.identify(
        user_id=f"u-{library}",
        anonymous_id=anonymous,
        traits={"email": email, "firstName": "Jane", "lastName": "Doe", "title": "VP Marketing", "plan": "team"},
    )
    client.group(
        user_id=f"u-{library}",
        group_id="g-acme",
        traits={"name": "Acme", "website": "https://www.acme.com", "employees": 250, "industry": "software"},
    )
    client.track(user_id=f"u-{library}", event="Demo Requested", properties={"source": "pricing"}, message_id="m-demo")
    client.track(user_id=f"u-{library}", event="Webinar Attended", timestamp=PAST, message_id="m-past")
    client.flush()
    # The library retrying a message it thinks was lost: the same messageId, a later sentAt.
    client.track(user_id=f"u-{library}", event="Demo Requested", properties={"source": "pricing"}, message_id="m-demo")
    client.flush()
    client.join()
    assert errors == []

    with workspace.unit_of_work(read_only=True) as uow:
        lead = uow.connection.execute(select(schema.leads).where(schema.leads.c.email == email)).one()
        account = uow.connection.execute(select(schema.accounts).where(schema.accounts.c.domain == "acme.com")).one()
    assert (lead.external_id, lead.first_name, lead.last_name, lead.title) == (
        f"u-{library}",
        "Jane",
        "Doe",
        "VP Marketing",
    )
    assert lead.attributes["plan"] == "team"
    assert (account.name, account.employees, account.industry) == ("Acme", 250, "software")
    assert account.attributes["segment_group_id"] == "g-acme"

    events = _events(workspace, email)
    assert [e.type for e in events] == ["webinar_attended", "page_view", "pricing_calculator_used", "demo_request"]
    past, page, calculator, demo = events
    # A message's time is the library's, corrected by the skew between its sentAt and the receipt.
    assert abs(past.occurred_at - PAST) < timedelta(seconds=30)
    assert page.properties["url"] == "https://acme.example/pricing?utm_x=1" and page.properties["name"] == "Pricing"
    assert calculator.properties["seats"] == 25 and demo.event_id == "m-demo"
    assert abs(datetime.now(UTC) - demo.occurred_at) < timedelta(minutes=2)
    assert page.occurred_at <= calculator.occurred_at <= demo.occurred_at


def test_the_spec_s_limits_time_and_answers(served: tuple[Server, Workspace, str]) -> None:
    server, workspace, key = served
    basic = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    now = datetime.now(UTC)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        # A device clock an hour fast: corrected by its own sentAt.
        fast = now + timedelta(hours=1)
        skewed = {
            "userId": "ann@acme.com", "event": "Email Link Clicked", "messageId": "skew-1",
            "timestamp": (fast - timedelta(seconds=5)).isoformat(), "sentAt": fast.isoformat(),
        }  # fmt: skip
        answer = http.post("/v1/track", json=skewed, headers=basic)
        assert answer.status_code == 200 and answer.json()["accepted"] == 1
        # The browser library's shape: the write key in a text/plain body, to the short path.
        page = {"writeKey": key, "userId": "ann@acme.com", "properties": {"url": "https://acme.example/"}}
        answer = http.post("/v1/p", content=json.dumps(page), headers={"Content-Type": "text/plain"})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "*"
        # One bad message of a batch is answered with its field; the rest are kept.
        batch = {"batch": [{"type": "track", "userId": "ann@acme.com"}, {"type": "identify", "userId": "ann@acme.com"}]}
        results = http.post("/v1/batch", json=batch, headers=basic).json()["results"]
        assert [(r["status"], r.get("field")) for r in results] == [("rejected", "event"), ("accepted", None)]
        # Over the spec's sizes: 32 KB a message, 500 KB a batch (a gzip bomb is refused unpacked).
        big = {"userId": "ann@acme.com", "event": "Big", "properties": {"x": "a" * 33_000}}
        too_big = http.post("/v1/track", json=big, headers=basic)
        assert too_big.status_code == 400 and too_big.json()["code"] == "too-large"
        bomb = gzip.compress(json.dumps({"batch": [], "pad": " " * 10_000_000}).encode())
        refused = http.post("/v1/batch", content=bomb, headers={**basic, "Content-Encoding": "gzip"})
        assert refused.status_code == 400 and "500 KB" in refused.json()["message"]
        # No key, a wrong one: 401, as every guarded route.
        assert http.post("/v1/batch", json={"batch": []}).status_code == 401
        wrong = {"Authorization": "Basic " + base64.b64encode(b"qk_nope:").decode()}
        assert http.post("/v1/batch", json={"batch": []}, headers=wrong).status_code == 401
    events = _events(workspace, "ann@acme.com")
    clicked = next(e for e in events if e.event_id == "skew-1")
    assert clicked.type == "email_click" and abs(clicked.occurred_at - now) < timedelta(seconds=30)
