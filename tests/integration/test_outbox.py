"""Announcements go to the outbox in the same transaction as the change they announce."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from qualify.adapters import schema
from qualify.domain.records import Lead, make_event
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.unit_of_work import Workspace

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def subscribe(workspace: Workspace, *kinds: str) -> None:
    with workspace.unit_of_work() as uow:
        uow.connection.execute(
            schema.webhook_subscriptions.insert().values(
                url="http://127.0.0.1:9/hook", secret="s", kinds=list(kinds), active=True, created_at=T0
            )
        )


def deliveries(workspace: Workspace) -> list[tuple[str, dict[str, object]]]:
    d = schema.webhook_deliveries
    with workspace.unit_of_work() as uow:
        return [(r.kind, r.payload) for r in uow.connection.execute(select(d.c.kind, d.c.payload).order_by(d.c.id))]


def test_a_new_mql_is_announced_as_a_stage_change_and_as_an_mql(workspace: Workspace) -> None:
    subscribe(workspace, "stage.changed", "lead.mql")
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="jane@acme.com", seniority="vp", created_at=T0)])
        ingest_events(
            uow,
            [make_event("d1", "demo_request", T0 + timedelta(hours=1), email="jane@acme.com")],
            now=T0 + timedelta(hours=2),
        )
    kinds = [kind for kind, _ in deliveries(workspace)]
    assert kinds == ["stage.changed", "lead.mql"]
    payload = deliveries(workspace)[1][1]
    assert payload["lead"]["email"] == "jane@acme.com" and (payload["from"], payload["to"]) == ("lead", "mql")  # type: ignore[index]


def test_nothing_is_written_without_a_subscription_and_a_rolled_back_change_announces_nothing(
    workspace: Workspace,
) -> None:
    with workspace.unit_of_work() as uow:
        ingest_events(uow, [make_event("d1", "demo_request", T0, email="a@acme.com")], now=T0)
    assert deliveries(workspace) == []
    subscribe(workspace, "stage.changed")
    try:
        with workspace.unit_of_work() as uow:
            ingest_events(uow, [make_event("d2", "quote_request", T0, email="b@acme.com")], now=T0)
            raise RuntimeError("the change fails after the announcement was written")
    except RuntimeError:
        pass
    assert deliveries(workspace) == []


def test_score_crossings_are_announced_once_per_threshold(workspace: Workspace) -> None:
    subscribe(workspace, "score.crossed:20", "score.crossed:1000")
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="joe@acme.com", created_at=T0)])
    events = [
        make_event(
            f"c{i}", "content_download", T0 + timedelta(minutes=i), email="joe@acme.com", properties={"title": str(i)}
        )
        for i in range(3)
    ]
    with workspace.unit_of_work() as uow:
        ingest_events(uow, events, now=T0 + timedelta(minutes=5))
    with workspace.unit_of_work() as uow:
        ingest_events(
            uow,
            [make_event("c9", "content_download", T0 + timedelta(minutes=6), email="joe@acme.com")],
            now=T0 + timedelta(minutes=7),
        )
    crossed = [(kind, payload["threshold"]) for kind, payload in deliveries(workspace)]
    assert crossed == [("score.crossed:20", 20.0)]
