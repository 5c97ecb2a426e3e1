"""The import mapping: which column feeds which field, how values are translated and typed.

A mapping is a YAML file (reference: docs/import.md), validated strictly: every problem is
reported with its line and key, before a single row is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from qualify.adapters.readers import EPOCH_FORMATS, VALUE_TYPES
from qualify.domain.errors import InvalidInput, ModelProblem
from qualify.domain.located_yaml import LocatedYaml, YamlSyntaxError, closest
from qualify.domain.records import Account, Event, Lead

Kind: TypeAlias = Literal["leads", "accounts", "events", "stages", "deals"]
Record: TypeAlias = Lead | Account | Event
KINDS: tuple[Kind, ...] = ("leads", "accounts", "events", "stages", "deals")
# The stages a lifecycle date column of a leads file may name (HubSpot: "became an MQL date", ...).
LIFECYCLE_STAGES = ("mql", "sql", "opportunity", "customer", "evangelist", "nurture", "disqualified")

_TEXT = ("first_name", "last_name", "title", "seniority", "department", "country", "source", "channel")
FIELD_TYPES: dict[str, dict[str, str]] = {
    "leads": {
        "email": "str",
        "external_id": "str",
        **dict.fromkeys(_TEXT, "str"),
        "created_at": "timestamp",
        "do_not_email": "bool",
        "do_not_call": "bool",
        "attributes": "json",
    },
    "accounts": {
        "domain": "str",
        "name": "str",
        "industry": "str",
        "employees": "int",
        "revenue": "float",
        "country": "str",
        "attributes": "json",
    },
    "events": {
        "event_id": "str",
        "email": "str",
        "external_id": "str",
        "type": "str",
        "occurred_at": "timestamp",
        "properties": "json",
    },
    "stages": {
        "email": "str",
        "external_id": "str",
        "stage": "str",
        "action": "str",
        "at": "timestamp",
        "by": "str",
        "reason": "str",
        "note": "str",
    },
    "deals": {
        "deal_id": "str",
        "email": "str",
        "external_id": "str",
        "account_domain": "str",
        "opened_at": "timestamp",
        "closed_at": "timestamp",
        "outcome": "str",
        "amount": "float",
        "reason": "str",
        "by": "str",
        "properties": "json",
    },
}
# Where a kind keeps the columns no field takes (stage changes keep none: they are dropped).
EXTRAS = {"leads": "attributes", "accounts": "attributes", "events": "properties", "deals": "properties"}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")  # referable from a scoring model as attributes.NAME
_TOP_KEYS = {
    "kind",
    "description",
    "delimiter",
    "null_values",
    "timezone",
    "timestamp_format",
    "unmapped",
    "fields",
    "lifecycle",
}
_FIELD_KEYS = {"column", "type", "map", "format", "default"}
_EXTRA_KEYS = {"name", "type", "map", "format", "default"}


class MappingError(InvalidInput):
    """A mapping file that does not validate; every problem names its line and key."""

    def __init__(self, problems: list[ModelProblem], source: str) -> None:
        self.problems = problems
        self.source = source
        lines = [f"{source}: {len(problems)} problem(s) in the import mapping", *(f"  {p}" for p in problems)]
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class ColumnRule:
    """Where one field, attribute or property comes from, and how its values are read."""

    target: str  # the field name, or the attribute / property name
    column: str | None
    type: str | None = None  # None: the value as read (text from CSV, JSON types from JSONL/Parquet)
    values: dict[str, str | None] = field(default_factory=dict)  # the value map, applied before the type
    format: str | None = None
    default: str | None = None
    key: str = ""  # the key in the mapping file, for messages
    line: int | None = None


@dataclass(frozen=True)
class Mapping:
    """A validated mapping file. `Mapping()` is the direct mapping: columns named like fields."""

    source: str | None = None
    kind: str | None = None
    delimiter: str | None = None
    null_values: frozenset[str] = frozenset({""})
    timezone: tzinfo = UTC
    timestamp_format: str | None = None
    unmapped: str = "keep"  # keep: other columns become attributes / properties; ignore: they are dropped
    fields: tuple[ColumnRule, ...] = ()
    extras: tuple[ColumnRule, ...] = ()  # attributes (leads, accounts) or properties (events)
    extras_key: str | None = None
    lifecycle: tuple[ColumnRule, ...] = ()  # leads: the date each stage was entered (target: the stage)
    lines: dict[str, int] = field(default_factory=dict)


# --- loading the mapping --------------------------------------------------------------------------


def load_mapping(path: Path) -> Mapping:
    """Read and validate a mapping file; raise `MappingError` naming the line and key of every problem.

    Every value is read as text (`NO` stays the text NO, not false), so value maps mean what they show.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"cannot read the mapping file {path}: {error}") from error
    return parse_mapping(text, str(path))


