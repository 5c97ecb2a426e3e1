"""Accounts qualified as a whole: the model's `accounts` section loads (every problem says where),
and an account's fit, its people's engagement and its buying group's coverage are scored and
explained."""

from __future__ import annotations

import pytest
from tests.unit.test_model_loader import TINY, line_of, only_problem, problems_of, replace_once

from qualify.domain.accounts import Person, score_account
from qualify.domain.engagement import DAY, NO_DECAY, EngagementState
from qualify.domain.model_loader import load_default_model, load_model

ACCOUNTS = """\
accounts:
  fit:
    grades: {A: 60, B: 40, C: 20}
    rules:
      - name: software
        when: {field: account.industry, equals: software}
        points: 40
      - name: mid-size
        when: {field: account.employees, range: [200, 5000]}
        points: 30
      - name: big spender
        when: [{field: account.revenue, range: {min: 1000000}}, {field: account.attributes.tier, equals: gold}]
        points: 50
  engagement:
    per_person_cap: 40
  buying_group:
    within_days: 30
    min_engagement: 5
    roles:
      - name: economic buyer
        when: {field: seniority, in: [c_level, vp]}
      - name: champion
        when: [{field: department, equals: marketing}, {field: seniority, in: [director, manager]}]
      - name: IT
        when: {field: department, in: [it, engineering]}
"""
MODEL = TINY + ACCOUNTS
NOW = 1_780_000_000.0


def person(n: int, engagement: float, days_ago: float | None, **values: object) -> Person:
    """A person whose engagement stays at `engagement` (no decay), last active `days_ago`."""
    last = None if days_ago is None else NOW - days_ago * DAY
    return Person(n, f"p{n}@acme.com", dict(values), EngagementState({NO_DECAY: [engagement, last or NOW]}), last)


def test_the_accounts_section_loads_and_is_optional() -> None:
    spec = load_model(MODEL).accounts
    assert spec is not None
    assert [r.name for r in spec.rules] == ["software", "mid-size", "big spender"]
    assert spec.grades == {"A": 60, "B": 40, "C": 20} and spec.person_cap == 40
    assert [r.name for r in spec.roles] == ["economic buyer", "champion", "IT"]
    assert spec.within_days == 30 and spec.min_engagement == 5
    assert load_model(TINY).accounts is None
    # A section of fit alone: every person's engagement counts whole, no buying group.
    bare = load_model(
        TINY
        + "accounts:\n  fit:\n    rules:\n      - {name: any, when: {field: account.domain, exists: true}, points: 10}\n"
    )
    assert bare.accounts is not None and bare.accounts.person_cap is None and bare.accounts.roles == ()
    assert bare.accounts.within_days == 90 and bare.accounts.min_engagement == 0
    assert load_default_model().accounts is not None


@pytest.mark.parametrize(
    ("old", "new", "path", "says"),
    [
        ("field: account.industry, equals: software", "field: title, equals: software", "accounts.fit.rules[0].when.field",
         "tests the account's fields"),
        ("field: seniority, in: [c_level, vp]", "field: account.country, in: [US]",
         "accounts.buying_group.roles[0].when.field", "the person's fields"),
        ("{field: department, in: [it, engineering]}", "[{field: department, in: [it]}, {field: account.country, in: [US]}]",
         "accounts.buying_group.roles[2].when[1].field", "the person's fields"),
        ("per_person_cap: 40", "per_person_cap: [40]", "accounts.engagement.per_person_cap", "must be a number"),
        ("  engagement:\n    per_person_cap: 40", "  engagement: 0", "accounts.engagement", "must be a mapping"),
        ("per_person_cap: 40", "per_person_cap: 0", "accounts.engagement.per_person_cap", "must be >"),
        ("within_days: 30", "within_days: soon", "accounts.buying_group.within_days", "must be a number"),
        ("- name: IT", "- name: champion", "accounts.buying_group.roles[2].name", "used twice"),
        ("grades: {A: 60, B: 40, C: 20}", "grades: {A: 40, B: 60, C: 20}", "accounts.fit.grades", "must fall"),
        ("  buying_group:", "  buying_groups:", "accounts.buying_groups", "unknown key"),
    ],
)  # fmt: skip
def test_every_problem_of_the_section_says_where(old: str, new: str, path: str, says: str) -> None:
    text = replace_once(MODEL, old, new)
    problem = only_problem(text)
    assert problem.path == path and says in problem.message, str(problem)
    assert problem.line == line_of(text, new, text.count(new))


