"""The demo world (`qualify demo`): a small one, built on SQLite and PostgreSQL, looked at as a user would."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, func, select
from tests.conftest import copy_of_fresh_workspace, workspace_on

from qualify.adapters import schema
from qualify.demo.world import DemoSummary, WorkspaceNotEmpty, build_demo
from qualify.domain.lifecycle import REASON_CODES
from qualify.domain.records import FREE_MAIL_DOMAINS
from qualify.service.reading.funnel import funnel
from qualify.service.unit_of_work import Workspace

NOW = datetime(2026, 6, 1, tzinfo=UTC)
LEADS, DAYS = 200, 90
Demo = tuple[Workspace, DemoSummary]


def build(workspace: Workspace, seed: int = 7) -> DemoSummary:
    return build_demo(workspace, seed=seed, leads=LEADS, days=DAYS, now=NOW)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One demo world per engine, built once for the tests that only look at it."""
    with workspace_on(request.param, request, tmp_path_factory.mktemp("demo")) as workspace:
        yield workspace, build(workspace)


def rows(workspace: Workspace, table: Table) -> list[dict[str, Any]]:
    with workspace.unit_of_work() as uow:
        return [dict(r._mapping) for r in uow.connection.execute(select(table).order_by(table.c.id))]


def test_the_funnel_has_leads_at_every_stage_a_demo_should_show(demo: Demo) -> None:
    workspace, summary = demo
    with workspace.unit_of_work() as uow:
        report = funnel(uow)
    assert report.total_leads == summary.leads == LEADS
    reached = report.reached
    for stage in ("mql", "sql", "opportunity", "customer", "nurture", "disqualified"):
        assert reached[stage] > 0, f"no lead ever reached {stage}: {reached}"
    assert 0.10 <= reached["mql"] / LEADS <= 0.40
    assert 0.30 <= reached["sql"] / reached["mql"] <= 0.85
    assert reached["disqualified"] / LEADS <= 0.08
    assert report.current["lead"] > report.current["mql"] > 0  # most leads are not ready; some wait for sales
    assert summary.skipped_actions == 0  # every sales decision met the stage it was taken for


def test_stage_history_is_complete_and_in_order(demo: Demo) -> None:
    workspace, _ = demo
    leads = {r["id"]: r for r in rows(workspace, schema.leads)}
    history: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for entry in sorted(rows(workspace, schema.stage_history), key=lambda h: (h["at"], h["id"])):
        history[entry["lead_id"]].append(entry)
    assert history.keys() == leads.keys()
    for lead_id, entries in history.items():
        first = entries[0]
        assert (first["from_stage"], first["to_stage"], first["reason"]) == (None, "lead", "created")
        assert first["at"] == leads[lead_id]["created_at"]
        for before, after in itertools.pairwise(entries):
            assert after["from_stage"] == before["to_stage"], f"lead {lead_id} skips history: {before} -> {after}"
        assert entries[-1]["to_stage"] == leads[lead_id]["stage"]
        assert all(e["at"] <= NOW for e in entries)


def test_sales_decisions_are_made_by_reps_with_reason_codes(demo: Demo) -> None:
    workspace, summary = demo
    decisions = [h for h in rows(workspace, schema.stage_history) if h["actor"] == "user"]
    assert len(decisions) == summary.stage_actions > 0
    assert all("." in d["by"] and d["by"].islower() for d in decisions)  # sam.rivera, not "demo"
    moves = Counter((d["from_stage"], d["to_stage"]) for d in decisions)
    assert moves[("mql", "sql")] > 0 and moves[("mql", "nurture")] > 0 and moves[("sql", "opportunity")] > 0
    for decision in decisions:
        if decision["to_stage"] in ("nurture", "disqualified"):
            assert decision["reason"] in REASON_CODES


