"""The `qualify` command as a user runs it: real console script, real files, real databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qualify.entrypoints.cli import app

runner = CliRunner()


def qualify(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script, as a user would."""
    script = Path(sys.executable).with_name("qualify")
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120
    )


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def db(database_url: str) -> str:
    code, _out, err = invoke("init", "--db", database_url)
    assert code == 0, err
    return database_url


MODEL_WITH_TYPOS = """name: broken
fit:
  personas:
    - name: buyer
      rules:
        - name: seniority
          when: {field: senority, equals: vp}
          points: 20
engagement:
  rules:
    - name: demo
      event: demo_request
      points: 30
      half_lif_days: 10
policy:
  mql: {thresholds: {A: 20}}
"""


def test_every_command_has_help() -> None:
    for args in (
        ["--help"],
        ["init", "--help"],
        ["demo", "--help"],
        ["import", "--help"],
        ["score", "--help"],
        ["leads", "--help"],
        ["lead", "--help"],
        ["funnel", "--help"],
        ["stage", "--help"],
        ["stage", "accept", "--help"],
        ["model", "--help"],
        ["model", "validate", "--help"],
    ):
        code, out, _ = invoke(*args)
        assert code == 0 and "Usage" in out, args


def test_the_console_script_reads_the_database_url_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    assert qualify("init", env={"QUALIFY_DATABASE_URL": url}).returncode == 0
    shown = qualify("model", "show", "--json", env={"QUALIFY_DATABASE_URL": url})
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["document"].startswith("# The default scoring model")


def test_a_missing_workspace_is_a_clear_error_not_a_new_file(tmp_path: Path) -> None:
    result = qualify("funnel", "--db", f"sqlite:///{tmp_path / 'nowhere.db'}")
    assert result.returncode == 2
    assert "run `qualify init" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "nowhere.db").exists()


def test_model_validate_names_line_and_field_of_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(MODEL_WITH_TYPOS)
    code, _, err = invoke("model", "validate", str(path))
    assert code == 1
    assert "line 7, fit.personas[0].rules[0].when.field: unknown field 'senority'" in err
    assert "line 14, engagement.rules[0].half_lif_days: unknown key (did you mean 'half_life_days'?)" in err
    code, out, _ = invoke("model", "validate", str(path), "--json")
    assert code == 1 and {p["line"] for p in json.loads(out)["problems"]} == {7, 14}


def test_model_activate_versions_and_show_lists_history(db: str, tmp_path: Path) -> None:
    from qualify.domain.model_loader import default_model_text

    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(
        default_model_text().replace("thresholds: {A: 25, B: 40, C: 70}", "thresholds: {A: 20, B: 35, C: 60}")
    )
    code, out, err = invoke("model", "activate", str(candidate), "--db", db)
    assert code == 0, err
    assert "Activated default" in out
    code, out, _ = invoke("model", "show", "--history", "--json", "--db", db)
    data = json.loads(out)
    assert len(data["versions"]) == 2 and "thresholds: {A: 20, B: 35, C: 60}" in data["document"]
    code, out, _ = invoke("model", "activate", str(candidate), "--db", db)
    assert "already the active model" in out


def test_lead_journey_through_the_cli(db: str) -> None:
    from datetime import UTC, datetime, timedelta

    from qualify.bootstrap import open_workspace
    from qualify.domain.records import Account, Lead, make_event
    from qualify.service.lifecycle.events import ingest_events
    from qualify.service.lifecycle.leads import upsert_leads
    from qualify.settings import Settings

    now = datetime.now(UTC)
    ws = open_workspace(Settings(database_url=db))
    with ws.unit_of_work() as uow:
        upsert_leads(
            uow,
            [
                Lead(
                    email="jane@acme.com",
                    first_name="Jane",
                    title="VP Sales",
                    seniority="vp",
                    created_at=now - timedelta(days=3),
                )
            ],
            accounts=[Account(domain="acme.com", name="Acme", industry="software", employees=900, country="US")],
        )
    with ws.unit_of_work() as uow:
        ingest_events(
            uow,
            [
                make_event(
                    "d1",
                    "content_download",
                    now - timedelta(days=2),
                    email="jane@acme.com",
                    properties={"title": "Pricing guide"},
                ),
                make_event("d2", "demo_request", now - timedelta(days=1), email="jane@acme.com"),
            ],
        )
    ws.close()

    code, out, _ = invoke("leads", "--stage", "mql", "--json", "--db", db)
    assert code == 0 and [r["email"] for r in json.loads(out)] == ["jane@acme.com"]
    code, out, _ = invoke("lead", "jane@acme.com", "--db", db)
    assert code == 0
    assert "Fit 85 (grade A, persona economic buyer)" in out
    assert "downloaded 'Pricing guide' 2 days ago (10, half-life 30 d)" in out
    code, _, err = invoke("stage", "reject", "jane@acme.com", "--by", "sam", "--db", db)
    assert code == 2 and "needs a reason code" in err
    code, _, err = invoke("stage", "win", "jane@acme.com", "--by", "sam", "--db", db)
    assert code == 2 and "cannot win a lead in stage mql" in err
    code, out, err = invoke("stage", "accept", "jane@acme.com", "--by", "sam", "--json", "--db", db)
    assert code == 0, err
    assert (json.loads(out)["from"], json.loads(out)["to"]) == ("mql", "sql")
    code, out, _ = invoke("funnel", "--json", "--db", db)
    funnel = json.loads(out)
    assert funnel["current"]["sql"] == 1 and funnel["conversion"][1]["rate"] == 1.0
    code, out, _ = invoke("score", "--json", "--db", db)
    assert code == 0 and json.loads(out)["leads"] == 1
    code, out, _ = invoke("lead", "jane@acme.com", "--json", "--db", db)
    history = [h["to"] for h in json.loads(out)["history"]]
    assert history == ["lead", "mql", "sql"]


