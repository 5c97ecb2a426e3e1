"""Loading a scoring model: the default loads, versions are content hashes, and every problem says where."""

from __future__ import annotations

import pytest

from qualify.domain.errors import ModelError, ModelProblem
from qualify.domain.model_loader import default_model_text, load_default_model, load_model

TINY = """\
name: tiny
description: a small model for tests
fit:
  grades: {A: 70, B: 45, C: 25}
  rules:
    - name: served market
      when: {field: account.country, in: [US, GB]}
      points: 10
  personas:
    - name: buyer
      rules:
        - name: senior
          when: {field: seniority, in: [vp, c_level]}
          points: 40
        - name: big company
          when:
            - {field: account.employees, range: {min: 200}}
            - {field: account.industry, not_equals: education}
          points: 35
engagement:
  half_life_days: 30
  rules:
    - name: demo
      event: demo_request
      points: 30
    - name: pricing
      event: page_view
      where: {url: {regex: /pricing}}
      points: 5
      half_life_days: 7
disqualify:
  - name: student
    when: {field: title, regex: student}
    reason: students do not buy
policy:
  mql:
    thresholds: {A: 25, B: 40}
    requalify_margin: 5
  fast_track:
    - event: demo_request
      to: mql
  decay_out:
    floor: 10
    min_days_in_mql: 14
"""


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the `nth` line containing `needle`."""
    hits = [number for number, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} appears {len(hits)} time(s)"
    return hits[nth - 1]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not unique in the model"
    return text.replace(old, new)


def problems_of(text: str) -> list[ModelProblem]:
    with pytest.raises(ModelError) as caught:
        load_model(text, "tiny.yaml")
    return caught.value.problems


def only_problem(text: str) -> ModelProblem:
    problems = problems_of(text)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


# --- what loads --------------------------------------------------------------------------------


def test_default_model_loads_with_its_documented_content() -> None:
    model = load_default_model()
    assert model.name == "default"
    assert [p.name for p in model.fit.personas] == ["economic buyer", "technical evaluator", "practitioner"]
    assert model.fit.grades == {"A": 70.0, "B": 45.0, "C": 25.0}
    assert model.default_half_life_days == 30.0
    assert model.policy.mql_thresholds == {"A": 25.0, "B": 40.0, "C": 70.0}
    assert "D" not in model.policy.mql_thresholds
    assert model.policy.requalify_margin == 10.0
    assert model.policy.decay_out_floor == 10.0
    assert model.policy.min_days_in_mql == 14.0
    assert [(f.events, f.to) for f in model.policy.fast_track] == [
        (("demo_request",), "mql"),
        (("quote_request",), "sql"),
    ]
    assert {r.name for r in model.disqualify} == {"student", "competitor", "country not served"}


def test_default_model_rules_inherit_the_default_half_life_unless_they_say() -> None:
    rules = {r.name: r for r in load_default_model().engagement_rules}
    assert rules["content download"].half_life_days == 30.0
    assert rules["email open"].half_life_days == 14.0
    assert rules["unsubscribed"].half_life_days is None  # `null`: never decays
    assert rules["unsubscribed"].cap == 20.0  # `once` is a cap of one award
    assert rules["careers page"].cap == 10.0
    assert rules["email open"].cap_per_day == 3.0


def test_tiny_model_loads() -> None:
    model = load_model(TINY, "tiny.yaml")
    assert model.name == "tiny"
    assert model.source == "tiny.yaml"
    assert [r.name for r in model.fit.rules] == ["served market"]
    big = model.fit.personas[0].rules[1]
    assert len(big.conditions) == 2
    assert model.half_lives == (30.0, 7.0)
    pricing = model.engagement_rules[1]
    assert pricing.matches("page_view", {"url": "https://x.io/PRICING"})
    assert not pricing.matches("page_view", {"url": "/blog"})
    assert not pricing.matches("email_open", {"url": "/pricing"})


def test_the_default_half_life_has_an_accumulator_even_when_every_rule_gives_its_own() -> None:
    text = replace_once(TINY, "      points: 30\n", "      points: 30\n      half_life_days: 60\n")
    model = load_model(text)
    assert [r.half_life_days for r in model.engagement_rules] == [60.0, 7.0]
    assert model.half_lives == (60.0, 7.0, 30.0)  # 30: the default, which a score_bonus decays with


def test_a_bare_property_value_means_equals() -> None:
    text = replace_once(TINY, "where: {url: {regex: /pricing}}", "where: {url: /pricing}")
    rule = load_model(text).engagement_rules[1]
    assert rule.matches("page_view", {"url": " /Pricing "})
    assert not rule.matches("page_view", {"url": "/pricing/enterprise"})


# --- version -----------------------------------------------------------------------------------


def test_version_is_a_short_content_hash() -> None:
    version = load_model(TINY).version
    assert len(version) == 12
    int(version, 16)
    assert load_model(TINY).version == version


def test_version_ignores_comments_and_layout() -> None:
    relaid = "# a comment at the top\n" + TINY.replace(
        "grades: {A: 70, B: 45, C: 25}", "grades:   # bands\n    A: 70\n    B: 45\n    C: 25"
    ).replace(
        "  decay_out:\n    floor: 10\n    min_days_in_mql: 14\n", "  decay_out: {min_days_in_mql: 14, floor: 10}\n"
    ).replace("name: tiny\n", "name:    'tiny'     # the name\n\n\n")
    assert relaid != TINY
    assert load_model(relaid).version == load_model(TINY).version


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("points: 30\n", "points: 31\n"),
        ("name: tiny", "name: tinier"),
        ("regex: /pricing", "regex: /prices"),
        ("requalify_margin: 5", "requalify_margin: 6"),
        ("description: a small model for tests", "description: a small model for tests!"),
    ],
)
def test_version_changes_with_any_value(old: str, new: str) -> None:
    assert load_model(replace_once(TINY, old, new)).version != load_model(TINY).version


def test_default_model_text_is_what_load_default_model_loads() -> None:
    assert load_model(default_model_text()).version == load_default_model().version


# --- problems, with line and field -------------------------------------------------------------


def test_unknown_key_suggests_the_closest_one() -> None:
    text = replace_once(TINY, "      half_life_days: 7\n", "      half_life_day: 7\n")
    problem = only_problem(text)
    assert problem.path == "engagement.rules[1].half_life_day"
    assert problem.line == line_of(text, "half_life_day: 7")
    assert "unknown key (did you mean 'half_life_days'?)" in problem.message


def test_unknown_top_level_key_suggests_the_closest_one() -> None:
    text = replace_once(TINY, "description:", "descripton:")
    problem = only_problem(text)
    assert problem.path == "descripton"
    assert problem.line == 2
    assert "did you mean 'description'?" in problem.message


def test_unknown_key_without_a_close_match_lists_the_expected_keys() -> None:
    text = replace_once(TINY, "    requalify_margin: 5\n", "    zzz: 5\n")
    problem = only_problem(text)
    assert problem.path == "policy.mql.zzz"
    assert "did you mean" not in problem.message
    assert (
        "expected one of: combine, probability, requalify_after_days, requalify_margin, thresholds" in problem.message
    )


@pytest.mark.parametrize(
    ("old", "new", "path", "needle", "message"),
    [
        (
            "points: 30\n",
            "points: lots\n",
            "engagement.rules[0].points",
            "points: lots",
            "must be a number, got a text",
        ),
        ("points: 40\n", "points: true\n", "fit.personas[0].rules[0].points", "points: true", "got true/false"),
        ("half_life_days: 7", "half_life_days: 0", "engagement.rules[1].half_life_days", "half_life_days: 0", "> 0"),
        ("requalify_margin: 5", "requalify_margin: -1", "policy.mql.requalify_margin", "margin: -1", "≥ 0"),
        ("to: mql", "to: opportunity", "policy.fast_track[0].to", "to: opportunity", "must be mql or sql"),
        (
            "      event: demo_request",
            "      event: Demo Request",
            "engagement.rules[0].event",
            "Demo Request",
            "lower_snake_case",
        ),
        ("name: tiny", "name: [tiny]", "name", "name: [tiny]", "must be a non-empty text"),
        ("in: [US, GB]", "in: US", "fit.rules[0].when.in", "in: US", "must be a non-empty list"),
        ("range: {min: 200}", "range: 200", "fit.personas[0].rules[1].when[0].range", "range: 200", "[min, max]"),
    ],
)
def test_wrong_types_are_reported_where_they_are(old: str, new: str, path: str, needle: str, message: str) -> None:
    text = replace_once(TINY, old, new)
    problems = problems_of(text)
    matching = [p for p in problems if p.path == path]
    assert matching, [str(p) for p in problems]
    assert message in matching[0].message
    assert matching[0].line == line_of(text, needle)


def test_a_list_given_as_a_number_is_reported() -> None:
    text = replace_once(TINY, "disqualify:\n  - name: student", "disqualify: 5\nx:\n  - name: student")
    problems = {p.path: p for p in problems_of(text)}
    assert problems["disqualify"].message.startswith("must be a list")
    assert problems["disqualify"].line == line_of(text, "disqualify: 5")


def test_bad_regex_is_reported_at_the_regex() -> None:
    text = replace_once(TINY, "regex: student", 'regex: "(student"')
    problem = only_problem(text)
    assert problem.path == "disqualify[0].when.regex"
    assert problem.line == line_of(text, "(student")
    assert "not a regular expression this product runs" in problem.message


def test_bad_regex_in_an_event_property_is_reported_at_the_property() -> None:
    text = replace_once(TINY, "regex: /pricing", 'regex: "/pricing["')
    problem = only_problem(text)
    assert problem.path == "engagement.rules[1].where.url.regex"
    assert problem.line == line_of(text, "/pricing[")


@pytest.mark.parametrize("event", ["score_bonus", "[page_view, score_bonus]"])
def test_an_engagement_rule_for_the_reserved_bonus_event_is_refused(event: str) -> None:
    text = replace_once(TINY, "event: page_view", f"event: {event}")
    problem = only_problem(text)
    assert problem.path == "engagement.rules[1].event"
    assert problem.line == line_of(text, f"event: {event}")
    assert "score_bonus is reserved" in problem.message
    assert "engagement.half_life_days" in problem.message


def test_an_engagement_rule_may_not_take_the_name_of_the_bonus_award() -> None:
    text = replace_once(TINY, "name: pricing", "name: bonus")
    problem = only_problem(text)
    assert problem.path == "engagement.rules[1].name"
    assert problem.line == line_of(text, "name: bonus")
    assert "'bonus' is what a score_bonus event's award is called" in problem.message


def test_the_bonus_event_may_still_fast_track_and_other_names_are_free() -> None:
    text = replace_once(TINY, "- event: demo_request\n      to: mql", "- event: score_bonus\n      to: mql")
    text = replace_once(text, "name: pricing", "name: pricing bonus")
    model = load_model(text)
    assert model.policy.fast_track[0].events == ("score_bonus",)
    assert model.engagement_rules[1].name == "pricing bonus"


def test_unknown_field_is_reported_with_the_fields_one_can_use() -> None:
    text = replace_once(TINY, "field: seniority", "field: senority")
    problem = only_problem(text)
    assert problem.path == "fit.personas[0].rules[0].when.field"
    assert problem.line == line_of(text, "senority")
    assert "unknown field 'senority'" in problem.message
    assert "seniority" in problem.message
    assert "account.attributes.<name>" in problem.message


@pytest.mark.parametrize("field", ["attributes.budget", "account.attributes.tier", "account.industry", "is_free_mail"])
def test_known_fields_are_accepted(field: str) -> None:
    load_model(replace_once(TINY, "field: seniority", f"field: {field}"))


def test_condition_with_two_operators_is_refused() -> None:
    text = replace_once(TINY, "{field: seniority, in: [vp, c_level]}", "{field: seniority, in: [vp], equals: vp}")
    problem = only_problem(text)
    assert problem.path == "fit.personas[0].rules[0].when"
    assert "exactly one operator" in problem.message


@pytest.mark.parametrize(
    "grades",
    ["{A: 40, B: 45, C: 25}", "{A: 70, B: 45, C: 45}", "{A: 10, B: 20, C: 30}"],
)
def test_grade_bands_must_fall(grades: str) -> None:
    text = replace_once(TINY, "grades: {A: 70, B: 45, C: 25}", f"grades: {grades}")
    problem = only_problem(text)
    assert problem.path == "fit.grades"
    assert problem.line == line_of(text, "grades:")
    assert "A > B > C" in problem.message


def test_grade_bands_need_all_three_letters() -> None:
    problem = only_problem(replace_once(TINY, "grades: {A: 70, B: 45, C: 25}", "grades: {A: 70, B: 45}"))
    assert problem.path == "fit.grades"
    assert "missing required key 'C'" in problem.message


@pytest.mark.parametrize("floor", ["25", "30"])
def test_decay_floor_must_be_below_the_lowest_threshold(floor: str) -> None:
    text = replace_once(TINY, "floor: 10", f"floor: {floor}")
    problem = only_problem(text)
    assert problem.path == "policy.decay_out.floor"
    assert problem.line == line_of(text, "floor:")
    assert "lowest MQL threshold (25)" in problem.message


def test_decay_floor_just_below_the_lowest_threshold_is_fine() -> None:
    assert load_model(replace_once(TINY, "floor: 10", "floor: 24.9")).policy.decay_out_floor == 24.9


def test_a_model_where_no_grade_can_qualify_is_refused() -> None:
    problem = only_problem(replace_once(TINY, "thresholds: {A: 25, B: 40}", "thresholds: {}"))
    assert problem.path == "policy.mql.thresholds"
    assert "no grade can become MQL" in problem.message


def test_duplicate_fit_rule_names_are_reported_at_the_second() -> None:
    text = replace_once(TINY, "- name: big company", "- name: senior")
    problem = only_problem(text)
    assert problem.path == "fit.personas[0].rules[1].name"
    assert problem.line == line_of(text, "- name: senior", nth=2)
    assert "'senior' is used twice" in problem.message


def test_duplicate_engagement_rule_names_are_refused() -> None:
    problems = problems_of(replace_once(TINY, "- name: pricing", "- name: demo"))
    assert ["'demo' is used twice" in p.message for p in problems] == [True]


def test_duplicate_engagement_rule_names_are_reported_at_the_second() -> None:
    text = replace_once(TINY, "- name: pricing", "- name: demo")
    problem = only_problem(text)
    assert problem.path == "engagement.rules[1].name"
    assert problem.line == line_of(text, "- name: demo", nth=2)


def test_duplicate_disqualify_rule_names_are_refused() -> None:
    text = TINY.replace(
        "policy:\n",
        "  - name: student\n    when: {field: country, equals: KP}\n    reason: not served\npolicy:\n",
    )
    problem = only_problem(text)
    assert problem.path == "disqualify[1].name"
    assert problem.line == line_of(text, "- name: student", nth=2)


def test_duplicate_persona_names_are_reported() -> None:
    text = TINY.replace(
        "engagement:\n",
        "    - name: buyer\n      rules: []\nengagement:\n",
    )
    problem = only_problem(text)
    assert problem.path == "fit.personas[1].name"
    assert "persona name 'buyer' is used twice" in problem.message


def test_a_key_written_twice_is_reported_at_its_second_line() -> None:
    text = replace_once(TINY, "    requalify_margin: 5\n", "    requalify_margin: 5\n    requalify_margin: 6\n")
    problem = only_problem(text)
    assert problem.path == "policy.mql.requalify_margin"
    assert problem.line == line_of(text, "requalify_margin: 6")
    assert "appears twice" in problem.message


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("name: tiny\ndescription: a: b\n", 2, "mapping values are not allowed here"),
        ("name: tiny\nfit:\n\tpersonas: []\n", 3, "cannot start any token"),
        ("name: tiny\nfit: {grades: {A: 1}\npolicy: 2\n", 3, "expected ',' or '}'"),
    ],
)
def test_invalid_yaml_is_reported_with_its_line(text: str, line: int, message: str) -> None:
    problem = only_problem(text)
    assert problem.path == "(document)"
    assert problem.line == line
    assert problem.message.startswith("not valid YAML: ")
    assert message in problem.message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just text\n"])
def test_a_document_that_is_not_a_mapping_is_refused(text: str) -> None:
    problem = only_problem(text)
    assert problem.path == "(document)"
    assert "must be a mapping" in problem.message


def test_missing_sections_are_each_reported() -> None:
    problems = problems_of("name: tiny\n")
    messages = [p.message for p in problems]
    for key in ("fit", "engagement", "policy"):
        assert f"missing required key '{key}'" in messages


def test_several_problems_are_reported_at_once() -> None:
    text = replace_once(TINY, "description:", "descripton:")
    text = replace_once(text, "points: 30\n", "points: lots\n")
    text = replace_once(text, "regex: student", 'regex: "(student"')
    text = replace_once(text, "field: seniority", "field: senority")
    text = replace_once(text, "floor: 10", "floor: 30")
    with pytest.raises(ModelError) as caught:
        load_model(text, "tiny.yaml")
    error = caught.value
    by_path = {p.path: p for p in error.problems}
    assert set(by_path) == {
        "descripton",
        "engagement.rules[0].points",
        "disqualify[0].when.regex",
        "fit.personas[0].rules[0].when.field",
        "policy.decay_out.floor",
    }
    assert by_path["engagement.rules[0].points"].line == line_of(text, "points: lots")
    assert by_path["policy.decay_out.floor"].line == line_of(text, "floor: 30")
    rendered = str(error)
    assert rendered.startswith("tiny.yaml: 5 problem(s) in the scoring model")
    assert f"line {line_of(text, 'points: lots')}, engagement.rules[0].points: must be a number" in rendered


def test_an_empty_event_list_is_reported_alongside_other_problems() -> None:
    text = replace_once(TINY, "description:", "descripton:")
    text = replace_once(text, "event: demo_request\n      points: 30", "event: []\n      points: 30")
    paths = {p.path for p in problems_of(text)}
    assert paths == {"descripton", "engagement.rules[0].event"}


def test_an_empty_event_list_alone_is_reported() -> None:
    text = replace_once(TINY, "event: demo_request\n      points: 30", "event: []\n      points: 30")
    problem = only_problem(text)
    assert problem.path == "engagement.rules[0].event"
    assert "at least one event type" in problem.message


def test_once_and_cap_exclude_each_other() -> None:
    text = replace_once(TINY, "      points: 30\n", "      points: 30\n      once: true\n      cap: 60\n")
    problem = only_problem(text)
    assert problem.path == "engagement.rules[0].once"


def test_zero_points_is_refused() -> None:
    problem = only_problem(replace_once(TINY, "points: 30\n", "points: 0\n"))
    assert problem.path == "engagement.rules[0].points"
    assert "0 points does nothing" in problem.message


def test_problems_serialise_for_the_api() -> None:
    problem = only_problem(replace_once(TINY, "points: 30\n", "points: lots\n"))
    assert problem.as_dict() == {
        "line": line_of(TINY, "points: 30"),
        "field": "engagement.rules[0].points",
        "message": "must be a number, got a text",
    }


@pytest.mark.parametrize("pattern", ["^(?!.*pricing)", "(?<=x)y", "(a)\\\\1", "(?P<n>x)"])
def test_regexes_the_batch_engines_cannot_run_load_but_are_named(pattern: str) -> None:
    from qualify.domain.model_loader import batch_problems, default_model_text, load_default_model, load_model

    text = default_model_text().replace('not_regex: "/(pricing|careers|jobs)"', f"regex: '{pattern}'")
    # A model stored before patterns were RE2's keeps loading (with Python's engine for what RE2 refuses).
    [problem] = batch_problems(load_model(text, stored=True))
    assert problem.startswith("engagement rule page view: url regex") and "not_regex" in problem
    assert batch_problems(load_default_model()) == []


@pytest.mark.parametrize("pattern", ["^(?!.*pricing)", "(?<=x)y"])
def test_a_new_model_s_regex_must_be_one_re2_runs(pattern: str) -> None:
    from qualify.domain.model_loader import default_model_text, load_model

    text = default_model_text().replace('not_regex: "/(pricing|careers|jobs)"', f"regex: '{pattern}'")
    with pytest.raises(ModelError) as caught:
        load_model(text)
    [problem] = caught.value.problems
    assert problem.path == "engagement.rules[3].where.url.regex" and problem.line is not None
    assert "invalid perl operator" in problem.message and "no look-around" in problem.message
