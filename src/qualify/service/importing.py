"""Import leads, accounts and events from files: bad rows go to a rejects file, good rows are kept.

A mapping file (YAML, documented in docs/import.md) says which column feeds which field, how
values are translated and typed; without one, columns named like the fields feed them. Rows go
in batches, each in its own unit of work, through the same use cases as the API (upsert by
email / external id / domain, events idempotent by event_id), so importing a file twice
changes nothing the second time.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from itertools import islice
from pathlib import Path
from typing import IO, Any, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from qualify.adapters.readers import (
    EPOCH_FORMATS,
    VALUE_TYPES,
    BadValue,
    RawRow,
    as_text,
    is_missing,
    open_table,
    parse_value,
)
from qualify.domain.errors import InvalidInput, ModelProblem
from qualify.domain.records import Account, Event, Lead, make_event, normalise_domain
from qualify.service.events import ingest_events
from qualify.service.leads import upsert_accounts, upsert_leads
from qualify.service.unit_of_work import UnitOfWork, Workspace, utcnow

Kind: TypeAlias = Literal["leads", "accounts", "events"]
Record: TypeAlias = Lead | Account | Event
KINDS: tuple[Kind, ...] = ("leads", "accounts", "events")

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
}
EXTRAS = {"leads": "attributes", "accounts": "attributes", "events": "properties"}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")  # referable from a scoring model as attributes.NAME
_TOP_KEYS = {"kind", "description", "delimiter", "null_values", "timezone", "timestamp_format", "unmapped", "fields"}
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
    tree = _Tree(text, source)
    mapping = _MappingReader(tree).mapping()
    if tree.problems:
        raise MappingError(sorted(tree.problems, key=lambda p: p.line or 0), source)
    return mapping


class _Tree:
    """The YAML document as dicts, lists and texts (None for null), with the line of every key path."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines: dict[str, int] = {}
        self.problems: list[ModelProblem] = []
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as error:
            mark, context = getattr(error, "problem_mark", None), getattr(error, "context_mark", None)
            message = f"not valid YAML: {getattr(error, 'problem', None) or error}"
            if context is not None and getattr(error, "context", None):
                message += f" ({error.context} that starts on line {context.line + 1})"  # type: ignore[attr-defined]
            line = mark.line + 1 if mark is not None else None
            raise MappingError([ModelProblem("(document)", message, line)], source) from error
        self.data: Any = self._convert(node, "") if node is not None else None

    def _convert(self, node: Node, path: str) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value) if isinstance(key_node, ScalarNode) else "(complex key)"
                child = f"{path}.{key}" if path else key
                self.lines[child] = key_node.start_mark.line + 1
                if key in out:
                    self.problem(child, "appears twice")
                out[key] = self._convert(value_node, child)
            return out
        if isinstance(node, SequenceNode):
            return [self._convert(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        if node.style is None and node.value in ("", "~", "null", "Null", "NULL"):
            return None
        return str(node.value)

    def line(self, path: str) -> int | None:
        while path not in self.lines and path:
            path = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", path) if re.search(r"[.\[]", path) else ""
        return self.lines.get(path)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(ModelProblem(path or "(document)", message, self.line(path)))


class _MappingReader:
    def __init__(self, tree: _Tree) -> None:
        self.tree = tree

    def mapping(self) -> Mapping:
        data = self._dict(self.tree.data, "")
        kind = self._choice(data.get("kind"), "kind", KINDS)
        extras_key = next((k for k in ("attributes", "properties") if k in data), None)
        if "attributes" in data and "properties" in data:
            self.tree.problem(
                "properties", "a mapping has attributes (leads, accounts) or properties (events), not both"
            )
        allowed = _TOP_KEYS | ({EXTRAS[kind]} if kind else {"attributes", "properties"})
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
            lines=dict(self.tree.lines),
        )

    # --- sections -------------------------------------------------------------------------------
    def _field(self, name: str, spec: Any, names: set[str], kind: str | None) -> ColumnRule | None:
        path = f"fields.{name}"
        if name not in names:
            self.tree.problem(
                path, f"unknown field{_closest(name, names)}; expected one of: {', '.join(sorted(names))}"
            )
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
                    where, f"unknown key{_closest(key, allowed)}; expected one of: {', '.join(sorted(allowed))}"
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


def _closest(key: str, allowed: set[str]) -> str:
    import difflib

    match = difflib.get_close_matches(key, sorted(allowed), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _what(value: Any) -> str:
    return "a list" if isinstance(value, list) else f"the text {value!r}"


# --- from a row to a record -----------------------------------------------------------------------


class RowConverter:
    """Turns one row's values into a Lead, Account or Event, or raises `InvalidInput` naming the field."""

    def __init__(self, mapping: Mapping, kind: Kind, fields: tuple[ColumnRule, ...]) -> None:
        self.mapping, self.kind, self.fields = mapping, kind, fields
        self.extras_name = EXTRAS[kind]
        self.used = {rule.column for rule in (*fields, *mapping.extras) if rule.column}

    @classmethod
    def for_file(cls, mapping: Mapping, kind: Kind, columns: list[str] | None, path: Path) -> RowConverter:
        """Check the mapping against the kind and the file's columns; raise before any row is read."""
        fields = mapping.fields if mapping.source else _direct_fields(kind, columns)
        _check_mapping(mapping, kind, (*fields, *mapping.extras), columns, path)
        _check_required(mapping, kind, fields, columns, path)
        return cls(mapping, kind, fields)

    def convert(self, values: dict[str, Any]) -> Record:
        data = {r.target: v for r in self.fields if (v := self._value(r, values, r.target)) is not None}
        extras = {
            r.target: v
            for r in self.mapping.extras
            if (v := self._value(r, values, f"{self.extras_name}.{r.target}")) is not None
        }
        if self.mapping.unmapped == "keep":
            for column, raw in values.items():
                if column not in self.used and not is_missing(raw, self.mapping.null_values):
                    extras.setdefault(column, parse_value(raw, None, timestamp_format=None, zone=UTC))
        try:
            return _BUILDERS[self.kind](data, extras)
        except InvalidInput as error:
            source = next((r.column for r in self.fields if r.target == error.field and r.column), None)
            where = f"column {source!r}: " if source else ""
            raise InvalidInput(where + error.message, field=error.field) from None

    def _value(self, rule: ColumnRule, values: dict[str, Any], name: str) -> Any:
        raw = values.get(rule.column) if rule.column else None
        if is_missing(raw, self.mapping.null_values):
            raw = rule.default
        try:
            if raw is not None and rule.values:
                raw = rule.values.get(as_text(raw), raw)
            if is_missing(raw, self.mapping.null_values):
                return None
            fmt = rule.format or self.mapping.timestamp_format
            return parse_value(raw, rule.type, timestamp_format=fmt, zone=self.mapping.timezone)
        except BadValue as error:
            where = f"column {rule.column!r}" if rule.column else f"the default of {rule.key}"
            raise InvalidInput(f"{where}: {error}", field=name) from None


def _direct_fields(kind: Kind, columns: list[str] | None) -> tuple[ColumnRule, ...]:
    """Without a mapping: each field from the column of its name (case, spaces and dashes aside)."""
    types = FIELD_TYPES[kind]
    if columns is None:  # JSONL: each row names its own keys
        return tuple(ColumnRule(name, name, type_) for name, type_ in types.items())
    named = {re.sub(r"[\s-]+", "_", column.strip().lower()): column for column in columns}
    return tuple(ColumnRule(name, named[name], type_) for name, type_ in types.items() if name in named)


def _check_mapping(
    mapping: Mapping, kind: Kind, rules: tuple[ColumnRule, ...], columns: list[str] | None, path: Path
) -> None:
    if mapping.source is None:
        return
    problems: list[ModelProblem] = []

    def problem(key: str, message: str) -> None:
        problems.append(ModelProblem(key, message, mapping.lines.get(key)))

    if mapping.kind not in (None, kind):
        problem("kind", f"the mapping is for {mapping.kind}, but {kind} are being imported")
    for rule in mapping.fields:
        if rule.target not in FIELD_TYPES[kind]:
            problem(rule.key, f"{rule.target} is not a field of {kind}; fields: {', '.join(FIELD_TYPES[kind])}")
    if mapping.extras_key not in (None, EXTRAS[kind]):
        problem(str(mapping.extras_key), f"{kind} have {EXTRAS[kind]}, not {mapping.extras_key}")
    for rule in rules:
        if columns is not None and rule.column and rule.column not in columns:
            problem(rule.key, f"column {rule.column!r} is not in {path.name}{_closest(rule.column, set(columns))}")
    if problems:
        raise MappingError(problems, mapping.source)


_REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "leads": (("email", "external_id"),),
    "accounts": (("domain",),),
    "events": (("event_id",), ("type",), ("occurred_at",), ("email", "external_id")),
}


def _check_required(
    mapping: Mapping, kind: Kind, fields: tuple[ColumnRule, ...], columns: list[str] | None, path: Path
) -> None:
    """A file whose header lacks a key column would reject every row: say so once, up front."""
    if columns is None:
        return
    present = {rule.target for rule in fields}
    for group in _REQUIRED[kind]:
        if not present.intersection(group):
            wanted = " or ".join(group)
            how = f"map one under fields: in {mapping.source}" if mapping.source else f"name a column {wanted}"
            raise InvalidInput(f"{path}: {kind} need {wanted}: {how}. The file's columns: {', '.join(columns)}")


def _lead(data: dict[str, Any], extras: dict[str, Any]) -> Lead:
    return Lead(**{**data, "attributes": {**data.get("attributes", {}), **extras}})


def _account(data: dict[str, Any], extras: dict[str, Any]) -> Account:
    if "domain" not in data:
        raise InvalidInput("no value: an account needs its web domain", field="domain")
    domain = normalise_domain(data["domain"])
    return Account(**{**data, "domain": domain, "attributes": {**data.get("attributes", {}), **extras}})


def _event(data: dict[str, Any], extras: dict[str, Any]) -> Event:
    for name in ("event_id", "type", "occurred_at"):
        if name not in data:
            raise InvalidInput(f"no value: an event needs its {name}", field=name)
    return make_event(
        data["event_id"],
        data["type"],
        data["occurred_at"],
        email=data.get("email"),
        external_id=data.get("external_id"),
        properties={**data.get("properties", {}), **extras},
    )


_BUILDERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], Record]] = {
    "leads": _lead,
    "accounts": _account,
    "events": _event,
}


