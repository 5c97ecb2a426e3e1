"""Conditions on lead, account and event values: every operator, as CRM data really looks."""

from __future__ import annotations

from typing import Any

import pytest

from qualify.domain.conditions import Condition, all_match, compile_regex

MISSING: tuple[Any, ...] = (None, "", "   ")


def regex(pattern: str, field: str = "title") -> Condition:
    # As the loader compiles them: RE2, case-insensitive.
    return Condition(field, "regex", pattern, compile_regex(pattern))


@pytest.mark.parametrize(
    ("actual", "expected", "result"),
    [
        ("Director", "director", True),
        ("  DIRECTOR  ", "director", True),
        ("director", "  Director ", True),
        ("Straße", "STRASSE", True),  # case folding, not just lower-casing
        ("vp", "director", False),
        ("1,000", 1000, True),
        (" 250 ", 250, True),
        (250, 250.0, True),
        ("250.5", 250, False),
        ("lots", 250, False),
        ("yes", True, True),
        ("TRUE", True, True),
        ("0", False, True),
        ("no", True, False),
        (True, "true", True),
        (1, True, True),
        ("maybe", True, False),
    ],
)
def test_equals(actual: Any, expected: Any, result: bool) -> None:
    assert Condition("f", "equals", expected).test(actual) is result
    assert Condition("f", "not_equals", expected).test(actual) is (not result)


@pytest.mark.parametrize("actual", MISSING)
def test_missing_values_match_only_negative_operators(actual: Any) -> None:
    assert Condition("f", "equals", "x").test(actual) is False
    assert Condition("f", "in", ("x", "y")).test(actual) is False
    assert regex(".*").test(actual) is False
    assert Condition("f", "range", (None, 100.0)).test(actual) is False
    assert Condition("f", "not_equals", "x").test(actual) is True
    assert Condition("f", "not_in", ("x", "y")).test(actual) is True


@pytest.mark.parametrize(
    ("actual", "result"),
    [("VP", True), (" c_level ", True), ("Director", False), (500, False)],
)
def test_in_and_not_in(actual: Any, result: bool) -> None:
    values = ("vp", "C_Level", 200)
    assert Condition("seniority", "in", values).test(actual) is result
    assert Condition("seniority", "not_in", values).test(actual) is (not result)


def test_in_compares_numeric_strings_as_numbers() -> None:
    assert Condition("account.employees", "in", (200, 500)).test("500") is True
    assert Condition("account.employees", "in", (200, 500)).test("1,000") is False


def test_equals_with_a_quoted_number_in_the_model_matches_a_number() -> None:
    assert Condition("account.employees", "equals", "200").test(200) is True


@pytest.mark.parametrize(
    ("title", "result"),
    [
        ("Marketing Ops Specialist", True),
        ("SENIOR ANALYST", True),
        ("Chief Executive", False),
        ("", False),
        (None, False),
    ],
)
def test_regex_searches_anywhere_ignoring_case(title: str | None, result: bool) -> None:
    assert regex("(specialist|analyst)").test(title) is result


def test_regex_tests_the_text_of_non_text_values() -> None:
    assert regex(r"^\d{3}$", "account.employees").test(250) is True


@pytest.mark.parametrize(
    ("actual", "bounds", "result"),
    [
        (200, (200.0, 10000.0), True),
        (10000, (200.0, 10000.0), True),
        (199, (200.0, 10000.0), False),
        (10001, (200.0, 10000.0), False),
        ("5,000", (200.0, 10000.0), True),
        (" 350 ", (200.0, 10000.0), True),
        ("12.5", (10.0, 20.0), True),
        ("a lot", (200.0, 10000.0), False),
        (True, (0.0, 10.0), False),  # a yes/no is not a number
        (1_000_000, (50.0, None), True),
        (49.99, (50.0, None), False),
        (-5, (None, 0.0), True),
        (1, (None, 0.0), False),
    ],
)
def test_range_is_inclusive_and_reads_numeric_strings(
    actual: Any, bounds: tuple[float | None, float | None], result: bool
) -> None:
    assert Condition("account.employees", "range", bounds).test(actual) is result


