"""How many statements the hot paths send: each one is a round trip, and under load a round trip
waits for the server's one interpreter again (docs/benchmarks.md, the garbage collector, and
PostgreSQL's turns). A budget that grows says where a new statement came from."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from qualify.adapters import schema
from qualify.domain.automation import load_automation
from qualify.domain.records import Event
from qualify.service.automation.definitions import put_segments, put_workflows
from qualify.service.integrations.webhooks import add_subscription
from qualify.service.lifecycle.events import ingest_events
from qualify.service.pipeline import Configured
from qualify.service.reading.queries import lead_profile
from qualify.service.unit_of_work import Workspace

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


@contextmanager
def statements(workspace: Workspace) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's, which PostgreSQL's driver sends unasked
            sent.append(" ".join(statement.split()))

    event.listen(workspace.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(workspace.engine, "before_cursor_execute", record)


def listing(sent: list[str]) -> str:
    return "\n".join(s[:100] for s in sent)


def quote_request(n: int) -> Event:
    return Event(event_id=f"q-{n}", type="quote_request", occurred_at=NOW, email=f"buyer{n}@acme.example")


def test_one_event_of_a_new_lead_reads_what_is_set_up_for_the_reactions_once(workspace: Workspace) -> None:
    """The default workspace (a model with routing, nothing else set up): the lead read, locked
    (PostgreSQL) and read again, its event ids, its account, three inserts, one statement for
    what the reactions act on (no predictive model, webhook, segment, workflow or CRM: none reads
    its own), the routing of the new MQL, and its account kept: its row locked and read, its
    roll-up, scores and stage written."""
    with workspace.unit_of_work() as uow:
        ingest_events(uow, [quote_request(0)], now=NOW)  # the account and the rotation exist from now on
    with statements(workspace) as sent, workspace.unit_of_work(size=1) as uow:
        [outcome] = ingest_events(uow, [quote_request(1)], now=NOW)
    assert outcome.status == "accepted"
    budget = 19 if workspace.engine.dialect.name == "postgresql" else 16
    assert len(sent) <= budget, listing(sent)
    set_up = ("predictive_models", "webhook_subscriptions", "segments", "workflows", "crm_connections")
    [reading] = [s for s in sent if any(f"FROM {table}" in s for table in set_up)]
    assert all(f"FROM {table}" in reading for table in set_up)


def test_a_lead_s_page_reads_the_lead_s_row_once(workspace: Workspace) -> None:
    """The lead's row (owner, SLA clock and probability with it), the model, the account, its
    events once (the explanation, the count and the timeline's page), its stage history, and the
    person's other journeys."""
    with workspace.unit_of_work() as uow:
        ingest_events(uow, [quote_request(n) for n in range(3)], now=NOW)
        ingest_events(
            uow,
            [
                Event(
                    event_id=f"v-{n}",
                    type="page_view",
                    occurred_at=NOW - timedelta(hours=n),
                    email="buyer1@acme.example",
                )
                for n in range(30)
            ],
            now=NOW,
        )
    with statements(workspace) as sent, workspace.unit_of_work(read_only=True) as uow:
        page = lead_profile(uow, "buyer1@acme.example", now=NOW, timeline_limit=5, timeline_offset=2)
    assert len(sent) <= 6, listing(sent)
    assert sum(s.startswith("SELECT leads.id, leads.email") for s in sent) == 1, listing(sent)
    assert page.events_total == 31
    # Newest first, two skipped: the page a query ordered by occurrence (newest first) would give.
    times = [e["occurred_at"] for e in page.timeline]
    assert len(times) == 5 and times == sorted(times, reverse=True)
    assert page.timeline[0]["event_id"] == "v-1" and page.timeline[-1]["event_id"] == "v-5"
    assert page.owner is not None and page.owner_rule


def test_configured_says_what_the_reactions_have_to_act_on(workspace: Workspace) -> None:
    with workspace.unit_of_work(read_only=True) as uow:
        assert Configured.read(uow.connection) == Configured(None, (), webhooks=False, crm_pushes=False)
    document = load_automation(
        """
segments:
  - name: readers
    when: [{event: content_download, min_count: 2}]
  - name: buyers
    when: [{event: quote_request}]
workflows:
  - name: follow-up
    trigger: {event: form_submit}
    steps: [{add_tag: form}]
"""
    )
    with workspace.unit_of_work() as uow:
        put_segments(uow, document.segments, by="test")
        put_workflows(uow, document, by="test")
        add_subscription(uow, "https://hooks.example.com/qualify", ["lead.mql"])
        conn = uow.connection
        conn.execute(
            schema.predictive_models.insert().values(
                version="p1", kind="logistic", target="sql", within_days=30, cutoff="2026-01-01", metrics={},
                document="{}", created_at=NOW, active=True,
            )
        )  # fmt: skip
        conn.execute(
            schema.crm_connections.insert().values(
                crm="hubspot", mapping="", mapping_name="m", push_to="none", push_accounts=None, cursors={},
                created_at=NOW, updated_at=NOW,
            )
        )  # fmt: skip
    with workspace.unit_of_work(read_only=True) as uow:
        found = Configured.read(uow.connection)
    versions = {(part, name) for part, name, _ in found.automation}
    assert found.predictive == "p1" and found.webhooks
    assert versions == {("s", "buyers"), ("s", "readers"), ("w", "follow-up")}
    assert [name for _, name, _ in found.automation] == ["buyers", "readers", "follow-up"]  # as definitions() orders
    assert not found.crm_pushes  # connected, but writing nothing back
    with workspace.unit_of_work() as uow:
        c = schema.crm_connections
        uow.connection.execute(c.update().values(push_accounts="companies"))
        assert Configured.read(uow.connection).crm_pushes


def test_events_written_at_once_and_a_duplicate_is_an_integrity_error_that_shows_no_data(workspace: Workspace) -> None:
    """PostgreSQL takes a batch's events by COPY, SQLite by executemany: either way the rows are
    in, and a duplicate event id (another process's, which `retrying` gets past) raises
    SQLAlchemy's IntegrityError without the rows' values in its message."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import IntegrityError

    from qualify.adapters import repository as repo

    with workspace.unit_of_work() as uow:
        ingest_events(uow, [quote_request(0)], now=NOW)
        lead_id = uow.connection.execute(select(schema.leads.c.id)).scalar_one()

    def row(event_id: str) -> dict[str, object]:
        return {
            "event_id": event_id, "lead_id": lead_id, "type": "page_view", "occurred_at": NOW, "received_at": NOW,
            "properties": {"url": "/pricing", "note": "tab\tand\nnewline \\ backslash é"}, "awards": [],
        }  # fmt: skip

    with workspace.unit_of_work() as uow:
        repo.insert_events(uow.connection, [row("c-1"), row("c-2")])
    with workspace.unit_of_work(read_only=True) as uow:
        stored = list(
            uow.connection.execute(select(schema.events.c.properties).where(schema.events.c.event_id == "c-2"))
        )
        assert stored[0].properties["note"] == "tab\tand\nnewline \\ backslash é"
    with pytest.raises(IntegrityError) as raised, workspace.unit_of_work() as uow:
        repo.insert_events(uow.connection, [row("c-3"), row("c-1")])
    assert "/pricing" not in str(raised.value) and "backslash" not in str(raised.value)
    with workspace.unit_of_work(read_only=True) as uow:
        assert uow.connection.execute(select(func.count()).select_from(schema.events)).scalar_one() == 3
