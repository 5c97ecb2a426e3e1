"""Conditions on lead, account and event attributes, shared by fit, disqualify and engagement rules.

String comparisons ignore case and surrounding white space: CRM data is typed by people.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import re2  # type: ignore[import-untyped]

OPERATORS = ("equals", "not_equals", "in", "not_in", "regex", "not_regex", "range", "exists")
# Operators that a missing value satisfies: "is not X" holds for nothing.
NEGATIVE = ("not_equals", "not_in", "not_regex")


def _fold(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().casefold()
    return value


# A text reads as a number when it is plain decimal notation, commas aside ("12,500", "-3.5e2"):
# not "inf", "nan", "1_000" or other digits than 0-9, which Python's float() would take and SQL
# engines would not. The batch side (analytics/conditions.py) uses the same pattern.
NUMBER_PATTERN = r"^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$"
_NUMBER = re.compile(NUMBER_PATTERN)


REMEMBERED = 4096  # answers a pattern keeps, for texts of at most REMEMBERED_TEXT characters
REMEMBERED_TEXT = 256


class Regex:
    """A compiled pattern that remembers its answers for the short texts it saw last: event
    properties repeat (the same URLs, titles, campaigns), and a remembered answer costs less than
    RE2's search through its binding (measured on benchmarks/ingest.py)."""

    __slots__ = ("_remembered", "pattern")

    def __init__(self, pattern: Any) -> None:
        self.pattern = pattern
        self._remembered = functools.lru_cache(maxsize=REMEMBERED)(self._search)

    def _search(self, text: str) -> bool:
        return self.pattern.search(text) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Regex) and self.pattern.pattern == other.pattern.pattern

    def __hash__(self) -> int:
        return hash(self.pattern.pattern)

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        """Pickled as its pattern's text, compiled again where it is loaded (a backtest's worker
        processes receive the models this way): RE2's compiled form does not travel. A stored
        model's pattern from before RE2 is Python's own, which pickles as it is."""
        if isinstance(self.pattern, re.Pattern):
            return Regex, (self.pattern,)
        return compile_regex, (self.pattern.pattern,)

    def found_in(self, text: str) -> bool:
        """Whether the pattern matches anywhere in `text`."""
        return self._remembered(text) if len(text) <= REMEMBERED_TEXT else self._search(text)


def compile_regex(text: str) -> Regex:
    """`text` as a case-insensitive RE2 pattern (google-re2): a search takes time linear in the text
    searched, whatever the pattern, so no value can stall a process — Python's `re` backtracks, and
    `^([a-z]+)+$` on 30 letters and a digit takes seconds, holding the interpreter lock. RE2 has no
    look-around and no back-references (as DuckDB, which runs RE2 too); what it refuses raises
    ValueError with its reason."""
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    try:
        return Regex(re2.compile(text, options))
    except re2.error as error:
        reason = error.args[0] if error.args else error
        raise ValueError(reason.decode() if isinstance(reason, bytes) else str(reason)) from None


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        return float(text) if _NUMBER.match(text) else None
    return None


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on one value: `field` is where the value comes from, `op` how it is tested."""

    field: str
    op: str
    value: Any
    pattern: Regex | None = None  # the compiled pattern of regex and not_regex (compile_regex)

    def test(self, actual: Any) -> bool:
        op = self.op
        if op == "exists":
            return _present(actual) is bool(self.value)
        if not _present(actual):
            # A missing value matches only the negative operators.
            return op in NEGATIVE
        if op == "equals":
            return _equal(actual, self.value)
        if op == "not_equals":
            return not _equal(actual, self.value)
        if op == "in":
            return any(_equal(actual, v) for v in self.value)
        if op == "not_in":
            return not any(_equal(actual, v) for v in self.value)
        if op in ("regex", "not_regex"):
            assert self.pattern is not None
            return self.pattern.found_in(str(actual)) is (op == "regex")
        if op == "range":
            number = _as_number(actual)
            if number is None:
                return False
            low, high = self.value
            return (low is None or number >= low) and (high is None or number <= high)
        raise AssertionError(f"unknown operator {op}")

    def describe(self) -> str:
        if self.op == "exists":
            return f"{self.field} {'is set' if self.value else 'is empty'}"
        if self.op == "range":
            low, high = self.value
            if low is not None and high is not None:
                return f"{self.field} in {_num(low)}–{_num(high)}"
            return f"{self.field} ≥ {_num(low)}" if low is not None else f"{self.field} ≤ {_num(high)}"
        if self.op in ("in", "not_in"):
            shown = ", ".join(str(v) for v in self.value[:4]) + ("…" if len(self.value) > 4 else "")
            return f"{self.field} {'in' if self.op == 'in' else 'not in'} [{shown}]"
        symbol = {"equals": "=", "not_equals": "≠", "regex": "~", "not_regex": "!~"}[self.op]
        return f"{self.field} {symbol} {self.value}"


def _num(value: float) -> str:
    return f"{value:g}"


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return _as_bool(actual) == _as_bool(expected)
    if isinstance(expected, (int, float)) or isinstance(actual, (int, float)):
        # "200" in the model equals 200 from the CRM and the other way round.
        left, right = _as_number(actual), _as_number(expected)
        return left is not None and left == right
    return bool(_fold(actual) == _fold(expected))


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str):
        folded = value.strip().casefold()
        if folded in ("true", "yes", "y", "1"):
            return True
        if folded in ("false", "no", "n", "0"):
            return False
    return None


def all_match(conditions: tuple[Condition, ...], lookup: dict[str, Any]) -> bool:
    return all(c.test(lookup.get(c.field)) for c in conditions)
