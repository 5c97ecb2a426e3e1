"""Which event properties become features, and how one lead's property, deal and account features
are computed (the integration tests hold them equal to the batch side's)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import ibis
import pandas as pd
import pytest

from qualify.predictive.features import PROPERTY_MIN_EVENTS, discover_properties
from qualify.predictive.recipe import (
    DealFact,
    Peer,
    Recipe,
    Subject,
    account_features,
    deal_features,
    decay,
    feature_row,
    property_number,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def test_a_property_is_a_number_only_when_its_text_is_one() -> None:
    assert [property_number(v) for v in (3, 2.5, "12", "-3.5", "1e3", 0)] == [3.0, 2.5, 12.0, -3.5, 1000.0, 0.0]
    for value in (None, True, "12 pages", "", " 3", "nan", "inf", float("nan"), {"a": 1}, [1], "1,000"):
        assert property_number(value) is None, value


def events(rows: list[tuple[str, dict[str, object]]]) -> ibis.Table:
    return ibis.memtable(
        pd.DataFrame(
            {"id": range(len(rows)), "type": [t for t, _ in rows], "properties": [json.dumps(p) for _, p in rows]}
        )
    )


def test_discovery_keeps_numbers_and_frequent_values_and_leaves_out_the_rest() -> None:
    n = PROPERTY_MIN_EVENTS
    rows: list[tuple[str, dict[str, object]]] = []
    for i in range(4 * n):
        rows.append(
            (
                "web_session",
                {
                    "pages": i % 7 + 1,  # every value a number: a sum and a mean
                    "session_id": f"s-{i}",  # a different text on every event: an identifier
                    "url": "/pricing",  # content: an item already
                    "mixed": i if i % 2 else "n/a",  # not every value a number: a category of too many values
                },
            )
        )
        rows.append(("sales_activity", {"outcome": ["connected", "voicemail", "no_answer", "bounced"][i % 4]}))
    rows.append(("sales_activity", {"outcome": "rare"}))
    rows.append(("form_submit", {"answers": {"q": 1}, "size": 3}))  # nested, and on too few events
    numbers, values = discover_properties(events(rows))
    assert numbers == {"web_session_pages": ["web_session", "pages"]}
    assert values == {
        # the 3 most frequent of 4 values (each on 20 events: ties by text); "rare" is on one
        "count_sales_activity_outcome_bounced": ["sales_activity", "outcome", "bounced"],
        "count_sales_activity_outcome_connected": ["sales_activity", "outcome", "connected"],
        "count_sales_activity_outcome_no_answer": ["sales_activity", "outcome", "no_answer"],
    }


def test_one_lead_s_property_and_recency_features() -> None:
    recipe = Recipe(
        {"web_session": "web_session", "sales_activity": "sales_activity"},
        {},
        numbers={"web_session_pages": ["web_session", "pages"]},
        values={"count_sales_activity_outcome_connected": ["sales_activity", "outcome", "connected"]},
        weighted=True,
    )
    at = T0 + 30 * DAY
    subject = Subject(
        1, at, T0, {}, 50.0, "B", None, 3.0,
        events=[
            ("web_session", T0, None, {"pages": 4}),
            ("web_session", T0 + 20 * DAY, None, {"pages": "2"}),
            ("web_session", T0 + 25 * DAY, None, {"pages": "many"}),  # counted, but no number
            ("web_session", at + DAY, None, {"pages": 100}),  # after the instant: not read
            ("sales_activity", T0 + DAY, None, {"outcome": "connected"}),
            ("sales_activity", T0 + 2 * DAY, None, {"outcome": "voicemail"}),
            ("score_bonus", T0, None, {"pages": 9}),  # a workflow's bonus is no behaviour
        ],
    )  # fmt: skip
    row = feature_row(subject, recipe)
    assert (row["sum_web_session_pages"], row["mean_web_session_pages"]) == (6.0, 3.0)
    assert row["count_sales_activity_outcome_connected"] == 1.0
    assert row["events_web_session"] == 3
    assert row["weighted_web_session"] == pytest.approx(decay(30) + decay(10) + decay(5))
    assert decay(30) == pytest.approx(0.5)
    empty = feature_row(Subject(2, at, T0, {}, 0.0, "D", None, 0.0), recipe)
    assert empty["sum_web_session_pages"] == 0.0 and math.isnan(empty["mean_web_session_pages"])


def test_deals_count_as_they_stood_at_the_instant() -> None:
    deals = [
        DealFact(T0, T0 + 60 * DAY, "won", 10_000.0),  # open at day 30: won later
        DealFact(T0 + 10 * DAY, None, "open", None),  # open, no amount
        DealFact(T0 - 90 * DAY, T0 - 10 * DAY, "lost", 5_000.0),  # lost before
        DealFact(T0 + 40 * DAY, None, "open", 7_000.0),  # opened after the instant
        DealFact(None, None, "open", 1_000.0),  # no date: never counted as open
    ]
    assert deal_features(deals, T0 + 30 * DAY) == {
        "deals_open": 2.0,
        "days_deal_open": 30.0,
        "open_deal_amount": 10_000.0,
        "deals_lost": 1.0,
    }
    later = deal_features(deals, T0 + 70 * DAY)
    assert (later["deals_open"], later["deals_lost"]) == (2.0, 1.0)  # the won deal closed; the one from day 40 opened
    assert math.isnan(deal_features([], T0)["days_deal_open"])


def test_account_roll_ups_count_the_colleagues_as_of_the_instant() -> None:
    at = T0 + 30 * DAY
    peers = [
        Peer(T0, (T0 + DAY, at - 2 * DAY, at + DAY), T0 + 5 * DAY, None),
        Peer(T0 + 10 * DAY, (at - DAY,), T0 + 20 * DAY, T0 + 25 * DAY),
        Peer(at + DAY, (), None, None),  # created after the instant
    ]
    assert account_features(peers, at, 7) == {
        "account_other_leads": 2.0,
        "account_other_events": 3.0,
        "account_other_recent_events": 2.0,
        "account_other_qualified": 2.0,
        "account_other_opportunities": 1.0,
    }
