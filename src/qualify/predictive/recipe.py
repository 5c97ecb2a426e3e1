"""What a predictive model's features are made of, and how one lead's are built: plain Python,
light to import (the ingestion path uses it), shared by the training sets and online scoring."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
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


def feature_row(subject: Subject, recipe: Recipe) -> dict[str, Any]:
    """The subject's features at `subject.at` (events after it are ignored)."""
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
    slugs, reads = recipe.kind_slugs, recipe.property_reads
    for slug in recipe.kinds:
        row[f"events_{slug}"] = 0
        row[f"recent_{slug}"] = 0
        row[f"days_since_{slug}"] = math.nan
    for name in recipe.extra_columns():
        row[name] = 0.0
    numbers: dict[str, list[float]] = {slug: [] for slug in recipe.numbers}
    engaged = set()
    for kind, occurred, item, properties in subject.events:
        if occurred > subject.at or kind == BONUS_EVENT:  # a workflow's bonus is not behaviour (features.py)
            continue
        if item is not None:
            engaged.add(item)
        if properties:
            for name, number_slugs, value_columns in reads.get(kind, ()):
                if name not in properties:
                    continue
                if number_slugs and (number := property_number(properties[name])) is not None:
                    for slug in number_slugs:
                        numbers[slug].append(number)
                column = value_columns.get(str(as_text(properties[name])))
                if column is not None:
                    row[column] += 1
        found = slugs.get(kind)
        if found is None:
            continue
        slug = found
        age = (subject.at - occurred).total_seconds() / DAY_SECONDS
        row[f"events_{slug}"] += 1
        row[f"recent_{slug}"] += int(age <= recipe.recent_days)
        since = row[f"days_since_{slug}"]
        row[f"days_since_{slug}"] = age if math.isnan(since) else min(since, age)
        if recipe.weighted:
            row[f"weighted_{slug}"] += decay(age)
    for column, item in recipe.items.items():
        row[column] = int(item in engaged)
    for slug, found_numbers in numbers.items():
        total = math.fsum(found_numbers)
        row[f"sum_{slug}"] = total
        row[f"mean_{slug}"] = total / len(found_numbers) if found_numbers else math.nan
    if recipe.deals:
        row.update(deal_features(subject.deals, subject.at))
    if recipe.account:
        rollups = subject.rollups
        if rollups is None:
            rollups = account_features(subject.peers, subject.at, recipe.recent_days)
        row.update(rollups)
    return {name: round(value, DIGITS) if isinstance(value, float) else value for name, value in row.items()}
