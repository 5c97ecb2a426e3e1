"""Engagement: points for what the lead does, with caps and exact exponential decay.

The state keeps one accumulator per distinct half-life, so applying an event is O(1):
S(t) = S(t0)·2^-((t-t0)/h) + a. Caps count undecayed points per rule, in the order events
were applied (for events of the same instant as for late ones), per UTC day and in total.

An event of the reserved type `score_bonus` (what a workflow sends to adjust a score by hand)
awards its `points` property under the award name `bonus`, decaying with the model's default
half-life and never capped: see `bonus_points` for which values count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qualify.domain.explain import Contribution, days_phrase
from qualify.domain.scoring_model import EngagementRule, ScoringModel
from qualify.domain.values import as_text

DAY = 86_400.0
NO_DECAY = "none"

# The reserved event type of a one-off bonus, and the award name its points go under. The model
# loader refuses engagement rules for the type and rules of that name, so neither is ambiguous.
BONUS_EVENT = "score_bonus"
BONUS_AWARD = "bonus"
# A bonus is held within ±BONUS_LIMIT points; one smaller than BONUS_MIN in size awards nothing.
BONUS_LIMIT = 100.0
BONUS_MIN = 0.0001
# How `points` must read as text to count: plain decimal notation, at most 15 digits before the
# point and 30 after. The batch side reads the same text (a Parquet text map, or PostgreSQL's text
# of a JSON value) and casts it after this test, so the bounds keep every engine's cast in range.
# Python writes floats below 1e-4 with an exponent ("5e-05") where PostgreSQL writes them out
# ("0.00005"): below BONUS_MIN, both award nothing, so the notation never decides.
BONUS_POINTS_PATTERN = r"^[+-]?[0-9]{1,15}([.][0-9]{1,30})?$"
_BONUS_POINTS = re.compile(BONUS_POINTS_PATTERN)
_BONUS_DIGITS = 10**15

# (rule name, UTC day number) -> undecayed points already awarded by that rule that day.
DayTotalLookup = Callable[[str, int], float]


def half_life_key(half_life_days: float | None) -> str:
    return NO_DECAY if half_life_days is None else repr(float(half_life_days))


# Accumulator key -> its half-life in seconds (None: no decay); value_at reads it on every call.
_SPANS: dict[str, float | None] = {}
_MISSING = -1.0


def decay_factor(elapsed_seconds: float, half_life_days: float | None) -> float:
    if half_life_days is None:
        return 1.0
    return math.pow(2.0, -elapsed_seconds / (half_life_days * DAY))


@dataclass(frozen=True, slots=True)
class Award:
    """Points a rule gave for one event, before decay."""

    rule: str
    points: float


@dataclass(slots=True)
class EngagementState:
    """What a lead's engagement needs to be updated in O(1): accumulators and cap counters."""

    accumulators: dict[str, list[float]] = field(default_factory=dict)  # key -> [value, as_of]
    rule_totals: dict[str, float] = field(default_factory=dict)
    rule_day: dict[str, list[float]] = field(default_factory=dict)  # rule -> [day, total]

    def to_json(self) -> dict[str, Any]:
        """A copy, safe to keep while the state goes on changing."""
        return {
            "acc": {k: list(v) for k, v in self.accumulators.items()},
            "tot": dict(self.rule_totals),
            "day": {k: list(v) for k, v in self.rule_day.items()},
        }

    def json_view(self) -> dict[str, Any]:
        """The same shape as `to_json`, without copying: only for encoding at once."""
        return {"acc": self.accumulators, "tot": self.rule_totals, "day": self.rule_day}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> EngagementState:
        """Adopt freshly decoded JSON: its lists become the state's own (numbers as written)."""
        if not data:
            return cls()
        return cls(dict(data.get("acc", {})), dict(data.get("tot", {})), dict(data.get("day", {})))

    def value_at(self, timestamp: float) -> float:
        """The engagement score at `timestamp` (seconds since the epoch)."""
        total = 0.0
        for key, (value, as_of) in self.accumulators.items():
            span = _SPANS.get(key, _MISSING)
            if span is _MISSING:
                span = _SPANS[key] = None if key == NO_DECAY else float(key) * DAY
            # decay_factor's arithmetic exactly, without parsing the key each time
            total += value if span is None else value * math.pow(2.0, -(timestamp - as_of) / span)
        return total

    def add(self, points: float, half_life_days: float | None, timestamp: float) -> None:
        self.add_at(half_life_key(half_life_days), points, timestamp)

    def add_at(self, key: str, points: float, timestamp: float) -> None:
        """Add `points` earned at `timestamp` to the accumulator `key` names (`half_life_key`): the
        accumulator decays to the later of the two instants, a late event's points decay forward
        to the accumulator's (an account's roll-up adds its people's accumulators by key)."""
        span = _SPANS.get(key, _MISSING)
        if span is _MISSING:
            span = _SPANS[key] = None if key == NO_DECAY else float(key) * DAY
        slot = self.accumulators.get(key)
        if slot is None:
            self.accumulators[key] = [points, timestamp]
        elif timestamp >= slot[1]:
            slot[0] = (slot[0] if span is None else slot[0] * math.pow(2.0, -(timestamp - slot[1]) / span)) + points
            slot[1] = timestamp
        else:
            slot[0] += points if span is None else points * math.pow(2.0, -(slot[1] - timestamp) / span)


