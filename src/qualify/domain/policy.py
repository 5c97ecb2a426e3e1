"""The stage policy: when the model moves a lead, and why.

Order of precedence: a disqualify rule, then a fast-track event, then the MQL
threshold matrix, then decay-out. A lead that came back from nurture must clear
its threshold plus `requalify_margin`, and not before `requalify_after_days` (points it
earned before sales sent it back do not count again at once; a fast-track event still
does). Decay-out needs the engagement to fall
below a floor under every threshold: together they keep a lead from flapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qualify.domain.conditions import all_match
from qualify.domain.engagement import DAY
from qualify.domain.lifecycle import Actor, Stage
from qualify.domain.scoring_model import DisqualifyRule, ScoringModel

_OPEN = (Stage.LEAD, Stage.NURTURE)


@dataclass(frozen=True, slots=True)
class Move:
    """A stage change the policy asks for."""

    to_stage: Stage
    actor: Actor
    reason: str


def decide(
    model: ScoringModel,
    stage: Stage,
    *,
    grade: str,
    engagement: float,
    now: float,
    stage_entered: float,
    disqualified_by: DisqualifyRule | None = None,
    event_type: str | None = None,
    properties: Mapping[str, Any] | None = None,
    probability: float | None = None,
) -> list[Move]:
    """The moves, in order, that take a lead in `stage` to where the policy wants it.

    `probability` is the active predictive model's (None: no model, or not scored yet), used by
    the MQL matrix when the policy gives probability thresholds."""
    policy = model.policy
    if disqualified_by is not None and stage in (Stage.LEAD, Stage.MQL, Stage.NURTURE):
        return [
            Move(
                Stage.DISQUALIFIED,
                Actor.MODEL,
                f"disqualify rule {disqualified_by.name}: {disqualified_by.reason}",
            )
        ]
    if event_type is not None and stage in (*_OPEN, Stage.MQL):
        props = dict(properties or {})
        for track in policy.fast_track:
            if event_type in track.events and all_match(track.where, props):
                reason = f"fast-track: {event_type}"
                moves = [] if stage is Stage.MQL else [Move(Stage.MQL, Actor.MODEL, reason)]
                if track.to == "sql":
                    moves.append(Move(Stage.SQL, Actor.MODEL, f"{reason} (SQL-ready)"))
                if moves:
                    return moves
    cooling = stage is Stage.NURTURE and (now - stage_entered) < policy.requalify_after_days * DAY
    if stage in _OPEN and not cooling:
        why = _qualifies(model, grade, engagement, probability, returning=stage is Stage.NURTURE)
        if why is not None:
            return [Move(Stage.MQL, Actor.MODEL, why)]
    floor = policy.decay_out_floor
    if stage is Stage.MQL and floor is not None and engagement < floor:
        if (now - stage_entered) >= policy.min_days_in_mql * DAY:
            return [
                Move(
                    Stage.NURTURE,
                    Actor.SYSTEM,
                    f"decay-out: engagement fell below the floor of {floor:g}",
                )
            ]
    return []


def _qualifies(
    model: ScoringModel, grade: str, engagement: float, probability: float | None, *, returning: bool
) -> str | None:
    """Why a lead of `grade` qualifies as MQL, or None. With `combine: any` either the engagement
    threshold or the probability threshold of the grade suffices; with `all`, each one the grade has."""
    policy = model.policy
    threshold = policy.mql_threshold(grade, returning=returning)
    lowest = policy.mql_probability.get(grade)
    engaged = threshold is not None and engagement >= threshold
    likely = lowest is not None and probability is not None and probability >= lowest
    if policy.combine == "all":
        if (threshold is None and lowest is None) or (threshold is not None and not engaged):
            return None
        if lowest is not None and not likely:
            return None
    elif not (engaged or likely):
        return None
    parts = [f"fit grade {grade}"]
    if engaged:
        margin = " incl. requalify margin" if returning and policy.requalify_margin else ""
        parts.append(f"engagement {engagement:.1f} ≥ {threshold:g}{margin}")
    if likely:
        parts.append(f"probability {probability:.2f} ≥ {lowest:g}")
    return " and ".join(parts)