def test_events_are_realistic_and_all_in_the_past(demo: Demo) -> None:
    workspace, summary = demo
    events = rows(workspace, schema.events)
    leads = {r["id"]: r for r in rows(workspace, schema.leads)}
    assert len(events) == summary.events > 20 * LEADS
    kinds = Counter(e["type"] for e in events)
    for kind in ("page_view", "email_open", "email_click", "content_download", "form_submit", "webinar_attended"):
        assert kinds[kind] > 0, kinds
    assert kinds["page_view"] > kinds["email_click"] > kinds["demo_request"] > 0
    assert kinds["meeting"] > 0
    for event in events:
        assert leads[event["lead_id"]]["created_at"] <= event["occurred_at"] <= NOW
        assert event["event_id"].startswith("demo-7-")
    urls = {e["properties"]["url"] for e in events if e["type"] == "page_view"}
    assert {"/", "/pricing", "/product"} <= urls and any(u.startswith("/blog/") for u in urls)
    titles = {e["properties"]["title"] for e in events if e["type"] == "content_download"}
    assert "Pricing guide" in titles or "State of RevOps 2026" in titles


def test_people_and_companies_look_real(demo: Demo) -> None:
    workspace, summary = demo
    accounts = {a["id"]: a for a in rows(workspace, schema.accounts)}
    leads = rows(workspace, schema.leads)
    assert len(accounts) == summary.accounts
    assert all(a["name"] and a["industry"] and a["employees"] and a["country"] for a in accounts.values())
    assert len({a["industry"] for a in accounts.values()}) >= 6
    for lead in leads:
        assert lead["first_name"] and lead["last_name"] and lead["title"] and lead["channel"]
        domain = lead["email"].split("@")[1]
        if domain in FREE_MAIL_DOMAINS:
            assert lead["account_id"] is None
        else:
            assert accounts[lead["account_id"]]["domain"] == domain
    created = sorted(lead["created_at"] for lead in leads)
    assert NOW - timedelta(days=DAYS) <= created[0] and created[-1] <= NOW
    first_half = sum(c < NOW - timedelta(days=DAYS / 2) for c in created)
    assert first_half < len(created) - first_half  # the business grows
    grades = Counter(lead["fit_grade"] for lead in leads)
    assert len(grades) == 4  # good, middling and poor fits alike


def test_competitors_and_students_are_disqualified_by_the_model(sqlite_workspace: Workspace) -> None:
    build_demo(sqlite_workspace, seed=7, leads=600, days=60, now=NOW)
    leads = rows(sqlite_workspace, schema.leads)
    rivals = [lead for lead in leads if lead["email"].endswith("@rivalscore.io")]
    students = [lead for lead in leads if "Student" in lead["title"] or "Intern" in lead["title"]]
    assert rivals and students
    assert all(lead["stage"] == "disqualified" for lead in rivals + students)


def dump(workspace: Workspace) -> dict[str, list[tuple[Any, ...]]]:
    """The database's content without surrogate ids and wall-clock columns."""
    with workspace.unit_of_work() as uow:
        conn = uow.connection
        domain = dict(conn.execute(select(schema.accounts.c.id, schema.accounts.c.domain)).all())
        email = dict(conn.execute(select(schema.leads.c.id, schema.leads.c.email)).all())

        def table(source: Table, drop: set[str]) -> list[tuple[Any, ...]]:
            out = []
            for row in conn.execute(select(source).order_by(source.c.id)):
                values = dict(row._mapping)
                if "account_id" in values:
                    values["account_id"] = domain.get(values["account_id"])
                if "lead_id" in values:
                    values["lead_id"] = email[values["lead_id"]]
                out.append(tuple(repr(v) for k, v in sorted(values.items()) if k not in drop | {"id"}))
            return out

        return {
            "accounts": table(schema.accounts, set()),
            "leads": table(schema.leads, {"updated_at", "scored_at"}),
            "events": table(schema.events, {"received_at"}),
            "stage_history": table(schema.stage_history, set()),
        }


def fresh_workspace(path: Path) -> Workspace:
    return copy_of_fresh_workspace(path.parent, path.name)


@pytest.mark.slow
def test_the_same_seed_builds_the_same_world(tmp_path: Path) -> None:
    worlds = []
    for name in ("one.db", "two.db", "other-seed.db"):
        workspace = fresh_workspace(tmp_path / name)
        try:
            build(workspace, seed=8 if name == "other-seed.db" else 7)
            worlds.append(dump(workspace))
        finally:
            workspace.close()
    one, two, other = worlds
    for table in one:
        assert one[table] == two[table], f"{table} differs between two builds with the same seed"
    assert one["leads"] != other["leads"]


