"""The scoring model: fit, engagement, disqualify rules and the stage policy, as plain data.

A model is written in YAML (see `docs/scoring-model.md`) and loaded by
`qualify.domain.model_loader.load_model`; this module holds the validated result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qualify.domain.conditions import Condition

GRADES = ("A", "B", "C", "D")


@dataclass(frozen=True, slots=True)
class FitRule:
    name: str
    conditions: tuple[Condition, ...]
    points: float

    def describe(self) -> str:
        return " and ".join(c.describe() for c in self.conditions)


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    description: str
    rules: tuple[FitRule, ...]


@dataclass(frozen=True, slots=True)
class FitSpec:
    grades: dict[str, float]  # lowest fit score for A, B, C; D is everything below C
    rules: tuple[FitRule, ...]  # apply to every persona
    personas: tuple[Persona, ...]

    def grade(self, score: float) -> str:
        for letter in ("A", "B", "C"):
            if score >= self.grades[letter]:
                return letter
        return "D"


@dataclass(frozen=True, slots=True)
class EngagementRule:
    """Points for events of some types whose properties match.

    `cap_per_day` and `cap` bound the undecayed points the rule awards to one lead in a
    UTC day and in total; `once` is a cap of one award. Awards decay with `half_life_days`
    (None: never).
    """

    name: str
    events: tuple[str, ...]
    where: tuple[Condition, ...]
    points: float
    half_life_days: float | None
    cap_per_day: float | None = None
    cap: float | None = None
    label: str | None = None

    def matches(self, event_type: str, properties: dict[str, object]) -> bool:
        if event_type not in self.events:
            return False
        return all(c.test(properties.get(c.field)) for c in self.where)


@dataclass(frozen=True, slots=True)
class DisqualifyRule:
    name: str
    conditions: tuple[Condition, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class FastTrack:
    events: tuple[str, ...]
    to: str  # "mql" or "sql"
    where: tuple[Condition, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    mql_thresholds: dict[str, float]  # grade -> lowest engagement for MQL; absent grade: never
    requalify_margin: float
    fast_track: tuple[FastTrack, ...]
    decay_out_floor: float | None
    min_days_in_mql: float
    requalify_after_days: float = 0.0  # a nurtured lead cannot requalify on points before this many days

    def mql_threshold(self, grade: str, *, returning: bool) -> float | None:
        threshold = self.mql_thresholds.get(grade)
        if threshold is None:
            return None
        return threshold + (self.requalify_margin if returning else 0.0)


@dataclass(frozen=True, slots=True)
class ScoringModel:
    name: str
    description: str
    version: str  # content hash of the document
    fit: FitSpec
    engagement_rules: tuple[EngagementRule, ...]
    default_half_life_days: float | None
    disqualify: tuple[DisqualifyRule, ...]
    policy: Policy
    source: str = field(default="", repr=False, compare=False)
    _rules_by_type: dict[str, tuple[EngagementRule, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def rules_for(self, event_type: str) -> tuple[EngagementRule, ...]:
        """The engagement rules that may match an event type, in model order (computed once)."""
        index = self._rules_by_type
        if index is None:
            built: dict[str, list[EngagementRule]] = {}
            for rule in self.engagement_rules:
                for kind in dict.fromkeys(rule.events):  # a type listed twice still awards once
                    built.setdefault(kind, []).append(rule)
            index = {kind: tuple(rules) for kind, rules in built.items()}
            object.__setattr__(self, "_rules_by_type", index)
        return index.get(event_type, ())

    @property
    def half_lives(self) -> tuple[float | None, ...]:
        """Distinct half-lives in the model: one decay accumulator each."""
        seen: dict[float | None, None] = {}
        for rule in self.engagement_rules:
            seen.setdefault(rule.half_life_days, None)
        return tuple(seen)
