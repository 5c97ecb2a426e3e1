"""The worker's timers against a real store: SLA breaches and decay-out sweeps, in passes at a given time."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from qualify.adapters import schema
from qualify.domain.records import make_event
from qualify.service.integrations.webhooks import add_subscription
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.stages import apply_stage_action
from qualify.service.reading.funnel import funnel
from qualify.service.unit_of_work import Workspace
from qualify.service.worker import Worker

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
# The default model: a demo request is worth 30 points with a 60-day half-life and makes an MQL;
# an MQL decays out when engagement falls below 10, i.e. 60·log2(3) days after the request.
DECAY_OUT_AFTER = timedelta(days=60 * math.log2(3))


@pytest.fixture
def sent() -> list[httpx.Request]:
    return []


@pytest.fixture
def worker(workspace: Workspace, sent: list[httpx.Request]) -> Iterator[Worker]:
    """A worker whose webhooks reach an in-process receiver that accepts everything."""

    def receive(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    with httpx.Client(transport=httpx.MockTransport(receive)) as client, Worker(workspace, client=client) as running:
        yield running


def make_mql(workspace: Workspace, email: str, at: datetime, *, due: timedelta | None = None) -> None:
    """A lead made MQL by a demo request at `at`, with an SLA clock `due` later, or none (as the handoff
    would set them; whatever the scoring model's SLA says is replaced)."""
    with workspace.unit_of_work() as uow:
        ingest_events(uow, [make_event(f"demo-{email}", "demo_request", at, email=email)], now=at)
        leads = schema.leads
        uow.connection.execute(
            update(leads)
            .where(leads.c.email == email)
            .values(sla_due_at=at + due if due is not None else None, owner="ana.ruiz")
        )


def subscribe(workspace: Workspace, *kinds: str) -> None:
    with workspace.unit_of_work() as uow:
        add_subscription(uow, "http://127.0.0.1:9/hook", kinds, secret="a-secret-of-16-chars", now=T0)


def lead_row(workspace: Workspace, email: str) -> Any:
    with workspace.unit_of_work() as uow:
        return uow.connection.execute(select(schema.leads).where(schema.leads.c.email == email)).one()


def audit(workspace: Workspace, action: str) -> list[Any]:
    log = schema.audit_log
    with workspace.unit_of_work() as uow:
        return list(uow.connection.execute(select(log).where(log.c.action == action).order_by(log.c.id)))


def test_an_sla_breach_is_recorded_once_announced_and_counted_in_the_funnel(
    workspace: Workspace, worker: Worker, sent: list[httpx.Request]
) -> None:
    subscribe(workspace, "sla.breached")
    make_mql(workspace, "late@acme.com", T0, due=2 * HOUR)
    assert worker.run_once(T0 + HOUR).sla_breaches == 0
    assert lead_row(workspace, "late@acme.com").sla_breached_at is None

    summary = worker.run_once(T0 + 3 * HOUR)
    assert (summary.sla_breaches, summary.delivered) == (1, 1)
    assert lead_row(workspace, "late@acme.com").sla_breached_at == T0 + 3 * HOUR
    [entry] = audit(workspace, "sla.breached")
    assert (entry.target, entry.actor) == ("late@acme.com", "sla timer")
    assert entry.details["due_at"] == (T0 + 2 * HOUR).isoformat() and entry.details["owner"] == "ana.ruiz"
    [request] = sent
    assert request.headers["qualify-kind"] == "sla.breached"
    data = httpx.Response(200, content=request.content).json()["data"]
    assert data["lead"]["email"] == "late@acme.com" and data["due_at"] == (T0 + 2 * HOUR).isoformat()

    assert worker.run_once(T0 + 4 * HOUR).sla_breaches == 0  # recorded once
    assert len(audit(workspace, "sla.breached")) == 1 and len(sent) == 1
    with workspace.unit_of_work() as uow:
        report = funnel(uow, now=T0 + 4 * HOUR)
    assert report.sla == {"clocks": 1, "met": 0, "breached": 1, "open": 0, "stopped": 0, "compliance": 0.0}


def test_the_funnel_tells_met_breached_open_and_stopped_clocks_apart(workspace: Workspace, worker: Worker) -> None:
    make_mql(workspace, "met@acme.com", T0, due=4 * HOUR)
    make_mql(workspace, "rejected@acme.com", T0, due=4 * HOUR)
    make_mql(workspace, "answered-late@acme.com", T0, due=4 * HOUR)
    make_mql(workspace, "waiting@acme.com", T0, due=48 * HOUR)
    make_mql(workspace, "decayed@acme.com", T0, due=DECAY_OUT_AFTER + 24 * HOUR)
    make_mql(workspace, "no-clock@acme.com", T0)
    with workspace.unit_of_work() as uow:
        apply_stage_action(uow, "met@acme.com", "accept", by="ana", at=T0 + 3 * HOUR, now=T0 + 3 * HOUR)
        apply_stage_action(
            uow, "rejected@acme.com", "reject", by="ana", reason="bad_timing", at=T0 + 4 * HOUR, now=T0 + 4 * HOUR
        )
        apply_stage_action(uow, "answered-late@acme.com", "accept", by="ana", at=T0 + 5 * HOUR, now=T0 + 5 * HOUR)
    with workspace.unit_of_work() as uow:
        report = funnel(uow, now=T0 + 6 * HOUR)
    assert report.sla == {"clocks": 5, "met": 2, "breached": 1, "open": 2, "stopped": 0, "compliance": 0.6667}

    later = T0 + DECAY_OUT_AFTER + 10 * 24 * HOUR
    assert worker.run_once(later).decayed >= 1
    with workspace.unit_of_work() as uow:
        report = funnel(uow, now=later)
    # The idle MQL decayed out before its due time: nobody had to answer. The waiting one ran out.
    assert report.sla == {"clocks": 5, "met": 2, "breached": 2, "open": 0, "stopped": 1, "compliance": 0.5}
    assert lead_row(workspace, "decayed@acme.com").sla_breached_at is None


def test_the_decay_sweep_moves_an_idle_mql_to_nurture_when_it_crossed_the_floor(
    workspace: Workspace, worker: Worker, sent: list[httpx.Request]
) -> None:
    subscribe(workspace, "stage.changed")
    make_mql(workspace, "idle@acme.com", T0)
    make_mql(workspace, "busy@acme.com", T0)
    with workspace.unit_of_work() as uow:
        busy = [make_event("busy-2", "demo_request", T0 + timedelta(days=90), email="busy@acme.com")]
        ingest_events(uow, busy, now=T0 + timedelta(days=90))
    assert worker.run_once(T0 + timedelta(days=91)).decayed == 0  # sends what creating them announced
    sent.clear()
    now = T0 + timedelta(days=120)

    assert worker.run_once(now).decayed == 1
    idle, still = lead_row(workspace, "idle@acme.com"), lead_row(workspace, "busy@acme.com")
    assert (idle.stage, still.stage) == ("nurture", "mql")
    assert abs((idle.stage_entered_at - (T0 + DECAY_OUT_AFTER)).total_seconds()) <= 120
    h = schema.stage_history
    with workspace.unit_of_work() as uow:
        last = uow.connection.execute(select(h).where(h.c.lead_id == idle.id).order_by(h.c.id.desc())).first()
    assert last is not None
    assert (last.from_stage, last.to_stage, last.actor, last.by) == ("mql", "nurture", "system", "decay-out timer")
    assert last.engagement_score == pytest.approx(10, abs=0.01)
    [request] = sent
    data = httpx.Response(200, content=request.content).json()["data"]
    assert (data["lead"]["email"], data["from"], data["to"]) == ("idle@acme.com", "mql", "nurture")
    assert data["at"] == idle.stage_entered_at.isoformat()

    assert worker.run_once(now + HOUR).decayed == 0  # done once
    assert len(sent) == 1


def test_the_loop_runs_passes_until_it_is_told_to_stop(workspace: Workspace, worker: Worker) -> None:
    stop, passes = threading.Event(), []

    def on_pass(summary: object) -> None:
        passes.append(summary)
        if len(passes) == 3:
            stop.set()

    thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"interval": 0.01, "on_pass": on_pass})
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive() and len(passes) == 3