def parse_mapping(text: str, source: str = "<mapping>") -> Mapping:
    """Validate a mapping document given as text (see `load_mapping`)."""
    try:
        tree = LocatedYaml(text, source, typed_scalars=False)
    except YamlSyntaxError as error:
        raise MappingError([error.problem], source) from error
    mapping = _MappingReader(tree).mapping()
    if tree.problems:
        raise MappingError(sorted(tree.problems, key=lambda p: p.line or 0), source)
    return mapping


def read_mapping_part(tree: LocatedYaml, path: str) -> Mapping:
    """The import mapping written at `path` inside a larger document (a CRM sync mapping's
    `pull.contacts`); its problems are the document's, with the document's keys and lines."""
    return _MappingReader(_Part(tree, path)).mapping()


class _Part:
    """A part of a document read as a mapping of its own: its paths and lines are the document's."""

    def __init__(self, tree: LocatedYaml, path: str) -> None:
        self.whole, self.prefix, self.source = tree, path, tree.source
        self.data: Any = tree.data
        for key in path.split("."):
            self.data = self.data.get(key) if isinstance(self.data, dict) else None

    @property
    def lines(self) -> dict[str, int]:
        start = self.prefix + "."
        return {key[len(start) :]: line for key, line in self.whole.lines.items() if key.startswith(start)}

    def line(self, path: str) -> int | None:
        return self.whole.line(f"{self.prefix}.{path}" if path else self.prefix)

    def problem(self, path: str, message: str) -> None:
        self.whole.problem(f"{self.prefix}.{path}" if path else self.prefix, message)


