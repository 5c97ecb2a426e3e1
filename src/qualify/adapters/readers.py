"""Read rows from CSV/TSV, JSON Lines and Parquet files, reporting unreadable rows instead of failing.

Every row carries the place it came from: the physical line (header = line 1) for CSV and
JSONL, the row number (first row = 1) for Parquet. A row that cannot be read (bytes that are
not UTF-8, broken quoting, a wrong number of columns, a line that is not a JSON object, a line
over `MAX_LINE_BYTES`) comes out with `problem` set, so the caller can reject it and go on with
the rest of the file. A file in UTF-16 or UTF-32, or with no header, is refused as a whole.
"""

from __future__ import annotations

import csv
import json
import math
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import IO, Any

from qualify.domain.errors import InvalidInput
from qualify.domain.records import MAX_DOCUMENT_DEPTH

CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
RAW_LIMIT = 500  # characters of the raw row kept for the rejects file
MAX_RECORD_LINES = 100  # a quoted field longer than this is taken for a quote that never closes
MAX_LINE_BYTES = 16 << 20  # a longer line is rejected unread, so one runaway line cannot fill the memory
_WIDE_BOMS = {  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}
_COUNT_LIMIT = 1 << 30  # count lines for the progress total only below 1 GiB


@dataclass(frozen=True, slots=True)
class RawRow:
    """One row as read: its line (or row number), its values by column, and its raw text."""

    line: int
    values: dict[str, Any]
    raw: str
    problem: str | None = None  # why the row could not be read; `values` is empty then


@dataclass
class Table:
    """An open file: its columns (None when rows may differ, as in JSONL), an estimated total and its rows."""

    path: Path
    columns: list[str] | None
    total: int | None
    rows: Iterator[RawRow]


def supported_suffixes() -> tuple[str, ...]:
    return (*CSV_SUFFIXES, *JSONL_SUFFIXES, *PARQUET_SUFFIXES)


@contextmanager
def open_table(path: Path, *, delimiter: str | None = None) -> Iterator[Table]:
    """Open a data file by its extension; raise `InvalidInput` when the file as a whole is unreadable."""
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        yield _parquet_table(path)
        return
    if suffix not in CSV_SUFFIXES and suffix not in JSONL_SUFFIXES:
        raise InvalidInput(
            f"{path}: cannot tell the format from {suffix or 'no extension'!r}; use one of {', '.join(supported_suffixes())}"
        )
    try:
        handle = path.open("rb")
    except OSError as error:
        raise InvalidInput(f"{path}: cannot open the file: {error.strerror}") from error
    with handle:
        _refuse_wide_encodings(path, handle)
        if suffix in JSONL_SUFFIXES:
            yield Table(path, None, _count_lines(path), _jsonl_rows(handle))
        else:
            yield _csv_table(path, handle, delimiter or CSV_SUFFIXES[suffix])


def _refuse_wide_encodings(path: Path, handle: IO[bytes]) -> None:
    """UTF-16 and UTF-32 files (as Excel's "Unicode text" writes them) would fail on every line: say so once."""
    start = handle.read(4)
    handle.seek(0)
    for mark, name in _WIDE_BOMS.items():
        if start.startswith(mark):
            raise InvalidInput(
                f"{path}: line 1: the file is {name} (it starts with the byte-order mark {mark.hex(' ').upper()}); "
                "save it as UTF-8"
            )


def clip(text: str) -> str:
    return text if len(text) <= RAW_LIMIT else text[: RAW_LIMIT - 1] + "…"


def _count_lines(path: Path, header: int = 0) -> int | None:
    """Lines in the file (minus the header): a cheap total for the progress bar, or None for huge files."""
    if path.stat().st_size > _COUNT_LIMIT:
        return None
    count, last = 0, b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        count += 1
    return max(count - header, 0)


# --- physical lines ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    text: str
    problem: str | None
    overlong: bool = False  # over MAX_LINE_BYTES: `text` is only its start, and the line is a row of its own


def _lines(handle: IO[bytes]) -> Iterator[_Line]:
    number = 0
    while data := handle.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(data) > MAX_LINE_BYTES:
            yield _overlong(number, data, handle)
            continue
        problem = None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            text = data.decode("utf-8", "replace")
            problem = (
                f"line {number} is not valid UTF-8 (byte 0x{data[error.start]:02x} at position {error.start + 1}); "
                "save the file as UTF-8"
            )
        if number == 1:
            text = text.removeprefix("\ufeff")  # Excel writes a byte-order mark
        yield _Line(number, text, problem)


