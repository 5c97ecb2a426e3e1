"""What a predictive model's features are made of, and how one lead's are built: plain Python,
light to import (the ingestion path uses it), shared by the training sets and online scoring."""

from __future__ import annotations

import math
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
DIGITS = 9  # numeric features are rounded to this many decimals (see training_set)


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "kinds": self.kinds,
            "items": self.items,
            "recent_days": self.recent_days,
            "attributes": self.attributes,
            "numeric_attributes": list(self.numeric_attributes),
            "flags": self.flags,
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
        )


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
    events: list[tuple[str, datetime, str | None]] = field(default_factory=list)  # type, occurred_at, item
    stage: str | None = None  # the stage at `at`, and when the lead entered it
    stage_entered: datetime | None = None


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
    slugs = {kind: slug for slug, kind in recipe.kinds.items()}
    for slug in recipe.kinds:
        row[f"events_{slug}"] = 0
        row[f"recent_{slug}"] = 0
        row[f"days_since_{slug}"] = math.nan
    engaged = set()
    for kind, occurred, item in subject.events:
        if occurred > subject.at or kind == BONUS_EVENT:  # a workflow's bonus is not behaviour (features.py)
            continue
        if item is not None:
            engaged.add(item)
        found = slugs.get(kind)
        if found is None:
            continue
        slug = found
        age = (subject.at - occurred).total_seconds() / DAY_SECONDS
        row[f"events_{slug}"] += 1
        row[f"recent_{slug}"] += int(age <= recipe.recent_days)
        since = row[f"days_since_{slug}"]
        row[f"days_since_{slug}"] = age if math.isnan(since) else min(since, age)
    for column, item in recipe.items.items():
        row[column] = int(item in engaged)
    return {name: round(value, DIGITS) if isinstance(value, float) else value for name, value in row.items()}
