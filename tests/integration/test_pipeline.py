"""The after-change pipeline (service/pipeline.py), as the composition root (qualify.bootstrap) builds it:
its reactions in order, one run per written batch, and reactions switched off for a quiet run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from qualify.adapters import schema
from qualify.bootstrap import REACTIONS, default_pipeline, open_workspace
from qualify.domain.automation import load_automation
from qualify.domain.records import Account, Lead, make_event
from qualify.service.automation import definitions as automation
from qualify.service.integrations.webhooks import add_subscription
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.pipeline import Changed, Pipeline, Reaction, Run, of, reacting
from qualify.service.predictions.serving import refresh_all
from qualify.service.unit_of_work import Workspace
from qualify.service.unit_of_work import open_workspace as open_without_pipeline

MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

AUTOMATION = """
segments:
  - name: demo-requesters
    when: [{event: demo_request}]
workflows:
  - name: welcome-mql
    trigger: {entered_stage: mql}
    steps:
      - add_tag: new-mql
"""


@pytest.fixture
def busy(workspace: Workspace) -> Iterator[Workspace]:
    """The default model (it routes MQLs and starts a 24-business-hour SLA clock), a webhook
    subscription to stage changes and MQLs, a segment and a workflow on entering MQL."""
    document = load_automation(AUTOMATION, "test.yaml")
    with workspace.unit_of_work() as uow:
        add_subscription(
            uow, "https://crm.example.com/hook", ["stage.changed", "lead.mql"], secret="s" * 32, now=MONDAY
        )
        automation.put_segments(uow, document.segments, by="test", now=MONDAY)
        automation.put_workflows(uow, document, by="test", now=MONDAY)
    yield workspace


def qualify_jane(workspace: Workspace) -> None:
    """A lead at a German account whose demo request makes it MQL."""
    with workspace.unit_of_work() as uow:
        upsert_leads(
            uow,
            [Lead(email="jane@acme.de", seniority="vp", created_at=MONDAY - HOUR)],
            accounts=[Account(domain="acme.de", country="DE", employees=500, industry="software")],
            now=MONDAY - HOUR,
        )
        ingest_events(uow, [make_event("demo-1", "demo_request", MONDAY, email="jane@acme.de")], now=MONDAY)


def side_effects(workspace: Workspace) -> dict[str, Any]:
    leads = schema.leads
    with workspace.unit_of_work() as uow:
        conn = uow.connection
        lead = conn.execute(select(leads.c.stage, leads.c.owner, leads.c.sla_due_at)).one()
        return {
            "stage": lead.stage,
            "owner": lead.owner,
            "sla_due_at": lead.sla_due_at,
            "stage_moves": conn.execute(select(func.count()).select_from(schema.stage_history)).scalar(),
            "webhook_deliveries": conn.execute(select(func.count()).select_from(schema.webhook_deliveries)).scalar(),
            "segment_members": conn.execute(select(func.count()).select_from(schema.segment_members)).scalar(),
            "enrolments": conn.execute(select(func.count()).select_from(schema.workflow_enrolments)).scalar(),
        }


def test_the_composition_root_registers_every_reaction_in_the_declared_order() -> None:
    pipeline = default_pipeline()
    assert (
        pipeline.names
        == list(REACTIONS)
        == ["probability", "handoff", "accounts", "announcements", "segments", "workflows", "crm"]
    )
    assert pipeline.enabled == frozenset(REACTIONS)
    assert {k.name for k in pipeline.keepers} == {
        "automation",
        "email",
        "web visitors",
        "crm links",
        "predictive behaviour",
        "account roll-ups",
    }


def test_every_reaction_runs_on_a_change(busy: Workspace) -> None:
    qualify_jane(busy)
    found = side_effects(busy)
    assert found["stage"] == "mql"
    assert found["owner"] == "tom.becker" and found["sla_due_at"] is not None  # handoff
    assert found["webhook_deliveries"] == 2  # announcements: stage.changed and lead.mql
    assert found["segment_members"] == 1  # segments
    assert found["enrolments"] == 1  # workflows


def test_a_quiet_workspace_writes_the_same_leads_and_starts_no_side_effect(busy: Workspace) -> None:
    """What an import of past history needs: no SLA clock, no webhook, no workflow; the stages,
    the history and the segments are what a live run would give."""
    quiet = reacting(busy, without=("handoff", "announcements", "workflows"))
    assert quiet.engine is busy.engine and of(busy).off == frozenset()
    qualify_jane(quiet)
    found = side_effects(busy)
    assert found == {
        "stage": "mql",
        "owner": None,
        "sla_due_at": None,
        "stage_moves": found["stage_moves"],
        "webhook_deliveries": 0,
        "segment_members": 1,
        "enrolments": 0,
    }
    assert found["stage_moves"] >= 2  # created, then MQL


def test_a_workspace_opened_with_reactions_off(database_url: str, busy: Workspace) -> None:
    quiet = open_workspace(busy.settings, without=["announcements"])
    try:
        qualify_jane(quiet)
    finally:
        quiet.close()
    found = side_effects(busy)
    assert found["webhook_deliveries"] == 0 and found["owner"] == "tom.becker" and found["enrolments"] == 1


def test_an_unknown_reaction_is_refused_with_the_names_there_are() -> None:
    with pytest.raises(ValueError, match="no reaction handof; the reactions are probability, handoff"):
        default_pipeline().without(["handof"])


def test_a_workspace_without_a_pipeline_refuses_to_change_leads(workspace: Workspace) -> None:
    bare = open_without_pipeline(workspace.settings)
    try:
        with pytest.raises(RuntimeError, match=r"qualify\.bootstrap\.open_workspace"), bare.unit_of_work() as uow:
            upsert_leads(uow, [Lead(email="x@acme.de")], now=MONDAY)
        with pytest.raises(RuntimeError, match=r"qualify\.bootstrap\.open_workspace"):
            refresh_all(bare)  # activating a predictive model tells the segments: it needs the pipeline
    finally:
        bare.close()


def test_the_pipeline_runs_once_per_written_batch_over_everything_it_changed(workspace: Workspace) -> None:
    seen: list[Changed] = []

    def record(run: Run) -> None:
        seen.append(run.changed)

    spying = Pipeline(reactions=(*of(workspace).reactions, Reaction("spy", record)))
    watched = Workspace(workspace.settings, workspace.engine, pipeline=spying)
    events = [
        make_event(
            f"e-{lead}-{n}", "page_view", MONDAY + n * HOUR, email=f"lead{lead}@acme.de", properties={"url": "/pricing"}
        )
        for lead in range(10)
        for n in range(5)
    ]
    with watched.unit_of_work() as uow:
        ingest_events(uow, events, now=MONDAY + 10 * HOUR)
    [changed] = seen
    assert len(changed.touched()) == 10
    assert len(changed.events) == 50
    assert sum(1 for m in changed.moves if m.values["from_stage"] is None) == 10  # each lead created once
    assert len(changed.scores) == 10
