"""HTTP ingestion against in-process ingestion, and the latency of one event under load.

    python benchmarks/http_ingest.py --events 50000 --batch 1000
    python benchmarks/http_ingest.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test ...

1. Throughput: the same events ingested (a) in process through `ingest_events`, batches of
   --batch, and (b) through `qualify serve` over loopback, POST /v1/events with the same
   batches, each into a fresh workspace. Prints both rates and their ratio.
2. Latency: while --load-threads senders post batches of --load-batch events continuously,
   single events are posted one at a time; each is timed from the request until the lead's new
   stage is readable from GET /v1/leads/{key} (p50 and p99 over --probes events). On PostgreSQL
   the tables are analysed first, as autovacuum would have done on a running store.

Not part of the test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import make_world

from qualify.bootstrap import open_workspace
from qualify.domain.model_loader import default_model_text
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.settings import Settings

SCRIPT = str(Path(sys.executable).with_name("qualify"))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fresh_url(base: str | None, directory: str, name: str, *, keep: bool = False) -> str:
    """A SQLite file in `directory`, or a URL of a new PostgreSQL schema at `base` (dropped when
    the run ends unless `keep`)."""
    if base is None:
        return f"sqlite:///{Path(directory) / name}.db"
    schema = f"bench_{name}_{os.getpid()}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    if not keep:
        atexit.register(drop_schema, base, schema)  # the run's schemas do not outlive it
    return (
        make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    )


def drop_schema(base: str, schema: str) -> None:
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


def prepare(url: str, leads: list[Any]) -> None:
    workspace = open_workspace(Settings(database_url=url), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, leads)
    workspace.close()


def in_process(url: str, events: list[Any], batch: int) -> float:
    workspace = open_workspace(Settings(database_url=url))
    started = time.perf_counter()
    for start in range(0, len(events), batch):
        with workspace.unit_of_work() as uow:
            ingest_events(uow, events[start : start + batch])
    elapsed = time.perf_counter() - started
    workspace.close()
    return elapsed


def analyze(url: str) -> None:
    """Table statistics, as PostgreSQL's autovacuum gathers them on a store running for a minute or
    more. A fresh schema has none: the generic plan psycopg's prepared look-up of event ids gets
    then compares every stored id with every id of the batch (23 ms a batch of 100 events at 10,000
    events stored, against 1.6 ms with statistics), which measures the fresh schema, not the
    server. SQLite needs none."""
    if not url.startswith("postgresql"):
        return
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("ANALYZE"))
    engine.dispose()


def as_json(event: Any) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "type": event.type,
        "occurred_at": event.occurred_at.isoformat(),
        "email": event.email,
        "properties": event.properties,
    }


class Served:
    def __init__(self, url: str) -> None:
        self.url = url
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        key = subprocess.run(
            [SCRIPT, "keys", "create", "bench", "--role", "admin", "--json", "--db", url],
            capture_output=True,
            text=True,
            check=True,
        )
        self.headers = {"Authorization": f"Bearer {json.loads(key.stdout)['key']}"}
        self.process = subprocess.Popen(
            [SCRIPT, "serve", "--port", str(self.port), "--db", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # The per-key ingestion limit would measure itself, not the server: off for the benchmark.
            env={**os.environ, "QUALIFY_INGEST_RATE": "0"},
        )
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit("qualify serve did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def over_http(server: Served, events: list[Any], batch: int) -> float:
    bodies = [json.dumps([as_json(e) for e in events[s : s + batch]]) for s in range(0, len(events), batch)]
    return post_batches(server, "/v1/events", server.headers, bodies)


def post_batches(server: Served, path: str, headers: dict[str, str], bodies: list[str]) -> float:
    """Seconds to post every body to `path`, one after the other; each must be answered with nothing rejected."""
    with httpx.Client(
        base_url=server.base, headers={**headers, "Content-Type": "application/json"}, timeout=120
    ) as client:
        started = time.perf_counter()
        for body in bodies:
            answer = client.post(path, content=body)
            assert answer.status_code == 200 and answer.json()["rejected"] == 0, answer.text[:300]
        return time.perf_counter() - started


def latency(server: Served, threads: int, load_batch: int, probes: int) -> list[float]:
    # This process holds the whole generated world: a full collection of it would stop the
    # probe's clock for 40-80 ms at a time, which times the benchmark, not the server.
    gc.freeze()
    stop = threading.Event()

    def load(worker: int) -> None:
        n = 0
        with httpx.Client(base_url=server.base, headers=server.headers, timeout=120) as client:
            while not stop.is_set():
                when = T0 + timedelta(days=200, seconds=n)
                batch = [
                    {
                        "event_id": f"load-{worker}-{n}-{i}",
                        "type": "page_view",
                        "occurred_at": when.isoformat(),
                        "email": f"load{worker}-{i % 50}@busy.example",
                        "properties": {"url": "/blog"},
                    }
                    for i in range(load_batch)
                ]
                client.post("/v1/events", json=batch)
                n += 1

    workers = [threading.Thread(target=load, args=(w,), daemon=True) for w in range(threads)]
    for worker in workers:
        worker.start()
    timings = []
    with httpx.Client(base_url=server.base, headers=server.headers, timeout=120) as client:
        for n in range(probes):
            email = f"probe{n}@probe.example"
            event = {
                "event_id": f"probe-{n}",
                "type": "quote_request",
                "occurred_at": datetime.now(UTC).isoformat(),
                "email": email,
            }
            started = time.perf_counter()
            client.post("/v1/events", json=event)
            stage = client.get(f"/v1/leads/{email}").json()["stage"]
            timings.append(time.perf_counter() - started)
            assert stage == "sql", stage  # a quote request fast-tracks to SQL: the new stage is readable
    stop.set()
    for worker in workers:
        worker.join(timeout=30)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--leads", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--db", default=None, help="PostgreSQL URL to run on (a schema per run); default: SQLite files")
    parser.add_argument("--load-threads", type=int, default=2)
    parser.add_argument("--load-batch", type=int, default=100)
    parser.add_argument("--probes", type=int, default=200)
    args = parser.parse_args()
    leads, events = make_world(args.leads, args.events, seed=1)
    with tempfile.TemporaryDirectory() as directory:
        local_url, http_url = fresh_url(args.db, directory, "local"), fresh_url(args.db, directory, "http")
        prepare(local_url, leads)
        prepare(http_url, leads)
        local = in_process(local_url, events, args.batch)
        server = Served(http_url)
        try:
            remote = over_http(server, events, args.batch)
            analyze(http_url)
            timings = sorted(latency(server, args.load_threads, args.load_batch, args.probes))
        finally:
            server.stop()
    n = len(events)
    engine = "PostgreSQL" if args.db else "SQLite"
    print(f"engine: {engine}  events: {n:,}  leads: {args.leads:,}  batch: {args.batch:,}")
    print(f"in-process ingest_events : {n / local:>9,.0f} events/s ({local:.2f} s)")
    print(f"HTTP POST /v1/events     : {n / remote:>9,.0f} events/s ({remote:.2f} s)")
    print(f"ratio HTTP / in-process  : {local / remote:.3f}")
    p50, p99 = statistics.median(timings), timings[min(len(timings) - 1, int(0.99 * len(timings)))]
    print(
        f"one event to readable stage under load ({args.load_threads} senders x {args.load_batch} events): "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over {len(timings)} probes"
    )


if __name__ == "__main__":
    main()
