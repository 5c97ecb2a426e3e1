"""Replaying one lead's history under a model: events in arrival order, people's actions when taken."""

from __future__ import annotations

import pytest

from qualify.domain.evaluator import LeadState, OnlineEvaluator
from qualify.domain.lifecycle import Actor, Stage
from qualify.domain.model_loader import load_default_model
from qualify.domain.replay import ReplayAction, ReplayEvent, replay_lead

DAY = 86_400.0
MODEL = load_default_model()


def fresh(grade: str = "A", fit: float = 80.0) -> LeadState:
    return LeadState(stage=Stage.LEAD, stage_entered=0.0, fit=fit, grade=grade)


def run(events: list[ReplayEvent], actions: list[ReplayAction], until: float = 100 * DAY, grade: str = "A"):  # type: ignore[no-untyped-def]
    return replay_lead(OnlineEvaluator(MODEL), fresh(grade), events=events, actions=actions, until=until)


def test_a_rejection_only_answers_a_handover() -> None:
    reject = ReplayAction(5 * DAY, Stage.MQL, Stage.NURTURE)
    handed = run([ReplayEvent(DAY, "demo_request", {})], [reject])
    assert [m.to_stage for m in handed.moves] == [Stage.MQL, Stage.NURTURE]
    assert handed.skipped_actions == 0
    never = run([ReplayEvent(DAY, "page_view", {"url": "/blog"})], [reject])
    assert [m.to_stage for m in never.moves] == []
    assert never.skipped_actions == 1


def test_steps_forward_are_facts_taken_from_wherever_the_model_left_the_lead() -> None:
    accept = ReplayAction(5 * DAY, Stage.MQL, Stage.SQL)
    win_path = [
        accept,
        ReplayAction(6 * DAY, Stage.SQL, Stage.OPPORTUNITY),
        ReplayAction(9 * DAY, Stage.OPPORTUNITY, Stage.CUSTOMER),
    ]
    replay = run([ReplayEvent(DAY, "page_view", {"url": "/blog"})], win_path)
    assert [(m.from_stage, m.to_stage) for m in replay.moves] == [
        (Stage.LEAD, Stage.SQL),
        (Stage.SQL, Stage.OPPORTUNITY),
        (Stage.OPPORTUNITY, Stage.CUSTOMER),
    ]
    assert replay.forced_actions == 1 and replay.skipped_actions == 0
    assert all(m.actor is Actor.USER for m in replay.moves)


def test_an_action_the_lead_is_already_past_is_skipped() -> None:
    # The quote request fast-tracks the lead to SQL; the recorded accept finds it there already.
    replay = run([ReplayEvent(DAY, "quote_request", {})], [ReplayAction(2 * DAY, Stage.MQL, Stage.SQL)])
    assert replay.state.stage is Stage.SQL
    assert replay.skipped_actions == 1


def test_nothing_after_until_is_used() -> None:
    events = [ReplayEvent(DAY, "page_view", {"url": "/pricing"}), ReplayEvent(20 * DAY, "demo_request", {})]
    actions = [ReplayAction(21 * DAY, Stage.MQL, Stage.SQL)]
    early = run(events, actions, until=10 * DAY)
    assert early.state.stage is Stage.LEAD and early.moves == []
    late = run(events, actions, until=30 * DAY)
    assert [m.to_stage for m in late.moves] == [Stage.MQL, Stage.SQL]


def test_an_action_is_taken_between_the_events_around_it() -> None:
    # Engagement from the demo request makes the lead MQL on day 1; sales rejects it on day 3;
    # the second demo request on day 40 (after the 30-day cool-down) fast-tracks it back.
    events = [ReplayEvent(DAY, "demo_request", {}), ReplayEvent(40 * DAY, "demo_request", {})]
    replay = run(events, [ReplayAction(3 * DAY, Stage.MQL, Stage.NURTURE)])
    assert [(m.to_stage, m.at / DAY) for m in replay.moves] == [
        (Stage.MQL, 1.0),
        (Stage.NURTURE, 3.0),
        (Stage.MQL, 40.0),
    ]


def test_a_late_event_is_judged_when_it_became_known() -> None:
    # Applied second, the event of day 1 is known only at day 6: the action of day 5 comes first.
    events = [ReplayEvent(6 * DAY, "page_view", {"url": "/blog"}), ReplayEvent(DAY, "demo_request", {})]
    replay = run(events, [ReplayAction(5 * DAY, Stage.MQL, Stage.NURTURE)], until=10 * DAY)
    assert replay.skipped_actions == 1
    assert [(m.to_stage, m.at / DAY) for m in replay.moves] == [(Stage.MQL, 6.0)]


@pytest.mark.parametrize("stage", [Stage.LEAD, Stage.MQL, Stage.NURTURE, Stage.SQL])
def test_disqualification_applies_from_every_open_stage(stage: Stage) -> None:
    action = ReplayAction(DAY, Stage.LEAD, Stage.DISQUALIFIED)
    assert action.applies_to(stage)
    assert not action.applies_to(Stage.CUSTOMER)