def _overlong(number: int, start: bytes, handle: IO[bytes]) -> _Line:
    """A line over the limit: skip the rest of it without keeping it, and say how long it was."""
    size = len(start)
    if not start.endswith(b"\n"):
        while more := handle.readline(1 << 20):
            size += len(more)
            if more.endswith(b"\n"):
                break
    problem = f"line {number} is {size:,} bytes long; the limit is {MAX_LINE_BYTES:,} bytes a line"
    return _Line(number, start[:RAW_LIMIT].decode("utf-8", "replace"), problem, overlong=True)


# --- CSV ----------------------------------------------------------------------------------------


def _csv_table(path: Path, handle: IO[bytes], delimiter: str) -> Table:
    # The csv module refuses fields over 128 KiB by default, with a message about quoting. Let it
    # read any field a line may hold: lines are bounded (MAX_LINE_BYTES) and values are checked
    # against the field limits afterwards, with the column's name (docs/import.md).
    if csv.field_size_limit() < MAX_LINE_BYTES:
        csv.field_size_limit(MAX_LINE_BYTES)
    records = _CsvRecords(_lines(handle), delimiter)
    try:
        header = records.header()
    except InvalidInput as error:
        raise InvalidInput(f"{path}: {error.message}") from None
    columns = [name.strip() for name in header]
    seen: set[str] = set()
    for name in columns:
        if not name:
            raise InvalidInput(f"{path}: line 1: the header has an empty column name")
        if name in seen:
            raise InvalidInput(f"{path}: line 1: the header names column {name!r} twice")
        seen.add(name)
    return Table(path, columns, _count_lines(path, header=1), records.rows(columns))


class _CsvRecords:
    """Groups physical lines into CSV records, so that a broken quote costs one line, not the rest of the file."""

    def __init__(self, lines: Iterator[_Line], delimiter: str) -> None:
        self.source = lines
        self.pending: deque[_Line] = deque()
        self.delimiter = delimiter

    def header(self) -> list[str]:
        group = self._group()
        if not group:
            raise InvalidInput("the file is empty: a CSV file needs a header line naming its columns")
        fields, problem = self._parse(group)
        problem = next((line.problem for line in group if line.problem), problem)
        if "\r" in group[0].text.rstrip("\r\n"):
            problem = "lines end with a lone carriage return (CR); save the file with LF or CRLF line endings"
        if "\x00" in group[0].text:
            problem = "it holds NUL bytes (0x00): is the file UTF-16 or binary? Save it as UTF-8 text"
        if fields is None or problem:
            raise InvalidInput(f"line {group[0].number}: cannot read the header: {problem}")
        return fields

    def rows(self, columns: list[str]) -> Iterator[RawRow]:
        while group := self._group():
            yield self._row(group, columns)

    def _row(self, group: list[_Line], columns: list[str]) -> RawRow:
        first = group[0]
        raw = clip("".join(line.text for line in group).rstrip("\r\n"))
        fields, problem = self._parse(group)
        if fields is None and len(group) > 1:
            # A quote that opened a multi-line field never closed properly: read the first line on
            # its own and give the following lines back, so they are read as rows of their own.
            self.pending.extendleft(reversed(group[1:]))
            group, raw = [first], clip(first.text.rstrip("\r\n"))
            fields, alone = self._parse(group)
            problem = alone or problem
        decode = next((line.problem for line in group if line.problem), None)
        if decode:
            return RawRow(first.number, {}, raw, decode)
        if fields is None and problem and "field larger than field limit" in problem:
            return RawRow(first.number, {}, raw, f"a field is over {MAX_LINE_BYTES:,} characters")
        if fields is None:
            return RawRow(first.number, {}, raw, f"broken quoting: {problem}")
        if len(fields) != len(columns):
            return RawRow(first.number, {}, raw, f"expected {len(columns)} columns, found {len(fields)}")
        return RawRow(first.number, dict(zip(columns, fields, strict=True)), raw)

    def _group(self) -> list[_Line]:
        """The next record's lines: until its quotes balance (or a limit, for a quote that never closes)."""
        group: list[_Line] = []
        quotes = 0
        while True:
            line = self.pending.popleft() if self.pending else next(self.source, None)
            if line is None:
                return group
            if not group and line.overlong:
                return [line]  # only its start was kept: its quotes say nothing
            if not group and not line.text.strip():
                continue  # blank lines between rows carry nothing
            group.append(line)
            quotes += line.text.count('"')
            if quotes % 2 == 0 or len(group) >= MAX_RECORD_LINES:
                return group

    def _parse(self, group: list[_Line]) -> tuple[list[str] | None, str | None]:
        """The record's fields, or None and why when the lines are not exactly one well-quoted record."""
        try:
            records = list(csv.reader((line.text for line in group), delimiter=self.delimiter, strict=True))
        except csv.Error as error:
            return None, str(error)
        if len(records) != 1:
            return None, "a quote inside a field is not doubled or not closed"
        return records[0], None


