"""The demo world's buying groups: a company in market with several of its people, one driving it."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from qualify.demo.groups import JOINS, plan_buying_groups, role_in_group, roles_needed
from qualify.demo.marketing import marketing_calendar
from qualify.demo.population import generate_population
from qualify.domain.model_loader import default_model_text, load_model

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _plan(seed: int) -> tuple[list, dict]:
    start = NOW - timedelta(days=180)
    calendar = marketing_calendar(random.Random(seed), start, NOW)
    people = generate_population(random.Random(seed + 1), 1500, start, NOW, calendar)
    model = load_model(default_model_text(), "default")
    return people, plan_buying_groups(people, model, random.Random(seed + 2), int(NOW.timestamp()))


def test_a_group_is_people_of_one_company_in_market_together_with_one_contact() -> None:
    people, groups = _plan(7)
    by_index = {p.index: p for p in people}
    windows = {id(w): w for found in groups.values() for w in found}.values()
    assert len(windows) > 50
    sizes = Counter(len(w.members) for w in windows)
    assert sum(count for size, count in sizes.items() if size >= 3) >= 10  # real groups, not only people alone
    for window in windows:
        members = [by_index[i] for i in window.members]
        assert window.contact in window.members
        assert len({m.company.account.domain for m in members if m.company}) == 1
        assert all(m.kind == "prospect" for m in members)
        assert window.roles == {r for m in members if (r := role_in_group(m.lead.seniority, m.lead.department))}
        assert window.needed == roles_needed(members[0].account.employees if members[0].account else None)
        assert window.start < window.end <= window.start + 90 * 86_400
        assert all(window in groups[i] for i in window.members)
        assert all(int(m.lead.created_at.timestamp()) < window.end for m in members)
        assert 0.0 < window.coverage <= 1.0 or not window.roles


def test_the_contact_is_the_champion_when_the_group_has_one_and_the_plan_is_seeded() -> None:
    people, groups = _plan(7)
    by_index = {p.index: p for p in people}
    for found in groups.values():
        for window in found:
            roles = {role_in_group(by_index[i].lead.seniority, by_index[i].lead.department) for i in window.members}
            contact = by_index[window.contact].lead
            if "champion" in roles:
                assert role_in_group(contact.seniority, contact.department) == "champion"
    assert set(JOINS) >= {"economic buyer", "champion", "technical evaluator", "practitioner", None}
    _, again = _plan(7)
    assert {i: [(w.start, w.members) for w in found] for i, found in groups.items()} == {
        i: [(w.start, w.members) for w in found] for i, found in again.items()
    }


def test_roles_needed_grow_with_the_company() -> None:
    assert [roles_needed(n) for n in (None, 10, 49, 50, 999, 1000, 50_000)] == [1, 1, 1, 2, 2, 3, 3]