def test_init_keeps_the_active_model_of_an_existing_workspace(db: str, tmp_path: Path) -> None:
    from qualify.domain.model_loader import default_model_text

    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(default_model_text().replace("requalify_margin: 10", "requalify_margin: 12"))
    assert invoke("model", "activate", str(candidate), "--db", db)[0] == 0
    code, out, _ = invoke("init", "--db", db)
    assert code == 0 and "active scoring model kept" in out
    _, shown, _ = invoke("model", "show", "--json", "--db", db)
    assert "requalify_margin: 12" in json.loads(shown)["document"]


def test_a_bad_setting_in_the_environment_is_one_clear_line(tmp_path: Path) -> None:
    result = qualify("init", "--db", f"sqlite:///{tmp_path / 'x.db'}", env={"QUALIFY_BATCH_SIZE": "many"})
    assert result.returncode == 2
    assert "QUALIFY_BATCH_SIZE" in result.stderr and "Traceback" not in result.stderr


def test_merge_export_and_erase_from_the_command_line(db: str) -> None:
    from qualify.bootstrap import open_workspace
    from qualify.domain.records import Lead, make_event
    from qualify.service.lifecycle.events import ingest_events
    from qualify.service.lifecycle.leads import upsert_leads
    from qualify.settings import Settings

    ws = open_workspace(Settings(database_url=db))
    with ws.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="jane@acme.com"), Lead(email="jd@acme.com", title="CMO")])
        ingest_events(uow, [make_event("x1", "email_open", datetime_now(), email="jd@acme.com")])
    ws.close()
    code, out, err = invoke("merge", "jane@acme.com", "jd@acme.com", "--by", "ana", "--json", "--db", db)
    assert code == 0, err
    assert json.loads(out) == {"kept": "jane@acme.com", "merged": "jd@acme.com", "events_moved": 1}
    code, out, _ = invoke("export", "lead", "jd@acme.com", "--db", db)
    exported = json.loads(out)
    assert exported["lead"]["title"] == "CMO" and [e["event_id"] for e in exported["events"]] == ["x1"]
    code, _, err = invoke("erase", "jane@acme.com", "--by", "dpo", "--db", db)
    assert code == 2 and "--yes" in err
    code, out, _ = invoke("erase", "jane@acme.com", "--by", "dpo", "--yes", "--db", db)
    assert code == 0 and "Erased lead #" in out
    assert invoke("lead", "jane@acme.com", "--db", db)[0] == 2


