"""Accounts qualified as a whole: fit on the account's own fields, the engagement of its people
rolled up, and which roles of its buying group have engaged people.

The model's `accounts` section (`scoring_model.AccountSpec`) says how; this module scores one
account from its values and its people, as of an instant, and explains every number: the fit's
contributions add up to the fit, each person's share of the engagement says whether the cap held
it, and each role names the people who fill it.

Two definitions make an account's scores a sum that the ingestion pipeline keeps up to date in
O(1) per person changed (`Rollup`), and that a full recount from the people gives again:

- a person's share of the account's engagement is their engagement scaled so that, right after
  their latest activity, it was at most the cap; it decays with theirs from there;
- a person covers a role for `within_days` after their latest activity, if they had at least
  `min_engagement` right after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qualify.domain.conditions import all_match
from qualify.domain.engagement import DAY, EngagementState
from qualify.domain.evaluator import LeadState
from qualify.domain.explain import Contribution
from qualify.domain.fit import FIT_MAX
from qualify.domain.scoring_model import AccountSpec


@dataclass(frozen=True, slots=True)
class Person:
    """One of the account's people as the account's scores need them."""

    lead_id: int
    name: str  # how the explanation names them (an email, an external id)
    values: dict[str, Any]  # their profile values, as fit rules read them (`fit.profile_values`)
    engagement: EngagementState
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
    fit, fit_parts = account_fit(spec, values)
    shares = []
    engagements = {p.lead_id: p.engagement.value_at(at) for p in people}
    counts = {p.lead_id: share_and_cover(spec, p.engagement, p.last_activity) for p in people}  # (factor, until)
    for person in sorted(people, key=lambda p: (-engagements[p.lead_id], p.lead_id)):
        own = engagements[person.lead_id]
        if own == 0:
            continue
        factor = counts[person.lead_id][0]
        held = f", held by the cap of {spec.person_cap:g} reached on their latest activity" if factor < 1 else ""
        shares.append(Contribution(person.name, own * factor, f"{person.name}: {own:.1f}{held}"))
    roles = []
    for role in spec.roles:
        filling = [p for p in people if all_match(role.conditions, p.values)]
        engaged = [p for p in filling if (until := counts[p.lead_id][1]) is not None and until >= at]
        ids = {p.lead_id for p in engaged}
        roles.append(
            RoleCoverage(
                role.name, tuple(p.name for p in engaged), tuple(p.name for p in filling if p.lead_id not in ids)
            )
        )
    return AccountScore(fit, spec.grade(fit), fit_parts, sum(c.points for c in shares), tuple(shares), tuple(roles))


def account_fit(spec: AccountSpec, values: dict[str, Any]) -> tuple[float, tuple[Contribution, ...]]:
    """The account's fit from its `account.*` values, and the contributions that add up to it."""
    parts = [
        Contribution(rule.name, rule.points, f"{rule.name} ({rule.describe()})")
        for rule in spec.rules
        if all_match(rule.conditions, values)
    ]
    raw = sum(c.points for c in parts)
    fit = min(max(raw, 0.0), FIT_MAX)
    if fit != raw:
        parts.append(Contribution("(bounds)", fit - raw, f"account fit is held between 0 and {FIT_MAX:g}"))
    return fit, tuple(parts)


def share_and_cover(
    spec: AccountSpec, state: EngagementState, last_activity: float | None
) -> tuple[float, float | None]:
    """What a person's engagement is scaled by to count for their account (the cap over their
    engagement right after their latest activity, where that was above the cap; else 1), and until
    when they cover the roles they fill (`within_days` after their latest activity, if they had at
    least `min_engagement` right after it; None: they cover none)."""
    if last_activity is None:
        return 1.0, None
    after = state.value_at(last_activity)
    cap = spec.person_cap
    factor = cap / after if cap is not None and after > cap else 1.0
    return factor, (last_activity + spec.within_days * DAY if after >= spec.min_engagement else None)


