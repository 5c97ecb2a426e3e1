"""`qualify serve` killed with SIGKILL at random moments while senders keep it busy.

Each sender sends its own stream of events in batches and, when a request gets no answer (the
server died under it), sends the same batch again once the server is back: the client's rule
for anything not acknowledged. Afterwards every event is stored exactly once, every acknowledged
event among them, and the leads' scores and stage histories equal those of a clean replay of the
same events into a workspace that never crashed. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from qualify.adapters import schema
from qualify.adapters.repository import lead_from_row
from qualify.bootstrap import open_workspace
from qualify.domain.records import make_event
from qualify.service.lifecycle.events import ingest_events
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings
from tests.conftest import fresh_postgres_schema
from tests.e2e.test_serve import Server, run

SENDERS, BATCHES, BATCH, KILLS = 4, 30, 40, 5
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)
KINDS = [
    ("page_view", {"url": "/pricing"}),
    ("page_view", {"url": "/blog/scoring"}),
    ("email_open", {"campaign": "spring"}),
    ("email_click", {"campaign": "spring"}),
    ("content_download", {"title": "Guide"}),
    ("webinar_attended", {"title": "Live"}),
    ("demo_request", {}),
]


def stream(sender: int) -> list[list[dict[str, Any]]]:
    """A sender's batches, in the order it sends them. Each sender has its own leads and domain,
    so the order in which the server interleaves senders cannot change anyone's scores."""
    rng = random.Random(sender)
    batches = []
    for b in range(BATCHES):
        batch = []
        for n in range(BATCH):
            kind, props = rng.choices(KINDS, weights=[30, 20, 20, 10, 8, 4, 1])[0]
            batch.append(
                {
                    "event_id": f"s{sender}-{b}-{n}",
                    "type": kind,
                    "occurred_at": (T0 + timedelta(minutes=rng.randrange(0, 60 * 24 * 19))).isoformat(),
                    "email": f"p{rng.randrange(12)}@sender{sender}.example.com",
                    "properties": props,
                }
            )
        batches.append(batch)
    return batches


