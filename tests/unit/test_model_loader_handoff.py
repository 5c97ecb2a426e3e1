"""The model's `handoff` section: routing rules, teams and the SLA load, and every problem says where."""

from __future__ import annotations

from datetime import time

import pytest
from tests.unit.test_model_loader import TINY, line_of, only_problem, problems_of, replace_once

from qualify.domain.model_loader import load_default_model, load_model
from qualify.domain.scoring_model import BusinessHours, Rep, SlaSpec, Team

HANDOFF = """\
handoff:
  account_owner_first: true
  teams:
    emea:
      - {name: ann, capacity_per_week: 5}
      - bob
    americas:
      - cy
  rules:
    - name: strategic
      when: {field: account.employees, range: {min: 5000}}
      owner: dee
    - name: europe
      when: {field: account.country, in: [DE, FR, "NO"]}
      team: emea
  default_team: americas
  sla:
    hours: 24
    business_hours:
      days: [mon, tue, wed, thu, fri]
      start: "09:00"
      end: "17:00"
      timezone: Europe/Berlin
"""
MODEL = TINY + HANDOFF


def test_the_handoff_section_loads_into_its_spec() -> None:
    spec = load_model(MODEL).handoff
    assert spec is not None
    assert spec.teams == (Team("emea", (Rep("ann", 5), Rep("bob"))), Team("americas", (Rep("cy"),)))
    assert [(r.name, r.team, r.owner) for r in spec.rules] == [("strategic", None, "dee"), ("europe", "emea", None)]
    assert spec.rules[1].conditions[0].value == ("DE", "FR", "NO")
    assert spec.account_owner_first and spec.default_team == "americas"
    assert spec.sla == SlaSpec(24.0, BusinessHours(frozenset({1, 2, 3, 4, 5}), time(9), time(17), "Europe/Berlin"))
    assert spec.team_of("bob") == spec.teams[0] and spec.team_of("dee") is None
    assert spec.knows_owner("dee") and spec.knows_owner("cy") and not spec.knows_owner("zed")


def test_without_a_handoff_section_there_is_none_and_the_version_tells_them_apart() -> None:
    assert load_model(TINY).handoff is None
    assert load_model(TINY + "handoff: null\n").handoff is None
    assert load_model(MODEL).version != load_model(TINY).version
    assert load_model(replace_once(MODEL, "hours: 24", "hours: 8")).version != load_model(MODEL).version


def test_an_sla_alone_and_24_00_as_the_end_of_the_day() -> None:
    text = (
        TINY
        + 'handoff:\n  sla:\n    hours: 4\n    business_hours: {days: [sat, sun], start: "00:00", end: "24:00", timezone: UTC}\n'
    )
    spec = load_model(text).handoff
    assert spec is not None and spec.teams == () and spec.rules == ()
    assert spec.sla == SlaSpec(4.0, BusinessHours(frozenset({6, 7}), time(0), None, "UTC"))
    around_the_clock = load_model(TINY + "handoff:\n  sla: {hours: 0.5}\n").handoff
    assert around_the_clock is not None and around_the_clock.sla == SlaSpec(0.5, None)


def test_the_default_model_routes_by_region_and_gives_24_business_hours() -> None:
    spec = load_default_model().handoff
    assert spec is not None and spec.account_owner_first
    assert [t.name for t in spec.teams] == ["north-america", "emea", "rest-of-world"]
    assert spec.default_team == "rest-of-world"
    assert spec.sla == SlaSpec(24.0, BusinessHours(frozenset({1, 2, 3, 4, 5}), time(9), time(17), "UTC"))
    europe = next(r for r in spec.rules if r.name == "EMEA by account country")
    assert "NO" in europe.conditions[0].value  # quoted: YAML 1.1 reads a bare NO as false


