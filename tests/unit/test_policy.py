"""The stage policy: disqualify, then fast-track, then the MQL threshold matrix, then decay-out."""

from __future__ import annotations

from typing import Any

import pytest

from qualify.domain.engagement import DAY
from qualify.domain.lifecycle import Actor, Stage, check_automatic
from qualify.domain.model_loader import load_default_model
from qualify.domain.policy import Move, decide

MODEL = load_default_model()  # thresholds A 25, B 40, C 70; margin 10; floor 10 after 14 days
STUDENT = next(r for r in MODEL.disqualify if r.name == "student")
T0 = 1_700_006_400.0


def moves(stage: Stage, *, grade: str = "A", engagement: float = 0.0, **context: Any) -> list[Move]:
    context.setdefault("now", T0)
    context.setdefault("stage_entered", T0)
    return decide(MODEL, stage, grade=grade, engagement=engagement, **context)


def targets(planned: list[Move]) -> list[Stage]:
    return [m.to_stage for m in planned]


@pytest.mark.parametrize(("grade", "threshold"), [("A", 25.0), ("B", 40.0), ("C", 70.0)])
def test_each_grade_qualifies_at_its_threshold(grade: str, threshold: float) -> None:
    assert moves(Stage.LEAD, grade=grade, engagement=threshold - 0.01) == []
    [move] = moves(Stage.LEAD, grade=grade, engagement=threshold)
    assert move.to_stage is Stage.MQL
    assert move.actor is Actor.MODEL
    assert move.reason == f"fit grade {grade} and engagement {threshold:.1f} ≥ {threshold:g}"


@pytest.mark.parametrize("stage", [Stage.LEAD, Stage.NURTURE])
def test_grade_d_never_qualifies_on_engagement(stage: Stage) -> None:
    assert moves(stage, grade="D", engagement=10_000.0) == []


@pytest.mark.parametrize("stage", [Stage.SQL, Stage.OPPORTUNITY, Stage.CUSTOMER, Stage.EVANGELIST, Stage.DISQUALIFIED])
def test_leads_past_mql_or_out_of_the_funnel_are_left_alone(stage: Stage) -> None:
    assert moves(stage, engagement=1_000.0, event_type="quote_request", disqualified_by=STUDENT) == []


def test_an_mql_is_not_qualified_again() -> None:
    assert moves(Stage.MQL, engagement=1_000.0) == []


def test_a_nurtured_lead_must_clear_the_threshold_plus_the_requalify_margin() -> None:
    assert MODEL.policy.mql_threshold("A", returning=True) == 35.0
    after_cooldown = T0 + 31 * 86_400
    assert moves(Stage.NURTURE, grade="A", engagement=34.9, now=after_cooldown) == []
    [move] = moves(Stage.NURTURE, grade="A", engagement=35.0, now=after_cooldown)
    assert move.to_stage is Stage.MQL
    assert move.reason == "fit grade A and engagement 35.0 ≥ 35 incl. requalify margin"


def test_fast_track_to_mql_ignores_grade_and_engagement() -> None:
    [move] = moves(Stage.LEAD, grade="D", engagement=0.0, event_type="demo_request")
    assert (move.to_stage, move.actor, move.reason) == (Stage.MQL, Actor.MODEL, "fast-track: demo_request")


@pytest.mark.parametrize("stage", [Stage.LEAD, Stage.NURTURE])
def test_fast_track_to_sql_is_two_moves_through_mql(stage: Stage) -> None:
    planned = moves(stage, grade="C", engagement=0.0, event_type="quote_request")
    assert targets(planned) == [Stage.MQL, Stage.SQL]
    assert [m.reason for m in planned] == ["fast-track: quote_request", "fast-track: quote_request (SQL-ready)"]
    check_automatic(stage, Stage.MQL)
    check_automatic(Stage.MQL, Stage.SQL)


def test_fast_track_to_sql_from_mql_is_one_move() -> None:
    assert targets(moves(Stage.MQL, event_type="quote_request")) == [Stage.SQL]


def test_fast_track_to_mql_does_nothing_to_an_mql() -> None:
    assert moves(Stage.MQL, engagement=50.0, event_type="demo_request") == []


def test_an_event_that_is_not_a_fast_track_follows_the_threshold() -> None:
    assert moves(Stage.LEAD, grade="B", engagement=20.0, event_type="email_open") == []
    assert targets(moves(Stage.LEAD, grade="B", engagement=40.0, event_type="email_open")) == [Stage.MQL]


@pytest.mark.parametrize("stage", [Stage.LEAD, Stage.MQL, Stage.NURTURE])
def test_a_disqualify_rule_wins_over_everything(stage: Stage) -> None:
    [move] = moves(stage, engagement=500.0, event_type="quote_request", disqualified_by=STUDENT)
    assert move.to_stage is Stage.DISQUALIFIED
    assert move.actor is Actor.MODEL
    assert move.reason == "disqualify rule student: students and interns do not buy"


def test_decay_out_waits_for_min_days_in_mql() -> None:
    entered = T0
    assert moves(Stage.MQL, engagement=2.0, stage_entered=entered, now=entered + 14 * DAY - 1) == []
    [move] = moves(Stage.MQL, engagement=2.0, stage_entered=entered, now=entered + 14 * DAY)
    assert (move.to_stage, move.actor) == (Stage.NURTURE, Actor.SYSTEM)
    assert move.reason == "decay-out: engagement fell below the floor of 10"


def test_decay_out_needs_engagement_below_the_floor() -> None:
    assert moves(Stage.MQL, engagement=10.0, now=T0 + 100 * DAY) == []
    assert targets(moves(Stage.MQL, engagement=9.99, now=T0 + 100 * DAY)) == [Stage.NURTURE]


