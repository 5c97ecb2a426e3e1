"""Segment-spec batches against Qualify's own event batches, over HTTP, for the same events.

    python benchmarks/segment_ingest.py --events 20000 --batch 500
    python benchmarks/segment_ingest.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test ...

The same events go (a) to POST /v1/events as Qualify's documents and (b) to POST /v1/batch as
Segment `track` messages (userId the lead's email, the event name its type, a messageId, a
timestamp and sentAt), each through `qualify serve` over loopback into a fresh workspace, in
batches of --batch (Segment allows 500 KB a batch). Prints both rates and the ratio; the aim is
at least 0.8. Not part of the test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_ingest import Served, fresh_url, over_http, post_batches, prepare
from ingest import make_world


def as_track(event: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": event.event_id,
        "userId": event.email,
        "event": event.type,
        "timestamp": event.occurred_at.isoformat(),
        "properties": event.properties,
        "context": {"library": {"name": "benchmark", "version": "1"}},
    }


def over_segment(server: Served, events: list[Any], batch: int) -> float:
    key = server.headers["Authorization"].removeprefix("Bearer ")
    basic = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    sent_at = datetime.now(UTC).isoformat()
    bodies = [
        json.dumps({"batch": [as_track(e) for e in events[s : s + batch]], "sentAt": sent_at})
        for s in range(0, len(events), batch)
    ]
    assert max(len(b) for b in bodies) <= 500 * 1024, "a batch over Segment's 500 KB: lower --batch"
    return post_batches(server, "/v1/batch", basic, bodies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--leads", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--db", default=None, help="PostgreSQL URL to run on (a schema per run); default: SQLite files")
    args = parser.parse_args()
    leads, events = make_world(args.leads, args.events, seed=1)
    with tempfile.TemporaryDirectory() as directory:
        own_url, segment_url = fresh_url(args.db, directory, "own"), fresh_url(args.db, directory, "segment")
        prepare(own_url, leads)
        prepare(segment_url, leads)
        timings = {}
        for name, url, send in (("/v1/events", own_url, over_http), ("/v1/batch (Segment)", segment_url, over_segment)):
            server = Served(url)
            try:
                timings[name] = send(server, events, args.batch)
            finally:
                server.stop()
    own, segment = timings["/v1/events"], timings["/v1/batch (Segment)"]
    print(
        f"{len(events):,} events in batches of {args.batch}, {args.leads:,} leads, {'PostgreSQL' if args.db else 'SQLite'}"
    )
    for name, seconds in timings.items():
        print(f"  {name:<22} {seconds:7.2f} s  {len(events) / seconds:9,.0f} events/s")
    print(f"ratio (Segment / own format, events per second): {own / segment:.2f}")


if __name__ == "__main__":
    main()
