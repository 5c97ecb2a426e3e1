"""Export the store to Parquet, so the batch side can run where the data is.

Layout of an export directory:

    manifest.json                      counts, time of export, active model version
    accounts.parquet
    leads.parquet
    stage_history.parquet
    deals.parquet                      the deals (imported with `qualify import deals`)
    events/date=YYYY-MM-DD/part-N.parquet    partitioned by the UTC day the event occurred

Times are UTC timestamps (microseconds). `attributes` and `properties` are maps of text to text
(numbers as written, booleans as true/false, nested values as JSON), which every engine reads;
`awards` is a list of (rule, points).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Connection, Table, func, select

from qualify.adapters import schema
from qualify.domain.values import as_text

CHUNK = 50_000
TEXT_MAP = pa.map_(pa.string(), pa.string())
TIME = pa.timestamp("us", tz="UTC")
AWARDS = pa.list_(pa.struct([("rule", pa.string()), ("points", pa.float64())]))


def text_map(values: dict[str, Any] | None) -> list[tuple[str, str]]:
    return [(str(k), text) for k, v in sorted((values or {}).items()) if (text := as_text(v)) is not None]


def _arrow_type(column: Any) -> pa.DataType:
    name = column.name
    if name in ("attributes", "properties"):
        return TEXT_MAP
    if name == "awards":
        return AWARDS
    if name == "buying_roles":
        return pa.list_(pa.string())
    python = column.type.python_type if not isinstance(column.type, schema.UTCDateTime) else datetime
    return {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string(), datetime: TIME}.get(
        python, pa.string()
    )


# The O(1) states scores are kept with (a lead's accumulators, an account's roll-up): not exported.
INTERNAL = frozenset({"engagement_state", "rollup"})
CONVERTED = ("attributes", "properties", "awards")  # the columns `_convert` rewrites; the others go as read


def _convert(name: str, value: Any) -> Any:
    if name in ("attributes", "properties"):
        return text_map(value)
    if name == "awards":
        return [{"rule": rule, "points": float(points)} for rule, points in (value or [])]
    return value


def _batches(conn: Connection, table: Table, order: Any) -> Iterator[dict[str, list[Any]]]:
    """The table's rows, CHUNK at a time in key order, as columns (name -> values)."""
    last = None
    key = table.c.id if "id" in table.c else order
    names = [c.name for c in table.columns]
    at_key = names.index(key.name)
    while True:
        statement = select(table).order_by(key).limit(CHUNK)
        if last is not None:
            statement = statement.where(key > last)
        rows = conn.execute(statement).all()
        if not rows:
            return
        last = rows[-1][at_key]
        yield dict(zip(names, (list(values) for values in zip(*rows, strict=True)), strict=True))


def _arrow_schema(table: Table, extra: dict[str, pa.DataType] | None = None) -> pa.Schema:
    fields = [pa.field(c.name, _arrow_type(c)) for c in table.columns if c.name not in INTERNAL]
    return pa.schema(fields + [pa.field(k, v) for k, v in (extra or {}).items()])


def _to_arrow(columns: dict[str, list[Any]], arrow_schema: pa.Schema) -> pa.Table:
    converted = {}
    for field in arrow_schema:
        values = columns[field.name]
        if field.name in CONVERTED:
            values = [_convert(field.name, value) for value in values]
        converted[field.name] = pa.array(values, field.type)
    return pa.table(converted, schema=arrow_schema)


def _write_table(conn: Connection, table: Table, path: Path) -> int:
    arrow_schema = _arrow_schema(table)
    count = 0
    with pq.ParquetWriter(path, arrow_schema) as writer:
        for columns in _batches(conn, table, table.c.id):
            arrow = _to_arrow(columns, arrow_schema)
            writer.write_table(arrow)
            count += arrow.num_rows
    if count == 0:
        pq.write_table(arrow_schema.empty_table(), path)
    return count


def _write_events(conn: Connection, root: Path, progress: Callable[[int, int], None] | None, total: int) -> int:
    arrow_schema = _arrow_schema(schema.events)
    count = 0
    for part, columns in enumerate(_batches(conn, schema.events, schema.events.c.id)):
        table = _to_arrow(columns, arrow_schema)
        days = pc.strftime(table["occurred_at"], format="%Y-%m-%d")  # the UTC day (the column is in UTC)
        pq.write_to_dataset(
            table.append_column("date", days),
            root,
            partition_cols=["date"],
            basename_template=f"part-{part}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
        )
        count += table.num_rows
        if progress:
            progress(count, total)
    if count == 0:  # readers expect at least one file with the schema
        empty = root / "date=1970-01-01"
        empty.mkdir(parents=True, exist_ok=True)
        pq.write_table(arrow_schema.empty_table(), empty / "part-empty.parquet")
    return count


def export_parquet(
    conn: Connection,
    directory: Path,
    *,
    model_version: str | None,
    now: datetime,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the store's accounts, leads, stage history and events under `directory` (replaced)."""
    if directory.exists():
        if not (directory / "manifest.json").exists() and any(directory.iterdir()):
            raise FileExistsError(
                f"{directory} exists, is not empty and holds no Qualify export: choose another directory"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    total_events = int(conn.execute(select(func.count()).select_from(schema.events)).scalar_one())
    counts = {
        "accounts": _write_table(conn, schema.accounts, directory / "accounts.parquet"),
        "leads": _write_table(conn, schema.leads, directory / "leads.parquet"),
        "stage_history": _write_table(conn, schema.stage_history, directory / "stage_history.parquet"),
        "deals": _write_table(conn, schema.deals, directory / "deals.parquet"),
        "events": _write_events(conn, directory / "events", progress, total_events),
    }
    manifest = {"exported_at": now.isoformat(), "model_version": model_version, "counts": counts, "format": 1}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
