"""Several API processes on one PostgreSQL: concurrent events for the same leads lose nothing."""

from __future__ import annotations

import json
import math
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from qualify.adapters import schema
from qualify.adapters.repository import lead_from_row
from qualify.bootstrap import open_workspace
from qualify.domain.model_loader import load_default_model
from qualify.settings import Settings
from tests.e2e.test_serve import Server, run

T0 = datetime(2026, 3, 2, tzinfo=UTC)
LEADS = [f"buyer{i}@acme.com" for i in range(4)] + ["newcomer@globex.com"]
# Rules without caps: the engagement is then a plain sum of decayed points, whatever the order.
KINDS = [("content_download", {"title": "Guide"}), ("webinar_attended", {"title": "Live"}), ("meeting", {})]
SENDERS, REQUESTS, BATCH = 6, 8, 25


def events_of(sender: int, request: int) -> list[dict[str, Any]]:
    rng = random.Random(sender * 1000 + request)
    out = []
    for n in range(BATCH):
        kind, props = rng.choice(KINDS)
        minutes = rng.randrange(0, 60 * 24 * 20)
        out.append(
            {
                "event_id": f"s{sender}-r{request}-{n}",
                "type": kind,
                "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(),
                "email": rng.choice(LEADS),
                "properties": props,
            }
        )
    return out


def expected_engagement(sent: list[dict[str, Any]], at: datetime) -> dict[str, float]:
    """What one process applying every event would give: the sum of each award decayed to `at`."""
    model = load_default_model()
    rules = {r.events[0]: r for r in model.engagement_rules if r.events[0] in {k for k, _ in KINDS}}
    totals = dict.fromkeys(LEADS, 0.0)
    for e in sent:
        rule = rules[e["type"]]
        age_days = (at - datetime.fromisoformat(e["occurred_at"])).total_seconds() / 86_400
        totals[e["email"]] += (
            rule.points * math.pow(2, -age_days / rule.half_life_days) if rule.half_life_days else rule.points
        )
    return totals


@pytest.mark.slow
def test_concurrent_requests_to_several_processes_lose_no_update(postgres_schema_url: str) -> None:
    run("init", "--db", postgres_schema_url)
    key = json.loads(run("keys", "create", "load", "--role", "ingest", "--json", "--db", postgres_schema_url))["key"]
    server = Server(postgres_schema_url, workers=3)
    server.start()
    try:

        def send(sender: int) -> list[int]:
            statuses = []
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
                for request in range(REQUESTS):
                    answer = client.post("/v1/events", json=events_of(sender, request))
                    statuses.append(answer.status_code)
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["accepted"] == BATCH
            return statuses

        with ThreadPoolExecutor(SENDERS) as pool:
            codes = [code for result in pool.map(send, range(SENDERS)) for code in result]
    finally:
        server.stop()
    assert codes == [200] * (SENDERS * REQUESTS)
    sent = [e for s in range(SENDERS) for r in range(REQUESTS) for e in events_of(s, r)]
    at = T0 + timedelta(days=30)
    workspace = open_workspace(Settings(database_url=postgres_schema_url))
    with workspace.unit_of_work() as uow:
        stored = uow.connection.execute(select(func.count()).select_from(schema.events)).scalar_one()
        engagement = {
            row.email: lead_from_row(row).state.engagement_at(at.timestamp())
            for row in uow.connection.execute(select(schema.leads))
        }
    workspace.close()
    assert stored == len(sent) == SENDERS * REQUESTS * BATCH
    expected = expected_engagement(sent, at)
    for email in LEADS:
        assert math.isclose(engagement[email], expected[email], rel_tol=1e-9), email