# --- the import -----------------------------------------------------------------------------------


@dataclass
class ImportSummary:
    """What an import did. Leads and accounts count created/updated/unchanged, events accepted/duplicate."""

    kind: str
    path: Path
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    rejects_path: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """The summary as `qualify import --json` prints it (see docs/import.md)."""
        counts = ("accepted", "duplicate") if self.kind == "events" else ("created", "updated", "unchanged")
        return {
            "kind": self.kind,
            "path": str(self.path),
            "rows_read": self.rows_read,
            **{name: getattr(self, name) for name in counts},
            "rejected": self.rejected,
            "rejects_path": str(self.rejects_path) if self.rejects_path else None,
        }


def default_rejects_path(path: Path) -> Path:
    return path.with_name(path.name + ".rejects.csv")


def import_file(
    workspace: Workspace,
    kind: Kind,
    path: Path,
    *,
    mapping: Mapping | None = None,
    rejects_path: Path | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    batch_size: int = 1000,
    now: datetime | None = None,
) -> ImportSummary:
    """Import a CSV/TSV, JSONL or Parquet file of leads, accounts or events.

    Good rows are written in batches of `batch_size`, each batch in its own transaction. Bad rows
    are written to `rejects_path` (default: `<file>.rejects.csv` beside it) with line, field and
    reason; an old rejects file is removed when nothing is rejected. `progress(done, total)` is
    called after each batch (`total` is an estimate, or None when counting would cost too much).
    A file or mapping that cannot be used at all raises `InvalidInput` before anything is written.
    """
    if kind not in KINDS:
        raise InvalidInput(f"cannot import {kind!r}: choose leads, accounts or events")
    if batch_size < 1:
        raise InvalidInput("the batch size must be at least 1", field="batch_size")
    spec = mapping or Mapping()
    rejects_path = rejects_path or default_rejects_path(path)
    if rejects_path.resolve() == path.resolve():
        raise InvalidInput(f"the rejects file cannot be the input file {path}")
    now = now or utcnow()
    summary = ImportSummary(kind, path)
    with open_table(path, delimiter=spec.delimiter) as table:
        converter = RowConverter.for_file(spec, kind, table.columns, path)
        with _Rejects(rejects_path, path) as rejects:
            for chunk in _chunks(table.rows, batch_size):
                _import_chunk(workspace, converter, chunk, rejects, summary, now)
                if progress:
                    progress(summary.rows_read, table.total)
            summary.rejects_path = rejects.finish()
    if progress and table.total != summary.rows_read:
        progress(summary.rows_read, summary.rows_read)  # the total was an estimate: end the bar at 100 %
    return summary


