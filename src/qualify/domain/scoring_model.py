"""The scoring model: fit, engagement, disqualify rules and the stage policy, as plain data.

A model is written in YAML (see `docs/scoring-model.md`) and loaded by
`qualify.domain.model_loader.load_model`; this module holds the validated result.
The optional `handoff` section (routing to owners, the SLA) is read by `qualify.domain.routing`,
the optional `accounts` section (account fit, engagement and buying group) by
`qualify.domain.accounts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time

from qualify.domain.conditions import Condition

GRADES = ("A", "B", "C", "D")


def grade_of(grades: dict[str, float], score: float) -> str:
    """The grade of `score` by falling bands (the lowest score for A, B, C); D below C."""
    for letter in ("A", "B", "C"):
        if score >= grades[letter]:
            return letter
    return "D"


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
        return grade_of(self.grades, score)


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
    # grade -> lowest probability of converting (the active predictive model's) for MQL
    mql_probability: dict[str, float] = field(default_factory=dict)
    combine: str = "any"  # any: engagement or probability qualifies; all: every one given for the grade

    def mql_threshold(self, grade: str, *, returning: bool) -> float | None:
        threshold = self.mql_thresholds.get(grade)
        if threshold is None:
            return None
        return threshold + (self.requalify_margin if returning else 0.0)


@dataclass(frozen=True, slots=True)
class Rep:
    """A sales rep who receives MQLs; `capacity_per_week` bounds round robin (None: no bound)."""

    name: str
    capacity_per_week: int | None = None


@dataclass(frozen=True, slots=True)
class Team:
    """Reps who share MQLs by round robin, in the order listed."""

    name: str
    reps: tuple[Rep, ...]


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """When all `conditions` hold, the lead goes to `team` (round robin) or to `owner` by name."""

    name: str
    conditions: tuple[Condition, ...]
    team: str | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """When the SLA clock runs: `days` are ISO weekdays (1 = Monday), local to `timezone`.

    `end` None means midnight at the end of the day (written `"24:00"`).
    """

    days: frozenset[int]
    start: time
    end: time | None
    timezone: str


@dataclass(frozen=True, slots=True)
class SlaSpec:
    """An MQL must be accepted or rejected within `hours` (of business time when given)."""

    hours: float
    business_hours: BusinessHours | None = None


@dataclass(frozen=True, slots=True)
class HandoffSpec:
    """Who gets a new MQL, and by when it must be worked."""

    teams: tuple[Team, ...]
    rules: tuple[RoutingRule, ...] = ()
    account_owner_first: bool = False
    default_team: str | None = None
    sla: SlaSpec | None = None

    def team(self, name: str) -> Team:
        """The team called `name` (the loader refuses references to unknown teams)."""
        return next(team for team in self.teams if team.name == name)

    def team_of(self, rep: str) -> Team | None:
        """The team `rep` belongs to (a rep belongs to at most one), or None."""
        return next((team for team in self.teams if any(r.name == rep for r in team.reps)), None)

    def knows_owner(self, name: str) -> bool:
        """Whether `name` can own leads under this model: a team's rep or a rule's named owner."""
        return self.team_of(name) is not None or any(rule.owner == name for rule in self.rules)


@dataclass(frozen=True, slots=True)
class BuyingRole:
    """A role of an account's buying group, filled by the people whose fields match."""

    name: str
    conditions: tuple[Condition, ...]

    def describe(self) -> str:
        return " and ".join(c.describe() for c in self.conditions)


@dataclass(frozen=True, slots=True)
class AccountBar:
    """What an account needs to reach a stage (`accounts.stages.engaged` or `.mqa`): each bar
    given, at least; a bar left out asks nothing."""

    fit: float | None = None  # the account's fit
    engagement: float | None = None  # its people's engagement rolled up
    roles: int | None = None  # how many roles of its buying group are covered

    def why(self, fit: float, engagement: float, covered: int) -> str | None:
        """Why an account with these scores clears the bar (each part it clears), or None."""
        parts = []
        for name, bar, value, shown in (
            ("fit", self.fit, fit, f"{fit:.1f}"),
            ("engagement", self.engagement, engagement, f"{engagement:.1f}"),
            ("roles covered", self.roles, covered, str(covered)),
        ):
            if bar is None:
                continue
            if value < bar:
                return None
            parts.append(f"{name} {shown} ≥ {bar:g}")
        return " and ".join(parts) or None


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """How accounts are qualified (the model's `accounts` section): fit on the account's fields,
    the engagement of its people rolled up, and which roles of the buying group are engaged."""

    grades: dict[str, float]  # lowest account fit for A, B, C; D is everything below C
    rules: tuple[FitRule, ...]  # on account.* fields
    person_cap: float | None  # one person's engagement counts up to this much (None: all of it)
    roles: tuple[BuyingRole, ...]
    within_days: float  # a person engaged in a role was active this recently
    min_engagement: float  # and had at least this much engagement after their latest activity
    engaged: AccountBar | None = None  # target → engaged (None: the model moves no account there)
    mqa: AccountBar | None = None  # → MQA, a marketing-qualified account
    requalify_after_days: float = 30.0  # an MQA sales rejected is not MQA again before this

    def grade(self, score: float) -> str:
        return grade_of(self.grades, score)


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
    handoff: HandoffSpec | None = None  # None: MQLs get no owner and no SLA clock
    accounts: AccountSpec | None = None  # None: accounts are not scored
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
        """Distinct half-lives in the model: one decay accumulator each. The default is among them
        even when every rule gives its own: a `score_bonus` event's points decay with it."""
        seen: dict[float | None, None] = {}
        for rule in self.engagement_rules:
            seen.setdefault(rule.half_life_days, None)
        seen.setdefault(self.default_half_life_days, None)
        return tuple(seen)
