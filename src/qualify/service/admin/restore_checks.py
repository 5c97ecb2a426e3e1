"""What a restore checks in each row of a backup before it goes in: the rules live input meets.

A backup is a file anyone who can write it can edit, and its checksums are no defence: whoever
edits the rows recomputes them. So every value is read as hostile input is: of its column's
type and width, storable on every engine, times with a zone, and, where the product gives a
column a meaning, a value the product could have written itself (a stage of the lifecycle, a
role, a normalised email or domain, a scoring model or automation definition that loads). A
value that fails is named with its line, table and column, and nothing is restored.

What checks cannot tell is who made a backup: a well-formed admin user added by hand passes.
That is what signing is for (`QUALIFY_BACKUP_KEY`, `backup.py`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Integer, String, Table, Text

from qualify.adapters.schema import UTCDateTime
from qualify.domain.access import Role
from qualify.domain.automation import load_segment, load_workflow
from qualify.domain.errors import InvalidInput, QualifyError
from qualify.domain.lifecycle import Stage
from qualify.domain.model_loader import load_model
from qualify.domain.records import check_storable, normalise_domain, normalise_email
from qualify.service.admin.users import ROLES

# JSON columns hold attributes and properties (32 levels deep at most as live input) and the
# product's own documents (stored predictive models, engagement states): a generous bound that
# still keeps a crafted document from exhausting a reader's recursion.
MAX_JSON_DEPTH = 100
_INT_RANGE = (-(2**31), 2**31 - 1)  # PostgreSQL's integer: SQLite would take a larger one silently
_PASSWORD_HASH = re.compile(r"scrypt\$\d{1,8}\$\d{1,3}\$\d{1,3}\$[A-Za-z0-9+/=]{1,200}\$[A-Za-z0-9+/=]{1,200}")


def _one_of(values: set[str] | tuple[str, ...], what: str) -> Callable[[Any], None]:
    allowed = sorted(values)

    def check(value: Any) -> None:
        if value not in allowed:
            raise InvalidInput(f"{value!r} is not a {what}; expected one of: {', '.join(allowed)}")

    return check


def _normal(normalise: Callable[[str], str], what: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if normalise(value) != value:
            raise InvalidInput(f"{value!r} is not {what} as the product stores one")

    return check


def _loads(load: Callable[[Any], Any]) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        try:
            load(value)
        except QualifyError as error:
            raise InvalidInput(f"the document does not load: {str(error).splitlines()[0][:300]}") from error

    return check


def _password_hash(value: Any) -> None:
    if not _PASSWORD_HASH.fullmatch(value):
        raise InvalidInput("not a password hash the product makes (scrypt$N$r$p$salt$digest)")


_stage = _one_of({s.value for s in Stage}, "lifecycle stage")
_email = _normal(normalise_email, "an email address")

# (table, column) → the rule the product's own writes follow; applied to a value that is not null.
MEANINGS: dict[tuple[str, str], Callable[[Any], None]] = {
    ("leads", "stage"): _stage,
    ("leads", "email"): _email,
    ("leads", "person_email"): _email,
    ("lead_aliases", "email"): _email,
    ("stage_history", "from_stage"): _stage,
    ("stage_history", "to_stage"): _stage,
    ("stage_facts", "from_stage"): _stage,
    ("stage_facts", "to_stage"): _stage,
    ("accounts", "domain"): _normal(normalise_domain, "a domain"),
    ("users", "role"): _one_of(ROLES, "dashboard role"),
    ("users", "password_hash"): _password_hash,
    ("api_keys", "role"): _one_of({r.value for r in Role}, "key role"),
    ("scoring_models", "document"): _loads(lambda text: load_model(text, "the backup's model", stored=True)),
    ("segments", "document"): _loads(lambda text: load_segment(json.loads(text), stored=True)),
    ("workflows", "document"): _loads(lambda text: load_workflow(json.loads(text), stored=True)),
}


def checked_row(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """The row ready to insert (times parsed), or InvalidInput naming `table.column` and why."""
    unknown = values.keys() - table.columns.keys()
    if unknown:
        raise InvalidInput(f"no column {sorted(unknown)[0]!r} in {table.name}", field=f"{table.name}")
    out: dict[str, Any] = {}
    for column in table.columns:
        where = f"{table.name}.{column.name}"
        if column.name not in values:
            generated = column.primary_key and isinstance(column.type, Integer)
            if not (column.nullable or generated or column.default is not None or column.server_default is not None):
                raise InvalidInput("missing, and it may not be empty", field=where)
            continue
        value = values[column.name]
        try:
            if value is None:
                if not column.nullable:
                    raise InvalidInput("empty, and it may not be")
                out[column.name] = None
                continue
            out[column.name] = _typed(column.type, value)
            if (rule := MEANINGS.get((table.name, column.name))) is not None:
                rule(value)
        except InvalidInput as error:
            raise InvalidInput(error.message, field=where) from None
        except (ValueError, TypeError, RecursionError) as error:  # a document the domain's readers choke on
            raise InvalidInput(f"cannot be read ({type(error).__name__})", field=where) from None
    return out


def _typed(kind: Any, value: Any) -> Any:
    """`value` as the column's type holds it, or InvalidInput saying what it is instead."""
    if isinstance(kind, UTCDateTime):
        if not isinstance(value, str):
            raise InvalidInput(f"a time is written as text, not {type(value).__name__}")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(f"not a time: {value[:60]!r}") from None
        if parsed.tzinfo is None:
            raise InvalidInput(f"a time without a zone: {value[:60]!r}")
        return parsed
    if isinstance(kind, Boolean):
        if not isinstance(value, bool):
            raise InvalidInput(f"not true or false: {value!r:.60}")
        return value
    if isinstance(kind, Integer):
        if isinstance(value, bool) or not isinstance(value, int) or not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            raise InvalidInput(f"not a whole number the store holds: {value!r:.60}")
        return value
    if isinstance(kind, Float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidInput(f"not a finite number: {value!r:.60}")
        return value
    if isinstance(kind, String | Text):
        if not isinstance(value, str):
            raise InvalidInput(f"not a text: {value!r:.60}")
        if kind.length is not None and len(value) > kind.length:
            raise InvalidInput(f"{len(value):,} characters; the column holds {kind.length:,}")
        check_storable(value, "")
        return value
    _check_json(value)  # JSON columns: objects, lists and scalars
    return value


def _check_json(document: Any) -> None:
    """Nested at most `MAX_JSON_DEPTH`, no text or key an engine cannot store, no NaN or infinity."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list) and depth > MAX_JSON_DEPTH:
            raise InvalidInput(f"nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                check_storable(str(key), "")
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            check_storable(value, "")
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"not a finite number: {value!r}")
