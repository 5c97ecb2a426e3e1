"""The stored rows' JSON: orjson where it can, the json module where orjson refuses; what is read
back equals what the json module would have read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qualify.adapters.json_codec import dumps, loads

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: orjson refuses them, the json module writes them
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),  # lone surrogates too
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_what_is_written_reads_back_as_the_json_module_reads_it(value: object) -> None:
    text = dumps(value)
    assert loads(text) == json.loads(text) == json.loads(json.dumps(value))


def test_what_orjson_refuses_the_json_module_answers() -> None:
    assert dumps({1: "a"}) == '{"1":"a"}'  # keys that are not strings
    assert loads(dumps(2**80)) == 2**80
    for big in (2**80 + 1, -(2**64) - 1, 123456789012345678901234567):  # orjson would read them as floats
        for text in (dumps({"n": big}), dumps({"n": big}).encode()):
            assert type(loads(text)["n"]) is int and loads(text)["n"] == big
    assert loads('{"a": NaN, "b": Infinity}')["b"] == float("inf")  # rows the json module once wrote
    with pytest.raises(TypeError):  # as the json module: a time is not JSON
        dumps({"at": datetime(2026, 1, 1, tzinfo=UTC)})
    assert dumps({"a": 1, "b": "ü"}) == '{"a":1,"b":"ü"}'  # compact, non-ASCII as it is
    assert dumps([float("nan"), float("inf")]) == "[null,null]"  # JSON has no such numbers