def test_decay_out_only_moves_mqls() -> None:
    for stage in (Stage.LEAD, Stage.SQL, Stage.NURTURE):
        assert moves(stage, grade="D", engagement=0.0, now=T0 + 100 * DAY) == []


def test_floor_is_below_every_threshold_so_a_lead_cannot_flap() -> None:
    floor = MODEL.policy.decay_out_floor
    assert floor is not None
    for grade in MODEL.policy.mql_thresholds:
        for returning in (False, True):
            threshold = MODEL.policy.mql_threshold(grade, returning=returning)
            assert threshold is not None
            # Just qualified: not decayed out at once; just decayed out: not qualified at once.
            assert moves(Stage.MQL, grade=grade, engagement=threshold, now=T0 + 100 * DAY) == []
            assert moves(Stage.NURTURE, grade=grade, engagement=floor - 0.01) == []


def test_mql_threshold_for_an_absent_grade_is_none() -> None:
    assert MODEL.policy.mql_threshold("D", returning=False) is None
    assert MODEL.policy.mql_threshold("D", returning=True) is None
    assert MODEL.policy.mql_threshold("B", returning=False) == 40.0


def test_a_nurtured_lead_waits_out_requalify_after_days_before_points_count_again() -> None:
    from qualify.domain.engagement import DAY
    from qualify.domain.lifecycle import Stage
    from qualify.domain.model_loader import load_default_model
    from qualify.domain.policy import decide

    model = load_default_model()
    assert model.policy.requalify_after_days == 30
    entered = 0.0
    early = decide(model, Stage.NURTURE, grade="A", engagement=200.0, now=entered + 10 * DAY, stage_entered=entered)
    assert early == []
    later = decide(model, Stage.NURTURE, grade="A", engagement=200.0, now=entered + 31 * DAY, stage_entered=entered)
    assert [m.to_stage for m in later] == [Stage.MQL]
    fast = decide(
        model,
        Stage.NURTURE,
        grade="A",
        engagement=0.0,
        now=entered + DAY,
        stage_entered=entered,
        event_type="demo_request",
    )
    assert [m.to_stage for m in fast] == [Stage.MQL]


def probability_model(combine: str) -> Any:
    from qualify.domain.model_loader import default_model_text, load_model

    text = default_model_text().replace(
        "    thresholds: {A: 25, B: 40, C: 70}\n",
        f"    thresholds: {{A: 25, B: 40, C: 70}}\n    probability: {{A: 0.2, B: 0.3}}\n    combine: {combine}\n",
    )
    assert "probability: {A: 0.2" in text
    return load_model(text)


def test_with_combine_any_a_probability_over_the_grade_s_threshold_qualifies_without_engagement() -> None:
    model = probability_model("any")
    moves = decide(model, Stage.LEAD, grade="B", engagement=0.0, now=0.0, stage_entered=0.0, probability=0.31)
    assert moves == [Move(Stage.MQL, Actor.MODEL, "fit grade B and probability 0.31 ≥ 0.3")]
    # Below it, or no probability known (no active predictive model), or a grade without one: engagement decides.
    for grade, probability in (("B", 0.29), ("B", None), ("C", 0.99)):
        assert (
            decide(model, Stage.LEAD, grade=grade, engagement=0.0, now=0.0, stage_entered=0.0, probability=probability)
            == []
        )
    assert decide(model, Stage.LEAD, grade="B", engagement=40.0, now=0.0, stage_entered=0.0)[0].to_stage is Stage.MQL


def test_with_combine_all_each_threshold_the_grade_has_must_hold() -> None:
    model = probability_model("all")
    assert decide(model, Stage.LEAD, grade="A", engagement=30.0, now=0.0, stage_entered=0.0, probability=0.1) == []
    assert decide(model, Stage.LEAD, grade="A", engagement=30.0, now=0.0, stage_entered=0.0) == []
    assert decide(model, Stage.LEAD, grade="A", engagement=10.0, now=0.0, stage_entered=0.0, probability=0.9) == []
    [move] = decide(model, Stage.LEAD, grade="A", engagement=30.0, now=0.0, stage_entered=0.0, probability=0.25)
    assert move.reason == "fit grade A and engagement 30.0 ≥ 25 and probability 0.25 ≥ 0.2"
    # Grade C has only an engagement threshold: it alone decides.
    assert decide(model, Stage.LEAD, grade="C", engagement=70.0, now=0.0, stage_entered=0.0)[0].to_stage is Stage.MQL


def test_the_requalify_wait_holds_for_probability_too() -> None:
    model = probability_model("any")
    early = decide(model, Stage.NURTURE, grade="A", engagement=0.0, now=10 * DAY, stage_entered=0.0, probability=0.9)
    late = decide(model, Stage.NURTURE, grade="A", engagement=0.0, now=31 * DAY, stage_entered=0.0, probability=0.9)
    assert early == [] and late[0].to_stage is Stage.MQL


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("    probability: {A: 1.5}\n", "a probability is at most 1"),
        ("    probability: {A: -0.1}\n", "must be ≥ 0"),
        ("    probability: {E: 0.1}\n", "unknown key"),
        ("    combine: both\n", "must be any or all"),
    ],
)
def test_bad_probability_thresholds_are_named(snippet: str, message: str) -> None:
    from qualify.domain.errors import ModelError
    from qualify.domain.model_loader import default_model_text, load_model

    text = default_model_text().replace(
        "    thresholds: {A: 25, B: 40, C: 70}\n", "    thresholds: {A: 25, B: 40, C: 70}\n" + snippet
    )
    with pytest.raises(ModelError) as caught:
        load_model(text)
    assert any(message in p.message and p.path.startswith("policy.mql") for p in caught.value.problems), (
        caught.value.problems
    )
