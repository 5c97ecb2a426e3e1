"""How the demo's sales team decides: who accepts an MQL, which deals open, which are won, and why not.

Pure functions of what a rep can see (fit, engagement, company) and of what a conversation
reveals (whether the lead is really in market). Probabilities are tuned so the funnel looks
like a healthy B2B one: about half of MQLs accepted, a third of SQLs won.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

HOUR = 3_600


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str  # a stage action of qualify.domain.lifecycle
    reason: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Sighting:
    """What the rep knows when deciding."""

    fit: float  # 0-100
    engagement: float
    in_market: bool
    free_mail: bool
    seniority: str | None
    employees: int | None
    setback_days: float = 1e9  # since the lead was last rejected or lost
    group: float = 1.0  # how complete the buying group behind the lead is (qualify.demo.groups)


def review_mql(rng: random.Random, seen: Sighting) -> Verdict:
    """An SDR's call on an MQL: accept, reject with a reason, or (rarely) disqualify."""
    if seen.free_mail and seen.fit < 30 and rng.random() < 0.15:
        return Verdict("disqualify", "spam")
    if rng.random() < 0.01:
        return Verdict("disqualify", "duplicate", "same person as an existing contact")
    chance = 0.05 + 0.4 * seen.in_market + 0.35 * seen.fit / 100 + 0.002 * min(seen.engagement, 100) + 0.15 * seen.group
    chance -= 0.15 * seen.free_mail
    if seen.setback_days < 90:  # "we spoke to them last month": a recent no weighs
        chance *= 0.4
    if rng.random() < min(max(chance, 0.03), 0.95):
        return Verdict("accept")
    return Verdict("reject", _reject_reason(rng, seen))


def _reject_reason(rng: random.Random, seen: Sighting) -> str:
    reasons: dict[str, float] = {"not_reachable": 1.0, "no_need": 1.0}
    if not seen.in_market:
        reasons.update(bad_timing=3.0, not_ready=2.5)
    if seen.setback_days < 90:
        reasons.update(bad_timing=6.0)
    if (seen.employees or 0) < 50:
        reasons["no_budget"] = 3.0
    if seen.seniority in ("individual", None):
        reasons.update(no_authority=2.0, wrong_contact=1.5)
    names, weights = list(reasons), list(reasons.values())
    return rng.choices(names, weights=weights)[0]


def open_opportunity(rng: random.Random, seen: Sighting) -> Verdict | None:
    """An account executive after discovery: a deal, a loss, or no decision yet (None)."""
    if rng.random() < 0.15:
        return None
    if rng.random() < 0.15 + 0.45 * seen.in_market + 0.15 * seen.fit / 100 + 0.25 * seen.group:
        return Verdict("open-opportunity")
    reason = rng.choices(("no_need", "no_budget", "bad_timing", "not_ready"), weights=(35, 25, 25, 15))[0]
    return Verdict("lose", reason)


def close_deal(rng: random.Random, seen: Sighting, meetings: int) -> Verdict:
    """Won or lost: deals with a real need, a good fit, a few meetings and the buying group on board
    close more often; one person alone at a large company seldom buys."""
    chance = 0.05 + 0.25 * seen.in_market + 0.25 * seen.fit / 100 + 0.03 * min(meetings, 4) + 0.3 * seen.group
    if rng.random() < chance:
        return Verdict("win")
    reason = rng.choices(("lost_to_competitor", "price", "no_need", "bad_timing"), weights=(45, 30, 15, 10))[0]
    return Verdict("lose", reason)


def sales_cycle_days(rng: random.Random, employees: int | None) -> float:
    """Bigger companies take longer to buy: about four weeks for 100 people, eight for 10,000."""
    size = max(employees or 20, 10)
    median = 30 * (1 + 0.35 * max(math.log10(size / 100), -0.5))
    return min(max(median * math.exp(rng.gauss(0, 0.35)), 10.0), 150.0)


def reply_delay(rng: random.Random) -> float:
    """Seconds before a rep looks at a new MQL: mostly within a day, a backlog now and then."""
    hours = math.exp(rng.gauss(math.log(18), 0.9))
    if rng.random() < 0.06:
        hours += rng.uniform(10, 25) * 24
    return hours * HOUR


def office_hours(rng: random.Random, timestamp: float, utc_offset: int) -> int:
    """The first working moment (weekday, 9:00-18:00 local) at or after `timestamp`."""
    local = timestamp + utc_offset * HOUR
    day, second = divmod(local, 86_400)
    hour = second / HOUR
    if hour >= 17.5:
        day, hour = day + 1, 0.0
    if hour < 9:
        hour = rng.uniform(9, 12)
    weekday = (int(day) + 3) % 7  # 1970-01-01 was a Thursday
    if weekday >= 5:
        day += 7 - weekday
        hour = rng.uniform(9, 12)
    return int(day * 86_400 + hour * HOUR - utc_offset * HOUR)
