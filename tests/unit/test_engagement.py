"""Engagement: points per event, caps, negative points and exact exponential decay that explains itself."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qualify.domain.engagement import (
    DAY,
    Award,
    AwardedEvent,
    EngagementState,
    apply_event,
    award_half_life,
    bonus_points,
    decay_factor,
    explain_engagement,
    render_label,
)
from qualify.domain.model_loader import load_default_model, load_model

MODEL = load_default_model()
RULES = {r.name: r for r in MODEL.engagement_rules}
T0 = 1_700_006_400.0  # 2023-11-15 00:00:00 UTC: a UTC midnight
HOUR = 3600.0


class Journal:
    """Applies events like the service does: keeps the awards and answers the day_total lookup."""

    def __init__(self, state: EngagementState | None = None) -> None:
        self.state = state if state is not None else EngagementState()
        self.events: list[AwardedEvent] = []
        self.day_totals: dict[tuple[str, int], float] = {}
        self.lookups: list[tuple[str, int]] = []

    def day_total(self, rule: str, day: int) -> float:
        self.lookups.append((rule, day))
        return self.day_totals.get((rule, day), 0.0)

    def apply(self, event_type: str, at: float, properties: Mapping[str, Any] | None = None) -> list[Award]:
        props = dict(properties or {})
        awards = apply_event(MODEL, self.state, event_type, props, at, self.day_total)
        for award in awards:
            key = (award.rule, int(at // DAY))
            self.day_totals[key] = self.day_totals.get(key, 0.0) + abs(award.points)
        self.events.append(AwardedEvent(at, event_type, props, tuple(awards)))
        return awards

    def explained(self, at: float) -> float:
        return math.fsum(c.points for c in explain_engagement(MODEL, self.events, at))


def points(awards: list[Award]) -> list[tuple[str, float]]:
    return [(a.rule, a.points) for a in awards]


# --- decay -------------------------------------------------------------------------------------


def test_value_after_one_half_life_is_half() -> None:
    state = EngagementState()
    apply_event(MODEL, state, "email_click", {}, T0)  # 3 points, half-life 14 days
    assert state.value_at(T0) == 3.0
    assert state.value_at(T0 + 14 * DAY) == 1.5
    assert state.value_at(T0 + 28 * DAY) == 0.75
    assert state.value_at(T0 + 7 * DAY) == pytest.approx(3.0 / math.sqrt(2), rel=1e-12)


def test_decay_is_exact_exponential() -> None:
    assert decay_factor(0.0, 30.0) == 1.0
    assert decay_factor(30 * DAY, 30.0) == 0.5
    assert decay_factor(90 * DAY, 30.0) == 0.125
    assert decay_factor(10 * DAY, 30.0) == pytest.approx(2 ** (-1 / 3), rel=1e-15)
    assert decay_factor(1e9, None) == 1.0


def test_rules_without_half_life_never_decay() -> None:
    state = EngagementState()
    apply_event(MODEL, state, "unsubscribe", {}, T0)
    assert state.value_at(T0 + 3650 * DAY) == -20.0


def test_one_accumulator_per_half_life() -> None:
    state = EngagementState()
    for event_type in ("email_open", "email_click", "content_download", "demo_request", "unsubscribe"):
        apply_event(MODEL, state, event_type, {}, T0)
    apply_event(MODEL, state, "page_view", {"url": "/blog"}, T0)
    assert set(state.accumulators) == {"14.0", "30.0", "60.0", "none", "7.0"}
    assert state.accumulators["14.0"] == [4.0, T0]  # open 1 + click 3 share the 14-day accumulator
    apply_event(MODEL, state, "email_click", {}, T0 + 14 * DAY)
    assert state.accumulators["14.0"] == [5.0, T0 + 14 * DAY]  # 4 halved, plus 3
    assert state.value_at(T0 + 14 * DAY) == pytest.approx(
        5.0 + 0.25 + 10 * 2 ** (-14 / 30) + 30 * 2 ** (-14 / 60) - 20, rel=1e-12
    )  # page view: 7-day half-life


def test_a_late_event_decays_from_when_it_happened() -> None:
    state = EngagementState()
    apply_event(MODEL, state, "content_download", {}, T0 + 30 * DAY)
    apply_event(MODEL, state, "content_download", {}, T0)  # arrives late
    assert state.value_at(T0 + 30 * DAY) == pytest.approx(10.0 + 5.0, rel=1e-12)
    assert state.value_at(T0 + 60 * DAY) == pytest.approx(5.0 + 2.5, rel=1e-12)


def test_late_events_give_the_same_score_as_in_order_events() -> None:
    events = [("email_click", T0 + 5 * HOUR), ("demo_request", T0 + 3 * DAY), ("content_download", T0 + 9 * DAY)]
    in_order, shuffled = EngagementState(), EngagementState()
    for event_type, at in events:
        apply_event(MODEL, in_order, event_type, {}, at)
    for event_type, at in reversed(events):
        apply_event(MODEL, shuffled, event_type, {}, at)
    later = T0 + 40 * DAY
    assert shuffled.value_at(later) == pytest.approx(in_order.value_at(later), rel=1e-12)


# --- matching, caps, once, negative points -----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://acme.io/pricing", [("pricing page", 8.0)]),
        ("/Pricing?plan=pro", [("pricing page", 8.0)]),
        ("/blog/how-to", [("page view", 1.0)]),
        ("/careers/engineer", [("careers page", -5.0)]),
        ("/jobs", [("careers page", -5.0)]),
    ],
)
def test_page_views_score_by_url(url: str, expected: list[tuple[str, float]]) -> None:
    assert points(apply_event(MODEL, EngagementState(), "page_view", {"url": url}, T0)) == expected


def test_events_no_rule_knows_award_nothing() -> None:
    state = EngagementState()
    assert apply_event(MODEL, state, "chat_started", {}, T0) == []
    assert state.value_at(T0) == 0.0


def test_a_rule_listing_an_event_type_twice_awards_once() -> None:
    model = load_model(
        "name: t\nfit: {personas: [{name: p, rules: []}]}\n"
        "engagement: {rules: [{name: open, event: [email_open, email_open], points: 1}]}\n"
        "policy: {mql: {thresholds: {A: 25}}}\n"
    )
    assert points(apply_event(model, EngagementState(), "email_open", {}, T0)) == [("open", 1.0)]


def test_cap_per_day_stops_awards_for_the_rest_of_the_utc_day() -> None:
    journal = Journal()
    awarded = [points(journal.apply("email_open", T0 + h * HOUR)) for h in (1, 2, 3, 4, 23.9)]
    assert awarded == [[("email open", 1.0)]] * 3 + [[], []]
    assert points(journal.apply("email_open", T0 + 24 * HOUR)) == [("email open", 1.0)]  # a new UTC day


def test_cap_per_day_trims_an_award_to_what_is_left() -> None:
    model = load_model(
        "name: t\nfit: {personas: [{name: p, rules: []}]}\n"
        "engagement: {rules: [{name: click, event: email_click, points: 4, cap_per_day: 10}]}\n"
        "policy: {mql: {thresholds: {A: 25}}}\n"
    )
    state = EngagementState()
    got = [points(apply_event(model, state, "email_click", {}, T0 + i)) for i in range(4)]
    assert got == [[("click", 4.0)], [("click", 4.0)], [("click", 2.0)], []]
    assert state.value_at(T0 + 3) == pytest.approx(10.0, rel=1e-9)


def test_cap_per_day_follows_utc_days_not_24_hour_windows() -> None:
    journal = Journal()
    for _ in range(3):
        journal.apply("email_open", T0 - 10 * 60)  # 23:50 UTC the day before
    assert points(journal.apply("email_open", T0 + 10 * 60)) == [("email open", 1.0)]  # 00:10 UTC


def test_total_cap_holds_across_days() -> None:
    state = EngagementState()
    got = [points(apply_event(MODEL, state, "page_view", {"url": "/careers"}, T0 + d * DAY)) for d in range(4)]
    assert got == [[("careers page", -5.0)], [("careers page", -5.0)], [], []]
    # careers page: the default 30-day half-life
    assert state.value_at(T0 + 10 * DAY) == pytest.approx(-5 * 2 ** (-10 / 30) - 5 * 2 ** (-9 / 30), rel=1e-12)


def test_once_awards_a_rule_only_once() -> None:
    state = EngagementState()
    assert points(apply_event(MODEL, state, "unsubscribe", {}, T0)) == [("unsubscribed", -20.0)]
    assert apply_event(MODEL, state, "unsubscribe", {}, T0 + DAY) == []
    assert apply_event(MODEL, state, "unsubscribe", {}, T0 - DAY) == []  # late, still once
    assert state.value_at(T0 + 100 * DAY) == -20.0


def test_negative_points_lower_the_score() -> None:
    state = EngagementState()
    apply_event(MODEL, state, "webinar_attended", {}, T0)
    apply_event(MODEL, state, "bounce", {}, T0)
    assert state.value_at(T0) == 2.0
    assert state.value_at(T0 + 30 * DAY) == pytest.approx(6.0 - 10.0)


def test_a_late_event_on_an_earlier_day_asks_the_lookup_what_that_day_got() -> None:
    journal = Journal()
    for h in (1, 2, 3):
        journal.apply("email_open", T0 + h * HOUR)  # day D: capped
    journal.apply("email_open", T0 + 2 * DAY)  # day D+2: the state now counts D+2
    journal.lookups.clear()
    assert journal.apply("email_open", T0 + 5 * HOUR) == []  # late, on day D: already capped
    assert journal.lookups == [("email open", int(T0 // DAY))]
    assert points(journal.apply("email_open", T0 + DAY + HOUR)) == [("email open", 1.0)]  # day D+1: nothing yet
    assert journal.state.rule_day["email open"] == [float(int(T0 // DAY) + 2), 1.0]  # D+2 counter untouched


def test_a_late_event_on_an_earlier_day_without_lookup_counts_from_zero() -> None:
    state = EngagementState()
    for h in (1, 2, 3):
        apply_event(MODEL, state, "email_open", {}, T0 + h * HOUR)
    apply_event(MODEL, state, "email_open", {}, T0 + 2 * DAY)
    assert points(apply_event(MODEL, state, "email_open", {}, T0 + 5 * HOUR)) == [("email open", 1.0)]


def test_lookup_is_not_asked_for_the_current_day() -> None:
    journal = Journal()
    journal.apply("email_open", T0 + HOUR)
    journal.apply("email_open", T0 + 2 * HOUR)
    journal.apply("email_open", T0 + 30 * 60)  # late, but the same day as the state's counter
    assert journal.lookups == []
    assert journal.state.rule_day["email open"] == [float(int(T0 // DAY)), 3.0]


# --- explanations ------------------------------------------------------------------------------


def test_explanations_add_up_to_the_score() -> None:
    journal = Journal()
    journal.apply("email_click", T0, {"campaign": "Spring launch"})
    journal.apply("page_view", T0 + DAY, {"url": "/pricing"})
    journal.apply("page_view", T0 + 2 * DAY, {"url": "/careers"})
    journal.apply("demo_request", T0 + 3 * DAY)
    journal.apply("unsubscribe", T0 + 4 * DAY)
    at = T0 + 10 * DAY
    parts = explain_engagement(MODEL, journal.events, at)
    assert [c.rule for c in parts] == ["email click", "pricing page", "careers page", "demo request", "unsubscribed"]
    assert math.fsum(c.points for c in parts) == pytest.approx(journal.state.value_at(at), rel=1e-12)
    assert parts[0].points == pytest.approx(3.0 * 2 ** (-10 / 14), rel=1e-12)
    assert parts[0].text == "clicked 'Spring launch' 10 days ago (3, half-life 14 d)"
    assert parts[1].text == "visited /pricing 9 days ago (8, half-life 14 d)"
    assert parts[2].text == "visited /careers (job seeker?) 8 days ago (-5, half-life 30 d)"
    assert parts[4].text == "unsubscribed: unsubscribe 6 days ago (-20)"


def test_explanation_of_an_award_from_a_rule_no_longer_in_the_model() -> None:
    event = AwardedEvent(T0, "trial_started", {}, (Award("trial", 15.0),))
    [part] = explain_engagement(MODEL, [event], T0 + 2 * HOUR)
    assert part.points == 15.0
    assert part.text == "trial_started (rule trial no longer in the model) 2 hours ago (15)"


@pytest.mark.parametrize(
    ("rule", "properties", "label"),
    [
        ("content download", {"title": "The ROI guide"}, "downloaded 'The ROI guide'"),
        ("content download", {}, "downloaded '?'"),
        ("content download", {"title": None}, "downloaded '?'"),
        ("content download", {"title": 42}, "downloaded '42'"),
        ("content download", {"title": "x" * 200}, "downloaded '" + "x" * 80 + "'"),
        ("careers page", {"url": "/jobs/1"}, "visited /jobs/1 (job seeker?)"),
        ("email open", {"campaign": "x"}, "email open: email_open"),  # no label: rule and event type
    ],
)
def test_labels_are_filled_from_event_properties(rule: str, properties: dict[str, Any], label: str) -> None:
    event_type = RULES[rule].events[0]
    assert render_label(RULES[rule], AwardedEvent(T0, event_type, properties, ())) == label


def test_label_with_an_unclosed_brace_is_shown_as_written() -> None:
    model = load_model(
        "name: t\nfit: {personas: [{name: p, rules: []}]}\n"
        "engagement: {rules: [{name: r, event: e, points: 1, label: 'saw {a} and {b'}]}\n"
        "policy: {mql: {thresholds: {A: 25}}}\n"
    )
    event = AwardedEvent(T0, "e", {"a": "A", "b": "B"}, ())
    assert render_label(model.engagement_rules[0], event) == "saw A and {b"


# --- a workflow's one-off bonus ----------------------------------------------------------------

BONUS = {"points": 15, "reason": "recycled lead read the pricing guide", "workflow": "recycle"}


def test_a_bonus_awards_its_points_decaying_with_the_default_half_life() -> None:
    journal = Journal()
    assert points(journal.apply("score_bonus", T0, BONUS)) == [("bonus", 15.0)]
    assert MODEL.default_half_life_days == 30.0
    assert journal.state.value_at(T0) == 15.0
    assert journal.state.value_at(T0 + 30 * DAY) == 7.5
    assert journal.state.value_at(T0 + 60 * DAY) == 3.75
    assert set(journal.state.accumulators) == {"30.0"}  # shares the default's accumulator


def test_a_bonus_is_never_capped_and_adds_to_what_rules_gave() -> None:
    journal = Journal()
    journal.apply("demo_request", T0)  # 30 points, half-life 60 days
    for _ in range(12):  # on the same day, at the same instant: each gives its full 100
        assert points(journal.apply("score_bonus", T0, {"points": 100})) == [("bonus", 100.0)]
    assert journal.state.value_at(T0) == 1230.0
    assert journal.state.rule_totals == {} and journal.state.rule_day == {}  # nothing counted towards caps
    assert journal.explained(T0 + 9 * DAY) == pytest.approx(journal.state.value_at(T0 + 9 * DAY), rel=1e-12)


def test_without_a_default_half_life_a_bonus_never_decays() -> None:
    model = load_model(
        "name: t\nfit: {personas: [{name: p, rules: []}]}\n"
        "engagement: {rules: [{name: open, event: email_open, points: 1, half_life_days: 7}]}\n"
        "policy: {mql: {thresholds: {A: 25}}}\n"
    )
    state = EngagementState()
    assert points(apply_event(model, state, "score_bonus", {"points": -8}, T0)) == [("bonus", -8.0)]
    assert state.value_at(T0 + 3650 * DAY) == -8.0
    event = AwardedEvent(T0, "score_bonus", {"points": -8}, (Award("bonus", -8.0),))
    [part] = explain_engagement(model, [event], T0 + 3 * DAY)
    assert (part.points, part.text) == (-8.0, "bonus 3 days ago (-8)")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (15, 15.0),
        (-5, -5.0),
        (2.5, 2.5),
        ("7", 7.0),
        ("-0.25", -0.25),
        ("+3", 3.0),
        ("007", 7.0),
        (0.30000000000000004, 0.30000000000000004),
        (0.0001, 0.0001),
        (100, 100.0),
        (100.5, 100.0),  # held at the bounds
        (250, 100.0),
        (-1000, -100.0),
        ("999999999999999", 100.0),
        (123456789012345.5, 100.0),
    ],
)
def test_bonus_points_are_read_as_a_number_and_held_within_100(value: Any, expected: float) -> None:
    assert bonus_points({"points": value}) == expected
    assert points(apply_event(MODEL, EngagementState(), "score_bonus", {"points": value}, T0)) == [("bonus", expected)]


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "abc",
        "15 points",
        " 15",
        "15\n",
        "1e3",
        "1,5",
        "15.",
        ".5",
        "nan",
        "inf",
        float("nan"),
        float("inf"),
        float("-inf"),
        True,
        False,
        [15],
        {"value": 15},
        0,
        -0.0,
        "0.00009",
        5e-05,  # smaller than the smallest bonus
        1e16,  # written 1e+16: not plain decimal notation
        10**15,  # sixteen digits
        pytest.param(10**5000, id="10**5000"),  # far more digits than Python turns into text
        "1" * 16,
    ],
)
def test_bonus_points_that_are_not_a_plain_finite_number_award_nothing(value: Any) -> None:
    state = EngagementState()
    assert bonus_points({"points": value}) is None
    assert apply_event(MODEL, state, "score_bonus", {"points": value, "reason": "r"}, T0) == []
    assert state.value_at(T0) == 0.0


def test_a_bonus_without_points_awards_nothing() -> None:
    assert apply_event(MODEL, EngagementState(), "score_bonus", {"reason": "forgot the points"}, T0) == []


def test_points_on_another_event_type_are_no_bonus() -> None:
    assert points(apply_event(MODEL, EngagementState(), "demo_request", {"points": 50}, T0)) == [("demo request", 30.0)]


def test_the_explanation_names_the_workflow_and_the_reason() -> None:
    journal = Journal()
    journal.apply("score_bonus", T0, BONUS)
    journal.apply("score_bonus", T0 + DAY, {"points": "-4", "reason": "  "})
    journal.apply("score_bonus", T0 + DAY, {"points": 2.5, "workflow": "welcome"})
    parts = explain_engagement(MODEL, journal.events, T0 + 3 * DAY)
    assert [c.rule for c in parts] == ["bonus", "bonus", "bonus"]
    assert [c.text for c in parts] == [
        "bonus from workflow recycle: recycled lead read the pricing guide 3 days ago (15, half-life 30 d)",
        "bonus 2 days ago (-4, half-life 30 d)",
        "bonus from workflow welcome 2 days ago (2.5, half-life 30 d)",
    ]
    assert parts[0].points == pytest.approx(15 * 2 ** (-3 / 30), rel=1e-12)
    assert math.fsum(c.points for c in parts) == pytest.approx(journal.state.value_at(T0 + 3 * DAY), rel=1e-12)


def test_an_award_named_bonus_on_another_event_is_not_explained_as_a_bonus() -> None:
    event = AwardedEvent(T0, "trial_started", {}, (Award("bonus", 5.0),))  # from an older model's rule
    [part] = explain_engagement(MODEL, [event], T0 + 30 * DAY)
    assert (part.points, part.text) == (5.0, "trial_started (rule bonus no longer in the model) 30 days ago (5)")


def test_award_half_life_knows_the_bonus_and_the_rules() -> None:
    assert award_half_life(MODEL, "bonus") == 30.0
    assert award_half_life(MODEL, "email open") == 14.0
    assert award_half_life(MODEL, "unsubscribed") is None
    assert award_half_life(MODEL, "no such rule") is None


# --- serialisation -----------------------------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    journal = Journal()
    journal.apply("page_view", T0, {"url": "/careers"})
    journal.apply("email_open", T0 + HOUR)
    journal.apply("quote_request", T0 + DAY)
    restored = EngagementState.from_json(json.loads(json.dumps(journal.state.to_json())))
    assert restored == journal.state
    assert restored.value_at(T0 + 9 * DAY) == journal.state.value_at(T0 + 9 * DAY)


@pytest.mark.parametrize("data", [None, {}])
def test_empty_json_is_an_empty_state(data: dict[str, Any] | None) -> None:
    state = EngagementState.from_json(data)
    assert state == EngagementState()
    assert state.value_at(T0) == 0.0


# --- properties --------------------------------------------------------------------------------

EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("email_open", {}),
    ("email_click", {"campaign": "spring"}),
    ("page_view", {"url": "/pricing"}),
    ("page_view", {"url": "/blog/post"}),
    ("page_view", {"url": "/careers"}),
    ("content_download", {"title": "Guide"}),
    ("webinar_attended", {"title": "Live demo"}),
    ("form_submit", {}),
    ("demo_request", {}),
    ("quote_request", {}),
    ("meeting", {}),
    ("unsubscribe", {}),
    ("bounce", {}),
    ("chat_started", {}),  # no rule
    ("score_bonus", BONUS),
    ("score_bonus", {"points": -250}),  # held at -100
    ("score_bonus", {"points": "n/a"}),  # awards nothing
]

Stream = list[tuple[tuple[str, dict[str, Any]], float]]


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    events = draw(
        st.lists(
            st.tuples(
                st.sampled_from(EVENTS),
                # Seconds after T0, over ~4 months, often on the same day to exercise the daily caps.
                st.one_of(st.integers(0, 3 * 86_400), st.integers(0, 120 * 86_400)).map(float),
            ),
            max_size=40,
        )
    )
    if draw(st.booleans()):
        events.sort(key=lambda item: item[1])  # in order; otherwise as drawn: late events
    return events


def magnitude(journal: Journal, at: float) -> float:
    return max(1.0, math.fsum(abs(c.points) for c in explain_engagement(MODEL, journal.events, at)))


@settings(max_examples=80, deadline=None)
@given(stream=streams(), later=st.floats(0, 200 * DAY))
def test_property_the_score_is_the_sum_of_its_explanation(stream: Stream, later: float) -> None:
    journal = Journal()
    for (event_type, properties), offset in stream:
        journal.apply(event_type, T0 + offset, properties)
    at = T0 + max((offset for _, offset in stream), default=0.0) + later
    value = journal.state.value_at(at)
    # Relative to the size of the terms: positive and negative awards may cancel to ~0.
    assert abs(value - journal.explained(at)) <= 1e-9 * magnitude(journal, at)


@settings(max_examples=60, deadline=None)
@given(stream=streams(), cuts=st.lists(st.integers(0, 40), max_size=6), later=st.floats(0, 60 * DAY))
def test_property_saving_the_state_between_chunks_changes_nothing(
    stream: Stream, cuts: list[int], later: float
) -> None:
    at_once = Journal()
    for (event_type, properties), offset in stream:
        at_once.apply(event_type, T0 + offset, properties)

    chunked = Journal()
    bounds = [0, *sorted({min(c, len(stream)) for c in cuts}), len(stream)]
    for start, end in itertools.pairwise(bounds):
        for (event_type, properties), offset in stream[start:end]:
            chunked.apply(event_type, T0 + offset, properties)
        chunked.state = EngagementState.from_json(json.loads(json.dumps(chunked.state.to_json())))

    assert [e.awards for e in chunked.events] == [e.awards for e in at_once.events]
    at = T0 + max((offset for _, offset in stream), default=0.0) + later
    assert chunked.state.value_at(at) == pytest.approx(at_once.state.value_at(at), rel=1e-12, abs=1e-12)
    assert chunked.state.to_json() == at_once.state.to_json()
