"""Events per second through the service layer into SQLite, against raw sqlite3 executemany.

Both sides write the same event rows in batches of --batch, one transaction per batch, into
the same table layout (unique event_id, the same indexes). The service side also finds each
event's lead, checks idempotency, scores the event, runs the stage policy and updates the lead.

    python benchmarks/ingest.py --events 100000 --leads 2000 --batch 1000 [--automation]

Prints both rates and their ratio; not part of the test suite's pass/fail. With --automation it
also ingests the same events into a workspace with three segments and a workflow (which test
every touched lead online and enrol on an event), and prints that rate against the plain one.
With --long-history N it gives one lead N page views, then times events of that lead one at a
time, with and without a segment that counts its page views (no window), and prints both.
With --accounts it times the service layer with the default model (which scores accounts) and
with the same model less its `accounts` section, twice each in turn, and prints the best of each
and their ratio: with the accounts kept in each batch's transaction (as the CLI's ingestion and
imports do), and with them left to the worker (as the HTTP API and the event streams do); for
the latter it also times the worker's passes apart: one after the run, or with --pass-every K one
after every K batches and one at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from qualify.bootstrap import open_workspace
from qualify.domain.model_loader import default_model_text
from qualify.domain.records import Event, Lead, make_event
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.unit_of_work import Workspace
from qualify.service.worker import keep_pending_accounts
from qualify.settings import Settings

KINDS = [
    ("email_open", lambda r: {"campaign": f"c{r.randint(1, 20)}"}),
    ("email_click", lambda r: {"campaign": f"c{r.randint(1, 20)}"}),
    ("page_view", lambda r: {"url": r.choice(["/", "/pricing", "/blog/a", "/product", "/careers"])}),
    ("content_download", lambda r: {"content_id": f"k{r.randint(1, 30)}", "title": "Guide"}),
    ("webinar_attended", lambda r: {"title": "Live"}),
    ("form_submit", lambda r: {"form": "contact"}),
]
WEIGHTS = [30, 8, 45, 8, 2, 2]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_world(n_leads: int, n_events: int, seed: int) -> tuple[list[Lead], list[Event]]:
    rng = random.Random(seed)
    leads = [
        Lead(
            email=f"lead{i}@company{i % 400}.com",
            seniority=rng.choice(["vp", "manager", "individual"]),
            department=rng.choice(["marketing", "sales", "engineering", "it", "operations", "finance"]),
            created_at=T0,
        )
        for i in range(n_leads)
    ]
    events = []
    for i in range(n_events):
        kind, props = rng.choices(KINDS, WEIGHTS)[0]
        when = T0 + timedelta(seconds=i * 60 + rng.randint(0, 59))
        events.append(
            make_event(f"ev-{i}", kind, when, email=leads[rng.randrange(n_leads)].email, properties=props(rng))
        )
    return leads, events


def raw_sqlite(path: Path, events: list[Event], batch: int) -> float:
    """The reference: the same rows, written with sqlite3 executemany and nothing else."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, event_id VARCHAR(200) NOT NULL UNIQUE, lead_id INTEGER NOT NULL,"
        " type VARCHAR(64) NOT NULL, occurred_at DATETIME NOT NULL, received_at DATETIME NOT NULL,"
        " properties JSON NOT NULL, awards JSON NOT NULL)"
    )
    connection.execute("CREATE INDEX ix_events_lead_id_occurred_at ON events (lead_id, occurred_at)")
    connection.execute("CREATE INDEX ix_events_type_occurred_at ON events (type, occurred_at)")
    lead_ids: dict[str, int] = {}
    received = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    started = time.perf_counter()
    for start in range(0, len(events), batch):
        rows = [
            (
                e.event_id,
                lead_ids.setdefault(e.email or "", len(lead_ids) + 1),
                e.type,
                e.occurred_at.replace(tzinfo=None).isoformat(sep=" "),
                received,
                json.dumps(e.properties),
                "[]",
            )
            for e in events[start : start + batch]
        ]
        connection.executemany(
            "INSERT INTO events (event_id, lead_id, type, occurred_at, received_at, properties, awards) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        connection.commit()
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


AUTOMATION = """
segments:
  - name: pricing-visitors
    when: [{event: page_view, where: {url: /pricing}, within_days: 30}, {field: stage, in: [lead, mql]}]
  - name: readers
    when: [{event: content_download, min_count: 2}]
  - name: quiet
    when: [{no_event: email_click, within_days: 14}, {field: fit_grade, in: [A, B]}]
workflows:
  - name: follow-up
    trigger: {event: form_submit}
    steps: [{add_tag: form}]
"""


def without_accounts(model: str) -> str:
    """The model less its `accounts` section (the default model's last one)."""
    head, found, _ = model.partition("\naccounts:")
    assert found, "the model has no accounts section"
    return head + "\n"


def through_service(
    path: Path,
    leads: list[Lead],
    events: list[Event],
    batch: int,
    *,
    automation: bool = False,
    model: str | None = None,
    accounts_later: bool = False,
    kept: list[float] | None = None,
    pass_every: int = 0,
) -> float:
    workspace = open_workspace(Settings(database_url=f"sqlite:///{path}"), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, model or default_model_text())
    if automation:
        from qualify.domain.automation import load_automation
        from qualify.service.automation.definitions import put_segments, put_workflows

        document = load_automation(AUTOMATION)
        with workspace.unit_of_work() as uow:
            put_segments(uow, document.segments, by="benchmark")
            put_workflows(uow, document, by="benchmark")
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, leads)
    now = T0 + timedelta(days=120)
    elapsed = passes = 0.0
    for number, start in enumerate(range(0, len(events), batch), 1):
        started = time.perf_counter()
        with workspace.unit_of_work() as uow:
            outcomes = ingest_events(uow, events[start : start + batch], now=now, accounts_later=accounts_later)
        elapsed += time.perf_counter() - started
        assert all(o.status == "accepted" for o in outcomes)
        if kept is not None and pass_every and number % pass_every == 0:
            started = time.perf_counter()
            keep_pending_accounts(workspace, now)
            passes += time.perf_counter() - started
    if kept is not None:  # the worker's share, timed apart: what the run left pending, kept
        started = time.perf_counter()
        keep_pending_accounts(workspace, now)
        kept.append(passes + time.perf_counter() - started)
        with workspace.unit_of_work(read_only=True) as uow:
            assert (
                uow.connection.execute(text("SELECT count(*) FROM accounts WHERE pending_since IS NOT NULL")).scalar()
                == 0
            )
    workspace.close()
    return elapsed


