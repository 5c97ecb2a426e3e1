"""A backtest of two models over a demo world, in one process and in several, measured in the same
run; the two reports are checked equal.

    python benchmarks/backtest.py --leads 20000 --days 360 --workers 2

Builds a demo world on SQLite (`qualify demo`'s world, seed 5, with the default model live), or
measures the one `--keep FILE` holds (built there when missing). Then backtests a stricter
candidate (grade thresholds raised) against the live model to the world's end: first in this
process (the reference), then with `--workers` processes replaying parts of `--chunk` leads, or
with `--spark` as Spark tasks in a local Spark session (one per part). It prints the leads, the
events replayed, both times, events per second and the ratio of the two times. Not part of the
test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from qualify.bootstrap import open_workspace
from qualify.demo.world import build_demo
from qualify.domain.model_loader import default_model_text, load_model
from qualify.service.analytics.backtest import backtest
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
STRICTER = default_model_text().replace("thresholds: {A: 25, B: 40, C: 70}", "thresholds: {A: 45, B: 65, C: 95}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=2000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=2000, help="leads per part (the command line's own)")
    parser.add_argument("--keep", type=Path, help="the SQLite file to build the world in, or to measure")
    parser.add_argument("--spark", action="store_true", help="compare with Spark tasks instead of worker processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = args.keep or Path(folder) / "backtest.db"
        fresh = not path.exists()
        workspace = open_workspace(Settings(database_url=f"sqlite:///{path}"), create=fresh)
        try:
            if fresh:
                started = time.perf_counter()
                with workspace.unit_of_work() as uow:
                    activate_model(uow, default_model_text())
                build_demo(workspace, seed=5, leads=args.leads, days=args.days, now=NOW)
                print(
                    f"built a demo world of {args.leads:,} leads over {args.days} days in {time.perf_counter() - started:.0f} s"
                )
            with workspace.unit_of_work(read_only=True) as uow:
                live = uow.active_model()
            candidate = load_model(STRICTER)
            started = time.perf_counter()
            alone = backtest(workspace, candidate, live, end=NOW, chunk=args.chunk)
            one = time.perf_counter() - started
            started = time.perf_counter()
            together = backtest(
                workspace, candidate, live, end=NOW, chunk=args.chunk, workers=args.workers,
                engine="spark" if args.spark else "local",
            )  # fmt: skip
            several = time.perf_counter() - started
        finally:
            workspace.close()
    assert together.as_dict() == alone.as_dict(), "the reports differ"
    replayed = 2 * alone.events  # each event is replayed under both models
    print(f"{alone.leads:,} leads, {alone.events:,} events, two models; reports equal")
    print(f"one process:      {one:7.2f} s  ({replayed / one:,.0f} events/s)")
    other = "Spark tasks" if args.spark else f"{args.workers} workers"
    print(f"{other + ':':<17} {several:7.2f} s  ({replayed / several:,.0f} events/s)")
    print(f"ratio one process / {other}: {one / several:.2f}")


if __name__ == "__main__":
    main()