def test_progress_is_reported_up_to_the_total(sqlite_workspace: Workspace) -> None:
    calls: list[tuple[int, int]] = []
    build_demo(
        sqlite_workspace, seed=3, leads=50, days=30, now=NOW, progress=lambda done, total: calls.append((done, total))
    )
    assert calls and calls[-1][0] == calls[-1][1]
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))
    assert {total for _, total in calls} == {calls[0][1]}  # the total never jumps
    with sqlite_workspace.unit_of_work() as uow:
        assert uow.connection.execute(select(func.count()).select_from(schema.leads)).scalar_one() == 50


@pytest.mark.parametrize("size", [10])
def test_a_tiny_world_still_builds(sqlite_workspace: Workspace, size: int) -> None:
    summary = build_demo(sqlite_workspace, seed=1, leads=size, days=7, now=NOW)
    assert summary.leads == size and summary.events > 0
    assert summary.start == NOW - timedelta(days=7) and summary.end == NOW
    assert summary.as_dict()["start"] == summary.start.isoformat()


def test_the_demo_refuses_a_workspace_that_already_has_leads(sqlite_workspace: Workspace) -> None:
    build_demo(sqlite_workspace, seed=1, leads=10, days=7, now=NOW)
    with pytest.raises(WorkspaceNotEmpty, match="already has 10 leads"):
        build_demo(sqlite_workspace, seed=1, leads=10, days=7, now=NOW)


def test_the_demo_shows_segments_workflows_and_a_webhook_that_send_nothing(sqlite_workspace: Workspace) -> None:
    from qualify.service.automation.reading import list_segments, list_workflows
    from qualify.service.integrations.webhooks import list_subscriptions

    build_demo(sqlite_workspace, seed=3, leads=120, days=60, now=NOW)
    with sqlite_workspace.unit_of_work(read_only=True) as uow:
        segments = {s.name: s for s in list_segments(uow)}
        workflows = {w.name: w for w in list_workflows(uow)}
        hooks = list_subscriptions(uow)
        added = uow.connection.execute(
            select(func.count()).select_from(schema.audit_log).where(schema.audit_log.c.action == "webhook.add")
        ).scalar_one()
    assert set(segments) == {"pricing-readers", "best-fit-engaged", "gone-quiet", "event-invitees"}
    assert segments["pricing-readers"].members > 0 and segments["event-invitees"].members == 0
    assert not workflows["nurture-comeback"].as_dict()["active"]  # the one that emails is paused
    assert workflows["pricing-follow-up"].as_dict()["active"]
    assert hooks == [] and added == 1  # added, then switched off


def test_people_of_one_account_engage_together_as_a_buying_group(demo: Demo) -> None:
    """Accounts whose people look at pricing or product pages in the same fortnight: the groups that
    `qualify.demo.groups` puts in market together, seen in the events the workspace stored."""
    workspace, _ = demo
    leads = {r["id"]: r for r in rows(workspace, schema.leads)}
    fortnights: dict[tuple[int, int], set[int]] = defaultdict(set)
    for event in rows(workspace, schema.events):
        lead = leads[event["lead_id"]]
        if lead["account_id"] is not None and event["type"] == "page_view":
            if event["properties"]["url"] in ("/pricing", "/product", "/security", "/integrations"):
                fortnights[(lead["account_id"], event["occurred_at"].toordinal() // 14)].add(lead["id"])
    together = {account for (account, _), people in fortnights.items() if len(people) >= 2}
    assert len(together) >= 5, f"{len(together)} accounts with two people researching in the same fortnight"
    with workspace.unit_of_work() as uow:
        roles = uow.connection.execute(
            select(func.count()).select_from(schema.accounts).where(schema.accounts.c.covered_roles >= 2)
        ).scalar_one()
    assert roles > 0  # and the model sees several roles of their group covered
