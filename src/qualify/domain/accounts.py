"""Accounts qualified as a whole: fit on the account's own fields, the engagement of its people
rolled up, and which roles of its buying group have engaged people.

The model's `accounts` section (`scoring_model.AccountSpec`) says how; this module scores one
account from its values and its people, as of an instant, and explains every number: the fit's
contributions add up to the fit, each person's share of the engagement says whether the cap held
it, and each role names the people who fill it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qualify.domain.conditions import all_match
from qualify.domain.engagement import DAY
from qualify.domain.explain import Contribution
from qualify.domain.fit import FIT_MAX
from qualify.domain.scoring_model import AccountSpec


@dataclass(frozen=True, slots=True)
class Person:
    """One of the account's people as the account's scores need them."""

    lead_id: int
    name: str  # how the explanation names them (an email, an external id)
    values: dict[str, Any]  # their profile values, as fit rules read them (`fit.profile_values`)
    engagement: float  # their engagement at the instant scored
    last_activity: float | None  # their newest event, in seconds since the epoch


@dataclass(frozen=True, slots=True)
class RoleCoverage:
    role: str
    people: tuple[str, ...]  # the engaged people who fill it (empty: not covered)
    candidates: tuple[str, ...]  # who fills it but is not engaged enough, or not lately

    @property
    def covered(self) -> bool:
        return bool(self.people)


@dataclass(frozen=True, slots=True)
class AccountScore:
    fit: float
    grade: str
    fit_contributions: tuple[Contribution, ...]  # they add up to `fit`
    engagement: float
    engagement_contributions: tuple[Contribution, ...]  # one per engaged person; they add up to `engagement`
    roles: tuple[RoleCoverage, ...]

    @property
    def covered(self) -> tuple[str, ...]:
        return tuple(r.role for r in self.roles if r.covered)

    @property
    def coverage(self) -> str:
        """How the buying group reads: `3 of 5 roles: economic buyer, champion, IT`."""
        if not self.roles:
            return "no buying group defined"
        covered = self.covered
        listed = f": {', '.join(covered)}" if covered else ""
        return f"{len(covered)} of {len(self.roles)} roles{listed}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "fit": round(self.fit, 2),
            "grade": self.grade,
            "fit_explanation": [c.as_dict() for c in self.fit_contributions],
            "engagement": round(self.engagement, 2),
            "engagement_explanation": [c.as_dict() for c in self.engagement_contributions],
            "coverage": self.coverage,
            "roles": [
                {"role": r.role, "covered": r.covered, "people": list(r.people), "not_engaged": list(r.candidates)}
                for r in self.roles
            ],
        }


def score_account(spec: AccountSpec, values: dict[str, Any], people: list[Person], at: float) -> AccountScore:
    """The account's fit from `values` (the `account.*` fields), its people's engagement rolled up
    (each person's held at the spec's cap), and its buying group's coverage, as of `at`."""
    fit_parts = [
        Contribution(rule.name, rule.points, f"{rule.name} ({rule.describe()})")
        for rule in spec.rules
        if all_match(rule.conditions, values)
    ]
    raw = sum(c.points for c in fit_parts)
    fit = min(max(raw, 0.0), FIT_MAX)
    if fit != raw:
        fit_parts.append(Contribution("(bounds)", fit - raw, f"account fit is held between 0 and {FIT_MAX:g}"))
    shares = []
    for person in sorted(people, key=lambda p: (-p.engagement, p.lead_id)):
        if person.engagement <= 0:
            continue
        counted = person.engagement if spec.person_cap is None else min(person.engagement, spec.person_cap)
        held = f", held at the cap of {spec.person_cap:g}" if counted < person.engagement else ""
        shares.append(Contribution(person.name, counted, f"{person.name}: {person.engagement:.1f}{held}"))
    since = at - spec.within_days * DAY
    roles = []
    for role in spec.roles:
        filling = [p for p in people if all_match(role.conditions, p.values)]
        engaged = [
            p
            for p in filling
            if p.engagement >= spec.min_engagement and p.last_activity is not None and since <= p.last_activity <= at
        ]
        ids = {p.lead_id for p in engaged}
        roles.append(
            RoleCoverage(
                role.name, tuple(p.name for p in engaged), tuple(p.name for p in filling if p.lead_id not in ids)
            )
        )
    return AccountScore(
        fit, spec.grade(fit), tuple(fit_parts), sum(c.points for c in shares), tuple(shares), tuple(roles)
    )
