"""Routing and the SLA clock, as pure functions: which route, which rep, and when an MQL is due."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qualify.domain.conditions import Condition
from qualify.domain.routing import (
    ACCOUNT_OWNER,
    DEFAULT_TEAM,
    Route,
    TeamPick,
    business_time,
    choose_route,
    iso_week,
    pick_in_team,
    sla_due,
)
from qualify.domain.scoring_model import BusinessHours, HandoffSpec, Rep, RoutingRule, SlaSpec, Team

EMEA = Team("emea", (Rep("ann", 2), Rep("bob"), Rep("cat", 1)))
AMERICAS = Team("americas", (Rep("cy"),))
SPEC = HandoffSpec(
    teams=(EMEA, AMERICAS),
    rules=(
        RoutingRule("strategic", (Condition("account.employees", "range", (5000, None)),), owner="dee"),
        RoutingRule("europe", (Condition("account.country", "in", ("DE", "FR")),), team="emea"),
        RoutingRule("europe by lead", (Condition("country", "in", ("DE", "FR")),), team="emea"),
    ),
    account_owner_first=True,
    default_team="americas",
)
WEEKDAYS_9_TO_5 = BusinessHours(frozenset({1, 2, 3, 4, 5}), time(9), time(17), "UTC")


# --- the route ---------------------------------------------------------------------------------


def test_the_first_matching_rule_wins() -> None:
    values = {"account.country": "de", "country": "FR", "account.employees": 120}
    assert choose_route(SPEC, values) == Route("europe", team="emea")
    assert choose_route(SPEC, {"country": "FR"}) == Route("europe by lead", team="emea")
    assert choose_route(SPEC, {"account.country": "DE", "account.employees": 9000}) == Route("strategic", owner="dee")


def test_a_named_owner_who_is_a_rep_is_recorded_with_their_team() -> None:
    spec = HandoffSpec((EMEA,), (RoutingRule("vip", (Condition("title", "equals", "CEO"),), owner="bob"),))
    assert choose_route(spec, {"title": "ceo"}) == Route("vip", owner="bob", team="emea")


def test_no_rule_goes_to_the_default_team_and_without_one_nowhere() -> None:
    assert choose_route(SPEC, {"country": "JP"}) == Route(DEFAULT_TEAM, team="americas")
    no_default = HandoffSpec(SPEC.teams, SPEC.rules)
    assert choose_route(no_default, {"country": "JP"}) is None


def test_the_account_owner_comes_first_when_the_model_says_so_and_they_can_still_own_leads() -> None:
    values = {"account.country": "DE"}
    assert choose_route(SPEC, values, account_owner="cy") == Route(ACCOUNT_OWNER, owner="cy", team="americas")
    assert choose_route(SPEC, values, account_owner="dee") == Route(ACCOUNT_OWNER, owner="dee")  # a named owner
    assert choose_route(SPEC, values, account_owner="left.the.company") == Route("europe", team="emea")
    later = HandoffSpec(SPEC.teams, SPEC.rules, account_owner_first=False, default_team="americas")
    assert choose_route(later, values, account_owner="cy") == Route("europe", team="emea")


# --- round robin -------------------------------------------------------------------------------


def test_round_robin_goes_round_in_the_order_listed() -> None:
    position, owners = 0, []
    for _ in range(6):
        pick = pick_in_team(Team("t", (Rep("a"), Rep("b"), Rep("c"))), position, {})
        owners.append(pick.owner)
        position = pick.position
    assert owners == ["a", "b", "c", "a", "b", "c"]


def test_reps_at_capacity_this_week_are_skipped_and_the_rotation_moves_past_them() -> None:
    assert pick_in_team(EMEA, 0, {"ann": 2}) == TeamPick("bob", 2)
    assert pick_in_team(EMEA, 2, {"cat": 1}) == TeamPick("ann", 1)
    assert pick_in_team(EMEA, 2, {"cat": 1, "ann": 2}) == TeamPick("bob", 2)


def test_when_every_capped_rep_is_full_an_uncapped_one_takes_it_and_otherwise_nobody() -> None:
    assert pick_in_team(EMEA, 0, {"ann": 2, "cat": 5}).owner == "bob"
    full = Team("full", (Rep("x", 1), Rep("y", 1)))
    assert pick_in_team(full, 1, {"x": 1, "y": 1}) == TeamPick(None, 1)


def test_a_position_beyond_a_shrunken_team_wraps_around() -> None:
    assert pick_in_team(AMERICAS, 7, {}) == TeamPick("cy", 0)


def test_a_returning_lead_stays_with_its_previous_owner_while_they_are_in_the_team_with_room() -> None:
    assert pick_in_team(EMEA, 0, {}, previous_owner="cat") == TeamPick("cat", 0, kept=True)
    assert pick_in_team(EMEA, 0, {"cat": 1}, previous_owner="cat") == TeamPick("ann", 1)  # full: rotation
    assert pick_in_team(EMEA, 0, {}, previous_owner="cy") == TeamPick("ann", 1)  # not in this team


def test_the_iso_week_runs_monday_to_monday_in_utc() -> None:
    monday = datetime(2026, 3, 2, tzinfo=UTC)
    assert iso_week(datetime(2026, 3, 8, 23, 59, tzinfo=UTC)) == (monday, monday + timedelta(days=7))
    assert iso_week(monday) == (monday, monday + timedelta(days=7))
    assert iso_week(datetime(2026, 3, 2, 0, 30, tzinfo=ZoneInfo("Europe/Berlin")))[0] == monday - timedelta(days=7)


# --- the SLA clock -----------------------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "hours", "due"),
    [
        ("2026-03-02 10:00", 2, "2026-03-02 12:00"),  # Monday, inside the window
        ("2026-03-02 09:00", 8, "2026-03-02 17:00"),  # due at closing, not at the next opening
        ("2026-03-06 16:00", 2, "2026-03-09 10:00"),  # Friday afternoon: Monday morning
        ("2026-03-07 12:00", 1, "2026-03-09 10:00"),  # Saturday: the clock starts Monday 09:00
        ("2026-03-02 17:00", 1, "2026-03-03 10:00"),  # at closing: the next day
        ("2026-03-02 06:00", 24, "2026-03-04 17:00"),  # before opening: three whole days
        ("2026-03-02 10:30", 0.5, "2026-03-02 11:00"),
    ],
)
def test_business_hours_count_only_open_time(start: str, hours: float, due: str) -> None:
    assert sla_due(at(start), SlaSpec(hours, WEEKDAYS_9_TO_5)) == at(due)


def test_without_business_hours_the_clock_runs_around_the_clock() -> None:
    assert sla_due(at("2026-03-07 12:00"), SlaSpec(24)) == at("2026-03-08 12:00")


def test_business_hours_are_local_to_their_time_zone_across_a_dst_change() -> None:
    berlin = BusinessHours(frozenset({1, 2, 3, 4, 5}), time(9), time(17), "Europe/Berlin")
    # Friday 27 March 2026, 16:00 CET (15:00 UTC); clocks go forward on Sunday; Monday opens 09:00 CEST (07:00 UTC).
    assert sla_due(at("2026-03-27 15:00"), SlaSpec(2, berlin)) == at("2026-03-30 08:00")


def test_24_00_closes_at_midnight() -> None:
    weekend = BusinessHours(frozenset({6, 7}), time(0), None, "UTC")
    assert sla_due(at("2026-03-06 12:00"), SlaSpec(48, weekend)) == at("2026-03-09 00:00")


def test_a_window_the_clock_skips_on_a_dst_change_counts_nothing() -> None:
    # In Berlin on Sunday 29 March 2026 the clock jumps from 02:00 to 03:00: 02:30–03:00 never happens.
    night = BusinessHours(frozenset({7}), time(2, 30), time(3), "Europe/Berlin")
    sunday_before = at("2026-03-22 00:00")
    assert business_time(sunday_before, at("2026-04-06 00:00"), night) == timedelta(minutes=60)
    assert sla_due(sunday_before, SlaSpec(1, night)) == at("2026-04-05 01:00")  # 03:00 CEST


# Hypothesis checks the clock against an independent count of business time, window by window.
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "America/Sao_Paulo")


@st.composite
def business_hours(draw: st.DrawFn) -> BusinessHours:
    days = frozenset(draw(st.sets(st.integers(1, 7), min_size=1)))
    start = draw(st.integers(0, 24 * 4 - 1))  # quarter hours
    end = draw(st.integers(start + 1, 24 * 4))
    return BusinessHours(
        days,
        time(start // 4, start % 4 * 15),
        None if end == 96 else time(end // 4, end % 4 * 15),
        draw(st.sampled_from(ZONES)),
    )


def _micros(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _windows(hours: BusinessHours, first: date, last: date) -> list[tuple[int, int]]:
    """Every window from `first` to `last` (local dates) as UTC microseconds, computed day by day."""
    zone, out = ZoneInfo(hours.timezone), []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        if day.isoweekday() not in hours.days:
            continue
        opens = datetime(day.year, day.month, day.day, hours.start.hour, hours.start.minute, tzinfo=zone)
        if hours.end is None:  # local midnight of the next day, however long that day is
            following = day + timedelta(days=1)
            closes = datetime(following.year, following.month, following.day, tzinfo=zone)
        else:
            closes = datetime(day.year, day.month, day.day, hours.end.hour, hours.end.minute, tzinfo=zone)
        out.append((_micros(opens), max(_micros(opens), _micros(closes))))
    return out


@settings(max_examples=300, deadline=None)
@given(
    start=st.datetimes(datetime(2020, 1, 1), datetime(2030, 12, 31), timezones=st.just(UTC)),
    minutes=st.integers(1, 200 * 60),
    hours=business_hours(),
)
def test_the_due_time_is_the_first_instant_with_exactly_the_sla_of_business_time(
    start: datetime, minutes: int, hours: BusinessHours
) -> None:
    due = sla_due(start, SlaSpec(minutes / 60, hours))
    zone = ZoneInfo(hours.timezone)
    windows = _windows(
        hours, start.astimezone(zone).date() - timedelta(days=1), due.astimezone(zone).date() + timedelta(days=1)
    )
    s, d = _micros(start), _micros(due)
    counted = sum(max(0, min(c, d) - max(o, s)) for o, c in windows)
    assert counted == round(minutes * 60 * 1_000_000)
    # Inside a window (its closing instant included), never at an opening: nothing earlier has as much.
    assert any(o < d <= c for o, c in windows)
    assert business_time(start, due, hours) == timedelta(minutes=minutes)


@settings(max_examples=100, deadline=None)
@given(
    start=st.datetimes(datetime(2020, 1, 1), datetime(2030, 12, 31), timezones=st.just(UTC)),
    hours=st.floats(0.001, 500),
)
def test_without_business_hours_due_minus_start_is_the_sla(start: datetime, hours: float) -> None:
    assert sla_due(start, SlaSpec(hours)) - start == timedelta(hours=hours)