@pytest.mark.parametrize(
    ("actual", "present"),
    [("x", True), (0, True), (False, True), ("  ", False), ("", False), (None, False)],
)
def test_exists(actual: Any, present: bool) -> None:
    assert Condition("f", "exists", True).test(actual) is present
    assert Condition("f", "exists", False).test(actual) is (not present)


def test_all_match_needs_every_condition_and_reads_missing_fields_as_missing() -> None:
    conditions = (
        Condition("seniority", "in", ("vp", "c_level")),
        Condition("account.employees", "range", (200.0, None)),
    )
    assert all_match(conditions, {"seniority": "VP", "account.employees": "1,200"}) is True
    assert all_match(conditions, {"seniority": "VP", "account.employees": 20}) is False
    assert all_match(conditions, {"seniority": "VP"}) is False
    assert all_match((Condition("country", "not_in", ("KP", "IR")),), {}) is True
    assert all_match((), {}) is True


@pytest.mark.parametrize(
    ("condition", "text"),
    [
        (Condition("seniority", "equals", "director"), "seniority = director"),
        (Condition("country", "not_equals", "US"), "country ≠ US"),
        (Condition("seniority", "in", ("vp", "c_level")), "seniority in [vp, c_level]"),
        (Condition("country", "not_in", ("a", "b", "c", "d", "e")), "country not in [a, b, c, d…]"),
        (Condition("account.employees", "range", (200.0, 10000.0)), "account.employees in 200–10000"),
        (Condition("account.employees", "range", (50.0, None)), "account.employees ≥ 50"),
        (Condition("account.employees", "range", (None, 10.0)), "account.employees ≤ 10"),
        (Condition("phone", "exists", True), "phone is set"),
        (Condition("phone", "exists", False), "phone is empty"),
        (regex("analyst"), "title ~ analyst"),
    ],
)
def test_conditions_describe_themselves_for_explanations(condition: Condition, text: str) -> None:
    assert condition.describe() == text


def test_not_regex_holds_for_values_without_a_match_and_for_missing_ones() -> None:

    from qualify.domain.conditions import Condition

    condition = Condition("url", "not_regex", "/(pricing|careers)", compile_regex("/(pricing|careers)"))
    assert condition.test("/blog/post") and condition.test(None) and condition.test("  ")
    assert not condition.test("/PRICING") and not condition.test("/careers/engineer")
    assert condition.describe() == "url !~ /(pricing|careers)"


@pytest.mark.parametrize(
    ("text", "reads"),
    [
        ("12,500", True),
        (" -3.5e2 ", True),
        (".5", True),
        ("n/a", False),
        ("inf", False),
        ("nan", False),
        ("1_000", False),
        ("١٢", False),  # Arabic-Indic digits: Python's float() reads them, SQL engines do not
        ("0x10", False),
    ],
)
def test_a_text_reads_as_a_number_only_in_plain_decimal_notation(text: str, reads: bool) -> None:
    """The same notation as the batch engines read (analytics/conditions.py), so both sides agree."""
    assert Condition("attributes.budget", "range", (-1e9, 1e9)).test(text) is reads


def test_a_regex_gives_the_same_answer_remembered_or_not() -> None:
    condition = regex("^(senior|lead) ")
    texts = ["Senior Analyst", "Lead Engineer", "Analyst", "x" * 300 + "senior ", "senior " + "x" * 300]
    first = [condition.test(t) for t in texts]
    assert first == [True, True, False, False, True]
    assert [condition.test(t) for t in texts] == first  # the short ones now from memory, the long ones searched


def test_a_pattern_pickles_as_its_text_and_matches_the_same_where_it_is_loaded() -> None:
    """A backtest's worker processes receive the models pickled: RE2's compiled pattern is made
    again from its text, and a stored model's pattern from before RE2 (Python's) travels as it is."""
    import pickle
    import re

    from qualify.domain.conditions import Regex

    for pattern in (compile_regex("^/pricing(/|$)"), Regex(re.compile(r"^/(?!careers)pricing", re.IGNORECASE))):
        copy = pickle.loads(pickle.dumps(pattern))
        assert copy == pattern and type(copy.pattern) is type(pattern.pattern)
        for text in ("/pricing", "/PRICING/plans", "/careers", "/pricing-old"):
            assert copy.found_in(text) == pattern.found_in(text)
        assert copy.found_in("/Pricing") and not copy.found_in("/careers")