class DayTotals:
    """Points each rule gave one lead per UTC day, undecayed: the per-day cap lookup for late
    events when a lead's whole history is replayed in memory (rescore, backtest)."""

    __slots__ = ("_totals",)

    def __init__(self) -> None:
        self._totals: dict[tuple[str, int], float] = {}

    def __call__(self, rule: str, day: int) -> float:
        return self._totals.get((rule, day), 0.0)

    def add(self, awards: list[Award], timestamp: float) -> None:
        day = int(timestamp // DAY)
        for award in awards:
            key = (award.rule, day)
            self._totals[key] = self._totals.get(key, 0.0) + abs(award.points)


def _capped(rule: EngagementRule, state: EngagementState, day: int, lookup: DayTotalLookup | None) -> float:
    """The undecayed size of the award, after the per-day and total caps."""
    size = abs(rule.points)
    if rule.cap is not None:
        size = min(size, max(0.0, rule.cap - state.rule_totals.get(rule.name, 0.0)))
    if rule.cap_per_day is not None and size > 0:
        current = state.rule_day.get(rule.name)
        if current is None or day > current[0]:
            today = 0.0
        elif day == current[0]:
            today = current[1]
        else:  # a late event on an earlier day: ask the store what that day already got
            today = lookup(rule.name, day) if lookup is not None else 0.0
        size = min(size, max(0.0, rule.cap_per_day - today))
    return size


def bonus_points(properties: Mapping[str, Any]) -> float | None:
    """The points a `score_bonus` event awards, or None when it awards nothing.

    `points` counts when it is a number, or a text in plain decimal notation (`"15"`, `"-2.5"`),
    as `BONUS_POINTS_PATTERN` reads it: a text is accepted because the Parquet export keeps
    properties as text, where 15 and "15" are the same. Anything else (missing, true/false,
    `"15 points"`, `"1e3"`, NaN, infinity) awards nothing rather than a guess. The value is held
    within ±BONUS_LIMIT; smaller in size than BONUS_MIN, it awards nothing.
    """
    value = properties.get("points")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _BONUS_DIGITS:
        return None  # more digits than the pattern takes (and str() of a huge int is refused)
    text = as_text(value) if isinstance(value, (str, int, float)) else None
    if text is None or not _BONUS_POINTS.fullmatch(text):
        return None
    number = float(text)
    if abs(number) < BONUS_MIN:
        return None
    return min(BONUS_LIMIT, max(-BONUS_LIMIT, number))


def bonus_label(properties: Mapping[str, Any]) -> str:
    """How a bonus reads in the explanation: `bonus from workflow recycle: <reason>`."""
    label = BONUS_AWARD
    workflow = (as_text(properties.get("workflow")) or "").strip()
    reason = (as_text(properties.get("reason")) or "").strip()
    if workflow:
        label += f" from workflow {workflow[:80]}"
    return f"{label}: {reason[:160]}" if reason else label


def award_half_life(model: ScoringModel, rule: str) -> float | None:
    """The half-life an award named `rule` decays with under `model` (None: it never decays, or
    the rule is no longer in the model): a rule's own, or the default for a bonus."""
    if rule == BONUS_AWARD:
        return model.default_half_life_days
    found = next((r for r in model.engagement_rules if r.name == rule), None)
    return found.half_life_days if found is not None else None


def apply_event(
    model: ScoringModel,
    state: EngagementState,
    event_type: str,
    properties: Mapping[str, Any],
    timestamp: float,
    day_total: DayTotalLookup | None = None,
) -> list[Award]:
    """Score one event into `state` and return what each matching rule awarded (and, for a
    `score_bonus` event, its bonus: after the rules, uncapped, with the default half-life)."""
    awards: list[Award] = []
    day = int(timestamp // DAY)
    for rule in model.rules_for(event_type):
        if rule.where and not all(c.test(properties.get(c.field)) for c in rule.where):
            continue
        size = _capped(rule, state, day, day_total)
        if size <= 0:
            continue
        points = math.copysign(size, rule.points)
        if rule.cap is not None:
            state.rule_totals[rule.name] = state.rule_totals.get(rule.name, 0.0) + size
        if rule.cap_per_day is not None:
            current = state.rule_day.get(rule.name)
            if current is None or day > current[0]:
                state.rule_day[rule.name] = [float(day), size]
            elif day == current[0]:
                current[1] += size
        state.add(points, rule.half_life_days, timestamp)
        awards.append(Award(rule.name, points))
    if event_type == BONUS_EVENT:
        bonus = bonus_points(properties)
        if bonus is not None:
            state.add(bonus, model.default_half_life_days, timestamp)
            awards.append(Award(BONUS_AWARD, bonus))
    return awards


@dataclass(frozen=True, slots=True)
class AwardedEvent:
    """An event as the explanation needs it: when, what, and the awards it earned."""

    occurred_at: float
    event_type: str
    properties: Mapping[str, Any]
    awards: tuple[Award, ...]


def explain_engagement(model: ScoringModel, events: list[AwardedEvent], at: float) -> list[Contribution]:
    """One contribution per award, decayed to `at`; they add up to the engagement score."""
    rules = {r.name: r for r in model.engagement_rules}
    out: list[Contribution] = []
    for event in events:
        for award in event.awards:
            rule = rules.get(award.rule)
            if award.rule == BONUS_AWARD and event.event_type == BONUS_EVENT:
                half_life = model.default_half_life_days
                label = bonus_label(event.properties)
            elif rule is not None:
                half_life = rule.half_life_days
                label = render_label(rule, event)
            else:
                half_life = None
                label = f"{event.event_type} (rule {award.rule} no longer in the model)"
            now = award.points * decay_factor(at - event.occurred_at, half_life)
            decay = f", half-life {half_life:g} d" if half_life is not None else ""
            text = f"{label} {days_phrase((at - event.occurred_at) / DAY)} ({award.points:g}{decay})"
            out.append(Contribution(award.rule, now, text))
    return out


def render_label(rule: EngagementRule, event: AwardedEvent) -> str:
    """`label: "downloaded '{title}'"` filled from the event's properties; unknown names show as '?'."""
    if not rule.label:
        return f"{rule.name}: {event.event_type}"
    out, i, text = [], 0, rule.label
    while i < len(text):
        start = text.find("{", i)
        end = text.find("}", start + 1) if start >= 0 else -1
        if start < 0 or end < 0:
            out.append(text[i:])
            break
        out.append(text[i:start])
        value = event.properties.get(text[start + 1 : end])
        out.append("?" if value is None else str(value)[:80])
        i = end + 1
    return "".join(out)