class _MappingReader:
    def __init__(self, tree: LocatedYaml | _Part) -> None:
        self.tree = tree

    def mapping(self) -> Mapping:
        data = self._dict(self.tree.data, "")
        kind = self._choice(data.get("kind"), "kind", KINDS)
        extras_key = next((k for k in ("attributes", "properties") if k in data), None)
        if "attributes" in data and "properties" in data:
            self.tree.problem(
                "properties", "a mapping has attributes (leads, accounts) or properties (events), not both"
            )
        allowed = _TOP_KEYS | ({EXTRAS[kind]} if kind in EXTRAS else set() if kind else {"attributes", "properties"})
        self._keys(data, "", allowed)
        names = set(FIELD_TYPES[kind]) if kind else {n for types in FIELD_TYPES.values() for n in types}
        fields = self._dict(data.get("fields"), "fields")
        return Mapping(
            source=self.tree.source,
            kind=kind,
            delimiter=self._delimiter(data.get("delimiter")),
            null_values=frozenset(self._texts(data.get("null_values"), "null_values")) | {""},
            timezone=self._zone(data.get("timezone")),
            timestamp_format=self._format(data.get("timestamp_format"), "timestamp_format"),
            unmapped=self._choice(data.get("unmapped"), "unmapped", ("ignore", "keep")) or "ignore",
            fields=tuple(r for name, spec in fields.items() if (r := self._field(name, spec, names, kind))),
            extras=tuple(self._extras(data.get(extras_key), extras_key)) if extras_key else (),
            extras_key=extras_key,
            lifecycle=tuple(self._lifecycle(data.get("lifecycle"), kind)),
            lines=dict(self.tree.lines),
        )

    # --- sections -------------------------------------------------------------------------------
    def _field(self, name: str, spec: Any, names: set[str], kind: str | None) -> ColumnRule | None:
        path = f"fields.{name}"
        if name not in names:
            self.tree.problem(path, f"unknown field{closest(name, names)}; expected one of: {', '.join(sorted(names))}")
            return None
        data = self._keys({"column": spec} if isinstance(spec, str) else self._dict(spec, path), path, _FIELD_KEYS)
        natural = next(types[name] for k, types in FIELD_TYPES.items() if name in types and kind in (None, k))
        rule = self._rule(name, data, path, data.get("column"))
        if rule.type not in (None, natural):
            self.tree.problem(f"{path}.type", f"{name} is always read as {natural}; leave type out or write {natural}")
        if rule.format and natural != "timestamp":
            self.tree.problem(f"{path}.format", f"format applies only to times, and {name} is {natural}")
        if rule.column is None and rule.default is None:
            self.tree.problem(path, "needs a column (or a default, for the same value on every row)")
        return replace(rule, type=natural)

    def _extras(self, value: Any, key: str) -> Iterator[ColumnRule]:
        seen: set[str] = set()
        for column, spec in self._dict(value, key).items():
            path = f"{key}.{column}"
            data = {"name": spec} if spec is None or isinstance(spec, str) else self._dict(spec, path)
            name = self._keys(data, path, _EXTRA_KEYS).get("name") or column
            if not isinstance(name, str) or not _NAME.match(name):
                self.tree.problem(path, f"{name!r} cannot be a name here: give name: with letters, digits, _ or -")
                continue
            if name in seen:
                self.tree.problem(path, f"a second column feeds {name!r}")
            seen.add(name)
            rule = self._rule(name, data, path, column)
            if rule.format and rule.type != "timestamp":
                self.tree.problem(f"{path}.format", "format applies only to type: timestamp")
            yield rule

    def _lifecycle(self, value: Any, kind: str | None) -> Iterator[ColumnRule]:
        """`lifecycle: {mql: "Became an MQL date", ...}`: the instant a leads file says each stage was entered."""
        if value is not None and kind not in (None, "leads"):
            self.tree.problem("lifecycle", f"lifecycle dates belong to a leads file, not to {kind}")
            return
        for stage, spec in self._dict(value, "lifecycle").items():
            path = f"lifecycle.{stage}"
            if stage not in LIFECYCLE_STAGES:
                self.tree.problem(
                    path,
                    f"unknown stage{closest(stage, set(LIFECYCLE_STAGES))}; expected one of: {', '.join(LIFECYCLE_STAGES)}",
                )
                continue
            data = self._keys(
                {"column": spec} if isinstance(spec, str) else self._dict(spec, path), path, {"column", "format"}
            )
            rule = self._rule(stage, data, path, data.get("column"))
            if rule.column is None:
                self.tree.problem(path, "needs a column: the date the lead entered this stage")
                continue
            yield replace(rule, type="timestamp")

    def _rule(self, target: str, data: dict[str, Any], path: str, column: Any) -> ColumnRule:
        if column is not None and not isinstance(column, str):
            self.tree.problem(f"{path}.column", "must be a column name")
        values = self._dict(data.get("map"), f"{path}.map")
        for key, mapped in values.items():
            if mapped is not None and not isinstance(mapped, str):
                self.tree.problem(f"{path}.map.{key}", "must map to a single value (or null)")
        default = data.get("default")
        if default is not None and not isinstance(default, str):
            self.tree.problem(f"{path}.default", "must be a single value")
        return ColumnRule(
            target,
            column if isinstance(column, str) else None,
            self._choice(data.get("type"), f"{path}.type", VALUE_TYPES),
            values,
            self._format(data.get("format"), f"{path}.format"),
            default if isinstance(default, str) else None,
            path,
            self.tree.line(path),
        )

    # --- values ---------------------------------------------------------------------------------
    def _dict(self, value: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.tree.problem(path, f"must be a mapping (key: value lines), got {_what(value)}")
            return {}
        return value

    def _keys(self, data: dict[str, Any], path: str, allowed: set[str]) -> dict[str, Any]:
        for key in data:
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                self.tree.problem(
                    where, f"unknown key{closest(key, allowed)}; expected one of: {', '.join(sorted(allowed))}"
                )
        return data

    def _choice(self, value: Any, path: str, allowed: tuple[str, ...]) -> Any:
        if value is None:
            return None
        if value not in allowed:
            self.tree.problem(path, f"{value!r} is not one of: {', '.join(allowed)}")
            return None
        return value

    def _texts(self, value: Any, path: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(v is None or isinstance(v, str) for v in value):
            self.tree.problem(path, 'must be a list of texts, for example ["", Select, NA]')
            return []
        return [v.strip() for v in value if v is not None]

    def _delimiter(self, value: Any) -> str | None:
        if value is None:
            return None
        value = {"tab": "\t", "\\t": "\t"}.get(str(value), value)
        if not isinstance(value, str) or len(value) != 1 or value in '"\r\n':
            self.tree.problem("delimiter", 'must be one character, for example "," ";" "|" or tab')
            return None
        return value

    def _zone(self, value: Any) -> tzinfo:
        if value is None or value == "UTC":
            return UTC
        try:
            return ZoneInfo(str(value))
        except (ZoneInfoNotFoundError, ValueError):
            self.tree.problem("timezone", f"unknown time zone {value!r}; use an IANA name such as UTC or Europe/Paris")
            return UTC

    def _format(self, value: Any, path: str) -> str | None:
        if value is None or value in EPOCH_FORMATS or value == "iso":
            return None if value == "iso" else value
        if not isinstance(value, str) or "%" not in value:
            self.tree.problem(path, "must be iso, epoch, epoch_ms or a strptime format such as '%d/%m/%Y %H:%M'")
            return None
        return value


def _what(value: Any) -> str:
    return "a list" if isinstance(value, list) else f"the text {value!r}"
