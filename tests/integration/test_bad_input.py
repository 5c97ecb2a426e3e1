"""A corpus of malformed files and payloads, on SQLite and PostgreSQL.

Each case is built in the test's temporary folder (or as a request body) and says what must
happen: the file or request refused as a whole with a message naming the file and line, or each
bad row rejected with its line, field and reason while every good row is stored, once. Importing
the file (or sending the batch) a second time must store nothing more. The limits the cases run
into are the ones docs/api.md ("Limits") and docs/import.md document.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.types import Message

from qualify.adapters import readers, schema
from qualify.domain.access import Role
from qualify.domain.errors import InvalidInput
from qualify.domain.records import MAX_DOCUMENT_CHARS, MAX_DOCUMENT_DEPTH
from qualify.entrypoints.api import create_app
from qualify.entrypoints.api.limits import MAX_BODY_BYTES, BodySizeLimit
from qualify.entrypoints.api.schemas import MAX_BATCH
from qualify.service.admin.api_keys import create_key
from qualify.service.imports.files import import_file
from qualify.service.imports.mapping import parse_mapping
from qualify.service.reading.queries import lead_profile
from qualify.service.unit_of_work import Workspace

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
WHEN = "2026-03-01T09:00:00Z"


# --- what the store holds -----------------------------------------------------------------------


def stored(workspace: Workspace) -> dict[str, list[str]]:
    """The keys of every lead, account and event in the store, sorted (a key stored twice shows twice)."""
    leads, accounts, events = schema.leads, schema.accounts, schema.events
    with workspace.unit_of_work(read_only=True) as uow:
        conn = uow.connection
        return {
            "leads": sorted(r.email or f"ext:{r.external_id}" for r in conn.execute(select(leads))),
            "accounts": sorted(r.domain for r in conn.execute(select(accounts.c.domain))),
            "events": sorted(r.event_id for r in conn.execute(select(events.c.event_id))),
        }


def count(workspace: Workspace, table: Any) -> int:
    with workspace.unit_of_work(read_only=True) as uow:
        return int(uow.connection.execute(select(func.count()).select_from(table)).scalar_one())


# --- building malformed files -------------------------------------------------------------------


def ev(event_id: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": "page_view", "occurred_at": WHEN, "email": "ann@acme.com", **fields}


def jsonl(*rows: dict[str, Any] | str) -> bytes:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows).encode()


def nested(depth: int) -> str:
    """A JSON object nested `depth` levels deep (the object itself is level 1)."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def nested_value(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def huge_cell() -> bytes:
    return b"email,first_name,note\nann@acme.com,Ann," + b"x" * (10 << 20) + b"\nbob@acme.com,Bob,short\n"


@dataclass(frozen=True)
class FileCase:
    """A file, what it is imported as, and what must come of it."""

    id: str
    kind: str
    name: str
    data: bytes | Callable[[], bytes]
    kept: list[str] = field(default_factory=list)  # the keys stored afterwards (leads: emails; events: ids)
    rejects: dict[int, tuple[str, str]] = field(default_factory=dict)  # line -> (field, words of the reason)
    refused: str | None = None  # the whole file is refused: words of the message (which names the file)
    mapping: str | None = None

    def bytes(self) -> bytes:
        return self.data() if callable(self.data) else self.data


