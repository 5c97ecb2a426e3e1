"""Rows written to a file whose name says its format: `.csv` (cells made safe for spreadsheets),
`.jsonl` (one JSON object a line) or `.parquet`, streamed a batch at a time so memory stays flat."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from qualify.adapters.csv_cells import safe_cell

FORMATS = (".csv", ".jsonl", ".parquet")
_BATCH = 5000  # rows a Parquet row group holds


def format_of(path: Path) -> str:
    """The file's format by its extension; `ValueError` naming the ones there are."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: write a {', '.join(FORMATS)} file (its extension says which)")
    return suffix


def write_rows(path: Path, columns: Mapping[str, str], rows: Iterable[dict[str, Any]]) -> int:
    """Write `rows` to `path` in its extension's format; how many were written. `columns` names
    each column's kind (`int`, `float`, `text`, `time`): Parquet's types, whatever the first rows hold.

    Written beside the target first and moved over it when whole: a failed export leaves no half file."""
    suffix = format_of(path)
    counted = _Counted(rows)
    partial = path.with_name(f".{path.name}.partial")
    try:
        if suffix == ".parquet":
            _parquet(partial, columns, counted)
        else:
            lines = csv_lines if suffix == ".csv" else json_lines
            with partial.open("w", encoding="utf-8", newline="") as handle:
                for chunk in lines(list(columns), counted):
                    handle.write(chunk)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return counted.n


class _Counted:
    def __init__(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows, self.n = rows, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.rows:
            self.n += 1
            yield row


def csv_lines(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A header, then one line a row; no cell a spreadsheet would run as a formula (`safe_cell`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for n, row in enumerate(rows, 1):
        writer.writerow([safe_cell(_text(row.get(c))) for c in columns])
        if n % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def json_lines(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """One JSON object a line, 500 lines a chunk."""
    lines: list[str] = []
    for row in rows:
        lines.append(json.dumps({c: row.get(c) for c in columns}, default=_iso, ensure_ascii=False) + "\n")
        if len(lines) == 500:
            yield "".join(lines)
            lines.clear()
    yield "".join(lines)


def _text(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return "" if value is None else value


def _iso(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _parquet(path: Path, columns: Mapping[str, str], rows: Iterable[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = {"int": pa.int64(), "float": pa.float64(), "text": pa.string(), "time": pa.timestamp("us", tz="UTC")}
    schema = pa.schema([(name, kinds[kind]) for name, kind in columns.items()])
    batch: list[dict[str, Any]] = []
    with pq.ParquetWriter(str(path), schema) as writer:
        for row in rows:
            batch.append(row)
            if len(batch) >= _BATCH:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch.clear()
        writer.write_table(pa.Table.from_pylist(batch, schema=schema))