# --- JSON Lines ---------------------------------------------------------------------------------


def _jsonl_rows(handle: IO[bytes]) -> Iterator[RawRow]:
    for line in _lines(handle):
        text = line.text.strip()
        if not text:
            continue
        raw = clip(text)
        if line.problem:
            yield RawRow(line.number, {}, raw, line.problem)
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            yield RawRow(line.number, {}, raw, f"not valid JSON: {error.msg} (column {error.colno})")
            continue
        except RecursionError:
            nesting = f"nested too deeply to read (properties and attributes may nest {MAX_DOCUMENT_DEPTH} levels)"
            yield RawRow(line.number, {}, raw, f"not valid JSON: {nesting}")
            continue
        if not isinstance(value, dict):
            yield RawRow(line.number, {}, raw, "each line must be a JSON object ({...})")
            continue
        yield RawRow(line.number, value, raw)


# --- Parquet ------------------------------------------------------------------------------------


# Parquet compresses, and a dictionary-encoded column can hold one huge text shared by every row:
# a 48 KB file can expand to gigabytes. So a row group's size is checked before it is read, the
# text columns are read as dictionaries (each distinct text once), and each row's size is known
# before it is decoded: a row with more than PARQUET_ROW_BYTES of text is rejected unread (no row
# that large could be imported: a lead's fields are short, and its attributes or an event's
# properties hold at most 65,536 characters), and rows are decoded a group of at most
# PARQUET_DECODE_BYTES at a time.
PARQUET_ROW_GROUP_BYTES = 1 << 30  # uncompressed bytes of one row group
PARQUET_ROW_BYTES = 1 << 20
PARQUET_DECODE_BYTES = 64 << 20


def _parquet_table(path: Path) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        texts = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_binary(f.type)]
        parquet = pq.ParquetFile(path, read_dictionary=texts)
    except (pa.ArrowException, OSError) as error:
        raise InvalidInput(f"{path}: not a readable Parquet file: {error}") from error
    metadata = parquet.metadata
    for index in range(metadata.num_row_groups):
        size = metadata.row_group(index).total_byte_size
        if size > PARQUET_ROW_GROUP_BYTES:
            raise InvalidInput(
                f"{path}: row group {index + 1} holds {size:,} bytes uncompressed; the limit is "
                f"{PARQUET_ROW_GROUP_BYTES:,}: write the file with smaller row groups",
                field="file",
            )
    columns = list(parquet.schema_arrow.names)
    return Table(path, columns, metadata.num_rows, _parquet_rows(parquet))


def _row_sizes(batch: Any) -> list[int]:
    """Each row's bytes of text, from the dictionaries' lengths: nothing is decoded."""
    import pyarrow as pa
    import pyarrow.compute as pc

    sizes = [0] * batch.num_rows
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):
            lengths = pc.binary_length(column.dictionary).take(column.indices)
        elif pa.types.is_string(column.type) or pa.types.is_binary(column.type):
            lengths = pc.binary_length(column)
        else:
            continue
        for i, length in enumerate(lengths.to_pylist()):
            sizes[i] += length or 0
    return sizes


def _parquet_rows(parquet: Any) -> Iterator[RawRow]:
    number = 0
    for batch in parquet.iter_batches(batch_size=1_000):
        sizes = _row_sizes(batch)
        start = 0
        while start < batch.num_rows:
            if sizes[start] > PARQUET_ROW_BYTES:
                number += 1
                problem = (
                    f"row {number} holds {sizes[start]:,} bytes of text; the limit is {PARQUET_ROW_BYTES:,} bytes a row"
                )
                yield RawRow(number, {}, f"(a row of {sizes[start]:,} bytes of text)", problem)
                start += 1
                continue
            end, total = start, 0
            while (
                end < batch.num_rows and sizes[end] <= PARQUET_ROW_BYTES and total + sizes[end] <= PARQUET_DECODE_BYTES
            ):
                total += sizes[end]
                end += 1
            end = max(end, start + 1)
            for values in batch.slice(start, end - start).to_pylist():
                number += 1
                shown = {k: clip(v) if isinstance(v, str) else v for k, v in values.items()}  # no long text dumped
                yield RawRow(number, values, clip(json.dumps(shown, default=_json_default, ensure_ascii=False)))
            start = end


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


# --- values -------------------------------------------------------------------------------------

VALUE_TYPES = ("str", "int", "float", "bool", "timestamp", "json")
EPOCH_FORMATS = ("epoch", "epoch_ms")
_TRUE = frozenset({"yes", "y", "true", "t", "1"})
_FALSE = frozenset({"no", "n", "false", "f", "0"})


