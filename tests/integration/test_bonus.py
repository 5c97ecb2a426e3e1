"""A workflow's one-off score bonus: an ordinary `score_bonus` event, ingested, scored, explained,
rescored, replayed and kept out of the predictive behaviour features (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from qualify.adapters import schema
from qualify.analytics.engines import duckdb_sources
from qualify.domain.model_loader import default_model_text, load_model
from qualify.domain.records import Account, Event, Lead, make_event
from qualify.predictive.features import training_set
from qualify.predictive.recipe import Recipe, Subject, feature_row
from qualify.service.analytics.backtest import backtest
from qualify.service.analytics.export import export_workspace
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.lifecycle.rescoring import rescore_all
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.reading.queries import lead_profile
from qualify.service.unit_of_work import Workspace

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ACME = Account(domain="acme.com", name="Acme", industry="software", employees=800, country="US")
JANE = "jane@acme.com"
RECYCLE = {"points": 15, "reason": "recycled lead read the pricing guide", "workflow": "recycle"}


def add_jane(workspace: Workspace) -> None:
    """A VP of marketing at a software company of 800 in the US: fit grade A (MQL at 25 points)."""
    jane = Lead(email=JANE, title="VP Marketing", seniority="vp", department="marketing", created_at=T0)
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [jane], accounts=[ACME], now=T0)


def bonus(step: int, at: datetime, properties: dict[str, object]) -> Event:
    """The event a workflow sends for one step of one enrolment."""
    return Event(
        event_id=f"bonus:41:{step}", email=JANE, type="score_bonus", occurred_at=at, properties=dict(properties)
    )


def ingest(workspace: Workspace, events: list[Event], now: datetime) -> list[str]:
    with workspace.unit_of_work() as uow:
        return [outcome.status for outcome in ingest_events(uow, events, now=now)]


def profile(workspace: Workspace, now: datetime):  # type: ignore[no-untyped-def]
    with workspace.unit_of_work(read_only=True) as uow:
        return lead_profile(uow, JANE, now=now)


def test_an_ingested_bonus_scores_once_and_explains_itself(workspace: Workspace) -> None:
    add_jane(workspace)
    event = bonus(1, T0 + timedelta(days=1), RECYCLE)
    assert ingest(workspace, [event], T0 + timedelta(days=1)) == ["accepted"]
    assert ingest(workspace, [event], T0 + timedelta(days=2)) == ["duplicate"]  # a retried step adds nothing
    seen = profile(workspace, T0 + timedelta(days=4))
    assert seen.scores["engagement"] == round(15 * 2 ** (-3 / 30), 2)  # the default half-life: 30 days
    [part] = seen.engagement_explanation
    assert part.rule == "bonus"
    assert part.points == pytest.approx(15 * 2 ** (-3 / 30), rel=1e-12)
    assert (
        part.text == "bonus from workflow recycle: recycled lead read the pricing guide 3 days ago (15, half-life 30 d)"
    )
    [line] = seen.timeline
    assert (line["event_id"], line["type"], line["points"]) == ("bonus:41:1", "score_bonus", 15)


def test_a_bonus_is_held_at_100_and_bad_points_award_nothing(workspace: Workspace) -> None:
    add_jane(workspace)
    at = T0 + timedelta(hours=1)
    statuses = ingest(
        workspace,
        [bonus(1, at, {"points": 400}), bonus(2, at, {"points": "lots"}), bonus(3, at, {"reason": "no points"})],
        at,
    )
    assert statuses == ["accepted"] * 3  # kept as events: only their points are ignored
    seen = profile(workspace, at)
    assert seen.scores["engagement"] == 100.0
    assert [(c.rule, c.points) for c in seen.engagement_explanation] == [("bonus", 100.0)]
    assert sorted(line["points"] for line in seen.timeline) == [0, 0, 100]


def test_a_bonus_that_reaches_the_threshold_makes_the_lead_an_mql(workspace: Workspace) -> None:
    add_jane(workspace)
    at = T0 + timedelta(days=1)
    ingest(workspace, [bonus(1, at, {**RECYCLE, "points": 30})], at)
    seen = profile(workspace, at)
    assert (seen.stage, seen.stage_entered_at) == ("mql", at)
    assert seen.history[-1]["reason"] == "fit grade A and engagement 30.0 ≥ 25"


def test_rescoring_under_another_default_half_life_decays_the_bonus_with_it(workspace: Workspace) -> None:
    add_jane(workspace)
    ingest(workspace, [bonus(1, T0, {"points": "12.5", "workflow": "welcome"})], T0)
    faster = default_model_text().replace("half_life_days: 30 ", "half_life_days: 10 ", 1)
    with workspace.unit_of_work() as uow:
        activate_model(uow, faster, "faster.yaml")
    rescore_all(workspace, now=T0 + timedelta(days=10))
    seen = profile(workspace, T0 + timedelta(days=10))
    assert seen.scores["engagement"] == 6.25
    [part] = seen.engagement_explanation
    assert part.text == "bonus from workflow welcome 10 days ago (12.5, half-life 10 d)"


def test_a_backtest_replays_bonuses_with_each_models_default_half_life(workspace: Workspace) -> None:
    """Under the default model the bonus keeps Jane an MQL; with a 5-day default half-life it has
    decayed below the floor of 10 by day 20, after the 14 days an MQL is kept."""
    add_jane(workspace)
    ingest(workspace, [bonus(1, T0 + timedelta(days=1), {"points": 30})], T0 + timedelta(days=1))
    model = load_model(default_model_text())
    candidate = load_model(default_model_text().replace("half_life_days: 30 ", "half_life_days: 5 ", 1))
    end = T0 + timedelta(days=20)
    report = backtest(workspace, candidate, model, end=end)
    assert report.models["against"]["mqls"] == report.models["candidate"]["mqls"] == 1
    [change] = report.changes
    assert change["against"]["stage"] == "mql"
    assert change["against"]["engagement"] == round(30 * 2 ** (-19 / 30), 4)
    assert change["candidate"]["stage"] == "nurture"
    assert change["candidate"]["engagement"] == round(30 * 2 ** (-19 / 5), 4)


def test_a_bonus_is_no_behaviour_feature_but_counts_in_the_engagement_score(
    workspace: Workspace, tmp_path: Path
) -> None:
    add_jane(workspace)
    day = T0 + timedelta(hours=12)
    events = [
        make_event("v1", "page_view", day, email=JANE, properties={"url": "/blog/a"}),
        bonus(1, day, {**RECYCLE, "campaign": "recycle-q1"}),  # a content key: still no content item
    ]
    ingest(workspace, events, day)
    export_workspace(workspace, tmp_path / "export")
    with workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
    rows = training_set(
        model,
        duckdb_sources(tmp_path / "export"),
        target="sql",
        within_days=1,
        cutoff="created+1",
        end=T0 + timedelta(days=5),
    )
    assert "score_bonus" not in rows.recipe.kinds.values()
    assert not [c for c in rows.frame.columns if "score_bonus" in c or "recycle" in c]
    [row] = rows.frame.to_dict("records")
    assert row["events_page_view"] == 1
    page_view = 2 ** (-12 / 24 / 7)  # 1 point, 7-day half-life, half a day before the cutoff
    assert row["engagement_score"] == pytest.approx(page_view + 15 * 2 ** (-12 / 24 / 30), abs=1e-8)

    # Online, a recipe's features never count a bonus either, whatever the recipe names.
    recipe = Recipe({"score_bonus": "score_bonus", "page_view": "page_view"}, {"engaged_x": "score_bonus:recycle-q1"})
    subject = Subject(
        1, T0 + timedelta(days=1), T0, {}, 80.0, "A", None, 15.0,
        events=[("score_bonus", day, "score_bonus:recycle-q1", {}), ("page_view", day, None, {})],
    )  # fmt: skip
    features = feature_row(subject, recipe)
    assert (features["events_score_bonus"], features["engaged_x"], features["events_page_view"]) == (0, 0, 1)


def test_the_store_keeps_the_bonus_award_under_its_reserved_name(workspace: Workspace) -> None:
    add_jane(workspace)
    ingest(workspace, [bonus(1, T0, {"points": -7.5, "reason": "asked for no calls"})], T0)
    with workspace.unit_of_work(read_only=True) as uow:
        awards = uow.connection.execute(select(schema.events.c.awards)).scalar_one()
    assert awards == [["bonus", -7.5]]


def test_the_lead_page_chart_decays_a_bonus_with_the_default_half_life(workspace: Workspace) -> None:
    from qualify.service.reading.queries import engagement_over_time

    add_jane(workspace)
    ingest(workspace, [bonus(1, T0, RECYCLE)], T0)
    with workspace.unit_of_work(read_only=True) as uow:
        lead = uow.connection.execute(select(schema.leads.c.id).where(schema.leads.c.email == JANE)).scalar_one()
        curve = engagement_over_time(uow, lead, points=2, now=T0 + timedelta(days=30))
    assert curve[0][1] == pytest.approx(15) and curve[-1][1] == pytest.approx(7.5)  # default half-life 30 days


def test_only_an_admin_may_send_a_bonus_itself() -> None:
    from qualify.domain.access import Role
    from qualify.service.lifecycle.events import BONUS_RESERVED, REJECTED, sender_refusal

    event = bonus(1, T0, RECYCLE)
    for role in (Role.MARKETING, Role.SALES, Role.INGEST):
        refused = sender_refusal(role, event)
        assert refused is not None
        assert (refused.event_id, refused.status, refused.field) == ("bonus:41:1", REJECTED, "type")
        assert refused.reason == BONUS_RESERVED
    assert BONUS_RESERVED == "type: score_bonus is reserved for workflow bonuses (or an admin key)"
    assert sender_refusal(Role.ADMIN, event) is None
    page_view = make_event("pv-1", "page_view", T0, email=JANE)
    assert all(sender_refusal(role, page_view) is None for role in Role)
