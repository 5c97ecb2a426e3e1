"""File import against a real store (SQLite and PostgreSQL): good rows in, bad rows reported, re-runs idempotent."""

from __future__ import annotations

import csv
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qualify.domain.errors import InvalidInput, NotFound
from qualify.service.imports.files import MappingError, import_file, load_mapping, parse_mapping
from qualify.service.reading.queries import lead_profile
from qualify.service.unit_of_work import Workspace

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "qualify" / "examples"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)

# line 1 header (with a BOM); 2 good; 3 not an email; 4 bad time; 5-6 a good multi-line note;
# 7 broken quoting; 8 a byte that is not UTF-8; 9 a missing column; 10 good (CRLF).
LEADS_CSV = (
    b"\xef\xbb\xbfemail,first_name,created_at,do_not_email,budget,note\n"
    b"jane@acme.com,Jane,2026-03-01T09:00:00Z,no,25000,hello\n"
    b"jane(at)acme.com,Joe,2026-03-01T09:00:00Z,no,,\n"
    b"raj@globex.io,Raj,yesterday,no,,\n"
    b'li@initech.co.uk,Li,2026-03-02T10:00:00Z,yes,,"two\nlines"\n'
    b'bad@quote.io,Bad,2026-03-02T10:00:00Z,no,,"x"y\n'
    b"ren\xe9@acme.com,Ren\xe9,2026-03-02T10:00:00Z,no,,\n"
    b"short@acme.com,Short\n"
    b"sam@acme.com,Sam,2026-03-03T10:00:00Z,no,,\r\n"
)


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def rejects_of(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def lead(workspace: Workspace, key: str) -> dict[str, object]:
    with workspace.unit_of_work() as uow:
        return lead_profile(uow, key, now=NOW).lead


def test_good_rows_are_imported_and_bad_rows_reported_with_line_field_and_reason(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = write(tmp_path, "leads.csv", LEADS_CSV)
    summary = import_file(workspace, "leads", path, now=NOW, batch_size=2)

    assert (summary.rows_read, summary.created, summary.rejected) == (8, 3, 5)
    assert summary.rejects_path == tmp_path / "leads.csv.rejects.csv"
    rejects = {int(r["line"]): r for r in rejects_of(summary.rejects_path)}
    assert {line: r["field"] for line, r in rejects.items()} == {
        3: "email",
        4: "created_at",
        7: "(row)",
        8: "(row)",
        9: "(row)",
    }
    assert {r["file"] for r in rejects.values()} == {str(path)}
    assert "not an email address: 'jane(at)acme.com'" in rejects[3]["reason"]
    assert "'yesterday' is not an ISO 8601 time" in rejects[4]["reason"]
    assert "broken quoting" in rejects[7]["reason"]
    assert "not valid UTF-8" in rejects[8]["reason"]
    assert rejects[9]["reason"] == "expected 6 columns, found 2"
    assert rejects[3]["raw"].startswith("jane(at)acme.com,Joe")

    jane = lead(workspace, "jane@acme.com")
    assert jane["first_name"] == "Jane" and jane["attributes"] == {"budget": "25000", "note": "hello"}
    assert lead(workspace, "li@initech.co.uk")["do_not_email"] is True
    assert lead(workspace, "sam@acme.com")["created_at"] == datetime(2026, 3, 3, 10, 0, tzinfo=UTC)


def test_reimporting_the_same_file_changes_nothing(workspace: Workspace, tmp_path: Path) -> None:
    path = write(tmp_path, "leads.csv", LEADS_CSV)
    import_file(workspace, "leads", path, now=NOW)
    again = import_file(workspace, "leads", path, now=NOW)
    assert again.as_dict() == {
        "kind": "leads",
        "path": str(path),
        "rows_read": 8,
        "created": 0,
        "updated": 0,
        "unchanged": 3,
        "rejected": 5,
        "rejects_path": str(tmp_path / "leads.csv.rejects.csv"),
        "leads_rebuilt": 0,
    }


def test_fixing_the_file_removes_the_old_rejects_and_updates_what_changed(workspace: Workspace, tmp_path: Path) -> None:
    path = write(tmp_path, "leads.csv", "email,title\njane@acme.com,VP Sales\nnot-an-email,CEO\n")
    first = import_file(workspace, "leads", path, now=NOW)
    assert first.rejects_path is not None and first.rejects_path.exists()

    path.write_text("email,title\njane@acme.com,VP Marketing\njoe@acme.com,CEO\n", encoding="utf-8")
    second = import_file(workspace, "leads", path, now=NOW)
    assert (second.created, second.updated, second.rejected, second.rejects_path) == (1, 1, 0, None)
    assert not first.rejects_path.exists()
    assert lead(workspace, "jane@acme.com")["title"] == "VP Marketing"


def test_jsonl_events_are_idempotent_and_bad_lines_rejected(workspace: Workspace, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "events.jsonl",
        '{"event_id": "e1", "email": "jane@acme.com", "type": "page_view", "occurred_at": "2026-03-02T09:00:00Z",'
        ' "url": "/pricing"}\n'
        '{"event_id": "e2", "email": "jane@acme.com", "type": "Page View", "occurred_at": "2026-03-02T09:05:00Z"}\n'
        '{"event_id": "e3", "email": "jane@acme.com", "type": "email_open", "occurred_at": "2026-03-02 09:10"}\n'
        "{not json}\n"
        '{"event_id": "e1", "email": "jane@acme.com", "type": "page_view", "occurred_at": "2026-03-02T09:00:00Z"}\n',
    )
    first = import_file(workspace, "events", path, now=NOW)
    assert (first.rows_read, first.accepted, first.duplicate, first.rejected) == (5, 2, 1, 2)
    rejects = {int(r["line"]): (r["field"], r["reason"]) for r in rejects_of(tmp_path / "events.jsonl.rejects.csv")}
    assert rejects[2][0] == "type" and "lower_snake_case" in rejects[2][1]
    assert rejects[4][0] == "(row)" and "not valid JSON" in rejects[4][1]

    again = import_file(workspace, "events", path, now=NOW)
    assert (again.accepted, again.duplicate, again.rejected) == (0, 3, 2)
    with workspace.unit_of_work() as uow:
        profile = lead_profile(uow, "jane@acme.com", now=NOW)
    assert profile.events_total == 2
    assert {e["properties"].get("url") for e in profile.timeline} == {"/pricing", None}


def test_parquet_events_import_with_native_times(workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    table = pa.table(
        {
            "event_id": ["p1", "p2", "p3"],
            "external_id": ["crm-7", "crm-7", None],
            "type": ["webinar_attended", "demo_request", "page_view"],
            "occurred_at": pa.array(
                [datetime(2026, 3, 1, 15), datetime(2026, 3, 2, 9), datetime(2026, 3, 2, 10)], pa.timestamp("s")
            ),
            "score_hint": [1.5, float("nan"), 2.0],
        }
    )
    pq.write_table(table, path)
    progress: list[tuple[int, int | None]] = []
    summary = import_file(
        workspace, "events", path, now=NOW, progress=lambda done, total: progress.append((done, total))
    )

    assert (summary.accepted, summary.rejected) == (2, 1)
    (reject,) = rejects_of(tmp_path / "events.parquet.rejects.csv")
    assert (reject["line"], reject["field"]) == ("3", "email")
    assert "needs the lead's email or external_id" in reject["reason"]
    assert progress[-1] == (3, 3)
    with workspace.unit_of_work() as uow:
        profile = lead_profile(uow, "crm-7", now=NOW)
    assert profile.events_total == 2
    assert profile.lead["created_at"] == datetime(2026, 3, 1, 15, tzinfo=UTC)  # a new lead starts at its first event
    assert any(e["properties"] == {"score_hint": 1.5} for e in profile.timeline)


def test_accounts_import_by_domain_and_reimport_is_unchanged(workspace: Workspace, tmp_path: Path) -> None:
    path = shutil.copy(EXAMPLES / "accounts.csv", tmp_path / "accounts.csv")
    first = import_file(workspace, "accounts", Path(path), now=NOW)
    again = import_file(workspace, "accounts", Path(path), now=NOW)
    assert (first.created, first.rejected) == (3, 0)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)


def test_the_small_examples_import_cleanly(workspace: Workspace, tmp_path: Path) -> None:
    for name in ("accounts.csv", "leads.csv", "events.jsonl"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    mapping = load_mapping(EXAMPLES / "mapping.yaml")
    import_file(workspace, "accounts", tmp_path / "accounts.csv", now=NOW)
    leads = import_file(workspace, "leads", tmp_path / "leads.csv", mapping=mapping, now=NOW)
    events = import_file(workspace, "events", tmp_path / "events.jsonl", now=NOW)
    assert (leads.created, leads.rejected, events.accepted, events.rejected) == (4, 0, 5, 0)
    jane = lead(workspace, "jane.doe@acme.com")
    assert (jane["seniority"], jane["country"], jane["attributes"]) == ("vp", "US", {"budget": 25000.0})
    assert jane["created_at"] == datetime(2026, 3, 2, 9, 15, tzinfo=UTC)  # London in winter is UTC
    assert lead(workspace, "new.visitor@umbrella.example")["email"] == "new.visitor@umbrella.example"


def test_a_lead_conflicting_with_the_store_is_rejected_not_merged(workspace: Workspace, tmp_path: Path) -> None:
    import_file(
        workspace, "leads", write(tmp_path, "a.csv", "email,external_id\njane@acme.com,crm-1\njoe@acme.com,crm-2\n")
    )
    summary = import_file(workspace, "leads", write(tmp_path, "b.csv", "email,external_id\njane@acme.com,crm-2\n"))
    (reject,) = rejects_of(tmp_path / "b.csv.rejects.csv")
    assert (summary.rejected, reject["line"], reject["field"]) == (1, "2", "external_id")
    assert "belong to two different leads" in reject["reason"]


def test_events_for_unknown_leads_are_rejected_when_creating_leads_is_off(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    sqlite_workspace.settings.create_unknown_leads = False
    path = write(
        tmp_path, "e.csv", "event_id,email,type,occurred_at\ne1,ghost@acme.com,email_open,2026-03-01T00:00:00Z\n"
    )
    summary = import_file(sqlite_workspace, "events", path, now=NOW)
    (reject,) = rejects_of(tmp_path / "e.csv.rejects.csv")
    assert (summary.rejected, reject["field"]) == (1, "email")
    assert "no lead ghost@acme.com" in reject["reason"]


def test_a_wrong_mapping_stops_the_import_before_anything_is_written(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    path = write(tmp_path, "leads.csv", "Email,Name\njane@acme.com,Jane\n")
    mapping = parse_mapping("kind: events\nfields:\n  event_id: Email\n", "events-mapping.yaml")
    with pytest.raises(MappingError, match=r"line 1, kind: the mapping is for events, but leads are being imported"):
        import_file(sqlite_workspace, "leads", path, mapping=mapping)
    with pytest.raises(
        MappingError,
        match=r"(?s)m\.yaml.*line 3, fields\.first_name: column 'Nmae' is not in leads\.csv \(did you mean 'Name'\?\)",
    ):
        import_file(
            sqlite_workspace,
            "leads",
            path,
            mapping=parse_mapping("fields:\n  email: Email\n  first_name: Nmae\n", "m.yaml"),
        )
    with pytest.raises(NotFound):
        lead(sqlite_workspace, "jane@acme.com")


def test_an_empty_file_is_a_clear_error(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="the file is empty"):
        import_file(sqlite_workspace, "leads", write(tmp_path, "empty.csv", b""))


def test_tsv_and_a_mapping_delimiter(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    tsv = import_file(sqlite_workspace, "leads", write(tmp_path, "a.tsv", "email\tcountry\na@acme.com\tFR\n"))
    semi = import_file(
        sqlite_workspace,
        "leads",
        write(tmp_path, "b.csv", "email;country\nb@acme.com;DE\n"),
        mapping=parse_mapping('delimiter: ";"\nunmapped: keep\nfields: {email: email, country: country}\n'),
    )
    assert (tsv.created, semi.created) == (1, 1)
    assert lead(sqlite_workspace, "b@acme.com")["country"] == "DE"


# --- the X Education example ----------------------------------------------------------------------


def test_the_x_education_example_imports_every_lead_once(
    sqlite_workspace: Workspace, shared_data: Path, tmp_path: Path
) -> None:
    mapping = load_mapping(EXAMPLES / "xeducation" / "mapping.yaml")
    source = shared_data / "xeducation_leads.csv"
    rejects = tmp_path / "xeducation.rejects.csv"  # never write into the shared data folder
    started = time.perf_counter()
    first = import_file(sqlite_workspace, "leads", source, mapping=mapping, rejects_path=rejects, now=NOW)
    elapsed = time.perf_counter() - started
    second = import_file(sqlite_workspace, "leads", source, mapping=mapping, rejects_path=rejects, now=NOW)

    assert (first.rows_read, first.created, first.rejected, first.rejects_path) == (9240, 9240, 0, None)
    assert (second.created, second.updated, second.unchanged, second.rejected) == (0, 0, 9240, 0)
    assert elapsed < 60
    lead_ = lead(sqlite_workspace, "2a272436-5132-4136-86fa-dcc88c88f482")
    assert (lead_["country"], lead_["source"], lead_["created_at"]) == ("IN", "Organic Search", NOW)
    attributes = lead_["attributes"]
    assert isinstance(attributes, dict)
    assert attributes["converted"] == 0 and attributes["total_visits"] == 5
    assert attributes["page_views_per_visit"] == 2.5 and attributes["total_time_on_website"] == 674
    assert "specialization" not in attributes  # "Select" means not answered
    assert not {"tags", "lead_quality", "lead_profile"} & set(attributes)
    assert not any("asymmetrique" in name.lower() for name in attributes)
