"""PostgreSQL at volume: the same operations on a small workspace and on the same workspace grown
to --leads leads, measured in one run.

    python benchmarks/postgres_volume.py --leads 1000000
    python benchmarks/postgres_volume.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test --leads 200000

1. A demo world of --template-leads leads over --days days is built through the service (events,
   sales decisions, handoff, segments and workflows: every table a real workspace fills), in a
   schema of its own.
2. The operations below are timed on it: the reference.
3. The world is copied inside PostgreSQL (INSERT … SELECT over generate_series) until it holds
   --leads leads: every per-lead table (leads, accounts, events, stage history, assignments,
   memberships, enrolments, …) gets each row again with its ids moved past the last copy's and
   its unique keys suffixed, so the copies have the template's shape: its stages, scores,
   histories and engagement states. ANALYZE, then:
4. the same operations are timed again, and each printed beside its reference with the ratio.

The operations: ingesting batches of --batch events for existing leads (events/s); single events
one at a time, each its own transaction (p50 and p99); the sales queue's first page and count; a
lead's page; the lead list's first page and count; the funnel report. Nothing runs over HTTP
(`http_ingest.py` measures the server). The schema is dropped at the end unless --keep.
Not part of the test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, String, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard import median_time
from http_ingest import fresh_url

from qualify.adapters import schema
from qualify.bootstrap import open_workspace
from qualify.demo.world import build_demo
from qualify.domain.model_loader import default_model_text
from qualify.domain.records import make_event
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.reading.funnel import funnel
from qualify.service.reading.lead_list import LeadFilter, count_leads, list_page
from qualify.service.reading.queries import lead_profile
from qualify.service.reading.sales_queue import count_queue, sales_queue
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
KINDS = ("page_view", "email_open", "email_click", "content_download")


def per_lead_tables(connection: Any) -> list[Any]:
    """The tables holding rows about leads and accounts (directly or through another such table),
    in dependency order, that the template filled."""
    chosen: list[Any] = []
    names: set[str] = set()
    for table in schema.metadata.sorted_tables:
        targets = {fk.column.table.name for fk in table.foreign_keys}
        if table.name in ("leads", "accounts") or targets & names:
            if connection.execute(select(func.count()).select_from(table)).scalar_one():
                chosen.append(table)
                names.add(table.name)
    return chosen


def unique_columns(table: Any) -> set[str]:
    """Columns that must differ from row to row on their own."""
    found = {c.name for c in table.columns if c.unique}
    for constraint in table.constraints:
        columns = list(getattr(constraint, "columns", []))
        if constraint.__class__.__name__ == "UniqueConstraint" and len(columns) == 1:
            found.add(columns[0].name)
    for index in table.indexes:
        if index.unique and len(index.columns) == 1:
            found.add(next(iter(index.columns)).name)
    return found


def grow(workspace: Workspace, copies: int) -> dict[str, int]:
    """Add `copies` copies of every per-lead row; return each table's row count after."""
    counts: dict[str, int] = {}
    with workspace.unit_of_work() as uow:
        conn = uow.connection
        tables = per_lead_tables(conn)
        spans = {}
        for table in tables:
            if "id" in table.c and isinstance(table.c.id.type, Integer):
                spans[table.name] = int(conn.execute(select(func.max(table.c.id))).scalar_one() or 0)
    for table in tables:
        unique = unique_columns(table)
        shifted = {fk.parent.name: fk.column.table.name for fk in table.foreign_keys if fk.column.table.name in spans}
        values = []
        for column in table.columns:
            name = f'src."{column.name}"'
            if column.name == "id" and table.name in spans:
                values.append(f"{name} + k * {spans[table.name]}")
            elif column.name in shifted:
                values.append(f"{name} + k * {spans[shifted[column.name]]}")
            elif column.name in unique and isinstance(column.type, String):
                values.append(f"{name} || '.' || k")
            elif column.name in unique and not column.primary_key:
                raise SystemExit(f"{table.name}.{column.name}: a unique column this benchmark cannot copy")
            else:
                values.append(name)
        columns = ", ".join(f'"{c.name}"' for c in table.columns)
        started = time.perf_counter()
        with workspace.unit_of_work() as uow:
            uow.connection.execute(
                text(
                    f'INSERT INTO "{table.name}" ({columns}) SELECT {", ".join(values)} '
                    f'FROM "{table.name}" AS src, generate_series(1, {copies}) AS k'
                )
            )
            if table.name in spans:
                uow.connection.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('\"{table.name}\"', 'id'), (SELECT max(id) FROM \"{table.name}\"))"
                    )
                )
            counts[table.name] = uow.connection.execute(select(func.count()).select_from(table)).scalar_one()
        print(f"  {table.name:<24} {counts[table.name]:>12,} rows  ({time.perf_counter() - started:.1f} s)", flush=True)
    with workspace.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    return counts


