"""The online evaluator: one event in, the lead's scores and stage updated in O(1).

>>> from qualify.domain.model_loader import load_default_model
>>> evaluator = OnlineEvaluator(load_default_model())
>>> lead = LeadState(stage=Stage.LEAD, stage_entered=0.0, fit=80.0, grade="A")
>>> step = evaluator.apply(lead, "demo_request", {}, timestamp=3600.0)
>>> [m.to_stage.value for m in step.moves], lead.stage.value
(['mql'], 'mql')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qualify.domain.engagement import DAY, Award, DayTotalLookup, EngagementState, apply_event
from qualify.domain.lifecycle import Actor, Stage
from qualify.domain.policy import decide
from qualify.domain.scoring_model import DisqualifyRule, ScoringModel

_PRECISION = 60.0  # decay-out instants are found to the minute


@dataclass(slots=True)
class LeadState:
    """What the evaluator needs of a lead; times are seconds since the epoch (UTC)."""

    stage: Stage
    stage_entered: float
    fit: float = 0.0
    grade: str = "D"
    persona: str | None = None
    engagement: EngagementState = field(default_factory=EngagementState)
    last_event: float | None = None
    probability: float | None = None  # the active predictive model's, as last computed
    roles: tuple[str, ...] = ()  # the roles of its account's buying group it fills (scored with fit)

    def engagement_at(self, timestamp: float) -> float:
        return self.engagement.value_at(timestamp)


@dataclass(frozen=True, slots=True)
class AppliedMove:
    """A stage change the evaluator made, with the scores at that moment."""

    from_stage: Stage
    to_stage: Stage
    at: float
    actor: Actor
    reason: str
    fit: float
    grade: str
    persona: str | None
    engagement: float


@dataclass(frozen=True, slots=True)
class Step:
    awards: list[Award]
    moves: list[AppliedMove]


class OnlineEvaluator:
    """Applies events and the stage policy of one scoring model to leads."""

    def __init__(self, model: ScoringModel) -> None:
        self.model = model

    def apply(
        self,
        lead: LeadState,
        event_type: str,
        properties: Mapping[str, Any],
        timestamp: float,
        day_total: DayTotalLookup | None = None,
    ) -> Step:
        """Score one event into `lead` and make the moves the policy asks for."""
        moves = self._decay_out_before(lead, timestamp)
        awards = apply_event(self.model, lead.engagement, event_type, properties, timestamp, day_total)
        newest = timestamp if lead.last_event is None else max(timestamp, lead.last_event)
        lead.last_event = newest
        # A late event is judged at the newest known instant: judged at its own time, the state
        # would count later events decayed backwards, i.e. inflated.
        at = max(newest, lead.stage_entered)
        moves += self._follow_policy(lead, at, event_type=event_type, properties=properties)
        return Step(awards, moves)

    def sweep(self, lead: LeadState, now: float, disqualified_by: DisqualifyRule | None = None) -> list[AppliedMove]:
        """Bring a lead up to `now` without an event: decay-out, thresholds, disqualify rules."""
        moves = self._decay_out_before(lead, now)
        return moves + self._follow_policy(lead, max(now, lead.stage_entered), disqualified_by=disqualified_by)

    def run_timers(self, lead: LeadState, until: float) -> list[AppliedMove]:
        """Only the timers (decay-out) up to `until`: before a person acts on a lead."""
        return self._decay_out_before(lead, until)

    def _follow_policy(self, lead: LeadState, at: float, **context: Any) -> list[AppliedMove]:
        engagement = lead.engagement_at(at)
        planned = decide(
            self.model,
            lead.stage,
            grade=lead.grade,
            engagement=engagement,
            now=at,
            stage_entered=lead.stage_entered,
            probability=lead.probability,
            **context,
        )
        return [self._move(lead, m.to_stage, at, m.actor, m.reason, engagement) for m in planned]

    def _decay_out_before(self, lead: LeadState, until: float) -> list[AppliedMove]:
        """The decay-out timer: if an MQL's engagement fell below the floor before `until`, move it then."""
        policy = self.model.policy
        floor = policy.decay_out_floor
        if lead.stage is not Stage.MQL or floor is None:
            return []
        start = max(lead.stage_entered + policy.min_days_in_mql * DAY, lead.last_event or lead.stage_entered)
        if start > until:
            return []
        crossing = self._first_below(lead, floor, start, until)
        if crossing is None:
            return []
        engagement = lead.engagement_at(crossing)
        reason = f"decay-out: engagement fell below the floor of {floor:g}"
        return [self._move(lead, Stage.NURTURE, crossing, Actor.SYSTEM, reason, engagement)]

    @staticmethod
    def _first_below(lead: LeadState, floor: float, start: float, end: float) -> float | None:
        if lead.engagement_at(start) < floor:
            return start
        if lead.engagement_at(end) >= floor:
            return None
        low, high = start, end  # invariant: at low ≥ floor, at high < floor
        while high - low > _PRECISION:
            middle = (low + high) / 2
            if lead.engagement_at(middle) < floor:
                high = middle
            else:
                low = middle
        return high

    @staticmethod
    def _move(lead: LeadState, to: Stage, at: float, actor: Actor, reason: str, engagement: float) -> AppliedMove:
        move = AppliedMove(lead.stage, to, at, actor, reason, lead.fit, lead.grade, lead.persona, engagement)
        lead.stage = to
        lead.stage_entered = at
        return move