LONG_HISTORY = """
segments:
  - name: frequent-visitors
    when: [{event: page_view, min_count: 3}]
"""


def long_history(path: Path, views: int, probes: int, *, automation: bool) -> float:
    """Seconds per event, one event per batch, for a lead with `views` page views already."""
    workspace = open_workspace(Settings(database_url=f"sqlite:///{path}"), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
    if automation:
        from qualify.domain.automation import load_automation
        from qualify.service.automation.definitions import put_segments

        with workspace.unit_of_work() as uow:
            put_segments(uow, load_automation(LONG_HISTORY).segments, by="benchmark")
    per_event = time_long_history(workspace, "reader@example.com", T0, timedelta(minutes=1), views, probes)
    workspace.close()
    return per_event


def time_long_history(
    workspace: Workspace, email: str, start: datetime, step: timedelta, views: int, probes: int
) -> float:
    """Give the lead of `email` `views` page views `step` apart from `start` (5,000 a batch), then
    time `probes` more, one a batch: seconds per event."""
    history = [
        make_event(f"h-{i}", "page_view", start + i * step, email=email, properties={"url": "/blog/a"})
        for i in range(views)
    ]
    now = start + (views + probes + 1) * step
    for first in range(0, views, 5000):
        with workspace.unit_of_work() as uow:
            ingest_events(uow, history[first : first + 5000], now=now)
    started = time.perf_counter()
    for i in range(probes):
        when = start + (views + i) * step
        with workspace.unit_of_work() as uow:
            ingest_events(uow, [make_event(f"p-{i}", "page_view", when, email=email, properties={"url": "/"})], now=now)
    return (time.perf_counter() - started) / probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--leads", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--automation", action="store_true", help="also measure with segments and a workflow")
    parser.add_argument("--long-history", type=int, metavar="N", help="only time events of one lead with N page views")
    parser.add_argument("--accounts", action="store_true", help="only time with and without account scoring")
    parser.add_argument(
        "--pass-every", type=int, default=0, metavar="K", help="with --accounts: a worker pass after every K batches"
    )
    args = parser.parse_args()
    if args.long_history:
        with tempfile.TemporaryDirectory() as directory:
            plain = long_history(Path(directory) / "plain.db", args.long_history, 50, automation=False)
            counted = long_history(Path(directory) / "counted.db", args.long_history, 50, automation=True)
        print(f"one lead with {args.long_history:,} page views, 50 events one at a time")
        print(f"without segments          : {plain * 1000:8.2f} ms per event")
        print(f"a segment counting views  : {counted * 1000:8.2f} ms per event")
        print(f"ratio with / without      : {counted / plain:.2f}")
        return
    leads, events = make_world(args.leads, args.events, args.seed)
    if args.accounts:
        times: dict[str, list[float]] = {"with": [], "later": [], "without": []}
        kept: list[float] = []
        with tempfile.TemporaryDirectory() as directory:
            for round_ in range(2):
                for name, model in (
                    ("with", default_model_text()),
                    ("later", default_model_text()),
                    ("without", without_accounts(default_model_text())),
                ):
                    path = Path(directory) / f"{name}-{round_}.db"
                    later = name == "later"
                    sink = kept if later else None
                    options = {"model": model, "accounts_later": later, "kept": sink, "pass_every": args.pass_every}
                    times[name].append(through_service(path, leads, events, args.batch, **options))
        best = {name: min(t) for name, t in times.items()}
        n = len(events)
        accounts = len({lead.email.partition("@")[2] for lead in leads if lead.email})
        print(f"events: {n:,}  leads: {args.leads:,} at {accounts:,} accounts  batch: {args.batch:,}  (best of 2 each)")
        print(f"without account scoring   : {n / best['without']:>10,.0f} events/s ({best['without']:.2f} s)")
        print(f"accounts kept in the batch: {n / best['with']:>10,.0f} events/s ({best['with']:.2f} s)")
        print(f"accounts left to the worker: {n / best['later']:>9,.0f} events/s ({best['later']:.2f} s)")
        print(f"cost kept in the batch    : {best['with'] / best['without'] - 1:+.1%}")
        print(f"cost left to the worker   : {best['later'] / best['without'] - 1:+.1%}  (aim: <= +10%)")
        every = (
            f"a pass every {args.pass_every} batches and one at the end" if args.pass_every else "one pass at the end"
        )
        print(f"the worker's passes       : {min(kept):.2f} s ({every})")
        print(f"ratio (ingestion + passes) / kept in the batch: {(best['later'] + min(kept)) / best['with']:.2f}")
        return
    with tempfile.TemporaryDirectory() as directory:
        raw = raw_sqlite(Path(directory) / "raw.db", events, args.batch)
        service = through_service(Path(directory) / "service.db", leads, events, args.batch)
        automated = (
            through_service(Path(directory) / "automated.db", leads, events, args.batch, automation=True)
            if args.automation
            else None
        )
    n = len(events)
    print(f"events: {n:,}  leads: {args.leads:,}  batch: {args.batch:,}")
    print(f"raw sqlite3 executemany : {n / raw:>10,.0f} events/s ({raw:.2f} s)")
    print(f"qualify service layer   : {n / service:>10,.0f} events/s ({service:.2f} s)")
    print(f"ratio service / raw     : {raw / service:.3f}  (aim: >= 0.5)")
    if automated is not None:
        print(f"with 3 segments, 1 flow : {n / automated:>10,.0f} events/s ({automated:.2f} s)")
        print(f"ratio automated / plain : {service / automated:.3f}")


if __name__ == "__main__":
    main()
