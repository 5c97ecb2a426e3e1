"""Event tests of segments and workflows (`EventTest`): how many matching events a lead did in a
window, between `min_count` and `max_count`, negated or not; the count stops as soon as more
events could not change the answer, and the answer is the full count's."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qualify.domain.automation import EventTest, LeadFacts, SeenEvent
from qualify.domain.conditions import Condition
from qualify.domain.engagement import DAY

NOW = 1_800_000_000.0
KINDS = ("page_view", "email_click", "content_download")

events = st.lists(
    st.builds(
        SeenEvent,
        st.sampled_from(KINDS),
        st.floats(min_value=NOW - 60 * DAY, max_value=NOW + DAY),
        st.fixed_dictionaries({"url": st.sampled_from(["/pricing", "/blog", "/"])}),
    ),
    max_size=30,
)


@st.composite
def event_tests(draw: st.DrawFn) -> EventTest:
    low = draw(st.integers(0, 6))
    high = draw(st.none() | st.integers(low, 8))
    return EventTest(
        types=tuple(draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=2, unique=True))),
        where=(Condition("url", "equals", "/pricing"),) if draw(st.booleans()) else (),
        within_days=draw(st.none() | st.sampled_from([1.0, 7.0, 30.0])),
        min_count=low,
        max_count=high,
        negate=draw(st.booleans()),
    )


def full_count(test: EventTest, seen: list[SeenEvent]) -> int:
    since = NOW - test.within_days * DAY if test.within_days is not None else float("-inf")
    return sum(
        1
        for e in seen
        if e.type in test.types and e.at >= since and all(c.test(e.properties.get(c.field)) for c in test.where)
    )


@given(event_tests(), events)
def test_an_event_test_holds_exactly_when_the_full_count_is_in_its_range(
    test: EventTest, seen: list[SeenEvent]
) -> None:
    n = full_count(test, seen)
    inside = n >= test.min_count and (test.max_count is None or n <= test.max_count)
    assert test.holds(LeadFacts(1, {}, events=seen), NOW) is (inside is not test.negate)
    assert test.count(LeadFacts(1, {}, events=seen), NOW) == n


def test_counts_at_the_edges_of_the_range() -> None:
    views = [SeenEvent("page_view", NOW - i * DAY, {"url": "/pricing"}) for i in range(5)]
    between = EventTest(("page_view",), min_count=2, max_count=4)
    assert not between.holds(LeadFacts(1, {}, events=views[:1]), NOW)
    assert between.holds(LeadFacts(1, {}, events=views[:2]), NOW)
    assert between.holds(LeadFacts(1, {}, events=views[:4]), NOW)
    assert not between.holds(LeadFacts(1, {}, events=views), NOW)  # five: one too many
    recent = EventTest(("page_view",), within_days=2.5, min_count=3)
    assert recent.holds(LeadFacts(1, {}, events=views), NOW)  # three in the window: 0, 1 and 2 days ago
    assert not recent.holds(LeadFacts(1, {}, events=views[1:]), NOW)  # two: 1 and 2 days ago
    assert EventTest(("page_view",), within_days=2.5, min_count=3, negate=True).holds(
        LeadFacts(1, {}, events=views[:2]), NOW
    )


@given(event_tests(), events)
def test_a_count_from_the_events_grouped_by_value_is_the_full_count(test: EventTest, seen: list[SeenEvent]) -> None:
    """Counted by the store per distinct value of the properties its conditions read (each value
    tested once), a test with `where` gets the count of testing the events one by one."""
    need = test.grouped
    since = NOW - test.within_days * DAY if test.within_days is not None else float("-inf")
    groups: dict[tuple[object, ...], int] = {}
    for e in seen:
        if e.type in test.types and e.at >= since:
            key = tuple(e.properties.get(name) for name in need.fields)
            groups[key] = groups.get(key, 0) + 1
    facts = LeadFacts(1, {}, grouped={need: list(groups.items())})
    if test.where:
        assert test.count(facts, NOW) == full_count(test, seen)
