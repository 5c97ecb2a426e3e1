"""Conditions of a scoring model as Ibis expressions, with the semantics of domain/conditions.py.

Texts are trimmed of spaces (SQL TRIM) where Python strips every kind of white space: a value
that ends in a tab or a newline compares differently here.

A value is given as text (as the Parquet export writes attributes and properties: numbers as
written, booleans as true/false); numbers are read from that text. What the Python evaluator
does with typed values, these expressions do with their text, so that both agree on the values
a CRM sends. Known gap: a number written two ways ("200" vs "200.0") compares as a number here
and as text in Python when neither side of the model is a number.
"""

from __future__ import annotations

from typing import Any

import ibis
import ibis.expr.types as ir

from qualify.domain.conditions import NEGATIVE, NUMBER_PATTERN, Condition

TRUE_TEXTS = ("true", "yes", "y", "1")
FALSE_TEXTS = ("false", "no", "n", "0")


@ibis.udf.scalar.builtin(name="trim")  # type: ignore[untyped-decorator]
def _trim(text: str) -> str:  # type: ignore[empty-body]
    """SQL's one-argument TRIM, the same on every engine. (Ibis's own strip() lists the white
    space characters in a literal that Spark reads differently: it trims the letter v.)"""


def _folded(text: ir.StringValue) -> ir.StringValue:
    return _trim(text).lower()


def _number(text: ir.StringValue) -> ir.FloatingValue:
    """The text as a number where it reads as one (the domain's NUMBER_PATTERN), else null. The
    pattern guards the cast: PostgreSQL has no TRY_CAST, and Ibis compiles it to a CAST that
    fails on the first text that is not a number."""
    cleaned = _trim(text).replace(",", "")
    return ibis.cases((cleaned.re_search(NUMBER_PATTERN), cleaned.try_cast("float64")), else_=ibis.null("float64"))


def _literal_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip().replace(",", ""))
    except ValueError:
        return None


def _equals(text: ir.StringValue, expected: Any, number: ir.FloatingValue | None = None) -> ir.BooleanValue:
    if isinstance(expected, bool):
        return _folded(text).isin(TRUE_TEXTS if expected else FALSE_TEXTS)
    wanted = _literal_number(expected)
    read = _number(text) if number is None else number
    textual = _folded(text) == str(expected).strip().lower()
    if isinstance(expected, (int, float)):
        return (read == wanted).fill_null(False)
    # A text that reads as a number also matches the number written another way ("10,000").
    return textual | (read == wanted).fill_null(False) if wanted is not None else textual


def condition_expr(
    condition: Condition, text: ir.StringValue, number: ir.FloatingValue | None = None
) -> ir.BooleanValue:
    """True where `text` (null for a missing value) satisfies `condition`; `number`, when given,
    is the same value as a number (a numeric column), spared from being read back from text."""
    present = text.notnull() & (_trim(text) != "")
    op, value = condition.op, condition.value
    if op == "exists":
        return present if value else ~present
    if op in ("equals", "not_equals"):
        test = _equals(text, value, number)
    elif op in ("in", "not_in"):
        test = ibis.or_(*(_equals(text, v, number) for v in value))
    elif op in ("regex", "not_regex"):
        test = text.re_search(f"(?i){value}")
    elif op == "range":
        low, high = value
        number = _number(text) if number is None else number
        test = ibis.literal(True)
        if low is not None:
            test = test & (number >= low)
        test = test & (number <= high) if high is not None else test
        test = test.fill_null(False)
    else:  # pragma: no cover - the loader admits no other operator
        raise AssertionError(op)
    if op in NEGATIVE:
        return (~present | ~test.fill_null(False)).fill_null(True)
    return (present & test.fill_null(False)).fill_null(False)
