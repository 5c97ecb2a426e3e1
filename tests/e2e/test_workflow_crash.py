"""`qualify worker` killed (SIGKILL) again and again while it runs workflow steps: when it is
restarted (as two workers sharing the work) every run finishes, and no step ran twice: one log
line, one email, one bonus, per run and step. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from qualify.adapters import schema
from qualify.bootstrap import open_workspace
from qualify.domain.automation import load_automation
from qualify.domain.records import make_event
from qualify.service.automation.definitions import put_workflows
from qualify.service.lifecycle.events import ingest_events
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings
from tests.e2e.test_serve import SCRIPT, run

LEADS = 120
DOCUMENT = """
templates:
  - name: hello
    subject: "Hello {{ first_name or 'there' }}"
    text: "A note for you."
workflows:
  - name: drip
    trigger: {event: form_submit}
    steps:
      - add_tag: started
      - bonus: {points: 5, reason: filled in a form}
      - send_email: hello
      - wait: {minutes: 0.01}
      - notify_owner: "new form"
      - add_tag: done
      - remove_tag: started
"""
STEPS = 7


def counts(workspace: Workspace) -> dict[str, int]:
    with workspace.unit_of_work(read_only=True) as uow:
        conn = uow.connection
        e, log = schema.workflow_enrolments, schema.workflow_log

        def scalar(query: object) -> int:
            return int(conn.execute(query).scalar() or 0)  # type: ignore[call-overload]

        return {
            "log": scalar(select(func.count()).select_from(log)),
            "completed": scalar(select(func.count()).select_from(e).where(e.c.status == "completed")),
            "emails": scalar(select(func.count()).select_from(schema.emails)),
            "bonuses": scalar(
                select(func.count()).select_from(schema.events).where(schema.events.c.type == "score_bonus")
            ),
            "tags": scalar(select(func.count()).select_from(schema.lead_tags)),
            "duplicate_steps": scalar(
                select(func.count()).select_from(
                    select(log.c.enrolment_id, log.c.step)
                    .group_by(log.c.enrolment_id, log.c.step)
                    .having(func.count() > 1)
                    .subquery()
                )
            ),
        }


def start_worker(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [SCRIPT, "worker", "--interval", "0.1", "--db", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )


@pytest.mark.slow
def test_killing_the_worker_mid_run_never_runs_a_step_twice(database_url: str) -> None:
    run("init", "--db", database_url)
    workspace = open_workspace(Settings(database_url=database_url))
    rng = random.Random(7)
    try:
        document = load_automation(DOCUMENT)
        now = datetime.now(UTC)
        with workspace.unit_of_work() as uow:
            put_workflows(uow, document, by="test")
        with workspace.unit_of_work() as uow:
            ingest_events(
                uow,
                [make_event(f"f{i}", "form_submit", now, email=f"lead{i}@firm{i % 7}.com") for i in range(LEADS)],
                now=now,
            )
        total = LEADS * (STEPS + 2)  # enrol, the steps, complete
        assert counts(workspace)["log"] == LEADS
        kills, seen = [], LEADS
        for _ in range(5):
            worker = start_worker(database_url)
            deadline = time.monotonic() + 60
            while counts(workspace)["log"] <= seen and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.4))
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            seen = counts(workspace)["log"]
            kills.append(seen)
            if seen == total:
                break
        assert kills[0] < total, f"the first kill came after the work was done ({kills})"
        # Two workers share the rest: they never take the same run (or the same lead) at once.
        workers = [start_worker(database_url), start_worker(database_url)]
        try:
            deadline = time.monotonic() + 120
            while counts(workspace)["completed"] < LEADS and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                worker.wait(timeout=20)
        found = counts(workspace)
        print(f"log lines after each kill: {kills}; at the end: {found}")
        assert found == {
            "log": total,
            "completed": LEADS,
            "emails": LEADS,
            "bonuses": LEADS,
            "tags": LEADS,  # "done" on every lead, "started" removed from every lead
            "duplicate_steps": 0,
        }
    finally:
        workspace.close()
