"""Replay one lead's history under a scoring model: what the model would have done, step by step.

The events are applied in the order they reached the store, each judged when it was known (the
newest event time so far, as the online evaluator judges a late event); the people's actions
(accept, reject, win, ...) are taken at the instants they were taken (`ReplayAction.applies_to`
says when one still applies under this model; those that do not are counted). Nothing after
`until` is used, so a decision at any instant rests only on what was known then.

>>> from qualify.domain.model_loader import load_default_model
>>> from qualify.domain.lifecycle import Stage
>>> day = 86_400.0
>>> run = replay_lead(
...     OnlineEvaluator(load_default_model()),
...     LeadState(stage=Stage.LEAD, stage_entered=0.0, fit=80.0, grade="A"),
...     events=[ReplayEvent(day, "demo_request", {})],
...     actions=[ReplayAction(2 * day, Stage.MQL, Stage.SQL)],
...     until=10 * day,
... )
>>> [(m.to_stage.value, m.at / day) for m in run.moves], run.skipped_actions
([('mql', 1.0), ('sql', 2.0)], 0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qualify.domain.engagement import Award, DayTotals
from qualify.domain.evaluator import AppliedMove, LeadState, OnlineEvaluator
from qualify.domain.lifecycle import FUNNEL, STAGE_ACTIONS, Actor, Stage
from qualify.domain.scoring_model import DisqualifyRule

_DISQUALIFY_FROM = STAGE_ACTIONS["disqualify"].sources
_LOST_FROM = STAGE_ACTIONS["lose"].sources
_OPEN = (Stage.LEAD, Stage.NURTURE)
_BACK_FROM = (Stage.LEAD, Stage.MQL, Stage.SQL, Stage.OPPORTUNITY)
_RANK = {stage: rank for rank, stage in enumerate(FUNNEL)} | {Stage.NURTURE: 0, Stage.DISQUALIFIED: len(FUNNEL)}


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """An event as stored, in the order it was applied: when it occurred (seconds since the epoch)."""

    occurred_at: float
    type: str
    properties: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ReplayAction:
    """A person's recorded stage change: at `at`, from `from_stage` to `to_stage`."""

    at: float
    from_stage: Stage | None
    to_stage: Stage

    def applies_to(self, stage: Stage) -> bool:
        """Whether the action is taken on a lead that is in `stage` under the model replayed.

        A step forward (accept, open-opportunity, win, advocate, disqualify) is a fact about the
        lead: sales worked it, the deal was won. It happens from wherever the model left the
        lead, unless the lead is already there or beyond. A step back (reject, lose) answers a
        handover: it happens only from the stage it was taken from; an imported one, which names
        no stage it was taken from (a CRM's "lost" date), from any stage before customer.
        """
        if self.to_stage is Stage.DISQUALIFIED:
            return stage in _DISQUALIFY_FROM
        if self.to_stage is Stage.NURTURE:
            if self.from_stage is None:
                return stage in _BACK_FROM
            return stage is self.from_stage or (self.from_stage in _LOST_FROM and stage in _LOST_FROM)
        return stage is not Stage.DISQUALIFIED and _RANK[stage] < _RANK[self.to_stage]


@dataclass
class Replay:
    """The stage moves a model makes over one lead's history, and its state at the end."""

    state: LeadState
    moves: list[AppliedMove] = field(default_factory=list)
    skipped_actions: int = (
        0  # people's actions this model's stages made impossible (a reject of a lead never handed over)
    )
    forced_actions: int = 0  # steps forward taken from another stage than recorded (accepted before this model's MQL)
    awards: dict[int, list[Award]] = field(default_factory=dict)  # each applied event's awards, by its position

    def entries(self, stage: Stage) -> list[float]:
        return [m.at for m in self.moves if m.to_stage is stage]


def replay_lead(
    evaluator: OnlineEvaluator,
    state: LeadState,
    *,
    events: Sequence[ReplayEvent],
    actions: Sequence[ReplayAction],
    until: float,
    disqualified_by: DisqualifyRule | None = None,
    probability: Callable[[LeadState, float, int], float] | None = None,
    settle: bool = True,
) -> Replay:
    """Replay a new lead (`state`: stage lead, entered at creation, fit scored) up to `until`.

    `events` in application order, `actions` in time order; both only up to `until`.
    `probability(state, instant, n)`: the predictive model's probability of the lead at `instant`
    knowing its first `n` events; when given and the model's policy has probability thresholds,
    it is computed after each event of a lead in `lead` or `nurture` and the policy judged again
    with it (online, that happens after each batch of events). With `settle` (the default) the
    lead is finally brought up to `until` (timers, thresholds); without it, it is left as the
    last event or action left it, as the online path leaves a lead until its next change.
    """
    run = Replay(state)
    run.moves += evaluator.sweep(state, state.stage_entered, disqualified_by)
    totals = DayTotals()
    pending = list(actions)
    known = state.stage_entered
    step = 0
    judge = probability if evaluator.model.policy.mql_probability else None
    for n, event in enumerate(events, start=1):
        if event.occurred_at > until:
            continue
        known = max(known, event.occurred_at)
        while step < len(pending) and pending[step].at < known:
            _act(evaluator, run, pending[step])
            step += 1
        applied = evaluator.apply(state, event.type, event.properties, event.occurred_at, totals)
        totals.add(applied.awards, event.occurred_at)
        run.awards[n - 1] = applied.awards
        run.moves += applied.moves
        if judge is not None and state.stage in _OPEN:
            state.probability = judge(state, known, n)
            run.moves += evaluator.sweep(state, known)
    for action in pending[step:]:
        if action.at <= until:
            _act(evaluator, run, action)
    if settle:
        run.moves += evaluator.sweep(state, until, disqualified_by)
    return run


def _act(evaluator: OnlineEvaluator, run: Replay, action: ReplayAction) -> None:
    """A person's action, as `apply_stage_action` takes it: timers first, then the move if it still applies."""
    state = run.state
    if action.at < state.stage_entered:
        run.skipped_actions += 1
        return
    run.moves += evaluator.run_timers(state, action.at)
    if not action.applies_to(state.stage):
        run.skipped_actions += 1
        return
    if state.stage is not action.from_stage:
        run.forced_actions += 1
    engagement = state.engagement_at(action.at)
    run.moves.append(
        AppliedMove(
            state.stage, action.to_stage, action.at, Actor.USER, "recorded action", state.fit, state.grade,
            state.persona, engagement,
        )
    )  # fmt: skip
    state.stage = action.to_stage
    state.stage_entered = action.at
