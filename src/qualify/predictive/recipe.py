"""What a predictive model's features are made of, and how one lead's are built: plain Python,
light to import (the ingestion path uses it), shared by the training sets and online scoring."""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from qualify.domain.engagement import BONUS_EVENT
from qualify.domain.values import as_text

LEAD_CATEGORIES = ("seniority", "department", "country", "source", "channel")
LEAD_FLAGS = ("do_not_email", "do_not_call")  # booleans, read as categories
ACCOUNT_CATEGORIES = ("industry", "country")
ACCOUNT_NUMBERS = ("employees", "revenue")
RECENT_DAYS = 7
HALF_LIFE_DAYS = 30.0  # of the recency-weighted event counts
DIGITS = 9  # numeric features are rounded to this many decimals (see training_set)
# A property's text is a number when it reads as one, written plainly (no spaces, no inf or nan):
# the same test in the query engines (features.py) and here.
NUMBER_PATTERN = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
_NUMBER = re.compile(NUMBER_PATTERN)
QUALIFIED = ("mql", "sql", "opportunity", "customer", "evangelist")  # a colleague "qualified": entered one
OPPORTUNITY = ("opportunity", "customer", "evangelist")


@dataclass(frozen=True)
class Recipe:
    """Which behaviour features a training set (and a model trained on it) has: the event kinds
    (by column slug) and the content items (by column name). A stored model keeps its recipe, so
    the same features are built for it later, online or in batch, whatever the data holds then."""

    kinds: dict[str, str]  # slug -> event type: events_<slug>, recent_<slug>, days_since_<slug>
    items: dict[str, str]  # column -> content item ("page_view:/pricing")
    recent_days: int = RECENT_DAYS
    attributes: dict[str, str] = field(default_factory=dict)  # column -> lead attribute (attribute_<slug>)
    numeric_attributes: tuple[str, ...] = ()  # the attribute columns read as numbers; the others are categories
    flags: bool = False  # whether do_not_email and do_not_call are features (models trained before had neither)
    # Event properties: column slug -> [event type, property] of a numeric one (sum_<slug>, mean_<slug>);
    # column -> [event type, property, value] of a categorical one's frequent value (a count).
    numbers: dict[str, list[str]] = field(default_factory=dict)
    values: dict[str, list[str]] = field(default_factory=dict)
    weighted: bool = False  # weighted_<kind>: the events of each kind, each weighted by its age's decay
    deals: bool = False  # the lead's deals as of the instant: open ones, their age and amount, lost ones
    account: bool = False  # roll-ups of the other leads at the lead's account as of the instant

    def to_dict(self) -> dict[str, Any]:
        return {
            "kinds": self.kinds,
            "items": self.items,
            "recent_days": self.recent_days,
            "attributes": self.attributes,
            "numeric_attributes": list(self.numeric_attributes),
            "flags": self.flags,
            "numbers": self.numbers,
            "values": self.values,
            "weighted": self.weighted,
            "deals": self.deals,
            "account": self.account,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        return cls(
            dict(data["kinds"]),
            dict(data["items"]),
            int(data.get("recent_days", RECENT_DAYS)),
            dict(data.get("attributes", {})),
            tuple(data.get("numeric_attributes", ())),
            bool(data.get("flags", False)),
            {k: list(v) for k, v in data.get("numbers", {}).items()},
            {k: list(v) for k, v in data.get("values", {}).items()},
            bool(data.get("weighted", False)),
            bool(data.get("deals", False)),
            bool(data.get("account", False)),
        )

    @functools.cached_property
    def kind_slugs(self) -> dict[str, str]:
        """Event type -> its column slug (the inverse of `kinds`)."""
        return {kind: slug for slug, kind in self.kinds.items()}

    @functools.cached_property
    def engaged_items(self) -> frozenset[str]:
        """The content items the features ask about."""
        return frozenset(self.items.values())

    @functools.cached_property
    def property_reads(self) -> dict[str, list[tuple[str, list[str], dict[str, str]]]]:
        """Per event type, the properties its features read: (property, the `numbers` slugs it
        feeds, its frequent values' `values` columns by text). Built once per recipe, not per lead."""
        reads: dict[str, dict[str, tuple[list[str], dict[str, str]]]] = {}
        for slug, (kind, name) in self.numbers.items():
            reads.setdefault(kind, {}).setdefault(name, ([], {}))[0].append(slug)
        for column, (kind, name, text) in self.values.items():
            reads.setdefault(kind, {}).setdefault(name, ([], {}))[1][text] = column
        return {kind: [(name, *found) for name, found in names.items()] for kind, names in reads.items()}

    def extra_columns(self) -> tuple[str, ...]:
        """The numeric columns of the event-property, recency, deal and account features, in order."""
        return (
            *(f"{side}_{slug}" for slug in self.numbers for side in ("sum", "mean")),
            *self.values,
            *((f"weighted_{slug}" for slug in self.kinds) if self.weighted else ()),
            *(DEAL_COLUMNS if self.deals else ()),
            *(ACCOUNT_COLUMNS if self.account else ()),
        )


DEAL_COLUMNS = ("deals_open", "days_deal_open", "open_deal_amount", "deals_lost")
ACCOUNT_COLUMNS = (
    "account_other_leads",
    "account_other_events",
    "account_other_recent_events",
    "account_other_qualified",
    "account_other_opportunities",
)


def property_number(value: Any) -> float | None:
    """An event property's value as a number, where its text is one (NUMBER_PATTERN), else None."""
    text = as_text(value)
    if text is None or isinstance(value, (dict, list)) or _NUMBER.match(text) is None:
        return None
    return float(text)


def decay(age_days: float) -> float:
    """The weight of an event `age_days` old in a recency-weighted count: halved every HALF_LIFE_DAYS."""
    return math.exp(-math.log(2.0) * age_days / HALF_LIFE_DAYS)


def attribute_number(value: Any) -> float:
    """A numeric attribute's value as the models read it: NaN where missing or not a number."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def attribute_features(attributes: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    """The recipe's attribute columns of one lead: numbers as floats (NaN where missing), the others
    as their text (`as_text`: true/false, numbers as written), None where missing."""
    out: dict[str, Any] = {}
    for column, name in recipe.attributes.items():
        value = attributes.get(name)
        out[column] = attribute_number(value) if column in recipe.numeric_attributes else as_text(value)
    return out


DAY_SECONDS = 86_400.0


@dataclass(frozen=True)
class DealFact:
    """One of the lead's deals, as the store has it now (its dates tell what was known when)."""

    opened_at: datetime | None
    closed_at: datetime | None
    outcome: str  # open | won | lost
    amount: float | None


@dataclass(frozen=True)
class Peer:
    """Another lead at the same account: when it was created, when its behaviour events occurred,
    and when it first entered a qualified stage (QUALIFIED) and an opportunity (OPPORTUNITY)."""

    created_at: datetime
    events: tuple[datetime, ...]
    qualified_at: datetime | None
    opportunity_at: datetime | None


@dataclass
class Subject:
    """One lead as known at `at`: what the features are built from."""

    lead_id: int
    at: datetime
    created_at: datetime
    profile: dict[str, Any]  # lead categories and flags, account_<field> values, `attributes` (a dict)
    fit_score: float
    fit_grade: str
    persona: str | None
    engagement_score: float
    # type, occurred_at, item, properties
    events: Sequence[tuple[str, datetime, str | None, Mapping[str, Any] | None]] = field(default_factory=list)
    stage: str | None = None  # the stage at `at`, and when the lead entered it
    stage_entered: datetime | None = None
    deals: list[DealFact] = field(default_factory=list)
    peers: list[Peer] = field(default_factory=list)  # the other leads at its account
    rollups: dict[str, float] | None = None  # or their roll-ups at `at`, counted by the store (`account_features`)
    behaviour: Behaviour | None = None  # or the accumulators of its events (then `events` is not read)


def deal_features(deals: list[DealFact], at: datetime) -> dict[str, float]:
    """The deals open at `at` (opened by then, not closed by then): how many, the days since the
    oldest opened (NaN: none open), their amounts' sum; and the deals lost by then."""
    open_deals = [
        d for d in deals if d.opened_at is not None and d.opened_at <= at and (d.closed_at is None or d.closed_at > at)
    ]
    lost = [d for d in deals if d.outcome == "lost" and d.closed_at is not None and d.closed_at <= at]
    opened = [d.opened_at for d in open_deals if d.opened_at is not None]
    return {
        "deals_open": float(len(open_deals)),
        "days_deal_open": (at - min(opened)).total_seconds() / DAY_SECONDS if opened else math.nan,
        "open_deal_amount": math.fsum(d.amount or 0.0 for d in open_deals),
        "deals_lost": float(len(lost)),
    }


def account_features(peers: list[Peer], at: datetime, recent_days: int) -> dict[str, float]:
    """The other leads at the account as of `at`: how many had been created, their behaviour events
    by then (and in the last `recent_days`), how many had qualified and reached an opportunity."""
    events = [t for p in peers for t in p.events if t <= at]
    return {
        "account_other_leads": float(sum(p.created_at <= at for p in peers)),
        "account_other_events": float(len(events)),
        "account_other_recent_events": float(
            sum((at - t).total_seconds() / DAY_SECONDS <= recent_days for t in events)
        ),
        "account_other_qualified": float(sum(p.qualified_at is not None and p.qualified_at <= at for p in peers)),
        "account_other_opportunities": float(
            sum(p.opportunity_at is not None and p.opportunity_at <= at for p in peers)
        ),
    }


def _micros(instant: datetime) -> int:
    """An instant as whole microseconds since the epoch (exact: ages computed from these equal
    `timedelta.total_seconds()`'s)."""
    return (instant - _EPOCH) // _MICROSECOND


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_DAY_MICROS = 86_400_000_000
_LN2 = math.log(2.0)
_HALF_LIFE_MICROS = HALF_LIFE_DAYS * _DAY_MICROS
_REBASE_HALF_LIVES = 500.0  # a weighted sum's reference moves before 2**this overflows anything


def _grow(partials: list[float], x: float) -> None:
    """Add `x` to an exact sum kept as non-overlapping partials (Shewchuk's algorithm, as
    `math.fsum` keeps it): `math.fsum(partials)` is then the correctly rounded sum of every number
    added, the same as `math.fsum` of them all."""
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        high = x + y
        low = y - (high - x)
        if low:
            partials[i] = low
            i += 1
        x = high
    partials[i:] = [x]


@dataclass
class Behaviour:
    """A lead's behaviour features (per event kind: count, recent count, days since the last one,
    recency-weighted count; content items engaged with; event properties' sums, means and value
    counts) kept as accumulators that take one event at a time in O(1) and give the features at
    any later instant: the per-lead state that online scoring keeps between batches, so a new event
    costs the same whatever the lead's history (`serving.subjects`).

    Equal to folding the whole history (`feature_row` does that for a subject given its events):
    counts, sums (exact, as `math.fsum`) and the last event are the same numbers; a recency-weighted
    count is kept as a sum scaled to a reference instant, equal to within float rounding (features
    are rounded to DIGITS decimals). The recent events of each kind are kept by instant, those older
    than the recent window at `pruned_at` dropped: the state then serves instants from `pruned_at` on.
    """

    # Per event kind's slug: [count, newest instant, the recent window's instants in time order,
    # the weighted sum's reference instant, the weighted sum scaled to it].
    kinds: dict[str, list[Any]] = field(default_factory=dict)
    items: set[str] = field(default_factory=set)  # the recipe's content items engaged with
    numbers: dict[str, list[Any]] = field(default_factory=dict)  # slug -> [count, partials, non-finite numbers]
    values: dict[str, int] = field(default_factory=dict)  # value column -> count
    newest: int | None = None  # the newest event's instant (microseconds), any kind
    pruned_at: int | None = None  # the instant the recent windows were last cut at
    events: int = 0  # every behaviour event folded in, of any kind (what colleagues' roll-ups count)

    def add(
        self, recipe: Recipe, kind: str, occurred: datetime, item: str | None, properties: Mapping[str, Any] | None
    ) -> None:
        """One more event of the lead (a workflow's bonus is not behaviour: ignored)."""
        if kind == BONUS_EVENT:
            return
        micros = _micros(occurred)
        self.events += 1
        self.newest = micros if self.newest is None else max(self.newest, micros)
        if item is not None and item in recipe.engaged_items:
            self.items.add(item)
        if properties:
            for name, number_slugs, value_columns in recipe.property_reads.get(kind, ()):
                if name not in properties:
                    continue
                if number_slugs and (number := property_number(properties[name])) is not None:
                    for slug in number_slugs:
                        tally = self.numbers.setdefault(slug, [0, [], []])
                        tally[0] += 1
                        if math.isfinite(number):
                            _grow(tally[1], number)
                        else:
                            tally[2].append(number)
                value_column = value_columns.get(str(as_text(properties[name])))
                if value_column is not None:
                    self.values[value_column] = self.values.get(value_column, 0) + 1
        kind_slug = recipe.kind_slugs.get(kind)
        if kind_slug is None:
            return
        recent = self.pruned_at is None or not self._too_old(recipe, micros, self.pruned_at)
        found = self.kinds.get(kind_slug)
        if found is None:
            self.kinds[kind_slug] = [1, micros, [micros] if recent else [], micros, 1.0]
            return
        found[0] += 1
        found[1] = max(found[1], micros)
        if recent:  # kept in time order (events mostly come in it)
            if not found[2] or micros >= found[2][-1]:
                found[2].append(micros)
            else:
                bisect.insort(found[2], micros)
        if recipe.weighted:
            shift = (micros - found[3]) / _HALF_LIFE_MICROS
            if shift > _REBASE_HALF_LIVES:  # a new reference: the older terms scaled down to it
                found[4] = found[4] * math.exp(-_LN2 * shift) + 1.0
                found[3] = micros
            else:
                found[4] += math.exp(_LN2 * shift)

    @staticmethod
    def _too_old(recipe: Recipe, micros: int, at: int) -> bool:
        return (at - micros) / 1_000_000 / DAY_SECONDS > recipe.recent_days

    @classmethod
    def _first_recent(cls, recipe: Recipe, instants: list[int], at: int) -> int:
        """Where the instants (in time order) inside the recent window at `at` begin."""
        return bisect.bisect_left(instants, True, key=lambda m: not cls._too_old(recipe, m, at))

    def prune(self, recipe: Recipe, at: datetime) -> None:
        """Drop the recent events that are outside the window at `at` (and so at any later instant)."""
        cut = _micros(at)
        for tally in self.kinds.values():
            del tally[2][: self._first_recent(recipe, tally[2], cut)]
        self.pruned_at = cut if self.pruned_at is None else max(self.pruned_at, cut)

    def serves(self, at: datetime) -> bool:
        """Whether the features at `at` can be read from this state: no event after it, no recent
        event dropped that counts at it."""
        micros = _micros(at)
        return (self.newest is None or self.newest <= micros) and (self.pruned_at is None or self.pruned_at <= micros)

    def features(self, recipe: Recipe, at: datetime) -> dict[str, Any]:
        """The behaviour columns at `at` (unrounded; `feature_row` rounds)."""
        cut = _micros(at)
        row: dict[str, Any] = {}
        for slug in recipe.kinds:
            found = self.kinds.get(slug)
            if found is None:
                row[f"events_{slug}"], row[f"recent_{slug}"], row[f"days_since_{slug}"] = 0, 0, math.nan
                if recipe.weighted:
                    row[f"weighted_{slug}"] = 0.0
                continue
            row[f"events_{slug}"] = found[0]
            row[f"recent_{slug}"] = len(found[2]) - self._first_recent(recipe, found[2], cut)
            row[f"days_since_{slug}"] = (cut - found[1]) / 1_000_000 / DAY_SECONDS
            if recipe.weighted:
                row[f"weighted_{slug}"] = found[4] * math.exp(-_LN2 * (cut - found[3]) / _HALF_LIFE_MICROS)
        for column, item in recipe.items.items():
            row[column] = int(item in self.items)
        for slug in recipe.numbers:
            count, partials, odd = self.numbers.get(slug, (0, [], []))
            # Infinite numbers add as floats do (and as SQL's sum does): both signs make NaN.
            total = math.fsum(partials) + sum(odd)
            row[f"sum_{slug}"] = total
            row[f"mean_{slug}"] = total / count if count else math.nan
        for column in recipe.values:
            row[column] = float(self.values.get(column, 0))
        return row

    def to_json(self) -> dict[str, Any]:
        return {
            "kinds": self.kinds,
            "items": sorted(self.items),
            # Infinite numbers (a text such as 1e400) as their text: JSON has no infinity.
            "numbers": {
                slug: [n, partials, [str(x) for x in odd]] for slug, (n, partials, odd) in self.numbers.items()
            },
            "values": self.values,
            "newest": self.newest,
            "pruned_at": self.pruned_at,
            "events": self.events,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Behaviour:
        return cls(
            {slug: [*tally[:2], sorted(tally[2]), *tally[3:]] for slug, tally in data.get("kinds", {}).items()},
            set(data.get("items", ())),
            {
                slug: [tally[0], list(tally[1]), [float(x) for x in tally[2]]]
                for slug, tally in data.get("numbers", {}).items()
            },
            dict(data.get("values", {})),
            data.get("newest"),
            data.get("pruned_at"),
            int(data.get("events", 0)),
        )


def feature_row(subject: Subject, recipe: Recipe) -> dict[str, Any]:
    """The subject's features at `subject.at` (events after it are ignored): from its `behaviour`
    where it carries one, else from its events."""
    row: dict[str, Any] = {name: subject.profile.get(name) for name in LEAD_CATEGORIES}
    if recipe.flags:
        row.update({name: subject.profile.get(name) for name in LEAD_FLAGS})
    row.update(attribute_features(subject.profile.get("attributes") or {}, recipe))
    for name in (*ACCOUNT_CATEGORIES, *ACCOUNT_NUMBERS):
        row[f"account_{name}"] = subject.profile.get(f"account_{name}")
    for name in ACCOUNT_NUMBERS:
        value = row[f"account_{name}"]
        row[f"account_{name}"] = float(value) if value is not None else math.nan
    row.update(
        fit_score=subject.fit_score,
        fit_grade=subject.fit_grade,
        persona=subject.persona,
        engagement_score=subject.engagement_score,
        days_since_created=(subject.at - subject.created_at).total_seconds() / DAY_SECONDS,
        stage=subject.stage,
        days_in_stage=(subject.at - subject.stage_entered).total_seconds() / DAY_SECONDS
        if subject.stage_entered is not None
        else math.nan,
    )
    behaviour = subject.behaviour
    if behaviour is None:
        behaviour = Behaviour()
        for kind, occurred, item, properties in subject.events:
            if occurred <= subject.at:
                behaviour.add(recipe, kind, occurred, item, properties)
    row.update(behaviour.features(recipe, subject.at))
    if recipe.deals:
        row.update(deal_features(subject.deals, subject.at))
    if recipe.account:
        rollups = subject.rollups
        if rollups is None:
            rollups = account_features(subject.peers, subject.at, recipe.recent_days)
        row.update(rollups)
    return {name: round(value, DIGITS) if isinstance(value, float) else value for name, value in row.items()}