FILE_CASES = [
    # --- encodings -------------------------------------------------------------------------------
    FileCase(
        "latin-1 rows in a UTF-8 file",
        "leads",
        "leads.csv",
        "email,first_name\nann@acme.com,Ann\nrene@acme.com,Ren\xe9\nbob@acme.com,Bob\n".encode("latin-1"),
        kept=["ann@acme.com", "bob@acme.com"],
        rejects={3: ("(row)", "line 3 is not valid UTF-8 (byte 0xe9 at position 18); save the file as UTF-8")},
    ),
    FileCase(
        "cp1252 smart quotes",
        "leads",
        "leads.csv",
        "email,title\nann@acme.com,\u201cHead\u201d of sales\nbob@acme.com,CEO\n".encode("cp1252"),
        kept=["bob@acme.com"],
        rejects={2: ("(row)", "not valid UTF-8 (byte 0x93")},
    ),
    FileCase(
        "latin-1 header",
        "leads",
        "leads.csv",
        "email,pr\xe9nom\nann@acme.com,Ann\n".encode("latin-1"),
        refused="line 1: cannot read the header: line 1 is not valid UTF-8",
    ),
    FileCase(
        "UTF-16 with a BOM (CSV)",
        "leads",
        "leads.csv",
        "email,first_name\nann@acme.com,Ann\n".encode("utf-16"),
        refused="line 1: the file is UTF-16 (it starts with the byte-order mark FF FE); save it as UTF-8",
    ),
    FileCase(
        "UTF-16 with a BOM (JSONL)",
        "events",
        "events.jsonl",
        jsonl(ev("e1")).decode().encode("utf-16"),
        refused="the file is UTF-16",
    ),
    FileCase(
        "UTF-16 without a BOM",
        "leads",
        "leads.csv",
        "email,first_name\nann@acme.com,Ann\n".encode("utf-16-le"),
        refused="line 1: cannot read the header: it holds NUL bytes (0x00): is the file UTF-16 or binary?",
    ),
    FileCase(
        "UTF-8 with a BOM (CSV)",
        "leads",
        "leads.csv",
        b"\xef\xbb\xbfemail,first_name\nann@acme.com,Ann\n",
        kept=["ann@acme.com"],
    ),
    FileCase(
        "UTF-8 with a BOM (JSONL)",
        "events",
        "events.jsonl",
        b"\xef\xbb\xbf" + jsonl(ev("e1"), ev("e2")),
        kept=["e1", "e2"],
    ),
    # --- NUL and other characters no store keeps ----------------------------------------------------
    FileCase(
        "a NUL byte in a field",
        "leads",
        "leads.csv",
        b"email,first_name,note\nann@acme.com,An\x00n,\nbob@acme.com,Bob,b\x00\ncy@acme.com,Cy,\n",
        kept=["cy@acme.com"],
        rejects={
            2: ("first_name", "column 'first_name': contains a NUL character (\\x00) at position 3"),
            3: ("attributes.note", "contains a NUL character (\\x00) at position 2"),
        },
    ),
    FileCase(
        "NUL and half a surrogate pair escaped in JSON",
        "events",
        "events.jsonl",
        (
            jsonl(ev("e1", properties={"url": "/a\u0000"}), ev("e2"))
            + b'{"event_id": "e3", "type": "page_view", "occurred_at": "2026-03-01T09:00:00Z",'
            + b' "email": "ann@acme.com", "title": "\\ud800"}\n'
        ),
        kept=["e2"],
        rejects={
            1: ("properties.url", "NUL character"),
            3: ("properties.title", "half a surrogate pair (\\ud800)"),
        },
    ),
    # --- columns ------------------------------------------------------------------------------------
    FileCase(
        "no email or external_id column",
        "leads",
        "leads.csv",
        b"first_name,title\nAnn,CEO\n",
        refused="leads need email or external_id: name a column email or external_id. The file's columns: first_name, title",
    ),
    FileCase(
        "events without occurred_at happened when imported (the API's rule)",
        "events",
        "events.csv",
        b"event_id,type,email\ne1,page_view,ann@acme.com\n",
        kept=["e1"],
    ),
    FileCase(
        "a JSONL row with an event field misspelt",
        "events",
        "events.jsonl",
        jsonl({"event_id": "e1", "type": "page_view", "email": "ann@acme.com", "occurredAt": WHEN}, ev("e2")),
        kept=["e2"],
        rejects={1: ("occurredAt", "did you mean 'occurred_at'?")},
    ),
    FileCase(
        "a JSONL row without a type",
        "events",
        "events.jsonl",
        jsonl({"event_id": "e1", "email": "ann@acme.com", "occurred_at": "2026-03-01T09:00:00Z"}, ev("e2")),
        kept=["e2"],
        rejects={1: ("type", "no value: an event needs its type")},
    ),
    FileCase(
        "extra unknown columns become attributes",
        "leads",
        "leads.csv",
        b"email,first_name,Favourite Colour,x\nann@acme.com,Ann,blue,1\n",
        kept=["ann@acme.com"],
    ),
    FileCase(
        "extra unknown columns ignored by a mapping",
        "leads",
        "leads.csv",
        b"E-mail,Colour\nann@acme.com,blue\n",
        kept=["ann@acme.com"],
        mapping="fields:\n  email: E-mail\nunmapped: ignore\n",
    ),
    FileCase(
        "too many and too few fields",
        "leads",
        "leads.csv",
        b"email,first_name\nann@acme.com,Ann,surplus\nbob@acme.com\ncy@acme.com,Cy\n",
        kept=["cy@acme.com"],
        rejects={2: ("(row)", "expected 2 columns, found 3"), 3: ("(row)", "expected 2 columns, found 1")},
    ),
    FileCase(
        "an empty column name in the header",
        "leads",
        "leads.csv",
        b"email,,title\nann@acme.com,x,CEO\n",
        refused="line 1: the header has an empty column name",
    ),
    # --- quoting ------------------------------------------------------------------------------------
    FileCase(
        "a quote that never closes",
        "leads",
        "leads.csv",
        b'email,note\nann@acme.com,"never closed\nbob@acme.com,fine\ncy@acme.com,"two\nlines"\n',
        kept=["bob@acme.com", "cy@acme.com"],
        rejects={2: ("(row)", "broken quoting")},
    ),
    FileCase(
        "text after a closing quote",
        "leads",
        "leads.csv",
        b'email,note\nann@acme.com,"x"y\nbob@acme.com,fine\n',
        kept=["bob@acme.com"],
        rejects={2: ("(row)", "broken quoting")},
    ),
    # --- sizes --------------------------------------------------------------------------------------
    FileCase(
        "a 10 MB cell",
        "leads",
        "leads.csv",
        huge_cell,
        kept=["bob@acme.com"],
        rejects={2: ("attributes.note", f"the limit for all attributes together is {MAX_DOCUMENT_CHARS:,}")},
    ),
    FileCase(
        "fields longer than the store's columns",
        "leads",
        "leads.csv",
        b"email,first_name,title\nann@acme.com," + b"A" * 201 + b",CEO\nbob@acme.com,Bob," + b"T" * 301 + b"\n",
        rejects={
            2: ("first_name", "column 'first_name': 201 characters; the limit is 200"),
            3: ("title", "column 'title': 301 characters; the limit is 300"),
        },
    ),
    FileCase(
        "account fields over their limits",
        "accounts",
        "accounts.csv",
        b"domain,name,notes\nacme.com,"
        + b"N" * 301
        + b",\nglobex.io,Globex,"
        + b"x" * 70_000
        + b"\ninitech.com,Initech,\n",
        kept=["initech.com"],
        rejects={
            2: ("name", "column 'name': 301 characters; the limit is 300"),
            3: ("attributes.notes", "65,536"),
        },
    ),
    # --- times --------------------------------------------------------------------------------------
    FileCase(
        "bad timestamps",
        "events",
        "events.csv",
        (
            b"event_id,type,occurred_at,email\n"
            b"e1,page_view,yesterday,ann@acme.com\n"
            b"e2,page_view,2026-02-31T10:00:00Z,ann@acme.com\n"
            b"e3,page_view,0000-01-01T00:00:00Z,ann@acme.com\n"
            b"e4,page_view,10000-01-01T00:00:00Z,ann@acme.com\n"
            b"e5,page_view,9999-12-31T23:59:59-05:00,ann@acme.com\n"
            b"e6,page_view,0001-01-01T00:00:00+14:00,ann@acme.com\n"
            b"e7,page_view,1899-12-30T00:00:00Z,ann@acme.com\n"
            b"e8,page_view,2026-03-01,ann@acme.com\n"
            b"e9,page_view,2027-03-01T00:00:00Z,ann@acme.com\n"
        ),
        kept=["e8"],
        rejects={
            2: ("occurred_at", "'yesterday' is not an ISO 8601 time (for example"),
            3: ("occurred_at", "'2026-02-31T10:00:00Z' is not an ISO 8601 time (day is out of range for month)"),
            4: ("occurred_at", "'0000-01-01T00:00:00Z' is not an ISO 8601 time"),
            5: ("occurred_at", "'10000-01-01T00:00:00Z' is not an ISO 8601 time"),
            6: ("occurred_at", "'9999-12-31T23:59:59-05:00' is out of range: in UTC it is outside the years 1-9999"),
            7: ("occurred_at", "out of range"),
            8: ("occurred_at", "column 'occurred_at': 1899-12-30T00:00:00+00:00 is before 1900"),
            10: ("occurred_at", "occurred_at 2027-03-01T00:00:00+00:00 is in the future"),
        },
    ),
    FileCase(
        "time zones and odd offsets",
        "events",
        "events.jsonl",
        jsonl(
            ev("naive", occurred_at="2026-03-01T09:00:00"),
            ev("kiribati", occurred_at="2026-03-01T09:00:00+14:00"),
            ev("baker", occurred_at="2026-03-01T09:00:00-12:00"),
            ev("nepal", occurred_at="2026-03-01T09:00:00+05:45"),
            ev("seconds", occurred_at="2026-03-01T09:00:00+05:30:15"),
            ev("day", occurred_at="2026-03-01T09:00:00+24:00"),
            ev("word", occurred_at="2026-03-01T09:00:00 Europe/Paris"),
        ),
        kept=["baker", "kiribati", "naive", "nepal", "seconds"],
        rejects={
            6: ("occurred_at", "(a UTC offset must be less than 24 hours)"),
            7: ("occurred_at", "is not an ISO 8601 time"),
        },
    ),
    # --- emails -------------------------------------------------------------------------------------
    FileCase(
        "emails that are not emails",
        "leads",
        "leads.csv",
        (
            "email\n"
            "jane(at)acme.com\n"
            "jane doe@acme.com\n"
            "@acme.com\n"
            "jane@\n"
            "jane@@acme.com\n"
            "jane@acme\n"
            "jane@ex\u00e4mple.com\n"
            "ja\u200bne@acme.com\n"
            f"{'j' * 300}@acme.com\n"
            "jos\u00e9@acme.com\n"
            " Ann@Acme.COM \n"
        ).encode(),
        kept=["ann@acme.com", "jos\u00e9@acme.com"],
        rejects={
            2: ("email", "column 'email': not an email address: 'jane(at)acme.com'"),
            3: ("email", "not an email address: 'jane doe@acme.com'"),
            4: ("email", "not an email address: '@acme.com'"),
            5: ("email", "not an email address: 'jane@'"),
            6: ("email", "not an email address: 'jane@@acme.com'"),
            7: ("email", "not an email address: 'jane@acme'"),
            8: ("email", "not an email address: 'jane@ex\u00e4mple.com'"),
            9: ("email", "not an email address: 'ja\\u200bne@acme.com'"),
            10: ("email", "not an email address: 309 characters, the limit is 254"),
        },
    ),
    # --- nesting ------------------------------------------------------------------------------------
    FileCase(
        "JSON nested 10,000 levels",
        "events",
        "events.jsonl",
        jsonl(json.dumps(ev("deep"))[:-1] + ', "properties": ' + nested(10_000) + "}", ev("e2")),
        kept=["e2"],
        rejects={1: ("(row)", "not valid JSON: nested too deeply to read")},
    ),
    FileCase(
        "JSON nested one level over the limit",
        "events",
        "events.jsonl",
        jsonl(
            json.dumps(ev("over"))[:-1] + ', "properties": ' + nested(MAX_DOCUMENT_DEPTH + 1) + "}",
            json.dumps(ev("at"))[:-1] + ', "properties": ' + nested(MAX_DOCUMENT_DEPTH) + "}",
            json.dumps(ev("extra"))[:-1] + ', "payload": ' + nested(500) + "}",
        ),
        kept=["at"],
        rejects={
            1: ("properties", f"nested deeper than {MAX_DOCUMENT_DEPTH} levels"),
            3: ("properties.payload", f"column 'payload': nested deeper than {MAX_DOCUMENT_DEPTH} levels"),
        },
    ),
    FileCase(
        "lines that are not JSON objects",
        "events",
        "events.jsonl",
        jsonl("[1, 2]", "{broken", '"text"', ev("e4")),
        kept=["e4"],
        rejects={
            1: ("(row)", "each line must be a JSON object"),
            2: ("(row)", "not valid JSON"),
            3: ("(row)", "each line must be a JSON object"),
        },
    ),
    # --- empty files --------------------------------------------------------------------------------
    FileCase("an empty CSV", "leads", "leads.csv", b"", refused="the file is empty: a CSV file needs a header line"),
    FileCase("a CSV of blank lines", "leads", "leads.csv", b"\xef\xbb\xbf\n\n  \n", refused="the file is empty"),
    FileCase("a header-only CSV", "leads", "leads.csv", b"email,first_name\n"),
    FileCase("an empty JSONL file", "events", "events.jsonl", b""),
]