class Load:
    """Senders that retry what was not acknowledged, and the figures of what happened."""

    def __init__(self, server: Server, key: str) -> None:
        self.server, self.key = server, key
        self.lock = threading.Lock()
        self.acknowledged: dict[str, str] = {}  # event id -> the status the server gave it
        self.requests = self.refused = self.cut_off = self.replayed_duplicates = 0
        self.sent_at: dict[int, float] = {}  # when each sender's request not answered yet was sent

    def under_way(self, seconds: float) -> bool:
        """Whether a request was sent at least `seconds` ago and is not answered yet."""
        with self.lock:
            return any(time.monotonic() - at >= seconds for at in self.sent_at.values())

    def send(self, sender: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        for batch in stream(sender):
            retried = False
            while True:
                try:
                    with self.lock:
                        self.sent_at[sender] = time.monotonic()
                    try:
                        answer = httpx.post(f"{self.server.url}/v1/events", json=batch, headers=headers, timeout=30)
                    finally:
                        with self.lock:
                            del self.sent_at[sender]
                except httpx.TransportError as error:  # no answer: the server was down, or died while it worked
                    with self.lock:
                        self.requests += 1
                        if isinstance(error, httpx.ConnectError):
                            self.refused += 1
                        else:
                            self.cut_off += 1
                    retried = True
                    time.sleep(0.05)
                    continue
                with self.lock:
                    self.requests += 1
                assert answer.status_code == 200, answer.text
                results = answer.json()["results"]
                assert all(r["status"] in ("accepted", "duplicate") for r in results), results
                assert retried or all(r["status"] == "accepted" for r in results), results
                with self.lock:
                    for r in results:
                        self.acknowledged[r["event_id"]] = r["status"]
                    self.replayed_duplicates += sum(r["status"] == "duplicate" for r in results)
                break


@pytest.fixture
def clean_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty store on the same engine, for the clean replay."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'clean.db'}"
    else:
        with fresh_postgres_schema() as url:
            yield url


def snapshot(url: str) -> tuple[list[Any], list[Any], int, int]:
    at = (T0 + timedelta(days=20)).timestamp()
    workspace = open_workspace(Settings(database_url=url))
    try:
        with workspace.unit_of_work(read_only=True) as uow:
            conn = uow.connection
            leads = sorted(
                (r.email, r.stage, r.fit_score, round(lead_from_row(r).state.engagement_at(at), 9))
                for r in conn.execute(select(schema.leads))
            )
            history = schema.stage_history
            moves = sorted(
                (r.email, r.from_stage or "", r.to_stage, r.at, r.reason or "")
                for r in conn.execute(
                    select(schema.leads.c.email, history).join(history, history.c.lead_id == schema.leads.c.id)
                )
            )
            copies = conn.execute(
                select(func.count()).select_from(
                    select(schema.events.c.event_id)
                    .group_by(schema.events.c.event_id)
                    .having(func.count() > 1)
                    .subquery()
                )
            ).scalar_one()
            stored = conn.execute(select(func.count()).select_from(schema.events)).scalar_one()
    finally:
        workspace.close()
    return leads, moves, copies, stored


def clean_replay(url: str) -> None:
    run("init", "--db", url)
    workspace: Workspace = open_workspace(Settings(database_url=url))
    try:
        for sender in range(SENDERS):
            for batch in stream(sender):
                events = [
                    make_event(
                        e["event_id"],
                        e["type"],
                        datetime.fromisoformat(e["occurred_at"]),
                        email=e["email"],
                        properties=e["properties"],
                    )
                    for e in batch
                ]
                with workspace.unit_of_work() as uow:
                    ingest_events(uow, events, by="api:replay")
    finally:
        workspace.close()


@pytest.mark.slow
def test_random_kills_under_load_lose_nothing_and_count_nothing_twice(database_url: str, clean_url: str) -> None:
    run("init", "--db", database_url)
    key = json.loads(run("keys", "create", "load", "--role", "ingest", "--json", "--db", database_url))["key"]
    workers = 1 if database_url.startswith("sqlite") else 2
    server = Server(database_url, workers=workers)
    server.start()
    load = Load(server, key)
    kills = 0
    try:
        with ThreadPoolExecutor(SENDERS) as pool:
            senders = [pool.submit(load.send, s) for s in range(SENDERS)]
            rng = random.Random(7)
            total = SENDERS * BATCHES * BATCH
            # Kill at random points of the load (so the senders cannot finish first), each a random
            # moment after the point: mid-request, mid-commit, between two requests.
            for point in sorted(rng.uniform(0.05, 0.85) for _ in range(KILLS)):
                while len(load.acknowledged) < point * total and not any(f.done() for f in senders):
                    time.sleep(0.01)
                time.sleep(rng.uniform(0, 0.3))
                # Every other kill waits for a request to be under way, past its connection (after a
                # restart the senders may all still be pausing before they send again): some are cut off.
                deadline = time.monotonic() + 5
                while kills % 2 == 0 and time.monotonic() < deadline and not load.under_way(0.02):
                    time.sleep(0.005)
                server.kill()
                kills += 1
                server.start()
            for future in senders:
                future.result(timeout=300)  # a sender's failed assertion fails the test
    finally:
        server.stop()

    sent = {e["event_id"] for s in range(SENDERS) for b in stream(s) for e in b}
    print(  # the figures of docs/reliability.md, shown with -s
        f"{database_url.split(':')[0]}: {len(sent)} events in {load.requests} requests, {kills} kills, "
        f"{load.refused} requests refused, {load.cut_off} cut off mid-request, {load.replayed_duplicates} replayed events already stored"
    )
    assert kills == KILLS and load.cut_off > 0
    assert set(load.acknowledged) == sent
    leads, moves, copies, stored = snapshot(database_url)
    assert (copies, stored) == (0, len(sent))
    clean_replay(clean_url)
    clean_leads, clean_moves, _, _ = snapshot(clean_url)
    assert leads == clean_leads
    assert moves == clean_moves
