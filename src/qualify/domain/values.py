"""How an attribute or property value reads as text, everywhere the text of a value matters (the
Parquet export's text maps, content items online and in batch): one rule, so they agree."""

from __future__ import annotations

import json
from typing import Any


def as_text(value: Any) -> str | None:
    """None stays None; true/false; nested values as compact JSON with sorted keys; else `str`."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)
