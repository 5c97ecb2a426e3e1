"""A lead's behaviour features kept as accumulators between batches (`recipe.Behaviour`) equal the
features computed from its whole history at the same instant, however the events arrive."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from qualify.adapters.json_codec import dumps, loads
from qualify.predictive.recipe import (
    DIGITS,
    Behaviour,
    Recipe,
    Subject,
    decay,
    feature_row,
    property_number,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
RECIPE = Recipe(
    {"page_view": "page_view", "email_click": "email_click"},
    {"engaged_pricing": "page_view:/pricing", "engaged_guide": "content_download:guide"},
    numbers={"page_view_seconds": ["page_view", "seconds"]},
    values={"count_email_click_campaign_spring": ["email_click", "campaign", "spring"]},
    weighted=True,
)
KINDS = ("page_view", "email_click", "content_download", "score_bonus", "form_submit")
ITEMS = {"page_view": "page_view:/pricing", "content_download": "content_download:guide"}

Happened = tuple[str, datetime, str | None, dict[str, Any]]


def naive(events: list[Happened], at: datetime) -> dict[str, Any]:
    """The behaviour features at `at`, computed event by event from the whole history, as the
    definitions say (not with the accumulators)."""
    row: dict[str, Any] = {}
    seen = [e for e in events if e[1] <= at and e[0] != "score_bonus"]
    for slug, kind in RECIPE.kinds.items():
        ages = [(at - occurred).total_seconds() / 86_400.0 for k, occurred, _, _ in seen if k == kind]
        row[f"events_{slug}"] = len(ages)
        row[f"recent_{slug}"] = sum(age <= RECIPE.recent_days for age in ages)
        row[f"days_since_{slug}"] = min(ages) if ages else math.nan
        row[f"weighted_{slug}"] = sum(decay(age) for age in ages)
    for column, item in RECIPE.items.items():
        row[column] = int(any(i == item for _, _, i, _ in seen))
    numbers = [
        n
        for k, _, _, p in seen
        if k == "page_view" and "seconds" in p and (n := property_number(p["seconds"])) is not None
    ]
    # Exact over the finite numbers; an infinite one (a text such as 1e400) makes it infinite, and
    # one of each sign NaN, as SQL's sum gives them.
    total = math.fsum(n for n in numbers if math.isfinite(n)) + sum(n for n in numbers if not math.isfinite(n))
    row["sum_page_view_seconds"] = total
    row["mean_page_view_seconds"] = total / len(numbers) if numbers else math.nan
    row["count_email_click_campaign_spring"] = float(
        sum(k == "email_click" and p.get("campaign") == "spring" for k, _, _, p in seen)
    )
    return row


def same(a: Any, b: Any, column: str) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if column.startswith("weighted_"):  # a scaled sum: equal to within rounding
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=10.0**-DIGITS)
    return bool(a == b)


event = st.builds(
    lambda kind, minutes, seconds, campaign: (
        kind,
        T0 + timedelta(minutes=minutes),
        ITEMS.get(kind),
        {"seconds": seconds, "campaign": campaign},
    ),
    st.sampled_from(KINDS),
    st.integers(0, 90 * 24 * 60),
    st.one_of(
        st.integers(-5, 500), st.floats(0, 1e6, allow_nan=False), st.sampled_from(["n/a", "1e3", "1e400", "-1e400"])
    ),
    st.sampled_from(["spring", "autumn"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(event, max_size=12), min_size=1, max_size=6), st.lists(st.integers(0, 20 * 24 * 60)))
def test_kept_behaviour_equals_the_whole_history_at_every_batch(
    batches: list[list[Happened]], waits: list[int]
) -> None:
    """Events arrive in batches, in any order of occurrence; after each batch the features are
    read at the newest instant so far (or later), the windows are cut there and the state goes
    through its JSON form, as between two batches in the store."""
    kept, history = Behaviour(), []
    at = T0
    for n, batch in enumerate(batches):
        for kind, occurred, item, properties in batch:
            kept.add(RECIPE, kind, occurred, item, properties)
        history += batch
        newest = max((occurred for _, occurred, _, _ in history), default=T0)
        at = max(at, newest) + timedelta(minutes=waits[n] if n < len(waits) else 0)
        assert kept.serves(at)
        features = kept.features(RECIPE, at)
        expected = naive(history, at)
        whole = feature_row(Subject(1, at, T0, {}, 0.0, "D", None, 0.0, events=history), RECIPE)
        for column, value in expected.items():
            assert same(features[column], value, column), (column, features[column], value)
            assert same(whole[column], round(value, DIGITS) if isinstance(value, float) else value, column)
        kept.prune(RECIPE, at)
        kept = Behaviour.from_json(loads(dumps(kept.to_json())))


def test_a_state_cut_at_an_instant_serves_no_earlier_one() -> None:
    kept = Behaviour()
    kept.add(RECIPE, "page_view", T0, None, {})
    kept.prune(RECIPE, T0 + timedelta(days=30))
    assert not kept.serves(T0 + timedelta(days=29)) and kept.serves(T0 + timedelta(days=30))
    later = Behaviour()
    later.add(RECIPE, "page_view", T0 + timedelta(days=3), None, {})
    assert not later.serves(T0 + timedelta(days=2))  # an event after the instant


def test_a_weighted_count_survives_centuries_between_events() -> None:
    kept = Behaviour()
    kept.add(RECIPE, "page_view", datetime(1900, 1, 1, tzinfo=UTC), None, {})
    kept.add(RECIPE, "page_view", datetime(2100, 1, 1, tzinfo=UTC), None, {})
    at = datetime(2100, 1, 31, tzinfo=UTC)
    weighted = kept.features(RECIPE, at)["weighted_page_view"]
    assert math.isfinite(weighted) and math.isclose(weighted, decay(30), rel_tol=1e-12)
