"""A stored predictive model at work on single leads: the same features as its training set,
built from one lead's profile, scores and events up to an instant, and explanations in words.

The features are those of `qualify.predictive.features.training_set` with the model's own
`Recipe` (event kinds and content items), so a lead scored here gets the probability the model
would have given its row in a training set cut at the same instant (tested against each other).

An explanation lists every feature's contribution in log-odds (additive: they add up, with the
base value, to the model's raw score) and, for reading, its `effect` on the probability: how much
lower (or higher) the probability would be without that contribution alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qualify.predictive.models import MISSING, Trained, categories_of
from qualify.predictive.recipe import (
    ACCOUNT_CATEGORIES,
    HALF_LIFE_DAYS,
    LEAD_CATEGORIES,
    LEAD_FLAGS,
    Recipe,
    Subject,
    feature_row,
)


@dataclass(frozen=True)
class Contribution:
    feature: str
    value: Any
    words: str  # the feature and its value, in the domain's words
    log_odds: float
    effect: float  # probability with it minus probability without it

    def as_dict(self) -> dict[str, Any]:
        value = None if isinstance(self.value, float) and math.isnan(self.value) else self.value
        return {
            "feature": self.feature,
            "value": value.item() if isinstance(value, np.generic) else value,
            "words": self.words,
            "log_odds": round(self.log_odds, 4),
            "effect": round(self.effect, 4),
        }


@dataclass(frozen=True)
class Explanation:
    probability: float
    base_probability: float  # with every contribution at zero
    contributions: tuple[Contribution, ...]  # strongest first (by |log-odds|)

    def top(self, n: int = 3) -> tuple[list[Contribution], list[Contribution]]:
        """The `n` contributions that raise the probability most, and the `n` that lower it most."""
        up = sorted((c for c in self.contributions if c.log_odds > 0), key=lambda c: -c.log_odds)[:n]
        down = sorted((c for c in self.contributions if c.log_odds < 0), key=lambda c: c.log_odds)[:n]
        return up, down

    def as_dict(self, n: int = 3) -> dict[str, Any]:
        up, down = self.top(n)
        return {
            "probability": round(self.probability, 4),
            "base_probability": round(self.base_probability, 4),
            "top_positive": [c.as_dict() for c in up],
            "top_negative": [c.as_dict() for c in down],
        }


@dataclass
class Predictor:
    """A stored predictive model, ready to score leads."""

    version: str
    trained: Trained
    recipe: Recipe

    def frame(self, subjects: Sequence[Subject]) -> pd.DataFrame:
        rows = [feature_row(subject, self.recipe) for subject in subjects]
        return pd.DataFrame(rows, columns=list(self.trained.spec.columns))

    def probabilities(self, subjects: Sequence[Subject]) -> np.ndarray:
        """The subjects' probabilities, from their feature rows without a frame (equal to
        `trained.probabilities(self.frame(subjects))`, tested)."""
        return self.trained.probabilities_of([feature_row(subject, self.recipe) for subject in subjects])

    def probability_one(self, subject: Subject) -> float:
        """The probability of one subject, without pandas: for replays, event by event."""
        return self.trained.probability_one(feature_row(subject, self.recipe))

    def explain(self, subjects: Sequence[Subject]) -> list[Explanation]:
        if not subjects:
            return []
        frame = self.frame(subjects)
        model, calibrate = self.trained.model, self.trained.calibrator
        terms, base = model.contributions(frame)
        bases = np.broadcast_to(np.asarray(base, dtype=float), (len(frame),))
        raw = terms.sum(axis=1) + bases
        columns = self.trained.spec.columns
        out = []
        for i in range(len(frame)):
            probability = float(calibrate(raw[i : i + 1])[0])
            without = calibrate(raw[i] - terms[i])
            contributions = [
                Contribution(
                    name,
                    frame.iloc[i][name],
                    describe(name, frame.iloc[i][name], self.recipe),
                    float(terms[i, j]),
                    probability - float(without[j]),
                )
                for j, name in enumerate(columns)
                if terms[i, j] != 0.0
            ]
            contributions.sort(key=lambda c: -abs(c.log_odds))
            out.append(Explanation(probability, float(calibrate(bases[i : i + 1])[0]), tuple(contributions)))
        return out


def _kind_words(kind: str) -> str:
    return kind.replace("_", " ")


def _item_words(item: str) -> str:
    kind, _, about = item.partition(":")
    return f"{_kind_words(kind)} {about}"


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value == MISSING


def _times(count: Any) -> str:
    return f"{int(count)}×"


def describe(name: str, value: Any, recipe: Recipe) -> str:
    """A feature and its value as a marketer would say it: "page view 3× in the last 7 days"."""
    if name in LEAD_CATEGORIES or (name.startswith("account_") and name[8:] in ACCOUNT_CATEGORIES):
        label = name.replace("account_", "account ").replace("_", " ")
        text = categories_of(pd.Series([value])).iloc[0]
        return f"no {label} given" if text == MISSING else f"{label}: {text}"
    if name in LEAD_FLAGS:
        label = name.replace("_", " ")
        return (
            f"{label}: not said" if _missing(value) else f"{label}: {'yes' if str(value) in ('True', 'true') else 'no'}"
        )
    if name in recipe.attributes:
        label = recipe.attributes[name].replace("_", " ")
        if _missing(value):
            return f"no {label} given"
        if name in recipe.numeric_attributes:
            return f"{label} {float(value):,.4g}"
        return f"{label}: {value}"
    if name == "account_employees":
        return "account size unknown" if _missing(value) else f"account of {float(value):,.0f} employees"
    if name == "account_revenue":
        return "account revenue unknown" if _missing(value) else f"account revenue {float(value):,.0f}"
    if name == "fit_score":
        return f"fit score {float(value):.0f}"
    if name == "fit_grade":
        return f"fit grade {value}"
    if name == "persona":
        return "no persona" if _missing(value) else f"persona {value}"
    if name == "engagement_score":
        return f"engagement {float(value):.1f}"
    if name == "days_since_created":
        return f"lead for {float(value):.0f} days"
    if name == "stage":
        return "stage unknown" if _missing(value) else f"stage {value}"
    if name == "days_in_stage":
        return "time in stage unknown" if _missing(value) else f"{float(value):.0f} days in its stage"
    for prefix in ("events_", "recent_", "days_since_"):
        slug = name.removeprefix(prefix)
        if name.startswith(prefix) and slug in recipe.kinds:
            kind = _kind_words(recipe.kinds[slug])
            if prefix == "events_":
                return f"no {kind} yet" if not value else f"{kind} {_times(value)} in all"
            if prefix == "recent_":
                return (
                    f"no {kind} in the last {recipe.recent_days} days"
                    if not value
                    else (f"{kind} {_times(value)} in the last {recipe.recent_days} days")
                )
            return f"no {kind} yet" if _missing(value) else f"last {kind} {float(value):.0f} days ago"
    if name in recipe.items:
        item = _item_words(recipe.items[name])
        return f"{item}: yes" if value else f"{item}: never"
    return _crm_words(name, value, recipe) or f"{name} = {value}"


def _people(count: Any, one: str, many: str) -> str:
    n = int(count)
    return f"{n} {one if n == 1 else many}"


def _crm_words(name: str, value: Any, recipe: Recipe) -> str | None:
    """The words of the event-property, recency, deal and account features (None: not one)."""
    for prefix in ("sum_", "mean_"):
        slug = name.removeprefix(prefix)
        if name.startswith(prefix) and slug in recipe.numbers:
            kind, prop = (_kind_words(part) for part in recipe.numbers[slug])
            if prefix == "sum_":
                return f"{kind} {prop}: {float(value):,.4g} in all"
            return f"no {kind} with {prop} yet" if _missing(value) else f"{kind} {prop}: {float(value):,.3g} on average"
    if name in recipe.values:
        kind, prop, text = (_kind_words(part) for part in recipe.values[name])
        return f"{kind} {prop} {text} {_times(value)}" if value else f"{kind} {prop} {text}: never"
    slug = name.removeprefix("weighted_")
    if name.startswith("weighted_") and slug in recipe.kinds:
        kind = _kind_words(recipe.kinds[slug])
        if not value:
            return f"no {kind} yet"
        return f"{kind} {float(value):.2f} recency-weighted ({HALF_LIFE_DAYS:.0f}-day half-life)"
    recent = recipe.recent_days
    words: dict[str, Any] = {
        "deals_open": lambda v: "no open deal" if not v else _people(v, "open deal", "open deals"),
        "days_deal_open": lambda v: "no deal open" if _missing(v) else f"a deal open for {float(v):.0f} days",
        "open_deal_amount": lambda v: "no open deal amount" if not v else f"open deals worth {float(v):,.0f}",
        "deals_lost": lambda v: "no deal lost before" if not v else f"{_people(v, 'deal', 'deals')} lost before",
        "account_other_leads": lambda v: f"{_people(v, 'other person', 'other people')} at the account",
        "account_other_events": lambda v: f"{_people(v, 'event', 'events')} by others at the account",
        "account_other_recent_events": lambda v: (
            f"{_people(v, 'event', 'events')} by others at the account in the last {recent} days"
        ),
        "account_other_qualified": lambda v: f"{_people(v, 'other person', 'other people')} at the account qualified",
        "account_other_opportunities": lambda v: (
            f"{_people(v, 'other person', 'other people')} at the account reached an opportunity"
        ),
    }
    found = words.get(name)
    return None if found is None else str(found(value))