class Mark:
    """What one person adds to their account's roll-up: their share's accumulators (a copy,
    already scaled), the roles they fill and until when they cover them. (A plain class: made
    twice for every person an event batch changes.)"""

    __slots__ = ("lead_id", "roles", "share", "until")

    def __init__(self, lead_id: int, share: dict[str, list[float]], roles: tuple[str, ...], until: float | None):
        self.lead_id, self.share, self.roles, self.until = lead_id, share, roles, until

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mark) and (self.lead_id, self.share, self.roles, self.until) == (
            other.lead_id, other.share, other.roles, other.until,
        )  # fmt: skip

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def of_lead(cls, spec: AccountSpec, lead_id: int, state: LeadState) -> Mark:
        """What a lead adds as its scoring state stands."""
        return cls.of(spec, lead_id, state.engagement, state.last_event, state.roles)

    @classmethod
    def of(
        cls,
        spec: AccountSpec,
        lead_id: int,
        state: EngagementState,
        last_activity: float | None,
        roles: tuple[str, ...],
    ) -> Mark:
        factor, until = share_and_cover(spec, state, last_activity)
        if factor == 1.0:
            share = {key: [value, as_of] for key, (value, as_of) in state.accumulators.items()}
        else:
            share = {key: [value * factor, as_of] for key, (value, as_of) in state.accumulators.items()}
        return cls(lead_id, share, roles, until)


@dataclass(slots=True)
class Rollup:
    """An account's people summed: the accumulators of their shares of engagement, and for each
    role, the person who covers it the longest (`[until, lead_id]`).

    A person's change swaps their old mark for their new one in O(1): the shares are exponential
    sums, subtracted and added; a role's holder is replaced by anyone covering it longer. Only
    when the holder itself falls back (leaves the role, or covers it less long) does the roll-up
    need its people again (`swap` returns False)."""

    share: EngagementState = field(default_factory=EngagementState)
    holders: dict[str, list[float]] = field(default_factory=dict)

    def engagement_at(self, at: float) -> float:
        return self.share.value_at(at)

    def covered_at(self, spec: AccountSpec, at: float) -> tuple[str, ...]:
        """The roles covered at `at`, in the model's order."""
        return tuple(r.name for r in spec.roles if r.name in self.holders and self.holders[r.name][0] >= at)

    def swap(self, before: Mark | None, after: Mark | None) -> bool:
        """Replace a person's `before` mark (None: they were not counted) with `after` (None: they
        are no longer). False: a role's holder fell back, and the account must be counted again."""
        for mark, sign in ((before, -1.0), (after, 1.0)):
            if mark is not None:
                for key, (value, as_of) in mark.share.items():
                    self.share.add_at(key, sign * value, as_of)
        someone = after or before
        if someone is None:
            return True
        person = someone.lead_id
        for role in dict.fromkeys([*self.holders, *(after.roles if after else ())]):
            until = after.until if after is not None and role in after.roles else None
            holder = self.holders.get(role)
            if holder is not None and int(holder[1]) == person:
                if until is None or until < holder[0]:
                    return False
                holder[0] = until
            elif until is not None and (holder is None or until > holder[0]):
                self.holders[role] = [until, person]
        return True

    def to_json(self) -> dict[str, Any]:
        """The roll-up as stored: its own lists, not copies (encode it at once)."""
        return {"share": self.share.accumulators, "holders": self.holders}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Rollup:
        """Adopt freshly decoded JSON, as `EngagementState.from_json` does: its lists become the
        roll-up's own (copying them cost 18 µs an account, read for every account a batch touches)."""
        if not data:
            return cls()
        return cls(EngagementState(dict(data.get("share", {}))), dict(data.get("holders", {})))

    @classmethod
    def of(cls, marks: list[Mark]) -> Rollup:
        """The roll-up counted from every person's mark."""
        rollup = cls()
        for mark in marks:
            rollup.swap(None, mark)
        return rollup