def test_a_section_without_fit_rules_is_refused() -> None:
    problems = problems_of(TINY + "accounts:\n  engagement: {per_person_cap: 10}\n")
    assert [p.path for p in problems] == ["accounts"] and "fit" in problems[0].message


def test_fit_adds_up_held_within_bounds_and_graded() -> None:
    spec = load_model(MODEL).accounts
    assert spec is not None
    values = {
        "account.industry": "software", "account.employees": 800, "account.revenue": 2_000_000.0,
        "account.attributes.tier": "gold",
    }  # fmt: skip
    score = score_account(spec, values, [], NOW)
    assert score.fit == 100 and score.grade == "A"
    assert [c.rule for c in score.fit_contributions] == ["software", "mid-size", "big spender", "(bounds)"]
    assert sum(c.points for c in score.fit_contributions) == pytest.approx(100)
    small = score_account(spec, {"account.industry": "retail", "account.employees": 300}, [], NOW)
    assert small.fit == 30 and small.grade == "C" and [c.rule for c in small.fit_contributions] == ["mid-size"]


def test_engagement_rolls_up_each_person_held_at_the_cap() -> None:
    """One hyperactive person cannot carry the account: they count up to the cap."""
    spec = load_model(MODEL).accounts
    assert spec is not None
    people = [person(1, 250.0, 1), person(2, 12.5, 2), person(3, 0.0, None)]
    score = score_account(spec, {}, people, NOW)
    assert score.engagement == pytest.approx(52.5)
    assert [(c.rule, c.points) for c in score.engagement_contributions] == [("p1@acme.com", 40), ("p2@acme.com", 12.5)]
    assert "held by the cap of 40" in score.engagement_contributions[0].text
    assert "cap" not in score.engagement_contributions[1].text


def test_coverage_counts_roles_filled_by_people_engaged_lately() -> None:
    spec = load_model(MODEL).accounts
    assert spec is not None
    people = [
        person(1, 30.0, 3, seniority="vp", department="finance"),  # economic buyer, engaged
        person(2, 8.0, 45, seniority="manager", department="marketing"),  # champion, but not within 30 days
        person(3, 2.0, 1, seniority="individual", department="it"),  # IT, but below 5 points
        person(4, 9.0, 2, seniority="director", department="engineering"),  # IT, engaged
    ]
    score = score_account(spec, {}, people, NOW)
    assert score.covered == ("economic buyer", "IT")
    assert score.coverage == "2 of 3 roles: economic buyer, IT"
    roles = {r.role: r for r in score.roles}
    assert roles["champion"].people == () and roles["champion"].candidates == ("p2@acme.com",)
    assert roles["IT"].people == ("p4@acme.com",) and roles["IT"].candidates == ("p3@acme.com",)
    # The engagement a role needs is judged right after the person's latest activity: 10 points
    # then, with a half-life of 2 days, are below 5 twenty days later, and still count.
    decayed = Person(
        5, "p5@acme.com", {"seniority": "vp"}, EngagementState({"2.0": [10.0, NOW - 20 * DAY]}), NOW - 20 * DAY
    )
    assert decayed.engagement.value_at(NOW) < 5
    assert score_account(spec, {}, [decayed], NOW).covered == ("economic buyer",)
    assert score_account(load_model(TINY + ACCOUNTS.split("  engagement:")[0]).accounts, {}, people, NOW).coverage == (  # type: ignore[arg-type]
        "no buying group defined"
    )
