"""Importing a CRM's history in bulk, in any file order, against plain event ingestion.

A generated CRM history (people at companies over two years: emails, visits, downloads, demo
requests; sales accepting, rejecting, opening opportunities, winning and losing them, with the
activity going on after) is written as two files, events and stage changes. Three imports:

- reference: the events alone, in time order, imported live (`qualify import events`): the
  plain ingestion rate;
- history, stages first: the stage changes, then the events shuffled, as history
  (`qualify import stages`, `qualify import events --historical`): every lead arrives out of
  order and is rebuilt at the end;
- history, events first: the events in time order as history, then the stage changes.

    python benchmarks/history_import.py --people 5000 --events 160000

Prints each rate in rows per second (events and stage changes together), the ratio of each
history import to the plain rate, and whether both orders left the same stage histories. Not
part of the test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from qualify.adapters import schema
from qualify.bootstrap import open_workspace
from qualify.domain.model_loader import default_model_text
from qualify.service.imports.files import import_file
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.pipeline import reacting
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

T0 = datetime(2024, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = (NOW - T0).total_seconds()
KINDS = [
    "email_open",
    "email_click",
    "page_view",
    "content_download",
    "webinar_attended",
    "form_submit",
    "demo_request",
]
WEIGHTS = [34, 8, 44, 8, 2, 2, 2]
PATHS: list[list[tuple[str, str]]] = [
    [("accept", "")],
    [("reject", "bad_timing")],
    [("accept", ""), ("open-opportunity", "")],
    [("accept", ""), ("open-opportunity", ""), ("win", "")],
    [("accept", ""), ("open-opportunity", ""), ("lose", "price")],
    [("disqualify", "student")],
]


def generate(people: int, events: int, seed: int) -> tuple[list[list[Any]], list[list[Any]]]:
    """Events (time-ordered) and stage changes: about 3 stage changes for every 5 people who have any."""
    rng = random.Random(seed)
    starts = [T0 + timedelta(seconds=rng.uniform(0, SPAN * 0.8)) for _ in range(people)]
    emails = [f"person{i}@company{i % 700}.com" for i in range(people)]
    event_rows = []
    for n in range(events):
        who = rng.randrange(people)
        when = starts[who] + timedelta(seconds=rng.uniform(0, (NOW - starts[who]).total_seconds() - 60))
        event_rows.append([f"ev-{n}", emails[who], rng.choices(KINDS, WEIGHTS)[0], when])
    event_rows.sort(key=lambda row: row[3])
    stage_rows = []
    for who in rng.sample(range(people), k=people // 3):
        at = starts[who] + timedelta(days=rng.uniform(5, 60))
        for action, reason in rng.choice(PATHS):
            stage_rows.append([emails[who], action, at, "rep" + str(who % 12), reason])
            at += timedelta(days=rng.uniform(3, 90), seconds=rng.randint(1, 59))
    for rows in (event_rows, stage_rows):
        for row in rows:
            index = 3 if rows is event_rows else 2
            row[index] = row[index].isoformat()
    return event_rows, stage_rows


def write(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def fresh(folder: Path, name: str) -> Workspace:
    workspace = open_workspace(Settings(database_url=f"sqlite:///{folder / name}"), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
    return workspace


def timed(workspace: Workspace, steps: list[tuple[str, Path]], history: bool) -> tuple[float, int]:
    target = reacting(workspace, history_before=NOW) if history else workspace
    rebuilt = 0
    started = time.perf_counter()
    for kind, path in steps:
        rebuilt += import_file(target, kind, path, now=NOW, batch_size=1000).rebuilt  # type: ignore[arg-type]
    return time.perf_counter() - started, rebuilt


def histories(workspace: Workspace) -> dict[str, list[tuple[Any, ...]]]:
    h, leads = schema.stage_history, schema.leads
    out: dict[str, list[tuple[Any, ...]]] = {}
    with workspace.unit_of_work() as uow:
        rows = uow.connection.execute(
            select(leads.c.email, h.c.from_stage, h.c.to_stage, h.c.at, h.c.actor)
            .join(leads, leads.c.id == h.c.lead_id)
            .order_by(leads.c.email, h.c.at, h.c.id)
        )
        for email, *move in rows:
            out.setdefault(email, []).append(tuple(move))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=5000)
    parser.add_argument("--events", type=int, default=160_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    events, stages = generate(args.people, args.events, args.seed)
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        ordered = write(folder / "events.csv", ["event_id", "email", "type", "occurred_at"], events)
        shuffled_events = list(events)
        random.Random(args.seed).shuffle(shuffled_events)
        shuffled = write(folder / "events-shuffled.csv", ["event_id", "email", "type", "occurred_at"], shuffled_events)
        random.Random(args.seed + 1).shuffle(stages)
        stage_file = write(folder / "stages.csv", ["email", "action", "at", "by", "reason"], stages)
        rows = len(events) + len(stages)

        plain_seconds, _ = timed(fresh(folder, "plain.db"), [("events", ordered)], history=False)
        first = fresh(folder, "stages-first.db")
        stages_first, rebuilt_a = timed(first, [("stages", stage_file), ("events", shuffled)], history=True)
        second = fresh(folder, "events-first.db")
        events_first, rebuilt_b = timed(second, [("events", ordered), ("stages", stage_file)], history=True)
        same = histories(first) == histories(second)

    plain_rate = len(events) / plain_seconds
    print(f"history: {args.people:,} people, {len(events):,} events, {len(stages):,} stage changes")
    print(f"plain event ingestion (time order, live):   {plain_rate:10,.0f} events/s")
    for label, seconds, rebuilt in (
        ("history, stages first, events shuffled", stages_first, rebuilt_a),
        ("history, events first, then stages", events_first, rebuilt_b),
    ):
        rate = rows / seconds
        print(f"{label}: {rate:10,.0f} rows/s  ratio {rate / plain_rate:.2f}  ({rebuilt:,} leads rebuilt)")
    print(f"same stage histories in both orders: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