def _import(workspace: Workspace, case: FileCase, path: Path) -> Any:
    mapping = parse_mapping(case.mapping, "mapping.yaml") if case.mapping else None
    return import_file(workspace, case.kind, path, mapping=mapping, now=NOW, batch_size=3)  # type: ignore[arg-type]


def rejects_of(path: Path | None) -> list[dict[str, str]]:
    if path is None:
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


REFUSED = [c for c in FILE_CASES if c.refused is not None]
READ = [c for c in FILE_CASES if c.refused is None]


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_an_unusable_file_is_refused_whole_naming_the_file_and_line(
    sqlite_workspace: Workspace, tmp_path: Path, case: FileCase
) -> None:
    """Refused before a row is written, whatever the engine: SQLite only."""
    path = tmp_path / case.name
    path.write_bytes(case.bytes())
    with pytest.raises(InvalidInput) as caught:
        _import(sqlite_workspace, case, path)
    assert case.refused is not None and case.refused in str(caught.value)
    assert str(caught.value).startswith(f"{path}: ")
    assert stored(sqlite_workspace) == {"leads": [], "accounts": [], "events": []}
    assert not (tmp_path / f"{case.name}.rejects.csv").exists()


@pytest.mark.parametrize("case", READ, ids=[c.id for c in READ])
def test_a_malformed_file_says_where_and_keeps_the_good_rows_once(
    workspace: Workspace, tmp_path: Path, case: FileCase
) -> None:
    path = tmp_path / case.name
    path.write_bytes(case.bytes())
    summary = _import(workspace, case, path)
    rejects = rejects_of(summary.rejects_path)
    found = {int(r["line"]): (r["field"], r["reason"]) for r in rejects}
    assert set(found) == set(case.rejects), found
    for line, (field_name, words) in case.rejects.items():
        assert found[line][0] == field_name, (line, found[line])
        assert words in found[line][1], (line, found[line])
    assert {r["file"] for r in rejects} <= {str(path)}
    assert all(len(r["raw"]) <= readers.RAW_LIMIT for r in rejects)
    kinds = {"leads": "leads", "accounts": "accounts", "events": "events"}
    assert stored(workspace)[kinds[case.kind]] == sorted(case.kept)
    done = summary.accepted + summary.duplicate if case.kind == "events" else summary.created + summary.updated
    assert done + summary.unchanged + summary.rejected == summary.rows_read

    after = stored(workspace)
    again = _import(workspace, case, path)
    assert (again.created, again.updated, again.accepted, again.rejected) == (0, 0, 0, summary.rejected)
    assert stored(workspace) == after  # nothing stored twice


