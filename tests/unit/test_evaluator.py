"""The online evaluator: events in, scores and stages out, with decay-out timed to the minute."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qualify.domain.engagement import DAY, EngagementState, apply_event
from qualify.domain.evaluator import AppliedMove, LeadState, OnlineEvaluator
from qualify.domain.lifecycle import Actor, Stage, check_automatic
from qualify.domain.model_loader import load_default_model

MODEL = load_default_model()  # thresholds A 25, B 40, C 70; margin 10; floor 10 after 14 days in MQL
STUDENT = next(r for r in MODEL.disqualify if r.name == "student")
T0 = 1_700_006_400.0
HOUR = 3600.0
# A demo request (30 points, 60-day half-life) alone falls below the floor of 10 after 60·log2(3) days.
DEMO_CROSSING = T0 + 60 * math.log2(3) * DAY


@pytest.fixture
def evaluator() -> OnlineEvaluator:
    return OnlineEvaluator(MODEL)


def new_lead(grade: str = "A", fit: float = 80.0, stage: Stage = Stage.LEAD) -> LeadState:
    return LeadState(stage=stage, stage_entered=T0 - DAY, fit=fit, grade=grade, persona="economic buyer")


def path(moves: list[AppliedMove]) -> list[tuple[Stage, Stage]]:
    return [(m.from_stage, m.to_stage) for m in moves]


def demo_mql(evaluator: OnlineEvaluator) -> LeadState:
    """A lead that became MQL at T0 by requesting a demo."""
    lead = new_lead()
    evaluator.apply(lead, "demo_request", {}, T0)
    assert (lead.stage, lead.stage_entered) == (Stage.MQL, T0)
    return lead


def assert_decayed_out_at_the_crossing(move: AppliedMove) -> None:
    assert (move.from_stage, move.to_stage, move.actor) == (Stage.MQL, Stage.NURTURE, Actor.SYSTEM)
    assert DEMO_CROSSING - 1e-3 <= move.at <= DEMO_CROSSING + 60  # to the minute, never early
    assert 9.99 < move.engagement < 10.0
    assert move.reason == "decay-out: engagement fell below the floor of 10"


def test_a_demo_request_makes_an_mql(evaluator: OnlineEvaluator) -> None:
    lead = new_lead(grade="D", fit=10.0)
    step = evaluator.apply(lead, "demo_request", {}, T0)
    assert [(a.rule, a.points) for a in step.awards] == [("demo request", 30.0)]
    [move] = step.moves
    assert (move.from_stage, move.to_stage, move.at, move.actor) == (Stage.LEAD, Stage.MQL, T0, Actor.MODEL)
    assert (move.fit, move.grade, move.persona, move.engagement) == (10.0, "D", "economic buyer", 30.0)
    assert lead.last_event == T0


def test_a_quote_request_is_recorded_as_lead_to_mql_to_sql(evaluator: OnlineEvaluator) -> None:
    lead = new_lead(grade="C")
    step = evaluator.apply(lead, "quote_request", {}, T0)
    assert path(step.moves) == [(Stage.LEAD, Stage.MQL), (Stage.MQL, Stage.SQL)]
    assert [m.at for m in step.moves] == [T0, T0]
    assert (lead.stage, lead.stage_entered) == (Stage.SQL, T0)
    for move in step.moves:
        check_automatic(move.from_stage, move.to_stage)


def test_engagement_crossing_the_threshold_makes_an_mql(evaluator: OnlineEvaluator) -> None:
    lead = new_lead(grade="B", fit=50.0)
    for i in range(3):
        assert evaluator.apply(lead, "content_download", {"title": f"guide {i}"}, T0).moves == []
    [move] = evaluator.apply(lead, "content_download", {"title": "guide 3"}, T0).moves
    assert move.to_stage is Stage.MQL
    assert move.engagement == 40.0
    assert move.reason.startswith("fit grade B and engagement 40.0 ≥ 40")


def test_decay_out_happens_at_the_crossing_when_the_next_event_comes_later(evaluator: OnlineEvaluator) -> None:
    lead = demo_mql(evaluator)
    step = evaluator.apply(lead, "email_open", {}, T0 + 200 * DAY)
    [move] = step.moves
    assert_decayed_out_at_the_crossing(move)
    assert lead.stage is Stage.NURTURE
    assert lead.stage_entered == move.at


def test_decay_out_happens_at_the_crossing_when_a_sweep_comes_later(evaluator: OnlineEvaluator) -> None:
    lead = demo_mql(evaluator)
    assert evaluator.sweep(lead, DEMO_CROSSING - HOUR) == []
    [move] = evaluator.sweep(lead, T0 + 365 * DAY)
    assert_decayed_out_at_the_crossing(move)
    assert evaluator.sweep(lead, T0 + 400 * DAY) == []


def test_decay_out_then_fast_track_back_in_one_event(evaluator: OnlineEvaluator) -> None:
    lead = demo_mql(evaluator)
    step = evaluator.apply(lead, "demo_request", {}, T0 + 150 * DAY)
    assert path(step.moves) == [(Stage.MQL, Stage.NURTURE), (Stage.NURTURE, Stage.MQL)]
    assert_decayed_out_at_the_crossing(step.moves[0])
    assert step.moves[1].at == T0 + 150 * DAY


def test_decay_out_waits_for_min_days_in_mql(evaluator: OnlineEvaluator) -> None:
    lead = LeadState(stage=Stage.MQL, stage_entered=T0, fit=80.0, grade="A")  # engagement 0: below the floor
    assert evaluator.sweep(lead, T0 + 5 * DAY) == []
    assert evaluator.run_timers(lead, T0 + 13.9 * DAY) == []
    [move] = evaluator.sweep(lead, T0 + 20 * DAY)
    assert move.to_stage is Stage.NURTURE
    assert move.at == T0 + 14 * DAY  # the first instant it was allowed, not the sweep's


def test_decay_out_is_dated_when_it_was_due_not_when_the_next_event_came(evaluator: OnlineEvaluator) -> None:
    lead = LeadState(stage=Stage.MQL, stage_entered=T0, fit=80.0, grade="A")  # engagement 0: below the floor
    step = evaluator.apply(lead, "email_open", {}, T0 + 20 * DAY)
    assert [(m.to_stage, m.at) for m in step.moves] == [(Stage.NURTURE, T0 + 14 * DAY)]
    assert lead.stage is Stage.NURTURE


def test_a_nurtured_lead_needs_the_requalify_margin_and_does_not_flap(evaluator: OnlineEvaluator) -> None:
    lead = demo_mql(evaluator)
    back = T0 + 200 * DAY
    evaluator.sweep(lead, back)
    assert lead.stage is Stage.NURTURE
    left = lead.engagement_at(back)
    assert left < 10.0

    evaluator.apply(lead, "meeting", {}, back)
    step = evaluator.apply(lead, "webinar_attended", {}, back)
    assert 25.0 <= lead.engagement_at(back) < 35.0  # above A's threshold, below threshold + margin
    assert step.moves == []
    assert lead.stage is Stage.NURTURE

    [move] = evaluator.apply(lead, "content_download", {}, back + HOUR).moves
    assert path([move]) == [(Stage.NURTURE, Stage.MQL)]
    assert move.reason.endswith("≥ 35 incl. requalify margin")

    # Just requalified: no decay-out while the minimum days in MQL run, and none while above the floor.
    assert evaluator.sweep(lead, back + 10 * DAY) == []
    assert evaluator.run_timers(lead, back + 20 * DAY) == []
    assert [lead.stage] == [Stage.MQL]


def test_run_timers_only_fires_timers(evaluator: OnlineEvaluator) -> None:
    lead = new_lead(grade="D", fit=10.0)
    for i in range(3):
        evaluator.apply(lead, "content_download", {}, T0 + i)
    lead.grade, lead.fit = "A", 90.0  # the profile changed: the policy would now qualify the lead
    assert evaluator.run_timers(lead, T0 + DAY) == []
    assert lead.stage is Stage.LEAD
    [move] = evaluator.sweep(lead, T0 + DAY)
    assert move.to_stage is Stage.MQL


def test_run_timers_fires_decay_out_at_the_crossing(evaluator: OnlineEvaluator) -> None:
    lead = demo_mql(evaluator)
    [move] = evaluator.run_timers(lead, T0 + 365 * DAY)
    assert_decayed_out_at_the_crossing(move)


def test_run_timers_does_not_disqualify_or_qualify_an_mql(evaluator: OnlineEvaluator) -> None:
    lead = demo_mql(evaluator)
    assert evaluator.run_timers(lead, T0 + DAY) == []
    assert lead.stage is Stage.MQL


@pytest.mark.parametrize("stage", [Stage.LEAD, Stage.MQL, Stage.NURTURE])
def test_a_sweep_applies_a_disqualify_rule(evaluator: OnlineEvaluator, stage: Stage) -> None:
    lead = new_lead(stage=stage)
    [move] = evaluator.sweep(lead, T0, disqualified_by=STUDENT)
    assert (move.from_stage, move.to_stage) == (stage, Stage.DISQUALIFIED)
    assert lead.stage is Stage.DISQUALIFIED


def test_moves_are_never_dated_before_the_stage_was_entered(evaluator: OnlineEvaluator) -> None:
    lead = new_lead()
    lead.stage_entered = T0 + 10 * DAY
    [move] = evaluator.apply(lead, "demo_request", {}, T0).moves  # an event from before the lead's stage began
    assert move.at == T0 + 10 * DAY


def test_apply_passes_the_day_total_lookup_for_late_events(evaluator: OnlineEvaluator) -> None:
    lead = new_lead(grade="D")
    evaluator.apply(lead, "email_open", {}, T0 + 2 * DAY)
    asked: list[tuple[str, int]] = []

    def day_total(rule: str, day: int) -> float:
        asked.append((rule, day))
        return 3.0  # that day is already capped

    step = evaluator.apply(lead, "email_open", {}, T0 + HOUR, day_total)
    assert step.awards == []
    assert asked == [("email open", int(T0 // DAY))]
    assert lead.last_event == T0 + 2 * DAY  # a late event does not move the last event back


def test_a_late_event_does_not_qualify_on_later_events_decayed_backwards(evaluator: OnlineEvaluator) -> None:
    lead = new_lead(grade="A")
    assert evaluator.apply(lead, "meeting", {}, T0 + 30 * DAY).moves == []  # 20 points
    step = evaluator.apply(lead, "form_submit", {}, T0)  # 8 points, 30-day half-life, arrives late
    # True scores: 8 at T0, 20 + 4 = 24 at T0 + 30 days; never the 25 that grade A needs.
    assert lead.engagement_at(T0 + 30 * DAY) == pytest.approx(24.0)
    assert step.moves == []
    assert lead.stage is Stage.LEAD


# --- property: stage history never skips and never goes back in time ---------------------------

EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("email_open", {}),
    ("email_click", {}),
    ("page_view", {"url": "/pricing"}),
    ("page_view", {"url": "/careers"}),
    ("content_download", {}),
    ("webinar_attended", {}),
    ("demo_request", {}),
    ("quote_request", {}),
    ("meeting", {}),
    ("unsubscribe", {}),
    ("sweep", {}),  # not an event: a sweep at that time
]


@settings(max_examples=60, deadline=None)
@given(
    grade=st.sampled_from("ABCD"),
    stream=st.lists(st.tuples(st.sampled_from(EVENTS), st.integers(0, 300 * 86_400).map(float)), max_size=30),
    in_order=st.booleans(),
)
def test_property_moves_chain_and_are_allowed(
    grade: str, stream: list[tuple[tuple[str, dict[str, Any]], float]], in_order: bool
) -> None:
    if in_order:
        stream = sorted(stream, key=lambda item: item[1])
    evaluator = OnlineEvaluator(MODEL)
    lead = LeadState(stage=Stage.LEAD, stage_entered=T0, fit=50.0, grade=grade)
    history: list[AppliedMove] = []
    for (event_type, properties), offset in stream:
        if event_type == "sweep":
            history += evaluator.sweep(lead, T0 + offset)
        else:
            history += evaluator.apply(lead, event_type, properties, T0 + offset).moves
    stage, since = Stage.LEAD, T0
    for move in history:
        assert move.from_stage is stage
        check_automatic(move.from_stage, move.to_stage)
        assert move.at >= since
        stage, since = move.to_stage, move.at
    assert lead.stage is stage
    if grade == "D":
        assert all(m.reason.startswith(("fast-track", "decay-out")) for m in history)


def test_engagement_state_can_be_given_to_a_lead(evaluator: OnlineEvaluator) -> None:
    state = EngagementState()
    apply_event(MODEL, state, "webinar_attended", {}, T0)
    apply_event(MODEL, state, "content_download", {}, T0)
    apply_event(MODEL, state, "meeting", {}, T0)
    lead = LeadState(stage=Stage.LEAD, stage_entered=T0, fit=80.0, grade="A", engagement=state)
    [move] = evaluator.sweep(lead, T0 + HOUR)
    assert move.to_stage is Stage.MQL
    assert move.engagement == pytest.approx(22.0 * 2 ** (-1 / (30 * 24)) + 20.0 * 2 ** (-1 / (60 * 24)), rel=1e-12)
