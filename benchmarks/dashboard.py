"""The dashboard's pages on a large workspace: each page's server time beside the service call it
renders, measured in the same run.

    python benchmarks/dashboard.py --leads 100000

Builds a SQLite workspace with the default model: `--leads` leads at `--leads / 20` accounts,
each with a page view, a third with an email click, and one in twenty with a demo request (a
fast track to MQL, so about 5 % are MQLs with owners). Then, signed in as an admin through the
application in-process (no network), each page is requested `--repeat` times and its median
time printed, beside the median time of the service call behind it (the funnel report, the
sales queue, the lead profile) and their ratio: what rendering the page adds. Last, the first
insights request after a change (an event ingested), beside the recomputation of their figures
it starts in the background (a Parquet export of the workspace and two batch reports on
SQLite). `--keep FILE` builds the workspace in FILE, or measures the one FILE holds. Not part
of the test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from qualify.bootstrap import open_workspace
from qualify.domain.model_loader import default_model_text
from qualify.domain.records import Account, Event, Lead
from qualify.entrypoints.api.app import create_app
from qualify.service.admin.users import add_user
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.reading.accounts import account_view, list_accounts
from qualify.service.reading.funnel import funnel
from qualify.service.reading.lead_list import LeadFilter, count_leads, list_page
from qualify.service.reading.queries import lead_profile
from qualify.service.reading.sales_queue import count_queue, sales_queue
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

PASSWORD = "benchmark password"
CHUNK = 5000
INDUSTRIES = ("software", "retail", "healthcare", "education", "manufacturing")
COUNTRIES = ("US", "GB", "DE", "FR", "CA", "BR")
SENIORITIES = ("vp", "director", "manager", "individual", "c_level")


def build(workspace: Workspace, leads: int, now: datetime) -> None:
    accounts = max(1, leads // 20)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text(), "default_model.yaml")
        add_user(uow, "admin", "admin", PASSWORD)
    for start in range(0, leads, CHUNK):
        people = range(start, min(leads, start + CHUNK))
        with workspace.unit_of_work() as uow:
            upsert_leads(
                uow,
                [
                    Lead(
                        email=f"p{i}@co{i % accounts}.example",
                        first_name=f"P{i}",
                        seniority=SENIORITIES[i % 5],
                        country=COUNTRIES[i % 6],
                        source=("google", "linkedin", "webinar", "referral")[i % 4],
                        created_at=now - timedelta(days=1 + i % 170),
                    )
                    for i in people
                ],
                accounts=[
                    Account(
                        domain=f"co{a}.example", industry=INDUSTRIES[a % 5], employees=50 + a % 3000,
                        country=COUNTRIES[a % 6],
                    )
                    for a in sorted({i % accounts for i in people})
                ],
                now=now,
            )  # fmt: skip
            events = []
            for i in people:
                at = now - timedelta(days=i % 170, hours=1)
                email = f"p{i}@co{i % accounts}.example"
                events.append(
                    Event(
                        event_id=f"v{i}", type="page_view", occurred_at=at, email=email, properties={"url": "/pricing"}
                    )
                )
                if i % 3 == 0:
                    events.append(Event(event_id=f"c{i}", type="email_click", occurred_at=at, email=email))
                if i % 20 == 0:
                    events.append(Event(event_id=f"d{i}", type="demo_request", occurred_at=at, email=email))
            ingest_events(uow, events, now=now)


def median_time(call: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--keep", type=Path, help="build the workspace in this SQLite file, or measure the one it holds already"
    )
    args = parser.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory() as folder:
        path = args.keep or Path(folder) / "dashboard.db"
        made = path.exists()
        workspace = open_workspace(Settings(database_url=f"sqlite:///{path}"), create=not made)
        if made:
            print(f"measuring the workspace in {path}")
        else:
            started = time.perf_counter()
            build(workspace, args.leads, now)
            print(f"{args.leads:,} leads built in {time.perf_counter() - started:.1f} s")
        with workspace.unit_of_work(read_only=True) as uow:
            some = sales_queue(uow, limit=1)[0].id
            account = list_accounts(uow, limit=1)[0][0].id

        def listed(wanted: LeadFilter) -> Callable[[Any], Any]:
            return lambda uow: (list_page(uow, wanted), count_leads(uow, wanted))

        def service(use: Callable[[Any], Any]) -> Callable[[], Any]:
            def run() -> Any:
                with workspace.unit_of_work(read_only=True) as uow:
                    return use(uow)

            return run

        references = {
            "/app/funnel": ("funnel report", service(lambda uow: funnel(uow))),
            "/app/queue": ("sales queue (50)", service(lambda uow: sales_queue(uow))),
            f"/app/leads/{some}": ("lead profile", service(lambda uow: lead_profile(uow, f"#{some}"))),
            "/app/leads": ("lead list page + count", service(listed(LeadFilter()))),
            "/app/leads?q=person123": ("the same, searched", service(listed(LeadFilter(search="person123")))),
            "/app/leads?stage=mql&sort=probability": (
                "the same, filtered",
                service(listed(LeadFilter(stage="mql", sort="probability")))
            ),
            "/app/accounts": ("account list", service(lambda uow: list_accounts(uow))),
            f"/app/accounts/{account}": ("account view", service(lambda uow: account_view(uow, account))),
            "/app/queue?page=2&sort=due": ("queue page 2 + count", service(lambda uow: (
                sales_queue(uow, sort="due", offset=50), count_queue(uow)
            ))),
        }  # fmt: skip
        with TestClient(create_app(workspace=workspace)) as client:
            form = client.get("/app/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form)
            assert csrf is not None
            client.post("/app/login", data={"name": "admin", "password": PASSWORD, "csrf": csrf.group(1)})
            print(f"{'page':<40}{'page s':>10}{'service s':>12}{'ratio':>8}  reference")
            pages = ("/app/funnel", "/app/queue", f"/app/leads/{some}", "/app/model", "/app/insights", "/app/users")
            for path in (*pages, *(p for p in references if p not in pages)):
                assert client.get(path).status_code == 200, path  # warm: imports, caches
                page = median_time(lambda path=path: client.get(path), args.repeat)
                if path in references:
                    name, reference = references[path]
                    base = median_time(reference, args.repeat)
                    print(f"{path:<40}{page:>10.3f}{base:>12.3f}{page / base:>8.2f}  {name}")
                else:
                    print(f"{path:<40}{page:>10.3f}{'':>12}{'':>8}")
            # The first insights request after a change: the last figures at once, newer ones
            # computed off the request; their computation is the reference.
            after = []
            for n in range(args.repeat):
                with workspace.unit_of_work() as uow:
                    ingest_events(
                        uow,
                        [
                            Event(
                                event_id=f"change-{time.time_ns()}-{n}",
                                type="page_view",
                                occurred_at=now,
                                email="p0@co0.example",
                            )
                        ],
                        now=now,
                    )
                started = time.perf_counter()
                page_text = client.get("/app/insights").text
                after.append(time.perf_counter() - started)
                assert "being recomputed" in page_text
                started = time.perf_counter()
                client.app.state.insights.wait()  # type: ignore[attr-defined]
                rebuilt = time.perf_counter() - started
            first = statistics.median(after)
            print(
                f"{'/app/insights after a change':<40}{first:>10.3f}{rebuilt:>12.3f}{first / rebuilt:>8.2f}  its figures recomputed (background)"
            )
        workspace.close()


if __name__ == "__main__":
    main()