@pytest.mark.parametrize(
    ("old", "new", "path", "needle", "message"),
    [
        ("  default_team:", "  default_teem:", "handoff.default_teem", "default_teem", "did you mean 'default_team'?"),
        ("      team: emea", "      team: emia", "handoff.rules[1].team", "team: emia", "unknown team 'emia' (did you mean 'emea'?); teams: americas, emea"),
        ("  default_team: americas", "  default_team: asia", "handoff.default_team", "default_team: asia", "unknown team 'asia'"),
        ("      owner: dee\n", "      owner: dee\n      team: emea\n", "handoff.rules[0]", "- name: strategic", "exactly one of team (round robin) or owner"),
        ("      owner: dee\n", "", "handoff.rules[0]", "- name: strategic", "exactly one of team (round robin) or owner"),
        ("    americas:\n      - cy", "    americas:\n      - bob  # again", "handoff.teams.americas[0]", "bob  # again", "rep 'bob' is already in team 'emea'"),
        ("capacity_per_week: 5", "capacity_per_week: 0", "handoff.teams.emea[0].capacity_per_week", "capacity_per_week: 0", "whole number ≥ 1, got 0"),
        ("capacity_per_week: 5", "capacity_per_week: 2.5", "handoff.teams.emea[0].capacity_per_week", "capacity_per_week: 2.5", "whole number ≥ 1, got 2.5"),
        ("capacity_per_week: 5", "capacity_per_wek: 5", "handoff.teams.emea[0].capacity_per_wek", "capacity_per_wek", "did you mean 'capacity_per_week'?"),
        ("    americas:\n      - cy\n", "    americas: []\n", "handoff.teams.americas", "americas: []", "needs at least one rep"),
        ("  account_owner_first: true", "  account_owner_first: sometimes", "handoff.account_owner_first", "account_owner_first", "must be true or false"),
        ("    - name: europe", "    - name: strategic  # again", "handoff.rules[1].name", "strategic  # again", "rule name 'strategic' is used twice"),
        ("    - name: europe", "    - name: account owner", "handoff.rules[1].name", "- name: account owner", "what routing itself records"),
        ("{field: account.country, in: [DE", "{field: account.land, in: [DE", "handoff.rules[1].when.field", "account.land", "unknown field 'account.land'"),
        ("    hours: 24", "    hours: 0", "handoff.sla.hours", "hours: 0", "must be > 0"),
        ("    hours: 24", "    hours: 9000", "handoff.sla.hours", "hours: 9000", "at most 8760 (a year)"),
        ('      end: "17:00"', "      end: 17:00", "handoff.sla.business_hours.end", "end: 17:00", 'unquoted 17:00 reads as the number 1020; write "17:00"'),
        ('      start: "09:00"', '      start: "9am"', "handoff.sla.business_hours.start", "9am", "must be a time of day \"HH:MM\""),
        ('      end: "17:00"', '      end: "25:00"', "handoff.sla.business_hours.end", "25:00", "from \"00:00\" to \"24:00\""),
        ('      end: "17:00"', '      end: "08:00"', "handoff.sla.business_hours.end", '"08:00"', "must be after start"),
        ('      start: "09:00"', '      start: "24:00"', "handoff.sla.business_hours.start", '"24:00"', "may only end the day"),
        ("timezone: Europe/Berlin", "timezone: Europe/Berlyn", "handoff.sla.business_hours.timezone", "Berlyn", "unknown time zone 'Europe/Berlyn'"),
        ("timezone: Europe/Berlin", "timezone: ../etc/passwd", "handoff.sla.business_hours.timezone", "passwd", "unknown time zone"),
        ("days: [mon, tue, wed, thu, fri]", "days: [mon, tue, wed, thu, fry]", "handoff.sla.business_hours.days[4]", "fry", "must be one of mon, tue, wed, thu, fri, sat, sun, got 'fry'"),
        ("days: [mon, tue, wed, thu, fri]", "days: [mon, tue, mon]", "handoff.sla.business_hours.days[2]", "days: [mon, tue, mon]", "mon is listed twice"),
        ("days: [mon, tue, wed, thu, fri]", "days: []", "handoff.sla.business_hours.days", "days: []", "needs at least one day"),
        ("      timezone: Europe/Berlin\n", "", "handoff.sla.business_hours", "business_hours:", "missing required key 'timezone'"),
    ],
)  # fmt: skip
def test_a_handoff_problem_names_its_line_and_field(old: str, new: str, path: str, needle: str, message: str) -> None:
    text = replace_once(MODEL, old, new)
    problem = only_problem(text)
    assert problem.path == path
    assert problem.line == line_of(text, needle)
    assert message in problem.message


def test_an_empty_or_misshapen_handoff_is_refused() -> None:
    assert "is empty" in only_problem(TINY + "handoff: {}\n").message
    assert only_problem(TINY + "handoff: [a]\n").message == "must be a mapping, got a list"
    problem = only_problem(TINY + "handoff:\n  teams: [ann, bob]\n")
    assert (problem.path, problem.line) == (
        "handoff.teams",
        line_of(TINY + "handoff:\n  teams: [ann, bob]\n", "teams:"),
    )
    assert "must map team names to lists of reps" in problem.message


def test_every_handoff_problem_is_reported_at_once() -> None:
    text = replace_once(replace_once(MODEL, "team: emea", "team: nowhere"), "hours: 24", "hours: -1")
    assert [p.path for p in problems_of(text)] == ["handoff.rules[1].team", "handoff.sla.hours"]
