"""Routing an MQL to an owner, and the SLA clock: pure functions of the model's `handoff` section.

The service (`qualify.service.lifecycle.handoff`) reads what these functions need from the store — the
lead's profile values, the account's current owner, the team's rotation position and the reps'
assignments this week — and writes what they decide.

How a lead is routed, in order (docs/scoring-model.md, `handoff`):

1. `account_owner_first`: the owner of another lead of the same account, if they can still own
   leads under this model (rule `account owner`);
2. the first routing rule whose conditions all hold: a named `owner`, or round robin in a `team`;
3. `default_team`, round robin (rule `default team`);
4. nobody: the lead stays without an owner.

Round robin skips reps at their `capacity_per_week` (assignments in the ISO week, UTC); a
team whose reps are all at capacity overflows to `default_team`. Account owners and named
owners are not bound by capacity: those leads are theirs whatever the week looks like.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from qualify.domain.conditions import all_match
from qualify.domain.scoring_model import BusinessHours, HandoffSpec, Rep, SlaSpec, Team

ACCOUNT_OWNER = "account owner"
PREVIOUS_OWNER = "previous owner"
DEFAULT_TEAM = "default team"


@dataclass(frozen=True, slots=True)
class Route:
    """Where a lead goes before round robin: a named `owner`, or a `team` to pick a rep from.

    `rule` is what the lead's `owner_rule` will say chose the owner.
    """

    rule: str
    owner: str | None = None
    team: str | None = None


def choose_route(spec: HandoffSpec, values: dict[str, Any], *, account_owner: str | None = None) -> Route | None:
    """The route for a lead with these profile values (`qualify.domain.fit.profile_values`).

    `account_owner` is the owner of another lead of the same account, if any; it is used only
    when the model puts account owners first and the owner can still own leads.
    """
    if spec.account_owner_first and account_owner and spec.knows_owner(account_owner):
        return Route(ACCOUNT_OWNER, owner=account_owner, team=_team_name(spec.team_of(account_owner)))
    for rule in spec.rules:
        if all_match(rule.conditions, values):
            if rule.owner is not None:
                return Route(rule.name, owner=rule.owner, team=_team_name(spec.team_of(rule.owner)))
            return Route(rule.name, team=rule.team)
    if spec.default_team is not None:
        return Route(DEFAULT_TEAM, team=spec.default_team)
    return None


def _team_name(team: Team | None) -> str | None:
    return team.name if team is not None else None


def has_room(rep: Rep, load: Mapping[str, int]) -> bool:
    """Whether `rep` may take one more lead this week, given the leads each rep got this week."""
    return rep.capacity_per_week is None or load.get(rep.name, 0) < rep.capacity_per_week


@dataclass(frozen=True, slots=True)
class TeamPick:
    """The rep a team gives a lead to (None: every rep is at capacity), and the rotation after it."""

    owner: str | None
    position: int
    kept: bool = False  # the lead's previous owner kept it; the rotation did not move


def pick_in_team(team: Team, position: int, load: Mapping[str, int], previous_owner: str | None = None) -> TeamPick:
    """The next rep of `team` with room, starting at `position` of the rotation.

    A lead that comes back (re-qualifies) stays with its previous owner while that owner is a
    rep of the team with room this week: the rep already knows the person. That does not move
    the rotation, which hands out leads that nobody knows yet.

    >>> team = Team("emea", (Rep("ann", 1), Rep("bob")))
    >>> pick_in_team(team, 0, {"ann": 1})
    TeamPick(owner='bob', position=0, kept=False)
    """
    for rep in team.reps:
        if rep.name == previous_owner and has_room(rep, load):
            return TeamPick(rep.name, position, kept=True)
    size = len(team.reps)
    for step in range(size):
        at = (position + step) % size
        if has_room(team.reps[at], load):
            return TeamPick(team.reps[at].name, (at + 1) % size)
    return TeamPick(None, position % size if size else 0)


def iso_week(at: datetime) -> tuple[datetime, datetime]:
    """The ISO week (Monday 00:00 to the next Monday, UTC) that `at` falls in: capacity counts in it."""
    day = at.astimezone(UTC).date()
    monday = datetime.combine(day - timedelta(days=day.weekday()), time(), UTC)
    return monday, monday + timedelta(days=7)


# --- the SLA clock ---------------------------------------------------------------------------


def sla_due(start: datetime, sla: SlaSpec) -> datetime:
    """When an MQL that entered at `start` must have been accepted or rejected (UTC).

    Without business hours, `hours` after `start`. With them, the clock runs only inside the
    business windows: the due time is the instant at which `hours` of business time have passed
    since `start`, so it always lies inside a window, its closing time included (an 8-hour SLA
    started at 09:00 on a 09:00–17:00 Monday is due at 17:00 that Monday, not 09:00 Tuesday).
    A start outside business hours starts the clock at the next opening.

    Windows are real time: a window on the day a DST change falls in is as long as the wall
    clock says, so business seconds are always the elapsed seconds inside windows.

    >>> sla_due(datetime(2026, 3, 6, 16, 0, tzinfo=UTC), SlaSpec(2, BusinessHours(
    ...     frozenset({1, 2, 3, 4, 5}), time(9), time(17), "UTC"))).isoformat()
    '2026-03-09T10:00:00+00:00'
    """
    remaining = timedelta(hours=sla.hours)
    if sla.business_hours is None:
        return (start + remaining).astimezone(UTC)
    hours = sla.business_hours
    for opens, closes in business_windows(start, hours):
        begin = max(opens, start)
        if remaining <= closes - begin:
            return (begin + remaining).astimezone(UTC)
        remaining -= closes - begin
    raise AssertionError("business windows never end")  # pragma: no cover


def business_windows(start: datetime, hours: BusinessHours) -> Iterator[tuple[datetime, datetime]]:
    """The business windows, as (opens, closes) in UTC, that end after `start`, in order, forever."""
    if not hours.days:
        raise ValueError("business hours need at least one day")
    zone = ZoneInfo(hours.timezone)
    day = start.astimezone(zone).date() - timedelta(days=1)  # a window may open before `start` that day
    while True:
        if day.isoweekday() in hours.days:
            opens, closes = _window(day, hours, zone)
            if closes > start:
                yield opens, closes
        day += timedelta(days=1)


def _window(day: date, hours: BusinessHours, zone: ZoneInfo) -> tuple[datetime, datetime]:
    opens = datetime.combine(day, hours.start, zone).astimezone(UTC)
    if hours.end is None:  # "24:00": the next day's midnight
        closes = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
    else:
        closes = datetime.combine(day, hours.end, zone).astimezone(UTC)
    # Local times in the hour a DST change skips can make a window run backwards: it never happens, so it is empty.
    return opens, max(opens, closes)


def business_time(start: datetime, end: datetime, hours: BusinessHours | None) -> timedelta:
    """Business time between `start` and `end` (all of it without business hours); the SLA's measure."""
    if end <= start:
        return timedelta(0)
    if hours is None:
        return end - start
    total = timedelta(0)
    for opens, closes in business_windows(start, hours):
        if opens >= end:
            return total
        total += min(closes, end) - max(opens, start)
    raise AssertionError("business windows never end")  # pragma: no cover