def test_what_the_lenient_cases_stored(workspace: Workspace, tmp_path: Path) -> None:
    """The cases that are accepted are read as documented: zones to UTC, extra columns as attributes."""
    by_id = {c.id: c for c in FILE_CASES}
    for name in ("time zones and odd offsets", "extra unknown columns become attributes", "emails that are not emails"):
        case = by_id[name]
        path = tmp_path / name.replace(" ", "-") / case.name
        path.parent.mkdir()
        path.write_bytes(case.bytes())
        _import(workspace, case, path)
    with workspace.unit_of_work(read_only=True) as uow:
        rows = uow.connection.execute(select(schema.events.c.event_id, schema.events.c.occurred_at)).all()
        ann = lead_profile(uow, "ann@acme.com", now=NOW)
    times = {r.event_id: r.occurred_at.astimezone(UTC).isoformat() for r in rows}
    assert times == {
        "naive": "2026-03-01T09:00:00+00:00",  # no zone, no mapping: UTC
        "kiribati": "2026-02-28T19:00:00+00:00",
        "baker": "2026-03-01T21:00:00+00:00",
        "nepal": "2026-03-01T03:15:00+00:00",
        "seconds": "2026-03-01T03:29:45+00:00",
    }
    assert ann.lead["attributes"] == {"Favourite Colour": "blue", "x": "1"}


