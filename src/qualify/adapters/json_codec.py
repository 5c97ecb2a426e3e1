"""JSON for the stored rows (event properties and awards, scoring state, attributes): encoded and
decoded by orjson, falling back to the standard library for what orjson refuses.

Ingestion encodes and decodes JSON for every event and every touched lead; orjson does that
several times faster than the `json` module. Where it refuses a value (an integer beyond 64 bits,
a dict with keys that are not strings, a lone surrogate in a string) or a text (`NaN` and
`Infinity`, which older rows written by the `json` module may hold), the `json` module gives the
answer it always gave, so what is stored and read back does not change: only the bytes of the
text may (no escapes of non-ASCII characters, no spaces), and both read back equal. One
difference: a Python float NaN or infinity is written as `null` (JSON has no such numbers;
PostgreSQL refused the `NaN` the json module wrote, SQLite kept it); one orjson refuses (a
NumPy float, say) still goes to the json module. An integer beyond 64 bits is read back by the
json module as well: orjson would read it as a float.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_PLAIN = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS  # as the json module: refused
_compact = json.JSONEncoder(separators=(",", ":")).encode


def dumps(value: Any) -> str:
    """`value` as compact JSON text."""
    try:
        return orjson.dumps(value, option=_PLAIN).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError: let the json module decide
        return _compact(value)


def loads(text: str | bytes) -> Any:
    """The value of JSON `text`."""
    long = _LONG_NUMBER.search(text) if isinstance(text, str) else _LONG_NUMBER_BYTES.search(text)
    if long:
        return json.loads(text)  # orjson reads an integer beyond 64 bits as a float: exactly, here
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN, Infinity: written by the json module once
        return json.loads(text)


# A run of digits an integer beyond 64 bits needs (|2**63| has 19); a float with as many digits
# takes this way too, and reads the same.
_LONG_NUMBER = re.compile(r"[0-9]{19}")
_LONG_NUMBER_BYTES = re.compile(rb"[0-9]{19}")
