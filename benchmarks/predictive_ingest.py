"""Events per second with a predictive model active, against the same workspace without one.

Builds a demo world (SQLite), trains a model on it (`qualify train --target sql --within 60
--activate --force`) in one copy and leaves the other without, then ingests the same new events
for the demo's leads into both, in batches, one transaction per batch, the model-less copy
first. With a model active every batch also computes the touched leads' features as of their
newest event and stores their probability (and judges the stage policy with it where it has
probability thresholds).

    python benchmarks/predictive_ingest.py [--leads 600] [--events 6000] [--batch 500] [--long-history N]

Prints both times and their ratio (without / with: 1.0 means the model costs nothing), and both
against the same events written by raw sqlite3 executemany (`benchmarks/ingest.py`'s reference:
everything switched on, the model, the demo's segments and workflows, against the bare rows); not part
of the test suite's pass/fail. The first batch with a model also loads it (the model's library is
imported once per process): the ratio is printed with and without that batch. With --long-history
N it then gives one lead N more page views and times its next events one a batch, in both copies.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from qualify.adapters import schema
from qualify.bootstrap import open_workspace
from qualify.demo.world import build_demo
from qualify.domain.records import Event, make_event
from qualify.service.lifecycle.events import ingest_events
from qualify.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import KINDS, WEIGHTS, raw_sqlite, time_long_history  # the same events, reference and probes


def build(folder: Path, leads: int, seed: int) -> Path:
    path = folder / "demo.db"
    workspace = open_workspace(Settings(database_url=f"sqlite:///{path}"), create=True)
    from qualify.domain.model_loader import default_model_text
    from qualify.service.lifecycle.scoring_models import activate_model

    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
    build_demo(workspace, seed=seed, leads=leads, days=180, now=NOW)
    workspace.engine.dispose()
    return path


NOW = datetime(2026, 6, 1, tzinfo=UTC)


def new_events(path: Path, count: int, seed: int) -> list[Event]:
    """`count` events for the demo's leads over the day after the demo ends."""
    workspace = open_workspace(Settings(database_url=f"sqlite:///{path}"))
    with workspace.unit_of_work(read_only=True) as uow:
        emails = list(
            uow.connection.execute(
                select(schema.leads.c.email).where(schema.leads.c.email.is_not(None)).order_by(schema.leads.c.id)
            ).scalars()
        )
    workspace.engine.dispose()
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind, props = rng.choices(KINDS, WEIGHTS)[0]
        when = NOW + timedelta(seconds=i * 10 + rng.randint(0, 9))
        out.append(make_event(f"bench-{i}", kind, when, email=rng.choice(emails), properties=props(rng)))
    return out


def ingest(path: Path, events: list[Event], batch: int) -> list[float]:
    """Seconds per batch."""
    workspace = open_workspace(Settings(database_url=f"sqlite:///{path}"))
    times = []
    for start in range(0, len(events), batch):
        began = time.perf_counter()
        with workspace.unit_of_work() as uow:
            ingest_events(uow, events[start : start + batch], now=NOW + timedelta(days=1))
        times.append(time.perf_counter() - began)
    workspace.engine.dispose()
    return times


def long_history(path: Path, views: int, probes: int) -> float:
    """Seconds per event, one event per batch, for a demo lead given `views` more page views."""
    workspace = open_workspace(Settings(database_url=f"sqlite:///{path}"))
    with workspace.unit_of_work(read_only=True) as uow:
        email = uow.connection.execute(
            select(schema.leads.c.email).where(schema.leads.c.email.is_not(None)).order_by(schema.leads.c.id)
        ).scalar()
    per_event = time_long_history(workspace, email, NOW + timedelta(days=2), timedelta(seconds=1), views, probes)
    workspace.close()
    return per_event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=600)
    parser.add_argument("--events", type=int, default=6_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--long-history",
        type=int,
        metavar="N",
        help="then give one lead N page views and time its next events, one a batch",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        built = build(Path(folder), args.leads, args.seed)
        plain, modelled = Path(folder) / "plain.db", Path(folder) / "model.db"
        shutil.copy(built, plain)
        shutil.copy(built, modelled)
        trained = subprocess.run(
            [sys.executable, "-c", "from qualify.entrypoints.cli import main; main()", "train",
             "--db", f"sqlite:///{modelled}", "--target", "sql", "--within", "60", "--end", NOW.isoformat(),
             "--activate", "--force", "--json"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if trained.returncode != 0:
            raise SystemExit(f"qualify train failed:\n{trained.stdout}\n{trained.stderr}")
        events = new_events(built, args.events, args.seed)
        reference = raw_sqlite(Path(folder) / "raw.db", events, args.batch)
        without = ingest(plain, events, args.batch)
        with_model = ingest(modelled, events, args.batch)
        if args.long_history:
            per_plain = long_history(plain, args.long_history, 20)
            per_model = long_history(modelled, args.long_history, 20)
    print(f"{args.leads}-lead demo, {len(events):,} events in batches of {args.batch}")
    print(f"without a predictive model: {sum(without):.2f} s ({len(events) / sum(without):,.0f} events/s)")
    print(f"with one active:            {sum(with_model):.2f} s ({len(events) / sum(with_model):,.0f} events/s)")
    print(f"raw sqlite3 executemany:    {reference:.2f} s ({len(events) / reference:,.0f} events/s)")
    print(f"ratio without/with: {sum(without) / sum(with_model):.2f}")
    print(
        f"ratio with a model, the demo's segments and workflows / raw sqlite3: {reference / sum(with_model):.3f} "
        f"(without a model: {reference / sum(without):.3f})"
    )
    if len(without) > 1:
        rest = sum(without[1:]) / sum(with_model[1:])
        print(f"ratio without the first batch (the model loaded, its library imported): {rest:.2f}")
    if args.long_history:
        print(
            f"a lead with {args.long_history:,} more page views, one event a batch: {per_plain * 1000:.1f} ms without "
            f"a model, {per_model * 1000:.1f} ms with one (ratio {per_plain / per_model:.2f})"
        )


if __name__ == "__main__":
    main()
