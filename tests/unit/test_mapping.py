"""Mapping files and row reading: what a user sees when a mapping or a row is wrong (no database)."""

from __future__ import annotations

import csv
import io
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qualify.adapters.readers import open_table
from qualify.domain.errors import InvalidInput
from qualify.domain.records import Account, Event, Lead
from qualify.service.imports.files import Mapping, MappingError, RowConverter, load_mapping, parse_mapping

LEAD_MAPPING = """\
kind: leads
null_values: ["", Select, NA]
timezone: Europe/Paris
timestamp_format: "%d/%m/%Y %H:%M"
fields:
  email: {column: Email}
  external_id: Prospect ID
  country: {column: Country, map: {India: IN, NO: "NO", unknown: null}}
  do_not_email: {column: Do Not Email, type: bool}
  created_at: {column: Created}
  source: {default: webinar list}
attributes:
  Total Time Spent on Website: {name: time_on_site_seconds, type: float}
  Visits: {name: visits, type: int}
  Converted: {name: converted, type: int}
"""
COLUMNS = [
    "Email",
    "Prospect ID",
    "Country",
    "Do Not Email",
    "Created",
    "Total Time Spent on Website",
    "Visits",
    "Converted",
    "Notes",
]


def converter(text: str = LEAD_MAPPING, kind: str = "leads", columns: list[str] | None = COLUMNS) -> RowConverter:
    mapping = parse_mapping(text, "mapping.yaml") if text else Mapping()
    return RowConverter.for_file(mapping, kind, columns, Path("leads.csv"))  # type: ignore[arg-type]


def row(**values: str) -> dict[str, str]:
    base = dict.fromkeys(COLUMNS, "")
    base.update({k.replace("_", " "): v for k, v in values.items()})
    return base


def problems_of(text: str) -> str:
    with pytest.raises(MappingError) as caught:
        parse_mapping(text, "mapping.yaml")
    return str(caught.value)


# --- validating the mapping file ------------------------------------------------------------------


def test_an_unknown_key_is_reported_with_its_line_and_a_suggestion() -> None:
    message = problems_of("kind: leads\nfields:\n  email: {column: Email}\nnul_values: [NA]\n")
    assert "mapping.yaml" in message
    assert "line 4, nul_values: unknown key (did you mean 'null_values'?)" in message


def test_every_problem_is_listed_not_only_the_first() -> None:
    message = problems_of(
        "kind: leads\n"
        "fields:\n"
        "  emial: Email\n"
        "  created_at: {column: Created, type: date}\n"
        "attributes:\n"
        "  Visits: {name: visits, typ: int}\n"
    )
    assert "3 problem(s)" in message
    assert "line 3, fields.emial: unknown field (did you mean 'email'?)" in message
    assert "line 4, fields.created_at.type: 'date' is not one of: str, int, float, bool, timestamp, json" in message
    assert "line 6, attributes.Visits.typ: unknown key (did you mean 'type'?)" in message


def test_a_field_of_another_kind_and_a_wrong_type_are_refused() -> None:
    message = problems_of("kind: accounts\nfields:\n  email: Email\n  employees: {column: Staff, type: str}\n")
    assert "line 3, fields.email: unknown field" in message
    assert "line 4, fields.employees.type: employees is always read as int" in message


def test_bad_yaml_timezone_and_delimiter_are_named() -> None:
    assert "line 2" in problems_of("fields:\n  email: [Email\n")
    message = problems_of('timezone: Mars/Olympus\ndelimiter: ";;"\nfields: {email: Email}\n')
    assert "line 1, timezone: unknown time zone 'Mars/Olympus'" in message
    assert "line 2, delimiter: must be one character" in message


