"""The past does not fire the present: history moves leads as live data would (scores, stages,
segments) but starts no SLA clock, announces nothing and enrols nobody; the same data arriving
live does all of that. With workflows, webhooks and the default model's SLA defined."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from qualify.adapters import schema
from qualify.bootstrap import open_workspace
from qualify.domain.automation import load_automation
from qualify.domain.records import Account, Event, Lead, make_event
from qualify.entrypoints.cli import app
from qualify.service.automation import definitions
from qualify.service.integrations.webhooks import add_subscription
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.pipeline import reacting
from qualify.service.unit_of_work import Workspace
from qualify.service.worker import record_sla_breaches, sweep_decay
from qualify.settings import Settings

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
START = NOW - timedelta(days=730)  # two years of history
DAY = timedelta(days=1)
PEOPLE = 30

AUTOMATION = """
segments:
  - name: demo-requesters
    when: [{event: demo_request}]
workflows:
  - name: welcome-mql
    trigger: {entered_stage: mql}
    steps: [{add_tag: new-mql}]
  - name: on-demo
    trigger: {event: demo_request}
    steps: [{add_tag: demo}]
  - name: on-segment
    trigger: {entered_segment: demo-requesters}
    steps: [{add_tag: segment}]
  - name: on-score
    trigger: {score_crossed: 40}
    steps: [{add_tag: hot}]