def test_a_time_without_a_zone_is_read_in_the_mappings_zone(workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_bytes(
        b"id,when,who\n"
        b"summer,2026-07-01 09:00,ann@acme.com\n"
        b"gap,2026-03-29 02:30,ann@acme.com\n"  # a time that never happened in Paris (clocks go forward)
        b"winter,01/02/2026 09:00,ann@acme.com\n"
    )
    mapping = parse_mapping(
        "kind: events\ntimezone: Europe/Paris\nfields:\n  event_id: id\n  occurred_at: when\n  email: who\n"
        "  type: {default: page_view}\n"
    )
    summary = import_file(workspace, "events", path, mapping=mapping, now=datetime(2026, 8, 1, tzinfo=UTC))
    with workspace.unit_of_work(read_only=True) as uow:
        rows = dict(uow.connection.execute(select(schema.events.c.event_id, schema.events.c.occurred_at)).all())
    assert rows["summer"].astimezone(UTC) == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)
    assert "gap" in rows  # read as Python reads it (fold 0: the offset before the change), not a crash
    found = {int(r["line"]): r for r in rejects_of(summary.rejects_path)}
    assert list(found) == [4] and found[4]["field"] == "occurred_at"
    assert "'01/02/2026 09:00' is not an ISO 8601 time" in found[4]["reason"]