class BadValue(ValueError):
    """A value that does not parse as its type; the message says what was expected."""


def is_missing(value: Any, null_values: frozenset[str]) -> bool:
    """True for None, NaN and the texts that mean "no value" (always including the empty text)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and (not value.strip() or value.strip() in null_values)


def as_text(value: Any) -> str:
    """The text of a scalar as a person would write it: 7 not 7.0, true not True."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        raise BadValue("expected a single value, got a JSON object or list")
    return str(value).strip()


def parse_value(value: Any, type_: str | None, *, timestamp_format: str | None, zone: tzinfo) -> Any:
    """Convert `value` to `type_` (None: keep it as read, made JSON-safe); raise `BadValue` saying why not."""
    if type_ is None:
        return _plain(value)
    if type_ == "str":
        return as_text(value)
    if type_ == "int":
        return _int(value)
    if type_ == "float":
        return _float(value)
    if type_ == "bool":
        return _bool(value)
    if type_ == "timestamp":
        return parse_timestamp(value, timestamp_format, zone)
    return _json_object(value)


def _plain(value: Any, depth: int = 1) -> Any:
    """The value as JSON can store it: nested objects too, since attributes and properties are JSON."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict | list | tuple) and depth > MAX_DOCUMENT_DEPTH:
        raise BadValue(f"nested deeper than {MAX_DOCUMENT_DEPTH} levels of objects and lists")
    if isinstance(value, dict):
        return {str(key): _plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, depth + 1) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise BadValue(f"expected a whole number, got {as_text(value)}")
    if isinstance(value, int):
        return value
    try:
        number = float(as_text(value))
    except ValueError:
        raise BadValue(f"expected a whole number, got {as_text(value)!r}") from None
    if not number.is_integer():
        raise BadValue(f"expected a whole number, got {as_text(value)!r}")
    return int(number)


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise BadValue(f"expected a number, got {as_text(value)}")
    try:
        number = float(value if isinstance(value, int | float) else as_text(value))
    except ValueError:
        raise BadValue(f"expected a number, got {as_text(value)!r}") from None
    if not math.isfinite(number):
        raise BadValue(f"expected a finite number, got {as_text(value)!r}")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = as_text(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadValue(f"expected yes/no, true/false or 1/0, got {as_text(value)!r}")


def parse_timestamp(value: Any, timestamp_format: str | None, zone: tzinfo) -> datetime:
    """An aware UTC time; a time without a zone is taken in `zone`."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif timestamp_format in EPOCH_FORMATS or (isinstance(value, int | float) and not isinstance(value, bool)):
        return _epoch(value, timestamp_format)
    else:
        moment = _time_text(as_text(value), timestamp_format)
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=zone)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise BadValue(f"{as_text(value)!r} is out of range: in UTC it is outside the years 1-9999") from None


def _time_text(text: str, timestamp_format: str | None) -> datetime:
    try:
        if timestamp_format:
            return datetime.strptime(text, timestamp_format)
        return datetime.fromisoformat(text)
    except ValueError as error:
        # Python says why a well-formed time is impossible (day is out of range for month); its
        # message for a text that is no time at all only repeats the text.
        why = "" if "isoformat" in str(error) or "does not match" in str(error) else f" ({error})"
        if "offset must be" in str(error):
            why = " (a UTC offset must be less than 24 hours)"
        if timestamp_format:
            raise BadValue(f"{text!r} does not match the time format {timestamp_format!r}{why}") from None
        raise BadValue(
            f"{text!r} is not an ISO 8601 time{why} (for example 2026-03-02T09:00:00Z); "
            "set timestamp_format in the mapping for other layouts"
        ) from None


def _epoch(value: Any, timestamp_format: str | None) -> datetime:
    if timestamp_format not in EPOCH_FORMATS:
        raise BadValue(f"{as_text(value)} is a number; set format: epoch (seconds) or epoch_ms for Unix times")
    seconds = _float(value)
    try:
        return datetime.fromtimestamp(seconds / 1000 if timestamp_format == "epoch_ms" else seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise BadValue(f"{as_text(value)} is out of range for a Unix time") from None


def _json_object(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise BadValue(f"not valid JSON: {error.msg} (column {error.colno})") from None
        except RecursionError:
            raise BadValue(f"nested deeper than {MAX_DOCUMENT_DEPTH} levels of objects and lists") from None
    if not isinstance(value, dict):
        raise BadValue("expected a JSON object ({...})")
    return {str(key): _plain(item, 2) for key, item in value.items()}