def datetime_now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_export_parquet_writes_every_table_and_events_by_day(db: str, tmp_path: Path) -> None:
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from qualify.bootstrap import open_workspace
    from qualify.domain.records import Lead, make_event
    from qualify.service.lifecycle.events import ingest_events
    from qualify.service.lifecycle.leads import upsert_leads
    from qualify.settings import Settings

    ws = open_workspace(Settings(database_url=db))
    start = datetime_now()
    with ws.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="jane@acme.com", attributes={"budget": 50000, "vip": True})])
        ingest_events(
            uow,
            [
                make_event(
                    f"x{i}",
                    "page_view",
                    start.replace(day=1, month=1).replace(day=1 + i),
                    email="jane@acme.com",
                    properties={"url": "/pricing", "n": i},
                )
                for i in range(3)
            ],
        )
    ws.close()
    code, out, err = invoke("export", "parquet", str(tmp_path / "out"), "--json", "--db", db)
    assert code == 0, err
    manifest = json.loads(out)
    assert manifest["counts"]["events"] == 3 and manifest["counts"]["leads"] == 1
    events = ds.dataset(tmp_path / "out" / "events", partitioning="hive").to_table()
    assert sorted(set(events.column("date").to_pylist())) == sorted({f"{start.year}-01-0{1 + i}" for i in range(3)})
    assert dict(events.column("properties").to_pylist()[0])["url"] == "/pricing"
    leads = pq.read_table(tmp_path / "out" / "leads.parquet").to_pylist()
    assert dict(leads[0]["attributes"]) == {"budget": "50000", "vip": "true"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    code, _, err = invoke("export", "parquet", str(tmp_path / "other"), "--db", db)
    assert code == 2 and "holds no Qualify export" in err and (tmp_path / "other" / "keep.txt").exists()


def test_rescore_scores_every_lead_as_of_an_instant_on_duckdb(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    code, _, err = invoke("demo", "--db", db, "--leads", "60", "--days", "30", "--json")
    assert code == 0, err
    code, out, err = invoke("rescore", "--db", db, "--json", "--out", str(tmp_path / "scores.csv"))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["engine"] == "duckdb" and summary["leads"] == 60 and sum(summary["grades"].values()) == 60
    header, first = (tmp_path / "scores.csv").read_text().splitlines()[:2]
    assert header == '"lead_id","email","external_id","fit","grade","persona","engagement","probability"'
    assert first.endswith(",") and summary["predictive_model"] is None  # no predictive model: no probability
    code, out, _ = invoke("rescore", "--db", db, "--json", "--as-of", "2000-01-01")
    assert json.loads(out)["engagement_mean"] == 0.0


@pytest.mark.slow
def test_every_report_runs_from_the_command_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    code, _, err = invoke("demo", "--db", db, "--leads", "150", "--days", "90", "--json")
    assert code == 0, err
    export = tmp_path / "export"
    assert invoke("export", "parquet", str(export), "--db", db)[0] == 0
    reports = {
        "funnel": ([], "acceptance"),
        "velocity": (["--export", str(export)], "days_in_stage"),
        "cohorts": (["--export", str(export), "--by", "campaign"], None),
        "sources": (["--export", str(export), "--by", "channel"], None),
        "content": (["--export", str(export), "--target", "sql", "--min-support", "5"], "paths"),
        "lookalikes": (["--export", str(export), "--target", "sql", "--min-support", "5", "--limit", "3"], "leads"),
    }
    for name, (options, key) in reports.items():
        code, out, err = invoke("report", name, "--db", db, *options, "--json")
        assert code == 0, (name, err)
        data = json.loads(out)
        assert data and (key is None or key in data), name
        code, out, err = invoke("report", name, "--db", db, *options)
        assert code == 0 and out.strip(), (name, err)
    code, out, _ = invoke("report", "content", "--db", db, "--export", str(export), "--min-support", "5")
    assert "Paths of converters" in out
    code, _, err = invoke("report", "velocity", "--db", db, "--engine", "postgres")
    assert code == 2 and "postgres" in err.lower()


def test_rescore_explains_every_score(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    assert invoke("demo", "--db", db, "--leads", "40", "--days", "20", "--json")[0] == 0
    why = tmp_path / "why.csv"
    code, out, err = invoke("rescore", "--db", db, "--json", "--out", str(tmp_path / "s.csv"), "--explain", str(why))
    assert code == 0, err
    summary = json.loads(out)
    lines = why.read_text().splitlines()
    assert lines[0] == '"lead_id","kind","rule","points","event_id","occurred_at"'
    assert summary["contributions"] == len(lines) - 1 > 40


def test_a_bad_database_url_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    """Through the real console script: never a traceback, whatever the URL or the server's state."""
    server = os.environ.get("QUALIFY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    host = server.split("://", 1)[1].rsplit("/", 1)[0]
    cases = {
        "notaurl": "is not a database URL",
        "mysql://u@localhost/db": "SQLite or PostgreSQL, not mysql",
        "postgresql+psycopg2://u@localhost/db": "write postgresql://u@localhost/db",
        "sqlite://relative.db": "after three slashes",
        f"postgres://{host}/qualify_no_such_database": "create it first",
        "postgresql://postgres@127.0.0.1:1/x": "is PostgreSQL running there",
        f"sqlite:///{tmp_path}/none.db": "run `qualify init",
    }
    for url, said in cases.items():
        result = qualify("leads", "--db", url)
        assert result.returncode == 2, (url, result.stderr)
        assert result.stderr.startswith("error: ") and said in result.stderr, (url, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2, result.stderr
    # postgres:// (what hosting providers hand out) is PostgreSQL through psycopg.
    from qualify.settings import Settings

    assert Settings(database_url="postgres://u:p@db.example:5432/app").database_url == (
        "postgresql+psycopg://u:p@db.example:5432/app"
    )


def test_the_key_qualify_leads_prints_opens_the_lead_and_is_never_cut(db: str) -> None:
    from datetime import UTC, datetime

    from qualify.bootstrap import open_workspace
    from qualify.domain.records import Lead
    from qualify.service.lifecycle.leads import upsert_leads
    from qualify.settings import Settings

    workspace = open_workspace(Settings(database_url=db))
    with workspace.unit_of_work() as uow:
        upsert_leads(
            uow,
            [
                Lead(external_id="0031t00000ABCDEFGHIJK", title="Head of a very long department name indeed"),
                Lead(email="a.rather.long.address.for.a.person@a-long-company-name.example", first_name="Ann"),
            ],
            now=datetime.now(UTC),
        )
    workspace.close()
    listed = qualify("leads", "--db", db, env={"COLUMNS": "80"})
    assert listed.returncode == 0, listed.stderr
    assert "ext:0031t00000ABCDEFGHIJK" in listed.stdout
    assert "a.rather.long.address.for.a.person@a-long-company-name.example" in listed.stdout
    assert "Left out to fit the terminal: persona" in listed.stderr
    short = qualify("leads", "--db", db, "--grade", "D", "--limit", "1", "--sort", "created", env={"COLUMNS": "80"})
    assert max(len(line) for line in short.stdout.splitlines()) <= 80, short.stdout
    wide = qualify("leads", "--db", db, env={"COLUMNS": "200"})
    assert "Head of a very long department name indeed" in wide.stdout and "Left out" not in wide.stderr
    opened = qualify("lead", "ext:0031t00000ABCDEFGHIJK", "--db", db)
    assert opened.returncode == 0 and "0031t00000ABCDEFGHIJK" in opened.stdout, opened.stderr


def test_help_reads_as_prose_with_a_version_and_a_short_flag() -> None:
    from qualify import __version__

    version = qualify("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"qualify {__version__}"
    assert qualify("-V").stdout == version.stdout
    short = qualify("train", "-h", env={"COLUMNS": "160"})
    assert short.returncode == 0 and short.stdout == qualify("train", "--help", env={"COLUMNS": "160"}).stdout
    assert "--activate" in short.stdout and "<bool>" not in short.stdout  # a flag takes no value to show
    # A docstring's paragraph is one paragraph at any width, not lines broken where the source wraps.
    text = qualify("import", "--help", env={"COLUMNS": "200"}).stdout
    assert "Re-importing the same file changes nothing: leads are upserted by email or external id, accounts by" in text


def test_long_work_shows_its_step_on_a_terminal_and_nothing_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from qualify.entrypoints.cli import base

    screen = io.StringIO()
    monkeypatch.setattr(base, "err", Console(file=screen, force_terminal=True, width=100))
    with base._working("Training") as step:
        step("fitting and judging the candidates on 9,240 leads")
        base.err.file.flush()
    assert "Training: fitting and judging the candidates on 9,240 leads" in screen.getvalue()
    quiet = io.StringIO()
    monkeypatch.setattr(base, "err", Console(file=quiet, force_terminal=False))
    with base._working("Training") as step:
        step("anything")
    with base._working("Training", enabled=False) as step:  # --json
        step("anything")
    assert quiet.getvalue() == ""


def test_the_demo_suggests_whole_commands_that_work_as_pasted(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    built = qualify("demo", "--db", db, "--leads", "40", "--days", "20", env={"COLUMNS": "80"})
    assert built.returncode == 0, built.stderr
    suggested = [line.strip() for line in built.stdout.splitlines() if line.startswith("  qualify ")]
    assert [c.split()[:2] for c in suggested] == [["qualify", "leads"], ["qualify", "lead"], ["qualify", "serve"]]
    assert suggested[0].endswith("--stage mql") and "@" in suggested[1].split()[-1]  # whole: never wrapped
    for command in suggested[:2]:  # and each runs as printed, on a lead the demo made
        ran = qualify(*command.split()[1:])
        assert ran.returncode == 0, (command, ran.stderr)


def test_examples_writes_the_shipped_files_anywhere_and_keeps_the_ones_you_changed(tmp_path: Path) -> None:
    """`qualify examples` works wherever Qualify is installed: the README's tour needs no checkout."""
    folder = tmp_path / "mine"
    written = subprocess.run(
        [str(Path(sys.executable).with_name("qualify")), "examples", str(folder), "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert written.returncode == 0, written.stderr
    report = json.loads(written.stdout)
    assert {"leads.csv", "mapping.yaml", "events.jsonl", "automation.yaml", "xeducation/model.yaml"} <= set(
        report["written"]
    )
    assert (folder / "crm" / "hubspot-contacts.yaml").is_file() and report["unchanged"] == report["kept"] == []
    (folder / "leads.csv").write_text("email\nmine@acme.com\n", encoding="utf-8")
    code, out, _ = invoke("examples", str(folder))
    assert code == 0 and "0 example files written" in out and "Kept 1 you changed (leads.csv); --force" in out
    assert (folder / "leads.csv").read_text(encoding="utf-8") == "email\nmine@acme.com\n"
    code, out, _ = invoke("examples", str(folder), "--force")
    assert code == 0 and "1 example files written" in out
    assert (folder / "leads.csv").read_text(encoding="utf-8").startswith("E-mail,Given name")
    (tmp_path / "file").write_text("", encoding="utf-8")
    code, _, err = invoke("examples", str(tmp_path / "file"))
    assert code == 2 and "cannot write it" in err and "Traceback" not in err


def test_users_add_without_a_terminal_says_to_use_password_stdin(db: str) -> None:
    done = qualify("users", "add", "ana.ruiz", "--role", "admin", "--db", db)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "error: no terminal to ask the password on: give it on standard input with --password-stdin"
    )


def test_export_leads_writes_every_lead_with_its_scores_stage_and_reason_in_three_formats(
    db: str, tmp_path: Path
) -> None:
    import csv

    import pyarrow.parquet as pq

    from qualify.bootstrap import open_workspace
    from qualify.domain.records import Lead, make_event
    from qualify.service.lifecycle.events import ingest_events
    from qualify.service.lifecycle.leads import upsert_leads
    from qualify.service.reading import lead_export
    from qualify.settings import Settings

    ws = open_workspace(Settings(database_url=db))
    now = datetime_now()
    with ws.unit_of_work() as uow:
        upsert_leads(
            uow,
            [
                Lead(email="vp@acme.com", title="VP Marketing", department="marketing", seniority="vp", country="US"),
                Lead(email="=cmd@evil.example", title="Intern"),
                *(Lead(email=f"p{n}@globex.com") for n in range(7)),
            ],
        )
        demo = make_event("d1", "demo_request", now, email="vp@acme.com")
        ingest_events(uow, [demo, *(make_event(f"v{n}", "page_view", now, email="vp@acme.com") for n in range(3))])
    ws.close()
    lead_export.PAGE = 4  # several pages: the export reads a page at a time
    try:
        for name in ("leads.csv", "leads.jsonl", "leads.parquet"):
            code, out, err = invoke("export", "leads", str(tmp_path / name), "--db", db, "--json")
            assert code == 0, err
            assert json.loads(out)["leads"] == 9
    finally:
        lead_export.PAGE = 1000
    with (tmp_path / "leads.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(lead_export.COLUMNS) and len(rows) == 9
    best = next(row for row in rows if row["email"] == "vp@acme.com")
    assert float(best["score"]) > 0 and best["stage"] != "lead"
    assert best["stage_reason"] and best["fit_grade"] in "ABCD"
    assert any(row["email"] == "'=cmd@evil.example" for row in rows)  # no formula for a spreadsheet
    assert len({row["id"] for row in rows}) == 9  # pages neither repeat nor skip a lead
    lines = (tmp_path / "leads.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == [int(row["id"]) for row in rows]  # the same order
    table = pq.read_table(tmp_path / "leads.parquet")
    assert table.num_rows == 9 and str(table.schema.field("probability").type) == "double"
    assert table.column("id").to_pylist() == [int(row["id"]) for row in rows]
    code, _, err = invoke("export", "leads", str(tmp_path / "leads.xlsx"), "--db", db)
    assert code == 2 and ".csv, .jsonl, .parquet" in err
    code, _, err = invoke("export", "leads", str(tmp_path / "some.csv"), "--stage", "maybe", "--db", db)
    assert code == 2 and "stage" in err and not (tmp_path / "some.csv").exists()