def test_a_line_over_the_line_limit_is_skipped_unread(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real limit is 16 MiB a line; a small one shows the behaviour without writing 16 MiB."""
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 1000)
    files = {  # an odd number of quotes in the CSV line: its cut-off start must not swallow the next line
        "leads.csv": (b"email,note\nann@acme.com," + b'"x' * 3001 + b"\nbob@acme.com,fine\n", 2, 6_016),
        "leads.jsonl": (
            b'{"email": "ann@acme.com", "note": "' + b"x" * 3000 + b'"}\n{"email": "cy@acme.com"}\n',
            1,
            3_038,
        ),
    }
    for name, (data, line, size) in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        summary = import_file(workspace, "leads", path, now=NOW)
        (reject,) = rejects_of(summary.rejects_path)
        assert (int(reject["line"]), reject["field"]) == (line, "(row)")
        assert reject["reason"] == f"line {line} is {size:,} bytes long; the limit is 1,000 bytes a line"
    assert stored(workspace)["leads"] == ["bob@acme.com", "cy@acme.com"]


# --- the HTTP API -------------------------------------------------------------------------------


def _client(workspace: Workspace) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with workspace.unit_of_work() as uow:
        token, _ = create_key(uow, "bad-input", Role.ADMIN.value)
    with TestClient(create_app(workspace=workspace)) as client:
        yield client, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


@pytest.fixture
def api(workspace: Workspace) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A client with an admin key, on SQLite and on PostgreSQL."""
    yield from _client(workspace)


@pytest.fixture
def sqlite_api(sqlite_workspace: Workspace) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """For requests refused before the store is reached."""
    yield from _client(sqlite_workspace)


def is_problem(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    return body


# index in the batch -> (field, words of the reason); None: accepted
EVENT_CASES: list[tuple[dict[str, Any] | str, tuple[str, str] | None]] = [
    (ev("good"), None),
    (ev("garbage-time", occurred_at="yesterday"), ("occurred_at", "occurred_at: Input should be a valid datetime")),
    (ev("feb-31", occurred_at="2026-02-31T10:00:00Z"), ("occurred_at", "day value is outside expected range")),
    (ev("year-0", occurred_at="0000-01-01T00:00:00Z"), ("occurred_at", "occurred_at:")),
    (ev("year-9999", occurred_at="9999-12-31T23:59:59-05:00"), ("occurred_at", "outside the years 1-9999")),
    (ev("year-1", occurred_at="0001-01-01T00:00:00+14:00"), ("occurred_at", "outside the years 1-9999")),
    (ev("year-1800", occurred_at="1800-01-01T00:00:00Z"), ("occurred_at", "is before 1900")),
    (ev("naive", occurred_at="2026-03-01T09:00:00"), None),  # UTC, as in a file
    (ev("kiribati", occurred_at="2026-03-01T09:00:00+14:00"), None),
    (ev("nepal", occurred_at="2026-03-01T09:00:00+05:45"), None),
    (ev("day-offset", occurred_at="2026-03-01T09:00:00+24:00"), ("occurred_at", "occurred_at:")),
    (ev("no-at", email="jane(at)acme.com"), ("email", "not an email address: 'jane(at)acme.com'")),
    (ev("space", email="jane doe@acme.com"), ("email", "not an email address")),
    (ev("zero-width", email="ja\u200bne@acme.com"), ("email", "not an email address")),
    (ev("nul-email", email="ja\u0000ne@acme.com"), ("email", "not an email address")),
    (ev("long-email", email="j" * 300 + "@acme.com"), ("email", "email: String should have at most 254 characters")),
    (ev("x" * 201), ("event_id", "at most 200 characters")),
    (ev("long-ext", email=None, external_id="x" * 201), ("external_id", "at most 200 characters")),
    (ev("nul-ext", email=None, external_id="crm-\u00001"), ("external_id", "NUL character")),
    (ev("nul-id\u0000"), ("event_id", "NUL character")),
    (ev("deep", properties=nested_value(MAX_DOCUMENT_DEPTH + 1)), ("properties", "nested deeper than 32 levels")),
    (ev("at-depth", email="deep@acme.com", properties=nested_value(MAX_DOCUMENT_DEPTH)), None),
    (ev("nul-prop", properties={"url": "/a\u0000"}), ("properties.url", "NUL character")),
    (ev("nul-key", properties={"u\u0000": 1}), ("properties", "contains a NUL character")),
    (ev("big-prop", properties={"blob": "x" * 70_000}), ("properties.blob", "65,536")),
    (ev("top-level-key", colour="blue"), None),  # a property, as a file's extra column
    (ev("nul-top-level", colour="a\u0000"), ("properties.colour", "NUL character")),
    (ev("camel-case", occurredAt="2026-03-01T09:00:00Z"), ("occurredAt", "did you mean 'occurred_at'?")),
    (ev("auto-3f2a"), ("event_id", "may not start with 'auto-'")),
    ("not an object", ("", "an event must be a JSON object")),
]


def test_a_batch_of_bad_events_is_answered_one_by_one_and_the_good_ones_kept_once(
    api: tuple[TestClient, dict[str, str]], workspace: Workspace
) -> None:
    client, headers = api
    batch = [item for item, _ in EVENT_CASES]
    body = client.post("/v1/events", json=batch, headers=headers).json()
    expected_ok = sorted(item["event_id"] for item, want in EVENT_CASES if want is None and isinstance(item, dict))
    assert body["accepted"] == len(expected_ok)
    assert body["rejected"] == len(batch) - len(expected_ok)
    for (item, want), result in zip(EVENT_CASES, body["results"], strict=True):
        label = item["event_id"][:20] if isinstance(item, dict) else item
        if want is None:
            assert result["status"] == "accepted", (label, result)
            continue
        assert result["status"] == "rejected", (label, result)
        assert (result["field"], want[1] in result["reason"]) == (want[0], True), (label, result)
    assert stored(workspace)["events"] == expected_ok

    again = client.post("/v1/events", json=batch, headers=headers).json()
    assert (again["accepted"], again["duplicate"]) == (0, len(expected_ok))
    assert stored(workspace)["events"] == expected_ok  # nothing stored twice


def test_the_api_and_a_file_take_one_event_shape(
    api: tuple[TestClient, dict[str, str]], workspace: Workspace, tmp_path: Path
) -> None:
    """examples/events.jsonl as it is, and events without an id or a time: the API and the import
    store the same events, and sending one again is a duplicate."""
    client, headers = api
    examples = Path(__file__).resolve().parents[2] / "src" / "qualify" / "examples" / "events.jsonl"
    documents = [json.loads(line) for line in examples.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert any("url" in d or "campaign" in d for d in documents)  # top-level properties, as people write them
    answer = client.post("/v1/events", json=documents, headers=headers).json()
    assert answer["rejected"] == 0, answer
    bare = {"type": "page_view", "email": "bare@acme.com", "url": "/pricing", "occurred_at": "2026-03-01T09:00:00"}
    first = client.post("/v1/events", json=[bare, {**bare, "occurred_at": None}], headers=headers).json()
    assert [r["status"] for r in first["results"]] == ["accepted", "accepted"]
    derived = [r["event_id"] for r in first["results"]]
    assert all(i.startswith("auto-") for i in derived) and derived[0] != derived[1]
    again = client.post("/v1/events", json=[bare, {**bare, "occurred_at": None}], headers=headers).json()
    assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"]  # a retry, not two more events
    with workspace.unit_of_work(read_only=True) as uow:
        events = schema.events
        row = uow.connection.execute(select(events).where(events.c.event_id == derived[0])).one()
    assert row.properties == {"url": "/pricing"}
    assert row.occurred_at == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)  # without a zone: UTC
    # The same documents through the import: the same events, so nothing new.
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in [*documents, bare]) + "\n", encoding="utf-8")
    summary = import_file(workspace, "events", path, now=NOW)
    assert (summary.accepted, summary.duplicate, summary.rejected) == (0, len(documents) + 1, 0)


def test_what_is_stored_at_the_limits_reads_back(api: tuple[TestClient, dict[str, str]]) -> None:
    """Properties and attributes at the nesting limit are stored and read back on both engines."""
    client, headers = api
    deep = nested_value(MAX_DOCUMENT_DEPTH)
    lead = {"email": "deep@acme.com", "first_name": "D" * 200, "attributes": {"tree": nested_value(31)}}
    assert client.put("/v1/leads", json=lead, headers=headers).json()["created"] == 1
    events = [ev(f"d{i}", email="deep@acme.com", properties=deep) for i in range(3)]
    assert client.post("/v1/events", json=events, headers=headers).json()["accepted"] == 3
    profile = client.get("/v1/leads/deep@acme.com", headers=headers)
    assert profile.status_code == 200, profile.text
    assert profile.json()["lead"]["attributes"] == {"tree": nested_value(31)}
    export = client.get("/v1/leads/deep@acme.com/export", headers=headers)
    assert export.status_code == 200, export.text
    assert [e["properties"] for e in export.json()["events"]] == [deep] * 3


