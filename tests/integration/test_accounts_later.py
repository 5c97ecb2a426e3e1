"""Accounts left to the worker, on each engine: an ingestion with `accounts_later` (the HTTP API's,
the event streams', the web tracker's) only marks the accounts it touched pending; the worker's pass keeps them,
counted from their people, scored, moved, routed and announced, as the ingestion would have, once
however many batches touched them; an account pending when a change keeps it at once is counted
again, not swapped on a stale roll-up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import key_for, workspace_on
from tests.integration.test_account_pipeline import MQA_EVENTS, acme, events_of, furnish_acme, history, stored
from tests.integration.test_accounts import NOW, T0

from qualify.adapters import schema
from qualify.bootstrap import open_workspace
from qualify.domain.accounts import Rollup
from qualify.domain.evaluator import AppliedMove
from qualify.domain.lifecycle import Actor, Stage
from qualify.domain.model_loader import default_model_text
from qualify.domain.records import Account, make_event
from qualify.entrypoints.api import create_app
from qualify.service.lifecycle import accounts
from qualify.service.lifecycle.accounts import recount_accounts
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.lead_batch import LeadBatch
from qualify.service.lifecycle.leads import upsert_accounts
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.pipeline import react
from qualify.service.unit_of_work import Workspace
from qualify.service.web_tracking import visitors as tracking
from qualify.service.worker import Worker, keep_pending_accounts
from qualify.settings import Settings

__all__ = ["acme"]  # the fixture, shared with test_account_pipeline


def ingest(workspace: Workspace, events: list[Any], *, later: bool) -> None:
    for event in sorted(events, key=lambda e: e.occurred_at):
        with workspace.unit_of_work() as uow:
            ingest_events(uow, [event], now=NOW, accounts_later=later)


def deliveries(workspace: Workspace) -> list[str]:
    d = schema.webhook_deliveries
    with workspace.unit_of_work() as uow:
        return [k for (k,) in uow.connection.execute(select(d.c.kind).order_by(d.c.id))]


@pytest.fixture
def twin(engine_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    """A second workspace set up as `acme` is, for the same events kept the other way."""
    folder = tmp_path / "twin"
    folder.mkdir()
    with workspace_on(engine_name, request, folder) as ws:
        yield furnish_acme(ws)


def test_ingestion_marks_the_account_pending_and_the_worker_keeps_it_as_the_batch_would(
    acme: Workspace, twin: Workspace
) -> None:
    ingest(acme, MQA_EVENTS, later=True)
    with acme.unit_of_work() as uow:
        row = stored(uow)
        # Untouched but marked: as it was before the events, pending since the first batch.
        assert row["stage"] == "target" and row["engagement_score"] == 0 and row["pending_since"] == NOW
        assert history(uow) == []
    assert deliveries(acme) == []
    # One pass of the worker keeps it: counted from its people, once, however many batches touched it.
    assert keep_pending_accounts(acme, NOW) == 1
    assert keep_pending_accounts(acme, NOW) == 0  # nothing pending any more
    # The same events kept in each batch's transaction, in the twin workspace.
    ingest(twin, MQA_EVENTS, later=False)
    with acme.unit_of_work() as uow, twin.unit_of_work() as other:
        row, kept = stored(uow), stored(other)
        assert row["pending_since"] is None and kept["pending_since"] is None
        assert row["stage"] == kept["stage"] == "mqa"
        assert row["owner"] == kept["owner"] == "sam.rivera" and row["sla_due_at"] is not None
        assert row["covered_roles"] == kept["covered_roles"] == 3
        assert row["fit_score"] == kept["fit_score"]
        # Scored as of its people's newest change, as the batch keeps it.
        assert row["scored_at"] == kept["scored_at"] == NOW - timedelta(days=2)
        assert row["engagement_score"] == pytest.approx(kept["engagement_score"])
        at = NOW.timestamp()
        assert Rollup.from_json(row["rollup"]).engagement_at(at) == pytest.approx(
            Rollup.from_json(kept["rollup"]).engagement_at(at)
        )
        # The worker saw only the end: one move to MQA where the batches moved it twice.
        assert history(uow) == [("target", "mqa", "model")]
        assert history(other) == [("target", "engaged", "model"), ("engaged", "mqa", "model")]
    # And announced it as the batch does.
    assert deliveries(acme) == ["account.stage.changed", "account.mqa"]


def test_an_account_pending_when_a_batch_keeps_it_is_counted_again(acme: Workspace) -> None:
    ingest(acme, events_of("fan", "content_download", [5.0, 4.9]), later=True)
    # A batch that keeps accounts at once (the CLI's) reaches the pending account: its stored
    # roll-up misses the events left to the worker, so it is counted from its people instead.
    ingest(acme, events_of("ana", "content_download", [3.0]), later=False)
    with acme.unit_of_work() as uow:
        row = stored(uow)
        assert row["pending_since"] is None and row["stage"] == "engaged" and row["covered_roles"] == 2
        kept = Rollup.from_json(row["rollup"])
        assert recount_accounts(uow, [row["id"]], now=row["scored_at"]) == 1
        counted = Rollup.from_json(stored(uow)["rollup"])
        at = NOW.timestamp()
        assert kept.engagement_at(at) == pytest.approx(counted.engagement_at(at)) and kept.engagement_at(at) > 0
    assert keep_pending_accounts(acme, NOW) == 0


def test_the_worker_pass_keeps_pending_accounts_within_its_bound(
    acme: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with acme.unit_of_work() as uow:
        upsert_accounts(uow, [Account(domain=f"firm{i}.com", industry="software") for i in range(3)], now=T0)
    visits = [make_event(f"x{i}", "page_view", NOW - timedelta(days=1), email=f"x@firm{i}.com") for i in range(3)]
    ingest(acme, MQA_EVENTS + visits, later=True)
    with acme.unit_of_work() as uow:
        a = schema.accounts
        assert len(uow.connection.execute(select(a.c.id).where(a.c.pending_since.is_not(None))).all()) == 4
    # At most PENDING_PER_PASS a pass, those waiting longest first; the rest in the next.
    monkeypatch.setattr(accounts, "PENDING_PER_PASS", 3)
    with Worker(acme) as worker:
        assert worker.run_once(NOW).accounts_kept == 3
        assert worker.run_once(NOW).accounts_kept == 1
        summary = worker.run_once(NOW)
    assert summary.accounts_kept == 0
    with acme.unit_of_work() as uow:
        assert stored(uow)["stage"] == "mqa"
        assert [stored(uow, f"firm{i}.com")["engagement_score"] > 0 for i in range(3)] == [True] * 3


def test_events_posted_to_the_api_leave_their_accounts_to_the_worker(acme: Workspace) -> None:
    with acme.unit_of_work() as uow:
        headers = {"Authorization": f"Bearer {key_for(uow, 'ingest')}"}
        reader = {"Authorization": f"Bearer {key_for(uow, 'marketing', 'reader')}"}
    body = [
        {"event_id": e.event_id, "type": e.type, "occurred_at": e.occurred_at.isoformat(), "email": e.email}
        for e in sorted(MQA_EVENTS, key=lambda e: e.occurred_at)
    ]
    with TestClient(create_app(workspace=acme)) as client:
        response = client.post("/v1/events", json=body, headers=headers)
        assert response.status_code == 200, response.text
        # The account says so: pending since the request, its stage as it was.
        view = client.get("/v1/accounts/acme.com", headers=reader).json()
        assert view["stage"]["stage"] == "target" and view["stage"]["pending_since"] is not None
        assert "pending_since" not in view["account"]
    with acme.unit_of_work() as uow:
        row = stored(uow)
        assert row["stage"] == "target" and row["pending_since"] is not None
    with Worker(acme) as worker:
        assert worker.run_once(NOW).accounts_kept == 1
    with TestClient(create_app(workspace=acme)) as client:
        view = client.get("/v1/accounts/acme.com", headers=reader).json()
        assert view["stage"]["stage"] == "mqa" and view["stage"]["pending_since"] is None
    with acme.unit_of_work() as uow:
        row = stored(uow)
        assert row["stage"] == "mqa" and row["pending_since"] is None and row["covered_roles"] == 3


def test_an_account_whose_people_move_into_a_deal_is_kept_at_once_even_left_to_the_worker(acme: Workspace) -> None:
    ingest(acme, events_of("fan", "content_download", [5.0]), later=True)
    # A change left to the worker in which a person enters a deal: the policy reads that move,
    # which the worker cannot, so this account is kept in the change's own transaction.
    with acme.unit_of_work() as uow:
        batch = LeadBatch(uow, uow.active_model(), NOW, accounts_later=True)
        batch.load(["vp@acme.com"], [], profile=False)
        record = batch.get("vp@acme.com", None)
        assert record is not None
        record.state.stage = Stage.OPPORTUNITY
        scores = (record.state.fit, record.state.grade, record.state.persona, 0.0)
        batch.record_moves(
            record, [AppliedMove(Stage.SQL, Stage.OPPORTUNITY, NOW.timestamp(), Actor.USER, "deal opened", *scores)]
        )
        react(uow, batch.write(), batch)
    with acme.unit_of_work() as uow:
        row = stored(uow)
        assert row["stage"] == "opportunity" and row["pending_since"] is None
        assert row["covered_roles"] == 1  # counted from its people: the practitioner's download too
    assert keep_pending_accounts(acme, NOW) == 0


def test_the_web_tracker_leaves_its_visitors_accounts_to_the_worker(acme: Workspace) -> None:
    site = "https://www.example.com"
    with acme.unit_of_work() as uow:
        tracking.record_page_view(
            uow, tracking.page_view("visitor-1234567890", "pv-000001", site + "/pricing"), now=NOW
        )
    with acme.unit_of_work() as uow:
        who = tracking.identification("visitor-1234567890", "submit-0001", "fan@acme.com", url=site + "/contact")
        assert tracking.identify(uow, who, now=NOW).status == "identified"
    keep_pending_accounts(acme, NOW)
    with acme.unit_of_work() as uow:
        before = stored(uow)["engagement_score"]
        assert before > 0  # the stitched page view and the form
        tracking.record_page_view(uow, tracking.page_view("visitor-1234567890", "pv-000002", site + "/docs"), now=NOW)
        row = stored(uow)
        assert row["engagement_score"] == before and row["pending_since"] == NOW
    assert keep_pending_accounts(acme, NOW) == 1
    with acme.unit_of_work() as uow:
        row = stored(uow)
        assert row["pending_since"] is None and row["engagement_score"] > before


@pytest.mark.parametrize("engine_name", ["postgres"])
def test_a_worker_keeping_an_account_waits_for_a_change_that_marked_it(acme: Workspace) -> None:
    """On PostgreSQL a change marks its accounts with their rows locked, pending already or not: a
    worker keeping one meanwhile waits for the change to commit, then counts its people with it
    (had it read them before, it would clear the mark without the change)."""
    ingest(acme, events_of("fan", "content_download", [5.0]), later=True)  # pending already
    marked, go = threading.Event(), threading.Event()
    kept: list[int] = []

    def change() -> None:
        with acme.unit_of_work() as uow:
            ingest_events(uow, events_of("vp", "webinar_attended", [2.0]), now=NOW, accounts_later=True)
            marked.set()
            assert go.wait(10)

    def worker() -> None:  # another process's, as far as locks go: its own workspace
        assert marked.wait(10)
        other = open_workspace(Settings(database_url=acme.settings.database_url))
        try:
            kept.append(keep_pending_accounts(other, NOW))
        finally:
            other.close()

    threads = [threading.Thread(target=change), threading.Thread(target=worker)]
    for thread in threads:
        thread.start()
    assert marked.wait(10)
    time.sleep(0.5)
    assert not kept  # the worker waits on the account's row
    go.set()
    for thread in threads:
        thread.join(20)
    assert kept == [1]
    with acme.unit_of_work() as uow:
        row = stored(uow)
        assert row["pending_since"] is None and row["covered_roles"] == 2  # the practitioner and the buyer


def test_pending_accounts_are_let_go_when_the_model_scores_accounts_no_more(acme: Workspace) -> None:
    ingest(acme, events_of("fan", "content_download", [5.0]), later=True)
    with acme.unit_of_work() as uow:
        activate_model(uow, default_model_text().split("\naccounts:")[0] + "\n")
    assert keep_pending_accounts(acme, NOW) == 1
    with acme.unit_of_work() as uow:
        row = stored(uow)
        assert row["pending_since"] is None and row["stage"] == "target" and history(uow) == []