def test_load_mapping_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "my-mapping.yaml"
    path.write_text("kind: prospects\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"(?s)my-mapping\.yaml.*line 1, kind: 'prospects' is not one of"):
        load_mapping(path)


def test_a_mapped_column_missing_from_the_file_is_named_before_any_row_is_read() -> None:
    with pytest.raises(MappingError, match=r"line 7, fields\.external_id: column 'Prospect ID' is not in leads\.csv"):
        converter(
            columns=[
                "Email",
                "Country",
                "Do Not Email",
                "Created",
                "Total Time Spent on Website",
                "Visits",
                "Converted",
            ]
        )


def test_a_file_without_a_key_column_is_refused_at_once() -> None:
    with pytest.raises(InvalidInput, match=r"leads need email or external_id.*columns: name, country"):
        converter("", columns=["name", "country"])


# --- converting rows ------------------------------------------------------------------------------


def test_a_row_becomes_a_lead_with_typed_fields_and_attributes() -> None:
    lead = converter().convert(
        row(
            Email=" Jane@Acme.com ",
            Prospect_ID="p-1",
            Country="India",
            Do_Not_Email="Yes",
            Created="02/03/2026 10:00",
            Visits="5",
            Converted="1",
            **{"Total Time Spent on Website": "674"},
            Notes="ignored",
        )
    )
    assert isinstance(lead, Lead)
    assert (lead.email, lead.external_id, lead.country, lead.do_not_email) == ("jane@acme.com", "p-1", "IN", True)
    assert lead.created_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 10:00 in Paris
    assert lead.source == "webinar list"
    assert lead.attributes == {"time_on_site_seconds": 674.0, "visits": 5, "converted": 1}


def test_values_are_read_as_written_norway_stays_norway() -> None:
    lead = converter().convert(row(Prospect_ID="p-2", Country="NO"))
    assert isinstance(lead, Lead) and lead.country == "NO"


def test_null_values_and_mapped_nulls_leave_the_field_unset() -> None:
    lead = converter().convert(row(Prospect_ID="p-3", Country="unknown", Visits="NA", Converted="Select"))
    assert isinstance(lead, Lead)
    assert lead.country is None and lead.attributes == {}


@pytest.mark.parametrize(
    ("values", "field", "reason"),
    [
        ({"Email": "jane(at)acme", "Prospect_ID": "p"}, "email", "column 'Email': not an email address"),
        (
            {"Prospect_ID": "p", "Created": "2026-03-02"},
            "created_at",
            "does not match the time format '%d/%m/%Y %H:%M'",
        ),
        ({"Prospect_ID": "p", "Do_Not_Email": "perhaps"}, "do_not_email", "expected yes/no, true/false or 1/0"),
        ({"Prospect_ID": "p", "Visits": "2.5"}, "attributes.visits", "column 'Visits': expected a whole number"),
        ({"Country": "IN"}, "email", "a lead needs an email or an external_id"),
    ],
)
def test_a_bad_value_names_the_field_the_column_and_the_reason(values: dict[str, str], field: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        converter().convert(row(**values))
    assert caught.value.field == field
    assert reason in caught.value.message


def test_without_a_mapping_columns_named_like_fields_feed_them_and_others_become_attributes() -> None:
    columns = ["Email", "First Name", "do_not_call", "budget"]
    lead = converter("", columns=columns).convert(
        {"Email": "a@b.io", "First Name": "Ann", "do_not_call": "no", "budget": "5000"}
    )
    assert isinstance(lead, Lead)
    assert (lead.first_name, lead.do_not_call, lead.attributes) == ("Ann", False, {"budget": "5000"})


def test_accounts_get_a_normalised_domain_and_typed_size() -> None:
    account = converter("", "accounts", ["domain", "name", "employees"]).convert(
        {"domain": "https://www.Acme.com/about", "name": "Acme", "employees": "800"}
    )
    assert isinstance(account, Account) and (account.domain, account.employees) == ("acme.com", 800)
    with pytest.raises(InvalidInput, match="not a web domain") as caught:
        converter("", "accounts", ["domain"]).convert({"domain": "acme"})
    assert caught.value.field == "domain"


def test_events_take_other_columns_and_a_properties_object_as_properties() -> None:
    event = converter("", "events", None).convert(
        {
            "event_id": "e1",
            "email": "a@b.io",
            "type": "page_view",
            "occurred_at": "2026-03-02T10:00:00+01:00",
            "properties": {"url": "/pricing"},
            "campaign": "spring",
        }
    )
    assert isinstance(event, Event)
    assert event.occurred_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert event.properties == {"url": "/pricing", "campaign": "spring"}


def test_an_event_time_without_a_zone_is_taken_in_the_mapping_timezone() -> None:
    mapping = "kind: events\ntimezone: America/New_York\nfields:\n  event_id: id\n  email: who\n  type: what\n  occurred_at: when\n"
    event = converter(mapping, "events", ["id", "who", "what", "when"]).convert(
        {"id": "e1", "who": "a@b.io", "what": "email_open", "when": "2026-07-01 08:00"}
    )
    assert isinstance(event, Event) and event.occurred_at == datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


# --- reading files --------------------------------------------------------------------------------


def read(
    tmp_path: Path, name: str, data: bytes
) -> tuple[list[str] | None, list[tuple[int, dict[str, object], str | None]]]:
    path = tmp_path / name
    path.write_bytes(data)
    with open_table(path) as table:
        return table.columns, [(r.line, r.values, r.problem) for r in table.rows]


def test_csv_with_a_bom_crlf_and_a_multiline_field(tmp_path: Path) -> None:
    columns, rows = read(tmp_path, "a.csv", b'\xef\xbb\xbfemail,note\r\na@b.io,"two\r\nlines"\r\n\r\nc@d.io,x\r\n')
    assert columns == ["email", "note"]
    assert rows == [(2, {"email": "a@b.io", "note": "two\r\nlines"}, None), (5, {"email": "c@d.io", "note": "x"}, None)]


def test_broken_csv_rows_are_reported_by_line_and_the_rest_is_read(tmp_path: Path) -> None:
    data = b'email,note\na@b.io,"never closed\nb@b.io,fine\nc@b.io,"x"y\nd@b.io,\xe9t\xe9\ne@b.io\nf@b.io,ok\n'
    _, rows = read(tmp_path, "b.csv", data)
    good = {line: values["email"] for line, values, problem in rows if problem is None}
    bad = {line: problem for line, _, problem in rows if problem}
    assert good == {3: "b@b.io", 7: "f@b.io"}
    assert set(bad) == {2, 4, 5, 6}
    assert "broken quoting" in str(bad[2]) and "broken quoting" in str(bad[4])
    assert "not valid UTF-8 (byte 0xe9" in str(bad[5])
    assert bad[6] == "expected 2 columns, found 1"


def test_jsonl_lines_that_are_not_objects_are_reported(tmp_path: Path) -> None:
    _, rows = read(tmp_path, "e.jsonl", b'{"event_id": "e1"}\n\n[1, 2]\n{"event_id": \n')
    assert rows[0] == (1, {"event_id": "e1"}, None)
    assert rows[1][0] == 3 and "JSON object" in str(rows[1][2])
    assert rows[2][0] == 4 and "not valid JSON" in str(rows[2][2])


def test_an_unknown_extension_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "leads.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(InvalidInput, match=r"cannot tell the format.*\.csv"), open_table(path):
        pass


_CELLS = st.text(alphabet=st.sampled_from(list('ab,"\n\r; é')), max_size=8)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_CELLS, min_size=3, max_size=3), max_size=12))
def test_any_well_written_csv_reads_back_exactly_with_its_line_numbers(rows: list[list[str]]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["a", "b", "c"])
    expected, line = [], 2
    for cells in rows:
        text = io.StringIO(newline="")
        csv.writer(text).writerow(cells)
        if text.getvalue().strip():  # a row of empty cells is a blank line, which carries nothing
            expected.append((line, dict(zip("abc", cells, strict=True)), None))
            buffer.write(text.getvalue())
        line += text.getvalue().count("\n")
    with tempfile.TemporaryDirectory() as folder:
        assert read(Path(folder), "p.csv", buffer.getvalue().encode())[1] == expected


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_after_the_header_are_read_or_reported_never_a_crash(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        _, rows = read(Path(folder), "g.csv", b"a,b\n" + data)
    lines = [line for line, _, _ in rows]
    assert lines == sorted(set(lines)) and all(line >= 2 for line in lines)
    assert all((problem is None) == bool(values) for _, values, problem in rows)


def test_a_jsonl_lead_may_carry_an_attributes_object() -> None:
    lead = converter("", "leads", None).convert({"email": "a@b.io", "attributes": {"budget": 5000}, "plan": "pro"})
    assert isinstance(lead, Lead) and lead.attributes == {"budget": 5000, "plan": "pro"}


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with (
        pytest.raises(InvalidInput, match=r"nope\.csv: cannot open the file: No such file"),
        open_table(tmp_path / "nope.csv"),
    ):
        pass
