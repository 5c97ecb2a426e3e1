"""The dashboard's use cases without HTTP: the funnel page's data, the sales queue's stage action
with its owner rule, and the insights (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from tests.dashboard_world import NOW, address, world

from qualify.adapters import schema
from qualify.domain.errors import NotFound
from qualify.domain.records import Event
from qualify.service.analytics.insights import InsightsCache, compute, data_version
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.stages import NotYourLead, queue_stage_action
from qualify.service.reading.dashboard import filter_choices, funnel_view, rejection_reasons, weekly_entries
from qualify.service.reading.funnel import funnel
from qualify.service.reading.queries import FILTERS, lead_filters
from qualify.service.unit_of_work import Workspace


def mqls(workspace: Workspace) -> list[tuple[int, str]]:
    with workspace.unit_of_work(read_only=True) as uow:
        leads = schema.leads
        rows = uow.connection.execute(
            select(leads.c.id, leads.c.owner).where(leads.c.stage == "mql").order_by(leads.c.id)
        ).all()
    return [(row.id, row.owner) for row in rows]


def test_the_funnel_view_is_the_funnel_with_weekly_entries_and_the_filters_values(workspace: Workspace) -> None:
    world(workspace)
    owners = sorted({owner for _, owner in mqls(workspace)})
    with workspace.unit_of_work(read_only=True) as uow:
        view = funnel_view(uow)
        assert view.report == funnel(uow)
        one = funnel_view(uow, where={"owner": owners[0]})
        assert one.weekly == weekly_entries(uow, lead_filters(None, None, {"owner": owners[0]}))
        later = funnel_view(uow, created_from=NOW + timedelta(days=1))
    assert view.report.reached["mql"] == 8
    assert sum(week["mql"] for week in view.weekly) == 8 and all(set(w) == {"week", "mql", "sql"} for w in view.weekly)
    assert view.choices["owner"] == owners and set(view.choices) == set(FILTERS)
    assert 0 < sum(week["mql"] for week in one.weekly) < 8 and one.choices == view.choices
    assert later.weekly == [] and later.report.reached.get("mql", 0) == 0


def test_filter_choices_are_sorted_distinct_and_leave_out_empty_values(workspace: Workspace) -> None:
    world(workspace, leads=2)
    with workspace.unit_of_work() as uow:
        ingest_events(
            uow,
            [
                Event(event_id=f"c{i}", type="page_view", occurred_at=NOW, email=address(i), properties={"campaign": c})
                for i, c in enumerate(("summer", "spring"))
            ],
            now=NOW,
        )
    with workspace.unit_of_work(read_only=True) as uow:
        choices = filter_choices(uow)
    assert choices["campaign"] == ["spring", "summer"] and choices["source"] == []


def test_a_queue_action_applies_refuses_or_says_why(workspace: Workspace) -> None:
    world(workspace)
    [(first, owner), (second, _), *_] = mqls(workspace)
    other = next(o for _, o in mqls(workspace) if o != owner)
    with workspace.unit_of_work() as uow:
        with pytest.raises(NotYourLead):
            queue_stage_action(uow, first, "accept", by=other, own_leads_only=True)
        with pytest.raises(NotFound):
            queue_stage_action(uow, 999_999, "accept", by="ana", own_leads_only=False)
        assert queue_stage_action(uow, first, "accept", by=owner, own_leads_only=True) is None
        why = queue_stage_action(uow, second, "reject", by="ana", own_leads_only=False)
        assert why is not None and "needs a reason code" in why
        assert queue_stage_action(uow, second, "reject", by="ana", own_leads_only=False, reason="no_budget") is None
    stages = dict(mqls(workspace))
    assert first not in stages and second not in stages
    with workspace.unit_of_work(read_only=True) as uow:
        assert rejection_reasons(uow) == [("no_budget", 1)]


def test_insights_are_read_from_the_last_figures_and_recomputed_off_the_request(workspace: Workspace) -> None:
    world(workspace)
    [(lead_id, _), *_] = mqls(workspace)
    with workspace.unit_of_work() as uow:
        queue_stage_action(uow, lead_id, "reject", by="ana", own_leads_only=False, reason="bad_timing")
    cache = InsightsCache(workspace)
    found = cache.read(wait=120)
    assert found is not None and found.current
    assert found.rejections == [("bad_timing", 1)]
    assert [row["cohort"] for row in found.sources] and found.content["items"] == []  # 8 MQLs: under the support
    assert (found.content, found.sources) == compute(workspace)  # the batch reports themselves
    again = cache.read(wait=0)
    assert again is not None and again.current and again.as_of == found.as_of  # nothing changed: not recomputed
    other = mqls(workspace)[1][0]
    with workspace.unit_of_work() as uow:
        before = data_version(uow)
        ingest_events(uow, [Event(event_id="new", type="page_view", occurred_at=NOW, email=address(0))], now=NOW)
        queue_stage_action(uow, other, "reject", by="ana", own_leads_only=False, reason="no_need")
    with workspace.unit_of_work(read_only=True) as uow:
        assert data_version(uow) != before
    stale = cache.read(wait=0)  # the last figures at once, said to be older than the data
    assert stale is not None and stale.as_of == found.as_of and not stale.current
    assert dict(stale.rejections) == {"bad_timing": 1, "no_need": 1}  # read on every request
    assert cache.wait(120)
    newer = cache.read(wait=0)
    assert newer is not None and newer.current and newer.as_of > found.as_of


def test_the_first_insights_wait_for_their_figures_and_a_failure_is_raised(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qualify.service.analytics.insights as module

    world(workspace, leads=3)
    release = threading.Event()

    def slow(workspace: Workspace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        release.wait(30)
        return {"items": []}, []

    monkeypatch.setattr(module, "compute", slow)
    cache = InsightsCache(workspace)
    assert cache.read(wait=0.05) is None  # still computing: the page says so and reloads
    release.set()
    assert cache.wait(30)
    found = cache.read(wait=0)
    assert found is not None and found.content == {"items": []}

    def broken(workspace: Workspace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        raise RuntimeError("the export's disk is full")

    monkeypatch.setattr(module, "compute", broken)
    with pytest.raises(RuntimeError, match="disk is full"):
        InsightsCache(workspace).read(wait=30)


def test_a_recomputation_that_fails_is_said_and_retried_at_most_once_a_minute(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qualify.service.analytics.insights as module

    world(workspace, leads=3)
    cache = InsightsCache(workspace)
    assert cache.read(wait=120) is not None
    calls = []

    def broken(workspace: Workspace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        calls.append(1)
        raise RuntimeError("the export's disk is full")

    monkeypatch.setattr(module, "compute", broken)
    with workspace.unit_of_work() as uow:
        ingest_events(uow, [Event(event_id="later", type="page_view", occurred_at=NOW, email=address(0))], now=NOW)
    cache.read(wait=0)
    assert cache.wait(30)
    shown = cache.read(wait=0)  # the old figures, the failure said, and no new attempt within the minute
    assert shown is not None and not shown.current and shown.failed is not None and "disk is full" in shown.failed
    assert cache.wait(1) and len(calls) == 1
