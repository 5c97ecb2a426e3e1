"""Webhooks as a receiver sees them: real HTTP on 127.0.0.1, signatures, retries, dead letters, the API and CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, update
from typer.testing import CliRunner

from qualify.adapters import schema
from qualify.domain.records import make_event
from qualify.entrypoints.api import create_app
from qualify.entrypoints.cli import app as cli
from qualify.service.admin.api_keys import create_key
from qualify.service.integrations.webhooks import add_subscription, list_deliveries, verify_signature
from qualify.service.lifecycle.events import ingest_events
from qualify.service.unit_of_work import Workspace
from qualify.service.worker import Worker
from tests.conftest import key_for

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET = "whsec_test-secret-0123456789"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST; it answers 500 to the first `failures`
    requests and 204 after, or, with `hang`, keeps each request waiting until it is closed."""

    def __init__(self, *, failures: int = 0, hang: bool = False) -> None:
        self.failures, self.hang = failures, hang
        self.received: list[Received] = []
        self.closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.hang:
                    receiver.closing.wait(10)
                    return
                failing = len(receiver.received) <= receiver.failures
                answer = b"receiver is down" if failing else b""
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/qualify"

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


class Ceilings(random.Random):
    """Jitter that always draws the ceiling, so waits can be asserted exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


def subscribe(workspace: Workspace, url: str, *kinds: str) -> int:
    with workspace.unit_of_work() as uow:
        subscription, _ = add_subscription(uow, url, kinds, secret=SECRET, now=T0)
    return subscription.id


def make_mql(workspace: Workspace, email: str = "jane@acme.com") -> None:
    with workspace.unit_of_work() as uow:
        ingest_events(uow, [make_event(f"d-{email}", "demo_request", T0, email=email)], now=T0)


def deliveries(workspace: Workspace, **filters: Any) -> list[Any]:
    with workspace.unit_of_work() as uow:
        return list_deliveries(uow, **filters)


def test_deliveries_are_signed_json_that_the_receiver_can_verify(workspace: Workspace, receiver: Receiver) -> None:
    subscribe(workspace, receiver.url, "stage.changed", "lead.mql")
    make_mql(workspace)
    with Worker(workspace) as worker:
        assert worker.run_once(T0).delivered == 2
        assert worker.run_once(T0 + timedelta(minutes=1)).delivered == 0
    assert len(receiver.received) == 2
    for request in receiver.received:
        assert verify_signature(SECRET, request.body, request.headers["qualify-signature"])
        assert not verify_signature("whsec_not-the-secret-xx", request.body, request.headers["qualify-signature"])
        document = json.loads(request.body)
        assert set(document) == {"id", "kind", "created_at", "data"}
        assert request.headers["qualify-delivery"] == str(document["id"])
        assert request.headers["qualify-kind"] == document["kind"]
        assert request.headers["content-type"] == "application/json"
        assert document["data"]["lead"]["email"] == "jane@acme.com"
        assert (document["data"]["from"], document["data"]["to"]) == ("lead", "mql")
    # Sent side by side, so in no particular order.
    assert sorted(json.loads(r.body)["kind"] for r in receiver.received) == ["lead.mql", "stage.changed"]
    assert {d.status for d in deliveries(workspace)} == {"delivered"}


def test_a_receiver_that_fails_and_recovers_gets_the_delivery_once_after_growing_waits(workspace: Workspace) -> None:
    flaky = Receiver(failures=2)
    try:
        subscribe(workspace, flaky.url, "lead.mql")
        make_mql(workspace)
        now, waits = T0, []
        with Worker(workspace, rng=Ceilings()) as worker:
            assert worker.run_once(now).retrying == 1
            while (row := deliveries(workspace)[0]).status == "pending":
                waits.append((row.next_attempt_at - now).total_seconds())
                assert worker.run_once(row.next_attempt_at - timedelta(seconds=1)).retrying == 0  # not due yet
                now = row.next_attempt_at
                worker.run_once(now)
            worker.run_once(now + timedelta(hours=1))
    finally:
        flaky.close()
    assert waits == [10, 20]
    assert (row.status, row.attempts, row.last_status, row.last_error) == ("delivered", 3, 204, None)
    assert len(flaky.received) == 3 and len({r.headers["qualify-delivery"] for r in flaky.received}) == 1


def test_a_receiver_that_never_answers_in_time_is_a_failure_with_a_reason(workspace: Workspace) -> None:
    workspace.settings = workspace.settings.model_copy(update={"webhook_timeout": 0.3})
    silent = Receiver(hang=True)
    try:
        subscribe(workspace, silent.url, "lead.mql")
        make_mql(workspace)
        started = time.monotonic()
        with Worker(workspace) as worker:
            assert worker.run_once(T0).retrying == 1
        assert time.monotonic() - started < 5
    finally:
        silent.close()
    [row] = deliveries(workspace)
    assert (row.status, row.attempts, row.last_status) == ("pending", 1, None)
    assert row.last_error.startswith("timeout")


def test_a_dead_delivery_shows_over_the_api_and_a_retry_delivers_it(workspace: Workspace) -> None:
    workspace.settings = workspace.settings.model_copy(update={"webhook_max_attempts": 3})
    down = Receiver(failures=10**6)
    with workspace.unit_of_work() as uow:
        admin, _ = create_key(uow, "ops", "admin")
        sales = key_for(uow, "sales", "rep")
    try:
        subscribe(workspace, down.url, "lead.mql")
        make_mql(workspace)
        with Worker(workspace, rng=Ceilings()) as worker:
            now = T0
            while (row := deliveries(workspace)[0]).status == "pending":
                now = max(now, row.next_attempt_at)
                worker.run_once(now)
            assert len(down.received) == 3
            with TestClient(create_app(workspace=workspace)) as client:
                dead = client.get(
                    "/v1/webhooks/deliveries", params={"status": "dead"}, headers={"Authorization": f"Bearer {admin}"}
                )
                assert dead.status_code == 200
                [shown] = dead.json()
                assert (shown["attempts"], shown["last_status"]) == (3, 500)
                assert shown["last_error"] == "HTTP 500 Internal Server Error"  # never the receiver's answer
                assert shown["url"] == down.url and shown["payload"]["lead"]["email"] == "jane@acme.com"
                refused = client.post(
                    f"/v1/webhooks/deliveries/{shown['id']}/retry", headers={"Authorization": f"Bearer {sales}"}
                )
                assert refused.status_code == 403
                retried = client.post(
                    f"/v1/webhooks/deliveries/{shown['id']}/retry", headers={"Authorization": f"Bearer {admin}"}
                )
                assert retried.status_code == 200 and retried.json()["status"] == "pending", retried.text
                down.failures = 0  # the receiver is back
                assert worker.run_once().delivered == 1  # queued again as of the real clock
                again = client.post(
                    f"/v1/webhooks/deliveries/{shown['id']}/retry", headers={"Authorization": f"Bearer {admin}"}
                )
                assert again.status_code == 422 and "delivered already" in again.json()["detail"]
    finally:
        down.close()
    assert len(down.received) == 4 and deliveries(workspace)[0].status == "delivered"


def test_subscriptions_over_the_api(workspace: Workspace) -> None:
    with workspace.unit_of_work() as uow:
        admin, _ = create_key(uow, "ops", "admin")
        marketing, _ = create_key(uow, "mkt", "marketing")
    key, other = {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {marketing}"}
    with TestClient(create_app(workspace=workspace)) as client:
        body = {"url": "https://crm.example.com/hook", "kinds": ["lead.mql", "score.crossed:80.0"]}
        made = client.post("/v1/webhooks", json=body, headers=key)
        assert made.status_code == 201, made.text
        created = made.json()
        assert created["kinds"] == ["lead.mql", "score.crossed:80"] and created["secret"].startswith("whsec_")
        listed = client.get("/v1/webhooks", headers=key).json()
        assert [s["id"] for s in listed] == [created["id"]] and "secret" not in listed[0]
        assert client.get("/v1/webhooks", headers=other).status_code == 403
        bad = client.post("/v1/webhooks", json={**body, "kinds": ["lead.won"]}, headers=key)
        assert bad.status_code == 422 and bad.json()["field"] == "kinds"
        assert client.delete(f"/v1/webhooks/{created['id']}", headers=key).status_code == 204
        assert client.delete(f"/v1/webhooks/{created['id']}", headers=key).status_code == 404
        assert client.get("/v1/webhooks", headers=key).json() == []
        actions = [e["action"] for e in client.get("/v1/audit", headers=key).json()]
        assert actions[:2] == ["webhook.remove", "webhook.add"]


def test_the_webhooks_commands_and_one_worker_pass(tmp_path: Path, receiver: Receiver) -> None:
    runner, db = CliRunner(), f"sqlite:///{tmp_path / 'cli.db'}"

    def invoke(*args: str) -> str:
        result = runner.invoke(cli, [*args, "--db", db])
        assert result.exit_code == 0, result.stdout + result.stderr
        return result.stdout

    invoke("init")
    made = json.loads(invoke("webhooks", "add", receiver.url, "--kind", "lead.mql", "--description", "crm", "--json"))
    assert made["kinds"] == ["lead.mql"] and made["secret"].startswith("whsec_")
    assert json.loads(invoke("webhooks", "list", "--json"))[0]["description"] == "crm"
    events = tmp_path / "events.jsonl"
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    event = {"event_id": "d1", "type": "demo_request", "occurred_at": an_hour_ago, "email": "jane@acme.com"}
    events.write_text(json.dumps(event) + "\n")
    invoke("import", "events", str(events))
    engine = create_engine(db)
    with engine.begin() as connection:  # the SLA clock of the MQL has just run out
        connection.execute(update(schema.leads).values(sla_due_at=datetime.now(UTC) - timedelta(seconds=1)))
    engine.dispose()
    assert "SLA breaches 1, segment changes 0, workflow steps 0, emails sent 0, delivered 1" in invoke(
        "worker", "--once"
    )
    assert "SLA clocks of MQLs: 1 (0 met, 1 breached, 0 open, 0 stopped); compliance 0.0%" in invoke("funnel")
    assert json.loads(invoke("funnel", "--json"))["sla"]["breached"] == 1
    [delivery] = json.loads(invoke("webhooks", "deliveries", "--status", "delivered", "--json"))
    assert verify_signature(
        made["secret"], receiver.received[0].body, receiver.received[0].headers["qualify-signature"]
    )
    refused = runner.invoke(cli, ["webhooks", "retry", str(delivery["id"]), "--db", db])
    assert refused.exit_code == 2 and "delivered already" in refused.stderr
    assert "Removed subscription" in invoke("webhooks", "remove", str(made["id"]))


def test_the_worker_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    script, db = str(Path(sys.executable).with_name("qualify")), f"sqlite:///{tmp_path / 'w.db'}"
    subprocess.run([script, "init", "--db", db], check=True, capture_output=True, timeout=60)
    process = subprocess.Popen(
        [script, "worker", "--interval", "0.2", "--db", db],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert process.stderr is not None
    assert "a pass every 0.2 s" in process.stderr.readline()
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=20)
    assert process.returncode == 0 and "Worker stopped after" in rest