def test_a_body_nested_too_deeply_to_parse_is_refused_as_a_whole(
    api: tuple[TestClient, dict[str, str]], workspace: Workspace
) -> None:
    client, headers = api
    events = "[" + json.dumps(ev("fine")) + "," + json.dumps(ev("deep"))[:-1] + ', "properties": '
    events += nested(10_000) + "}]"
    answer = is_problem(client.post("/v1/events", content=events.encode(), headers=headers), 422)
    assert answer["field"] == "body" and "too deeply" in answer["detail"]
    lead = '{"email": "deep@acme.com", "attributes": ' + nested(10_000) + "}"
    answer = is_problem(client.put("/v1/leads", content=lead.encode(), headers=headers), 422)
    assert answer["field"] == "body"
    assert answer["detail"].startswith("the body nests JSON objects or lists too deeply to read")
    assert stored(workspace) == {"leads": [], "accounts": [], "events": []}


def test_bad_leads_are_refused_one_by_one_and_bad_fields_by_the_schema(
    api: tuple[TestClient, dict[str, str]], workspace: Workspace
) -> None:
    client, headers = api
    leads = [
        {"email": "ann@acme.com", "first_name": "Ann"},
        {"email": "jane(at)acme.com"},
        {"email": "nul@acme.com", "last_name": "a\u0000b"},
        {"email": "deep@acme.com", "attributes": nested_value(MAX_DOCUMENT_DEPTH + 1)},
        {"email": "big@acme.com", "attributes": {"notes": "x" * 70_000}},
        {"email": "old@acme.com", "created_at": "9999-12-31T23:59:59-05:00"},
        {"external_id": "crm-\u00001"},
        {"email": "bob@acme.com", "account": {"domain": "acme.com", "name": "Acme"}},
    ]
    body = client.put("/v1/leads", json=leads, headers=headers).json()
    assert [(r["status"], r["field"]) for r in body["results"]] == [
        ("created", None),
        ("rejected", "email"),
        ("rejected", "last_name"),
        ("rejected", "attributes"),
        ("rejected", "attributes.notes"),
        ("rejected", "created_at"),
        ("rejected", "external_id"),
        ("created", None),
    ]
    again = client.put("/v1/leads", json=leads, headers=headers).json()
    assert (again["created"], again["unchanged"], again["rejected"]) == (0, 2, 6)
    assert stored(workspace) == {"leads": ["ann@acme.com", "bob@acme.com"], "accounts": ["acme.com"], "events": []}

    # Fields with a fixed width, and account attributes, are checked by the schema: the request is refused.
    for lead, where in [
        ({"email": "ann@acme.com", "first_name": "A" * 201}, "0.first_name"),
        ({"email": "ann@acme.com", "account": {"domain": "acme.com", "name": "Ac\u0000me"}}, "0.account.name"),
        (
            {"email": "ann@acme.com", "account": {"domain": "acme.com", "attributes": {"n": "x\u0000"}}},
            "0.account.attributes",
        ),
    ]:
        problem = is_problem(client.put("/v1/leads", json=[lead], headers=headers), 422)
        assert f"list[LeadIn].{where}" in [e["field"] for e in problem["errors"]]
    assert stored(workspace)["leads"] == ["ann@acme.com", "bob@acme.com"]
    action = {"reason": "bad_timing", "note": "call in Q3\u0000"}
    problem = is_problem(client.post("/v1/leads/ann@acme.com/actions/reject", json=action, headers=headers), 422)
    assert [e["field"] for e in problem["errors"]] == ["note"]


def test_oversized_batches_are_refused_and_nothing_is_stored(
    sqlite_api: tuple[TestClient, dict[str, str]], sqlite_workspace: Workspace
) -> None:
    client, headers = sqlite_api
    workspace = sqlite_workspace
    events = [ev(f"e{i}") for i in range(MAX_BATCH + 1)]
    answer = is_problem(client.post("/v1/events", json=events, headers=headers), 413)
    assert answer["detail"] == "10,001 events in one request; the limit is 10,000: split the batch"
    leads = [{"email": f"l{i}@acme.com"} for i in range(MAX_BATCH + 1)]
    answer = is_problem(client.put("/v1/leads", json=leads, headers=headers), 413)
    assert "10,001 leads in one request" in answer["detail"]
    assert stored(workspace) == {"leads": [], "accounts": [], "events": []}
    assert count(workspace, schema.events) == 0


