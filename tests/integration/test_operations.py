"""What an operator watches: /readyz, /metrics scraped with Prometheus' own parser, request ids,
JSON logs, and the worker's metrics. On SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from tests.conftest import key_for

from qualify.entrypoints.api import create_app
from qualify.entrypoints.observability import WORKER_PASS_SECONDS, JsonLines, serve_metrics
from qualify.service.reading.operations import backlog
from qualify.service.unit_of_work import Workspace, utcnow


@pytest.fixture
def client(workspace: Workspace) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    with workspace.unit_of_work() as uow:
        keys = {role: {"Authorization": f"Bearer {key_for(uow, role)}"} for role in ("admin", "monitor", "sales")}
    with TestClient(create_app(workspace=workspace)) as test_client:
        yield test_client, keys


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, read with Prometheus' own parser: (name, labels) → value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_the_events_and_read_the_queues_from_the_store(
    client: tuple[TestClient, dict[str, dict[str, str]]], workspace: Workspace
) -> None:
    http, keys = client
    before = samples(http.get("/metrics", headers=keys["monitor"]).text)
    events = [
        {"event_id": "m1", "type": "demo_request", "email": "ann@acme.com"},
        {"event_id": "m1", "type": "demo_request", "email": "ann@acme.com"},
        {"event_id": "m2", "type": "Not A Type", "email": "ann@acme.com"},
    ]
    assert http.post("/v1/events", json=events, headers=keys["admin"]).json()["accepted"] == 1
    scrape = http.get("/metrics", headers=keys["monitor"])
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    after = samples(scrape.text)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert grew("qualify_events_total", status="accepted") == 1
    assert grew("qualify_events_total", status="duplicate") == 1
    assert grew("qualify_events_total", status="rejected") == 1
    assert grew("qualify_ingest_seconds_count") == 1
    with workspace.unit_of_work(read_only=True) as uow:
        now = backlog(uow, utcnow())
    assert after[("qualify_leads", (("stage", "mql"),))] == now.leads_by_stage["mql"] >= 1
    assert after[("qualify_webhook_outbox", ())] == now.webhook_outbox
    assert after[("qualify_webhook_dead_letters", ())] == now.webhook_dead
    assert after[("qualify_email_queue", ())] == now.email_queue
    assert after[("qualify_sla_overdue_mqls", ())] == now.sla_overdue
    # The event's account waits for the worker: counted, and how long it has waited.
    assert after[("qualify_accounts_pending", ())] == now.accounts_pending == 1
    assert 0 <= after[("qualify_accounts_pending_oldest_seconds", ())] < 60
    # Only a key that may read metrics: a monitor key reads nothing else.
    assert http.get("/metrics").status_code == 401
    assert http.get("/metrics", headers=keys["sales"]).status_code == 403
    assert http.get("/v1/leads", headers=keys["monitor"]).status_code == 403


def test_readyz_says_whether_the_database_answers(
    client: tuple[TestClient, dict[str, dict[str, str]]], workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    http, _ = client
    assert http.get("/readyz").json() == {"status": "ready"}
    nowhere = create_engine("postgresql+psycopg://nobody:secret@127.0.0.1:1/nothing", pool_pre_ping=False)
    monkeypatch.setattr(workspace, "engine", nowhere)
    down = http.get("/readyz")
    assert down.status_code == 503 and down.json()["status"] == "unavailable"
    assert "secret" not in down.text and "127.0.0.1:1" not in down.text
    assert http.get("/healthz").status_code == 200  # alive, not ready


def test_every_answer_has_a_request_id_and_the_logs_carry_it(
    client: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    http, keys = client
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines())
    access = logging.getLogger("qualify.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        given = http.get("/v1/leads", headers={**keys["admin"], "X-Request-ID": "req-42.a"})
        made = http.get("/healthz", headers={"X-Request-ID": "not ok\u0000"})
    finally:
        access.removeHandler(handler)
    assert given.headers["x-request-id"] == "req-42.a"
    assert made.headers["x-request-id"] != "not ok" and len(made.headers["x-request-id"]) == 32
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    first = next(line for line in lines if line["path"] == "/v1/leads")
    assert first["request_id"] == "req-42.a" and first["status"] == 200 and first["method"] == "GET"
    assert first["level"] == "info" and first["logger"] == "qualify.access" and first["duration_ms"] >= 0
    assert {"time", "message"} <= first.keys()


def test_a_bug_is_answered_as_a_problem_with_the_request_id_and_logged(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 500 leaves the request-id middleware like any answer: the caller can quote the id."""
    import qualify.entrypoints.api.routes.leads as leads_routes

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(leads_routes, "list_page", broken)
    with workspace.unit_of_work() as uow:
        admin = {"Authorization": f"Bearer {key_for(uow, 'admin')}"}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines())
    loggers = [logging.getLogger("qualify.access"), logging.getLogger("qualify.errors")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        with TestClient(create_app(workspace=workspace)) as http:  # the error is not raised on: it is answered
            answer = http.get("/v1/leads", headers={**admin, "X-Request-ID": "bug-1"})
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert answer.status_code == 500 and answer.headers["x-request-id"] == "bug-1"
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("internal-error") and "a bug" not in answer.text
    logged = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["request_id"], line["status"]) for line in logged if line.get("path") == "/v1/leads"] == [
        ("bug-1", 500)
    ]
    error = next(line for line in logged if line["logger"] == "qualify.errors")
    assert error["request_id"] == "bug-1" and error["level"] == "error" and error["message"] == "GET /v1/leads failed"
    assert "RuntimeError: a bug" in error["exception"]


def test_the_worker_serves_its_pass_durations() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve_metrics(port)
    WORKER_PASS_SECONDS.observe(0.2)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    found: dict[Any, float] = samples(text)
    assert found[("qualify_worker_pass_seconds_count", ())] >= 1


def test_a_served_api_keeps_what_it_started_with_out_of_the_collector_s_way(sqlite_workspace: Workspace) -> None:
    """`qualify serve` freezes what startup made (modules, the app, the workspace): a full garbage
    collection then walks only what requests made since, not a pause of 60-80 ms in the middle of
    a request. An app given a workspace (the tests) leaves the collector alone."""
    import gc

    from qualify.settings import Settings

    gc.unfreeze()
    try:
        with TestClient(create_app(workspace=sqlite_workspace)) as given:
            assert given.get("/healthz").status_code == 200 and gc.get_freeze_count() == 0
        with TestClient(create_app(Settings(database_url=str(sqlite_workspace.engine.url)))) as served:
            assert served.get("/healthz").status_code == 200 and gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