"""


def email(prefix: str, n: int) -> str:
    return f"{prefix}p{n}@firm{n}.de"


def demo_at(n: int) -> datetime:
    return START + n * 20 * DAY + 5 * DAY


def history(prefix: str = "") -> tuple[list[Lead], list[Account], list[Event]]:
    """Thirty people at German accounts over two years: three pricing page views each, then for
    two in three a demo request that makes them MQL."""
    accounts = [Account(domain=f"firm{n}.de", country="DE", employees=500, industry="software") for n in range(PEOPLE)]
    leads, events = [], []
    for n in range(PEOPLE):
        created = START + n * 20 * DAY
        leads.append(Lead(email=email(prefix, n), seniority="vp", created_at=created))
        for k in range(3):
            at = created + (k + 1) * DAY
            events.append(make_event(f"{prefix}view-{n}-{k}", "page_view", at, email=email(prefix, n), properties={"url": "/pricing"}))  # fmt: skip
        if n % 3:
            events.append(make_event(f"{prefix}demo-{n}", "demo_request", demo_at(n), email=email(prefix, n)))
    events.sort(key=lambda e: e.occurred_at)
    return leads, accounts, events


def prepare(workspace: Workspace) -> None:
    """A webhook subscription to stage changes, MQLs and a score crossing; a segment; workflows
    on a stage, an event, a segment entry and a score crossing."""
    document = load_automation(AUTOMATION, "test.yaml")
    with workspace.unit_of_work() as uow:
        kinds = ["stage.changed", "lead.mql", "score.crossed:40"]
        add_subscription(uow, "https://crm.example.com/hook", kinds, secret="s" * 32, now=START - DAY)
        definitions.put_segments(uow, document.segments, by="test", now=START - DAY)
        definitions.put_workflows(uow, document, by="test", now=START - DAY)


def import_at_once(workspace: Workspace, prefix: str = "") -> None:
    """The history as an import brings it: everything now, in batches."""
    leads, accounts, events = history(prefix)
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, leads, accounts=accounts, now=NOW)
    for start in range(0, len(events), 25):
        with workspace.unit_of_work() as uow:
            ingest_events(uow, events[start : start + 25], now=NOW)


def arrive_live(workspace: Workspace, prefix: str) -> None:
    """The same history as it happened: each lead and each event when it happened."""
    leads, accounts, events = history(prefix)
    for lead in leads:
        with workspace.unit_of_work() as uow:
            assert lead.created_at is not None
            upsert_leads(uow, [lead], accounts=accounts, now=lead.created_at)
    for event in events:
        with workspace.unit_of_work() as uow:
            ingest_events(uow, [event], now=event.occurred_at)


def effects(workspace: Workspace, prefix: str = "") -> dict[str, Any]:
    """What the leads whose email starts with `prefix` went through, and what that set off."""
    leads, h = schema.leads, schema.stage_history
    mine = leads.c.email.like(f"{prefix}p%")
    with workspace.unit_of_work() as uow:
        conn = uow.connection
        rows = conn.execute(select(leads.c.email, leads.c.stage, leads.c.owner, leads.c.sla_due_at).where(mine)).all()
        moves = conn.execute(
            select(leads.c.email, h.c.from_stage, h.c.to_stage, h.c.at)
            .join(leads, leads.c.id == h.c.lead_id)
            .where(mine)
            .order_by(leads.c.email, h.c.at, h.c.id)
        ).all()
        members = conn.execute(
            select(leads.c.email)
            .join(schema.segment_members, schema.segment_members.c.lead_id == leads.c.id)
            .where(mine)
        ).all()
        enrolled = conn.execute(
            select(leads.c.email, schema.workflow_enrolments.c.workflow)
            .join(schema.workflow_enrolments, schema.workflow_enrolments.c.lead_id == leads.c.id)
            .where(mine)
        ).all()
        payloads = conn.execute(select(schema.webhook_deliveries.c.payload)).scalars().all()
    announced = [p for p in payloads if str(p["lead"]["email"]).startswith(f"{prefix}p")]
    return {
        "stages": sorted((r.email.removeprefix(prefix), r.stage) for r in rows),
        "moves": [(m.email.removeprefix(prefix), m.from_stage, m.to_stage, m.at) for m in moves],
        "segment_members": sorted(m.email.removeprefix(prefix) for m in members),
        "owners": sorted(r.email for r in rows if r.owner is not None),
        "sla_clocks": sorted(r.email for r in rows if r.sla_due_at is not None),
        "announced": len(announced),
        "enrolled": sorted((e.email, e.workflow) for e in enrolled),
    }


def test_history_moves_leads_as_live_data_would_but_fires_nothing(workspace: Workspace) -> None:
    prepare(workspace)
    import_at_once(reacting(workspace, history_before=NOW), "past-")
    arrive_live(workspace, "live-")
    past, live = effects(workspace, "past-"), effects(workspace, "live-")

    # The same state: stages, every move at the same instant, segment members.
    assert past["stages"] == live["stages"] and any(stage == "mql" for _, stage in past["stages"])
    assert past["moves"] == live["moves"] and len(past["moves"]) > PEOPLE
    assert past["segment_members"] == live["segment_members"] and len(past["segment_members"]) == 20

    # None of the present: no owner, no SLA clock, no webhook, no enrolment.
    assert (past["owners"], past["sla_clocks"], past["announced"], past["enrolled"]) == ([], [], 0, [])
    # Live, all of it: MQLs routed with a clock, announced, and every kind of trigger enrolled.
    assert live["owners"] and live["sla_clocks"] and live["announced"] > 0
    assert {workflow for _, workflow in live["enrolled"]} == {"welcome-mql", "on-demo", "on-segment", "on-score"}


def test_history_breaches_no_sla_while_the_same_mqls_live_do(workspace: Workspace) -> None:
    prepare(workspace)
    import_at_once(reacting(workspace, history_before=NOW), "past-")
    assert record_sla_breaches(workspace, NOW) == 0
    arrive_live(workspace, "live-")
    breached = record_sla_breaches(workspace, NOW)  # two-year-old live MQLs are long past their SLA
    assert breached > 0 and breached == len(effects(workspace, "live-")["sla_clocks"])


def test_only_what_is_dated_before_the_cutoff_is_history(workspace: Workspace) -> None:
    prepare(workspace)
    cutoff = START + 300 * DAY
    import_at_once(reacting(workspace, history_before=cutoff))
    found = effects(workspace)
    late = [email("", n) for n in range(PEOPLE) if n % 3 and demo_at(n) >= cutoff]
    assert late and sorted(e for e, w in found["enrolled"] if w == "on-demo") == sorted(late)
    assert found["owners"] and set(found["owners"]) <= set(late)


def test_changes_older_than_the_history_age_are_history(workspace: Workspace) -> None:
    prepare(workspace)
    aged = open_workspace(workspace.settings.model_copy(update={"history_age_days": 200}))
    try:
        import_at_once(aged)  # demos from 730 to 200 days before now: history; newer ones: live
    finally:
        aged.close()
    late = [email("", n) for n in range(PEOPLE) if n % 3 and demo_at(n) >= NOW - 200 * DAY]
    assert late == [email("", 28), email("", 29)]
    assert sorted(e for e, w in effects(workspace)["enrolled"] if w == "on-demo") == late


def test_a_decay_sweep_over_history_announces_nothing(workspace: Workspace) -> None:
    prepare(workspace)
    quiet = reacting(workspace, history_before=NOW)
    import_at_once(quiet)
    before = effects(workspace)
    assert sweep_decay(quiet, NOW) > 0  # MQLs whose engagement decayed below the floor long ago
    after = effects(workspace)
    assert len(after["moves"]) > len(before["moves"])
    assert (after["announced"], after["enrolled"]) == (0, [])


def _events_file(path: Path) -> int:
    _, _, events = history()
    lines = [
        json.dumps(
            {
                "event_id": e.event_id,
                "type": e.type,
                "occurred_at": e.occurred_at.isoformat(),
                "email": e.email,
                "properties": e.properties,
            }
        )
        for e in events
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


@pytest.mark.parametrize("flags", [["--historical"], ["--history-before", (START + 300 * DAY).isoformat()]])
def test_qualify_import_with_history(flags: list[str], tmp_path: Path, database_url: str) -> None:
    runner = CliRunner()
    db = ["--db", database_url]
    assert runner.invoke(app, ["init", *db]).exit_code == 0
    workspace = open_workspace(Settings(database_url=database_url))
    try:
        prepare(workspace)
        path = tmp_path / "events.jsonl"
        total = _events_file(path)
        result = runner.invoke(app, ["import", "events", str(path), *flags, "--json", *db])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["accepted"] == total
        found = effects(workspace)
    finally:
        workspace.close()
    assert any(stage == "mql" for _, stage in found["stages"])
    on_demo = sorted(e for e, w in found["enrolled"] if w == "on-demo")
    if flags == ["--historical"]:
        assert (found["sla_clocks"], found["announced"], found["enrolled"]) == ([], 0, [])
    else:
        assert on_demo == [email("", n) for n in range(PEOPLE) if n % 3 and demo_at(n) >= START + 300 * DAY]
