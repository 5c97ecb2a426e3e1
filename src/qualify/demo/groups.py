"""Buying groups of the demo world: the people of one company in market together.

A company, not a person, is in market: when it is, some of its people research the purchase
in the same weeks (each with the role they play in it), one of them — the contact — drives it
to a demo request, and whether sales opens and wins the deal depends on how much of the group
took part. The groups are planned for the whole world before anyone's life is played, so that
each life (`qualify.demo.behaviour`) still plays alone and in order: a person knows the windows
they share and who else was in them.

>>> role_in_group("vp", "sales"), role_in_group("individual", "it"), role_in_group("individual", "finance")
('economic buyer', 'technical evaluator', None)
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from qualify.demo.names import CHANNELS
from qualify.demo.population import DemoLead
from qualify.domain.fit import profile_values, score_fit
from qualify.domain.scoring_model import ScoringModel

DAY = 86_400
CONTACT_FIRST = ("champion", "economic buyer", "technical evaluator", "practitioner", None)  # who drives it
JOINS = {"economic buyer": 0.55, "champion": 0.75, "technical evaluator": 0.65, "practitioner": 0.6, None: 0.3}


@dataclass(frozen=True, slots=True)
class GroupWindow:
    """One company in market from `start` to `end`, and who of its people took part."""

    start: int
    end: int
    members: frozenset[int]  # DemoLead.index
    contact: int
    roles: frozenset[str]  # the roles the members play
    needed: int  # how many roles a purchase of this company's size takes

    @property
    def coverage(self) -> float:
        """How complete the group was: its roles over the roles needed, at most 1."""
        return min(1.0, len(self.roles) / self.needed)


def role_in_group(seniority: str | None, department: str | None) -> str | None:
    """The role a person plays in their company's purchase, from who they are (the world's truth,
    which the default model's buying-group roles try to recognise)."""
    if seniority in ("c_level", "vp"):
        return "economic buyer"
    if department in ("engineering", "it", "data"):
        return "technical evaluator"
    if seniority in ("director", "manager") and department in ("marketing", "sales"):
        return "champion"
    if seniority == "individual" and department in ("marketing", "sales", "operations"):
        return "practitioner"
    return None


def roles_needed(employees: int | None) -> int:
    """A founder buys alone; a mid-sized company needs two roles on board, a large one three."""
    size = employees or 0
    return 1 if size < 50 else 2 if size < 1_000 else 3


def plan_buying_groups(
    people: Sequence[DemoLead], model: ScoringModel, rng: random.Random, now: int
) -> dict[int, list[GroupWindow]]:
    """Each prospect at a company → the windows in which their company was in market and they took
    part. Companies with fitting people are more often in market (as people with good fit are)."""
    by_company: dict[str, list[DemoLead]] = {}
    for person in people:
        if person.company is not None and person.kind == "prospect":
            by_company.setdefault(person.company.account.domain, []).append(person)
    out: dict[int, list[GroupWindow]] = {}
    for staff in by_company.values():
        for window in _windows(staff, model, rng, now):
            for index in window.members:
                out.setdefault(index, []).append(window)
    return out


def _windows(staff: list[DemoLead], model: ScoringModel, rng: random.Random, now: int) -> list[GroupWindow]:
    fits = [score_fit(model, profile_values(p.lead, p.account)).score for p in staff]
    logit = 3.0 * (sum(fits) / len(fits) / 100 - 0.45) + rng.gauss(0, 0.8)
    affinity = 1 / (1 + math.exp(-logit))
    if rng.random() > 0.08 + 0.55 * affinity:
        return []
    created = {p.index: int(p.lead.created_at.timestamp()) if p.lead.created_at else now for p in staff}
    inbound = [p for p in staff if CHANNELS.get(p.lead.channel or "", (0, (), 0.0))[2] > 0]
    if inbound and rng.random() < 0.5:  # someone found us because the company is looking
        start = created[rng.choice(inbound).index] - rng.uniform(0, 10) * DAY
    else:
        start = rng.uniform(min(created.values()) - 10 * DAY, now - 10 * DAY)
    spans = [(int(start), int(start + rng.uniform(30, 90) * DAY))]
    if rng.random() < 0.1 + 0.2 * affinity:
        later = spans[0][1] + rng.uniform(40, 120) * DAY
        spans.append((int(later), int(later + rng.uniform(30, 75) * DAY)))
    needed = roles_needed(staff[0].account.employees if staff[0].account else None)
    windows = []
    for begin, end in spans:
        there = [p for p in staff if created[p.index] < end - 7 * DAY]
        if not there or begin >= now:
            continue
        roles = {p.index: role_in_group(p.lead.seniority, p.lead.department) for p in there}
        members = [p for p in there if rng.random() < JOINS[roles[p.index]]] or [min(there, key=lambda p: p.index)]
        contact = min(members, key=lambda p: (CONTACT_FIRST.index(roles[p.index]), p.index))
        played = frozenset(r for p in members if (r := roles[p.index]) is not None)
        windows.append(GroupWindow(begin, end, frozenset(p.index for p in members), contact.index, played, needed))
    return windows