def measure(workspace: Workspace, now: datetime, batches: int, batch: int, probes: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    with workspace.unit_of_work(read_only=True) as uow:
        leads = schema.leads
        top = uow.connection.execute(select(func.max(leads.c.id))).scalar_one()
        keys = [
            email
            for email in uow.connection.execute(
                select(leads.c.email).where(leads.c.id.in_([rng.randint(1, top) for _ in range(400)]))
            ).scalars()
            if email
        ]
    tag = f"{seed}-{rng.randrange(10**9)}"
    out: dict[str, float] = {}

    started = time.perf_counter()
    for b in range(batches):
        events = [
            make_event(f"vol-{tag}-{b}-{i}", rng.choice(KINDS), now - timedelta(minutes=rng.randint(1, 600)),
                       email=rng.choice(keys), properties={"url": "/pricing"})
            for i in range(batch)
        ]  # fmt: skip
        with workspace.unit_of_work() as uow:
            ingest_events(uow, events, now=now)
    out["ingest, events/s"] = batches * batch / (time.perf_counter() - started)

    singles = []
    for n in range(probes):
        event = make_event(f"one-{tag}-{n}", "email_click", now - timedelta(minutes=1), email=rng.choice(keys))
        started = time.perf_counter()
        with workspace.unit_of_work() as uow:
            ingest_events(uow, [event], now=now)
        singles.append(time.perf_counter() - started)
    singles.sort()
    out["one event, p50 ms"] = statistics.median(singles) * 1000
    out["one event, p99 ms"] = singles[min(len(singles) - 1, int(0.99 * len(singles)))] * 1000

    def read(use: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with workspace.unit_of_work(read_only=True) as uow:
                return use(uow)

        return run

    out["sales queue page + count, ms"] = 1000 * median_time(
        read(lambda uow: (sales_queue(uow, limit=50), count_queue(uow))), 5
    )
    out["lead page, ms"] = 1000 * median_time(read(lambda uow: lead_profile(uow, rng.choice(keys), now=now)), 5)
    wanted = LeadFilter()
    out["lead list page + count, ms"] = 1000 * median_time(
        read(lambda uow: (list_page(uow, wanted), count_leads(uow, wanted))), 5
    )
    out["funnel, ms"] = 1000 * median_time(read(lambda uow: funnel(uow, now=now)), repeat=3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=DEFAULT_DB, help="a PostgreSQL URL (a schema of its own is made there)")
    parser.add_argument("--leads", type=int, default=1_000_000, help="leads after growing")
    parser.add_argument("--template-leads", type=int, default=2_000, help="leads of the demo world built first")
    parser.add_argument("--days", type=int, default=100, help="days of history of the demo world")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the schema (its name is printed)")
    args = parser.parse_args()
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    url = fresh_url(args.db, "", "volume", keep=args.keep)
    workspace = open_workspace(Settings(database_url=url), create=True)
    try:
        with workspace.unit_of_work() as uow:
            activate_model(uow, default_model_text())
        started = time.perf_counter()
        demo = build_demo(workspace, leads=args.template_leads, days=args.days, now=now)
        print(
            f"template: {demo.leads:,} leads, {demo.events:,} events, {demo.stage_actions:,} sales decisions "
            f"built in {time.perf_counter() - started:.1f} s"
        )
        small = measure(workspace, now, args.batches, args.batch, args.probes, seed=1)
        copies = max(0, args.leads // demo.leads - 1)
        print(f"growing to {(copies + 1) * demo.leads:,} leads ({copies:,} copies):", flush=True)
        started = time.perf_counter()
        counts = grow(workspace, copies)
        print(
            f"grown in {time.perf_counter() - started:.1f} s: {counts['leads']:,} leads, {counts.get('events', 0):,} events"
        )
        large = measure(workspace, now, args.batches, args.batch, args.probes, seed=2)
        print()
        print(f"{'operation':<30} {'template':>12} {'grown':>12} {'grown / template':>17}")
        for name, before in small.items():
            after = large[name]
            print(f"{name:<30} {before:>12,.1f} {after:>12,.1f} {after / before:>17.2f}")
        print("(events/s: higher is better; ms: lower is better. The ratio is grown / template)")
    finally:
        workspace.close()
        if args.keep:
            print(f"kept: {url}")


if __name__ == "__main__":
    main()