def test_an_oversized_body_is_refused_before_it_is_read(
    sqlite_api: tuple[TestClient, dict[str, str]], sqlite_workspace: Workspace
) -> None:
    client, headers = sqlite_api
    workspace = sqlite_workspace
    padding = " " * (MAX_BODY_BYTES - len(json.dumps([ev("e1")])) + 1)  # valid JSON, one byte over
    body = (json.dumps([ev("e1")]) + padding).encode()
    assert len(body) == MAX_BODY_BYTES + 1
    answer = is_problem(client.post("/v1/events", content=body, headers=headers), 413)
    assert answer["detail"] == (
        f"the body is {MAX_BODY_BYTES + 1:,} bytes; the limit for a request body is {MAX_BODY_BYTES:,} bytes: "
        "split the batch"
    )
    # Sent in chunks, without a Content-Length: counted as it comes, on a route FastAPI parses too.
    chunks = (b" " * (1 << 20) for _ in range((MAX_BODY_BYTES >> 20) + 1))
    answer = is_problem(client.put("/v1/leads", content=chunks, headers=headers), 413)
    assert "the limit for a request body is" in answer["detail"]
    fits = (json.dumps([ev("e1")]) + " " * (MAX_BODY_BYTES - 1000)).encode()
    assert client.post("/v1/events", content=fits, headers=headers).json()["accepted"] == 1
    assert stored(workspace)["events"] == ["e1"]


def test_the_body_limit_stops_reading_a_stream_at_the_limit() -> None:
    """The middleware alone, on a plain ASGI app: the app never gets the bytes past the limit."""
    read: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            read.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def call(chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[list[Message], int]:
        pending: list[Message] = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
        ]
        offered = 0

        async def receive() -> Message:
            nonlocal offered
            offered += 1
            return pending.pop(0)

        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        await BodySizeLimit(app, max_bytes=100)(scope, receive, send)
        return sent, offered

    sent, offered = asyncio.run(call([b"x" * 60] * 10, []))
    assert sent[0]["status"] == 413 and offered == 2 and read == [60]
    assert json.loads(sent[1]["body"])["detail"].startswith("more than 120 bytes were sent; the limit")
    read.clear()
    sent, offered = asyncio.run(call([b"x" * 60] * 10, [(b"content-length", b"600")]))
    assert sent[0]["status"] == 413 and offered == 0 and read == []
    read.clear()
    sent, _ = asyncio.run(call([b"x" * 50, b"x" * 50], []))
    assert sent[0]["status"] == 200 and read == [50, 50]


# --- NUL in every text the API takes ------------------------------------------------------------


def _string_leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _string_leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _string_leaves(item, (*path, i))
    elif isinstance(value, str):
        yield path


def _with_nul(value: Any, path: tuple[Any, ...]) -> Any:
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = target[path[-1]][:1] + "\x00" + target[path[-1]][1:]
    return copy


def _body_examples(document: dict[str, Any], operation: dict[str, Any]) -> list[Any]:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return []
    if "examples" in content:
        return [example["value"] for example in content["examples"].values()]
    schema_ = content["schema"]
    schema_ = schema_.get("anyOf", [schema_])[0]
    if "$ref" in schema_:
        schema_ = document["components"]["schemas"][schema_["$ref"].rsplit("/", 1)[1]]
    return list(schema_.get("examples", []))


def test_a_nul_in_any_text_of_any_request_is_bad_input_never_a_server_error(workspace: Workspace) -> None:
    """PostgreSQL can store no NUL: every string of every example body, path and query, with one
    in it, must be answered as bad input (or taken harmlessly), on both engines."""
    with workspace.unit_of_work() as uow:
        token, _ = create_key(uow, "nul", Role.ADMIN.value)
    headers = {"Authorization": f"Bearer {token}"}
    app = create_app(workspace=workspace)
    document = app.openapi()
    params = {"key": "ann@acme.com", "action": "accept", "name": "n1", "key_id": "k1", "token": "t1"}
    params |= {"webhook_id": "1", "delivery_id": "1"}
    tried, failures = 0, []
    with TestClient(app, raise_server_exceptions=False) as client:
        client.post("/v1/events", json=[ev("seed")], headers=headers)
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                url = path.format(**params)
                requests: list[tuple[str, Any, dict[str, str]]] = []
                for body in _body_examples(document, operation):
                    requests += [(url, _with_nul(body, leaf), {}) for leaf in _string_leaves(body)]
                for parameter in operation.get("parameters", []):
                    if parameter["in"] == "path":
                        requests.append((path.format(**{**params, parameter["name"]: "a%00b"}), None, {}))
                    elif parameter["in"] == "query" and parameter["schema"].get("type", "string") == "string":
                        requests.append((url, None, {parameter["name"]: "a\x00b"}))
                for target, body, query in requests:
                    answer = client.request(method, target, json=body, params=query, headers=headers)
                    tried += 1
                    if answer.status_code >= 500:
                        failures.append((method, path, body, query, answer.status_code))
    assert tried > 100 and not failures, failures


def test_an_unknown_query_parameter_is_refused_naming_it(api: tuple[TestClient, dict[str, str]]) -> None:
    """A misspelt filter used to be ignored, answering every lead."""
    client, headers = api
    problem = is_problem(client.get("/v1/leads", params={"stgae": "mql"}, headers=headers), 422)
    assert (
        problem["field"] == "stgae" and "it takes: active_from" in problem["detail"] and ", stage," in problem["detail"]
    )
    assert client.get("/v1/leads", params={"stage": "mql", "q": "young"}, headers=headers).status_code == 200
    assert is_problem(client.get("/v1/segments", params={"x": "1"}, headers=headers), 422)["detail"].endswith(
        "it takes none"
    )
    assert client.get("/healthz", params={"x": "1"}).status_code == 200  # not an API route