def _chunks(rows: Iterator[RawRow], size: int) -> Iterator[list[RawRow]]:
    while chunk := list(islice(rows, size)):
        yield chunk


def _import_chunk(
    workspace: Workspace,
    converter: RowConverter,
    rows: list[RawRow],
    rejects: _Rejects,
    summary: ImportSummary,
    now: datetime,
) -> None:
    summary.rows_read += len(rows)
    good: list[tuple[RawRow, Record]] = []
    for row in rows:
        if row.problem:
            rejects.add(row, None, row.problem)
            continue
        try:
            good.append((row, converter.convert(row.values)))
        except InvalidInput as error:
            rejects.add(row, error.field, error.message)
    if good:
        with workspace.unit_of_work() as uow:
            results = _write(uow, converter.kind, [record for _, record in good], now)
        for (row, _), (status, problem) in zip(good, results, strict=True):
            if problem is None:
                setattr(summary, status, getattr(summary, status) + 1)
            else:
                rejects.add(row, *problem)
    summary.rejected = rejects.count


_Result: TypeAlias = tuple[str, tuple[str | None, str] | None]  # status, and (field, reason) when rejected


def _write(uow: UnitOfWork, kind: Kind, records: list[Record], now: datetime) -> list[_Result]:
    if kind == "events":
        events = [r for r in records if isinstance(r, Event)]
        create = uow.workspace.settings.create_unknown_leads
        outcomes = ingest_events(uow, events, create_unknown=create, now=now, by="import")
        return [
            (
                o.status,
                ("email" if e.email else "external_id", o.reason or o.status) if o.status == "rejected" else None,
            )
            for e, o in zip(events, outcomes, strict=True)
        ]
    if kind == "accounts":
        outcome = upsert_accounts(uow, [r for r in records if isinstance(r, Account)], now=now)
    else:
        outcome = upsert_leads(uow, [r for r in records if isinstance(r, Lead)], now=now)
    return [
        (status, (error.field, error.message) if (error := outcome.errors.get(i)) else None)
        for i, status in enumerate(outcome.statuses)
    ]


class _Rejects:
    """The rejects CSV: opened at the first reject, so a clean import leaves no file behind."""

    COLUMNS = ("file", "line", "field", "reason", "raw")

    def __init__(self, path: Path, source: Path) -> None:
        self.path, self.source = path, source
        self.handle: IO[str] | None = None
        self.writer: Any = None
        self.count = 0

    def __enter__(self) -> _Rejects:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()

    def add(self, row: RawRow, field_name: str | None, reason: str) -> None:
        if self.handle is None:
            self.handle = self.path.open("w", encoding="utf-8", newline="")
            self.writer = csv.writer(self.handle)
            self.writer.writerow(self.COLUMNS)
        self.writer.writerow([str(self.source), row.line, field_name or "(row)", reason, row.raw])
        self.count += 1

    def finish(self) -> Path | None:
        """Close the file and return its path, or remove a stale one and return None when nothing was rejected."""
        if self.handle is None:
            if self.path.exists():  # checked first: unlinking even a missing file fails on a read-only disk
                self.path.unlink()
            return None
        self.handle.close()
        self.handle = None
        return self.path
