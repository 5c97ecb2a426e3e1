"""Import leads, accounts, events, stage changes and deals from files: bad rows go to a rejects
file, good rows are kept.

A mapping file (YAML, documented in docs/import.md) says which column feeds which field, how
values are translated and typed; without one, columns named like the fields feed them. Rows go
in batches, each in its own unit of work, through the same use cases as the API (upsert by
email / external id / domain, events idempotent by event_id, stage changes by lead, stage and
instant, deals by deal id), so importing a file twice changes nothing the second time.

History that arrives out of time order (stage dates after the events they follow, events older
than a lead's stage) is put in order at the end of the import: the leads it touched are rebuilt
from their events and stage facts (`lifecycle.stage_facts`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import IO, Any, Protocol, TypeAlias

from qualify.adapters.csv_cells import safe_cell
from qualify.adapters.readers import (
    BadValue,
    RawRow,
    as_text,
    is_missing,
    open_table,
    parse_value,
)
from qualify.domain.errors import InvalidInput, ModelProblem
from qualify.domain.located_yaml import closest
from qualify.domain.records import Account, Event, Lead, check_account, check_event_keys, make_event, normalise_domain
from qualify.service.imports.mapping import (  # noqa: F401 - load_mapping and parse_mapping are part of this API
    EXTRAS,
    FIELD_TYPES,
    KINDS,
    ColumnRule,
    Kind,
    Mapping,
    MappingError,
    Record,
    load_mapping,
    parse_mapping,
)
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_accounts, upsert_leads
from qualify.service.lifecycle.stage_facts import (
    Deal,
    FactsOutcome,
    KeyedFact,
    StageFact,
    as_history,
    deal_of,
    imported_fact,
    rebuild_pending,
    record_facts,
    stage_change_of,
    upsert_deals,
)
from qualify.service.pipeline import of
from qualify.service.unit_of_work import UnitOfWork, Workspace, retrying, utcnow

Row: TypeAlias = Record | Deal | KeyedFact  # what a row of a file becomes

# --- from a row to a record -----------------------------------------------------------------------


class RowConverter:
    """Turns one row's values into a Lead, Account or Event, or raises `InvalidInput` naming the field."""

    def __init__(self, mapping: Mapping, kind: Kind, fields: tuple[ColumnRule, ...], source: str = "import") -> None:
        self.mapping, self.kind, self.fields = mapping, kind, fields
        self.source = source  # the file's name: where imported stage facts came from
        self.extras_name = EXTRAS.get(kind)
        self.used = {rule.column for rule in (*fields, *mapping.extras, *mapping.lifecycle) if rule.column}
        self.received_at = utcnow()  # the import's instant: when an event without occurred_at happened

    @classmethod
    def for_file(cls, mapping: Mapping, kind: Kind, columns: list[str] | None, path: Path) -> RowConverter:
        """Check the mapping against the kind and the file's columns; raise before any row is read."""
        fields = mapping.fields if mapping.source else _direct_fields(kind, columns)
        _check_mapping(mapping, kind, (*fields, *mapping.extras, *mapping.lifecycle), columns, path)
        _check_required(mapping, kind, fields, columns, path)
        return cls(mapping, kind, fields, path.name)

    def convert(self, values: dict[str, Any], fixed: dict[str, Any] | None = None) -> Row:
        """The row's record; `fixed` sets fields whatever the mapping says (a stream's lead key)."""
        data = {r.target: v for r in self.fields if (v := self._value(r, values, r.target)) is not None}
        data.update({k: v for k, v in (fixed or {}).items() if v is not None})
        extras = {
            r.target: v
            for r in self.mapping.extras
            if (v := self._value(r, values, f"{self.extras_name}.{r.target}")) is not None
        }
        if self.mapping.unmapped == "keep" and self.extras_name:
            for column, raw in values.items():
                if column not in self.used and not is_missing(raw, self.mapping.null_values):
                    try:
                        extras.setdefault(column, parse_value(raw, None, timestamp_format=None, zone=UTC))
                    except BadValue as error:
                        raise InvalidInput(
                            f"column {column!r}: {error}", field=f"{self.extras_name}.{column}"
                        ) from None
        try:
            if self.kind == "events":
                return _event(data, extras, self.received_at)
            return _BUILDERS[self.kind](data, extras)
        except InvalidInput as error:
            source = next((r.column for r in self.fields if r.target == error.field and r.column), None)
            where = f"column {source!r}: " if source else ""
            raise InvalidInput(where + error.message, field=error.field) from None

    def lifecycle(self, values: dict[str, Any], by: str) -> list[StageFact]:
        """The stage facts of a leads row's lifecycle date columns (`lifecycle:` in the mapping)."""
        facts = []
        for rule in self.mapping.lifecycle:
            at = self._value(rule, values, f"lifecycle.{rule.target}")
            if at is not None:
                facts.append(imported_fact(at=at, stage=rule.target, by=by))
        return facts

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
    if mapping.extras_key not in (None, EXTRAS.get(kind)):
        keeps = f"have {EXTRAS[kind]}" if kind in EXTRAS else "keep no other columns"
        problem(str(mapping.extras_key), f"{kind} {keeps}, not {mapping.extras_key}")
    if mapping.lifecycle and kind != "leads":
        problem("lifecycle", f"lifecycle dates belong to a leads file, not to {kind}")
    for rule in rules:
        if columns is not None and rule.column and rule.column not in columns:
            problem(rule.key, f"column {rule.column!r} is not in {path.name}{closest(rule.column, set(columns))}")
    if problems:
        raise MappingError(problems, mapping.source)


_REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "leads": (("email", "external_id"),),
    "accounts": (("domain",),),
    "events": (("type",), ("email", "external_id")),  # no event_id, no occurred_at: see _event
    "stages": (("email", "external_id"), ("stage", "action"), ("at",)),
    "deals": (("email", "external_id", "account_domain"), ("opened_at", "closed_at")),
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
    return check_account(Account(**{**data, "domain": domain, "attributes": {**data.get("attributes", {}), **extras}}))


def _event(data: dict[str, Any], extras: dict[str, Any], received_at: datetime) -> Event:
    if "type" not in data:
        raise InvalidInput("no value: an event needs its type", field="type")
    check_event_keys(extras, data.get("event_id"))
    # The API's rule (domain.records.make_event): no event_id, one derived from the content; no
    # occurred_at, the time of the import.
    return make_event(
        data.get("event_id"),
        data["type"],
        data.get("occurred_at"),
        email=data.get("email"),
        external_id=data.get("external_id"),
        properties={**data.get("properties", {}), **extras},
        received_at=received_at,
    )


def _stage(data: dict[str, Any], extras: dict[str, Any]) -> KeyedFact:
    return stage_change_of(data)  # a stage change keeps no other columns


_BUILDERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], Row]] = {
    "leads": _lead,
    "accounts": _account,
    "stages": _stage,
    "deals": deal_of,
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
    rebuilt: int = 0  # leads whose history was put back in time order

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
            "leads_rebuilt": self.rebuilt,
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
    """Import a CSV/TSV, JSONL or Parquet file of leads, accounts, events, stage changes or deals.

    Good rows are written in batches of `batch_size`, each batch in its own transaction. Bad rows
    are written to `rejects_path` (default: `<file>.rejects.csv` beside it) with line, field and
    reason; an old rejects file is removed when nothing is rejected. `progress(done, total)` is
    called after each batch (`total` is an estimate, or None when counting would cost too much).
    A file or mapping that cannot be used at all raises `InvalidInput` before anything is written.

    Stage changes and deals (and a leads file's lifecycle dates) are history: dated before the
    import, they start no SLA clock and send nothing, whatever cutoff the workspace has. The leads
    they touch, and leads that got events older than their newest change while the workspace
    has a history cutoff, are rebuilt in time order once the rows are in.
    """
    if kind not in KINDS:
        raise InvalidInput(f"cannot import {kind!r}: choose {', '.join(KINDS)}")
    if batch_size < 1:
        raise InvalidInput("the batch size must be at least 1", field="batch_size")
    spec = mapping or Mapping()
    rejects_path = rejects_path or default_rejects_path(path)
    if rejects_path.resolve() == path.resolve():
        raise InvalidInput(f"the rejects file cannot be the input file {path}")
    now = now or utcnow()
    summary = ImportSummary(kind, path)
    workspace, history = writing(workspace, kind, spec, now)
    with open_table(path, delimiter=spec.delimiter) as table:
        converter = RowConverter.for_file(spec, kind, table.columns, path)
        converter.received_at = now
        with _Rejects(rejects_path, path) as rejects:
            for chunk in _chunks(table.rows, batch_size):
                import_rows(workspace, converter, chunk, rejects, summary, now, history)
                if progress:
                    progress(summary.rows_read, table.total)
            summary.rejects_path = rejects.finish()
    summary.rebuilt = rebuild_pending(workspace, now, min(batch_size, 500))
    if progress and table.total != summary.rows_read:
        progress(summary.rows_read, summary.rows_read)  # the total was an estimate: end the bar at 100 %
    return summary


def writing(workspace: Workspace, kind: Kind, mapping: Mapping, now: datetime) -> tuple[Workspace, bool]:
    """The workspace an import of `kind` writes through, and whether it has a history cutoff: stage
    changes, deals and lifecycle dates are history (no SLA clock, nothing sent)."""
    if kind in ("stages", "deals") or mapping.lifecycle:
        workspace = as_history(workspace, now)
    return workspace, of(workspace).cutoff(now) is not None


class Rejects(Protocol):
    """Where rows that cannot be imported go, with the field and the reason (a file, a CRM sync's report)."""

    count: int

    def add(self, row: RawRow, field_name: str | None, reason: str) -> None: ...


def _chunks(rows: Iterator[RawRow], size: int) -> Iterator[list[RawRow]]:
    while chunk := list(islice(rows, size)):
        yield chunk


def import_rows(
    workspace: Workspace,
    converter: RowConverter,
    rows: list[RawRow],
    rejects: Rejects,
    summary: ImportSummary,
    now: datetime,
    history: bool,
) -> list[Row | None]:
    """Import one batch of rows in one transaction (retried whole on a lost race); the record of
    each row, or None for a row rejected (into `rejects`, with its field and reason)."""
    summary.rows_read += len(rows)
    good: list[tuple[RawRow, Row]] = []
    kept: dict[int, Row | None] = {}
    dates: dict[int, list[StageFact]] = {}  # a leads row's lifecycle dates, by its place in `good`
    source = converter.source
    for row in rows:
        if row.problem:
            rejects.add(row, None, row.problem)
            continue
        try:
            record = converter.convert(row.values)
            if converter.mapping.lifecycle:
                if facts := converter.lifecycle(row.values, "import"):
                    dates[len(good)] = facts
            good.append((row, record))
        except InvalidInput as error:
            rejects.add(row, error.field, error.message)
    if good:
        # Upserts and events are idempotent: a chunk that lost a race is simply applied again.
        records = [record for _, record in good]
        results = retrying(workspace, lambda uow: _write(uow, converter.kind, records, now, source, dates, history))
        for (row, record), (status, problem) in zip(good, results, strict=True):
            if problem is None:
                setattr(summary, status, getattr(summary, status) + 1)
                kept[id(row)] = record
            else:
                rejects.add(row, *problem)
    summary.rejected = rejects.count
    return [kept.get(id(row)) for row in rows]


_Result: TypeAlias = tuple[str, tuple[str | None, str] | None]  # status, and (field, reason) when rejected


def _write(
    uow: UnitOfWork,
    kind: Kind,
    records: list[Row],
    now: datetime,
    source: str,
    dates: dict[int, list[StageFact]],
    history: bool,
) -> list[_Result]:
    """Write one chunk; the leads to rebuild once the whole file is in are queued in its
    transaction (stage facts always; late events of history)."""
    create = uow.workspace.settings.create_unknown_leads
    if kind == "events":
        events = [r for r in records if isinstance(r, Event)]
        outcomes = ingest_events(uow, events, create_unknown=create, now=now, by="import", defer_late=history)
        return [
            (o.status, (o.field or "email", o.reason or o.status) if o.status == "rejected" else None) for o in outcomes
        ]
    if kind in ("stages", "deals"):
        if kind == "stages":
            facts = [r for r in records if isinstance(r, tuple)]
            done = record_facts(uow, facts, source=source, now=now, create_unknown=create)
        else:
            done = upsert_deals(uow, [r for r in records if isinstance(r, Deal)], now=now, create_unknown=create)
        return _results(done)
    if kind == "accounts":
        outcome = upsert_accounts(uow, [r for r in records if isinstance(r, Account)], now=now)
    else:
        outcome = upsert_leads(uow, [r for r in records if isinstance(r, Lead)], now=now)
    results: list[_Result] = [
        (status, (error.field, error.message) if (error := outcome.errors.get(i)) else None)
        for i, status in enumerate(outcome.statuses)
    ]
    if dates:
        keyed = [
            (lead.email, lead.external_id, fact)
            for i, facts in dates.items()
            if results[i][1] is None and isinstance(lead := records[i], Lead)
            for fact in facts
        ]
        done = record_facts(uow, keyed, source=source, now=now, create_unknown=False)
        where = [i for i, facts in dates.items() if results[i][1] is None for _ in facts]
        for i, problem in done.problems.items():
            results[where[i]] = ("rejected", (f"lifecycle.{keyed[i][2].to_stage.value}", problem[1]))
    return results


def _results(done: FactsOutcome) -> list[_Result]:
    return [(status, done.problems.get(i)) for i, status in enumerate(done.statuses)]


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
        cells = [str(self.source), row.line, field_name or "(row)", reason, row.raw]
        self.writer.writerow([safe_cell(cell) for cell in cells])  # no cell a spreadsheet would run as a formula
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
