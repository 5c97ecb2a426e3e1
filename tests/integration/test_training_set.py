"""Point-in-time training sets: labels from what happened after the cutoff, features from before it."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select
from tests.conftest import write_csv
from typer.testing import CliRunner

from qualify.adapters import schema
from qualify.analytics.batch_evaluator import Sources, scores_as_of
from qualify.analytics.engines import duckdb_sources
from qualify.bootstrap import open_workspace
from qualify.demo.world import build_demo
from qualify.domain.model_loader import default_model_text
from qualify.entrypoints.cli import app
from qualify.predictive.features import default_end, training_set
from qualify.predictive.training import Trained
from qualify.service.analytics.export import export_workspace
from qualify.service.imports.files import import_file
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Sources, Path]]:
    folder = tmp_path_factory.mktemp("training")
    workspace = open_workspace(Settings(database_url=f"sqlite:///{folder / 'demo.db'}"), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
    build_demo(workspace, seed=11, leads=600, days=150, now=NOW)
    export_workspace(workspace, folder / "export")
    yield workspace, duckdb_sources(folder / "export"), folder
    workspace.close()


def history_of(workspace: Workspace) -> tuple[dict[int, datetime], dict[int, list[tuple[str, datetime]]]]:
    with workspace.unit_of_work(read_only=True) as uow:
        created = dict(uow.connection.execute(select(schema.leads.c.id, schema.leads.c.created_at)).all())
        moves: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
        h = schema.stage_history
        for lead_id, to_stage, at in uow.connection.execute(select(h.c.lead_id, h.c.to_stage, h.c.at).order_by(h.c.at)):
            moves[lead_id].append((to_stage, at))
    return created, moves


def test_labels_come_from_after_the_cutoff_and_unjudgeable_leads_are_left_out(
    demo: tuple[Workspace, Sources, Path],
) -> None:
    workspace, sources, _ = demo
    with workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
    end = default_end(sources)
    rows = training_set(model, sources, target="sql", within_days=30, cutoff="created+7", end=end)
    created, moves = history_of(workspace)
    expected: dict[int, int] = {}
    censored = before = early = 0
    for lead_id, at in created.items():
        cut = at + timedelta(days=7)
        first = next((t for s, t in moves[lead_id] if s == "sql"), None)
        converted = first is not None and cut < first <= cut + timedelta(days=30)
        if cut + timedelta(days=30) > end and not converted:  # not over, and no outcome yet
            censored += 1
        elif first is not None and first <= cut:
            before += 1
        else:
            expected[lead_id] = int(converted)
            early += cut + timedelta(days=30) > end
    assert dict(zip(rows.frame["lead_id"], rows.labels, strict=True)) == expected
    assert rows.left_out == {"censored": censored, "reached_before_cutoff": before, "excluded": 0}
    assert rows.known_early == early > 0
    assert 0 < rows.labels.sum() < len(rows.labels)
    assert list(rows.frame["cutoff"]) == sorted(rows.frame["cutoff"])


@pytest.mark.slow
def test_features_use_only_what_was_known_at_the_cutoff(demo: tuple[Workspace, Sources, Path]) -> None:
    workspace, sources, _ = demo
    with workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
        e = schema.events
        events = pd.DataFrame(
            uow.connection.execute(select(e.c.lead_id, e.c.type, e.c.occurred_at)).all(),
            columns=["lead_id", "type", "occurred_at"],
        )
    rows = training_set(model, sources, target="customer", within_days=45, cutoff="mql", end=default_end(sources))
    _, moves = history_of(workspace)
    frame = rows.frame.set_index("lead_id")
    assert len(frame) > 30
    for lead_id, row in frame.iterrows():
        assert row["cutoff"] == next(t for s, t in moves[int(lead_id)] if s == "mql")  # the first MQL entry
        mine = events[(events.lead_id == lead_id) & (events.occurred_at <= row["cutoff"])]
        assert row["events_page_view"] == (mine.type == "page_view").sum(), lead_id
        recent = mine[mine.occurred_at >= row["cutoff"] - timedelta(days=7)]
        assert row["recent_email_open"] == (recent.type == "email_open").sum(), lead_id
    # The engagement feature is the score as of each lead's own cutoff.
    for lead_id in list(frame.index)[:5]:
        cut = frame.loc[lead_id, "cutoff"].to_pydatetime()
        scores = scores_as_of(model, sources, cut).to_pyarrow().to_pylist()
        mine = next(s for s in scores if s["lead_id"] == lead_id)
        assert frame.loc[lead_id, "engagement_score"] == pytest.approx(mine["engagement"], abs=1e-9)
        assert frame.loc[lead_id, "fit_score"] == mine["fit"]


@pytest.mark.slow
def test_train_on_the_command_line(demo: tuple[Workspace, Sources, Path]) -> None:
    workspace, _, folder = demo
    out = folder / "model.json"
    db = workspace.settings.database_url
    args = [
        "train",
        "--db",
        db,
        "--export",
        str(folder / "export"),
        "--target",
        "sql",
        "--within",
        "30",
        "--cutoff",
        "created+7",
    ]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["training_set"]["rows"] == sum(report["split"].values())
    assert set(report["test"]) >= {"model", "rule_score", "naive_bayes"}
    trained = Trained.from_dict(json.loads(out.read_text()))
    assert trained.report["choice"]["chosen"] in ("logistic", "boosted")
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0 and "Metrics" in text.stdout and "rule_score" in text.stdout
    bad = CliRunner().invoke(app, [*args[:-2], "--cutoff", "tomorrow"])
    assert bad.exit_code == 2 and "created+DAYS" in bad.stderr


# --- outcomes known before the end of the data; leads kept out ---------------------------------------


def constructed(workspace: Workspace, folder: Path) -> Sources:
    """Leads whose history is written by hand (cutoff created+2, SQL within 30 days):
    - `closed`: converted on day 5, long ago: a positive by either rule;
    - `early-0..2`: created 12 days before the end, SQL 7 days later: converted within their 30 days,
      though those are not over by the end (the old rule censored them);
    - `open`: created with them, not converted: its outcome is unknown, censored;
    - `slow`: SQL 58 days after its cutoff: a negative, not a positive;
    - `before`: SQL before its cutoff: left out;
    - `anchor`: SQL 38 days after its cutoff, one day before NOW: the end of the data."""
    day = timedelta(days=1)
    leads = {
        "closed": (NOW - 100 * day, NOW - 95 * day),
        **{f"early-{i}": (NOW - 13 * day, NOW - 6 * day) for i in range(3)},
        "open": (NOW - 13 * day, None),
        "slow": (NOW - 100 * day, NOW - 40 * day),
        "before": (NOW - 100 * day, NOW - 99 * day),
        "anchor": (NOW - 41 * day, NOW - day),
    }
    iso = lambda at: at.isoformat()  # noqa: E731
    people = write_csv(
        folder / "leads.csv", ["email", "created_at"], [[f"{k}@acme.example", iso(c)] for k, (c, _) in leads.items()]
    )
    stages = write_csv(
        folder / "stages.csv",
        ["email", "stage", "at"],
        [[f"{k}@acme.example", "sql", iso(at)] for k, (_, at) in leads.items() if at is not None],
    )
    assert import_file(workspace, "leads", people, now=NOW).created == len(leads)
    assert import_file(workspace, "stages", stages, now=NOW).created == 7
    export_workspace(workspace, folder / "export")
    return duckdb_sources(folder / "export")


def test_a_lead_that_converted_before_the_end_is_a_positive_even_if_its_window_is_not_over(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    sources = constructed(sqlite_workspace, tmp_path)
    with sqlite_workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
        ids = {
            email.split("@")[0]: lead_id
            for lead_id, email in uow.connection.execute(select(schema.leads.c.id, schema.leads.c.email))
        }
    end = default_end(sources)
    assert end == NOW - timedelta(days=1)
    rows = training_set(model, sources, target="sql", within_days=30, cutoff="created+2", end=end)
    labels = {int(i): int(v) for i, v in zip(rows.frame["lead_id"], rows.labels, strict=True)}
    early = {ids[f"early-{i}"] for i in range(3)}
    assert labels == {ids["closed"]: 1, **dict.fromkeys(early, 1), ids["slow"]: 0, ids["anchor"]: 0}
    assert rows.left_out == {"censored": 1, "reached_before_cutoff": 1, "excluded": 0}  # `open` is censored
    assert rows.known_early == 3
    # No peeking past the end: with an earlier end their conversions are not known yet.
    earlier = training_set(model, sources, target="sql", within_days=30, cutoff="created+2", end=NOW - 8 * DAY)
    assert not early & set(earlier.frame["lead_id"]) and earlier.known_early == 0
    assert earlier.left_out["censored"] == 4  # the three and `open`
    assert dict(zip(earlier.frame["lead_id"], earlier.labels, strict=True))[ids["anchor"]] == 0  # window over first
    # Leads kept out of training leave every count.
    kept_out = training_set(
        model, sources, target="sql", within_days=30, cutoff="created+2", end=end, exclude={ids["early-0"], 10_000}
    )
    assert ids["early-0"] not in set(kept_out.frame["lead_id"])
    assert kept_out.left_out["excluded"] == 1 and kept_out.known_early == 2


def test_an_exclude_file_names_leads_by_any_key_and_reports_what_it_cannot_find(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    from qualify.domain.errors import InvalidInput
    from qualify.service.analytics.outcomes import excluded_leads

    constructed(sqlite_workspace, tmp_path)
    with sqlite_workspace.unit_of_work(read_only=True) as uow:
        ids = dict(uow.connection.execute(select(schema.leads.c.email, schema.leads.c.id)).all())
    keys = tmp_path / "keys.txt"
    keys.write_text(f"open@acme.example\n\n#{ids['slow@acme.example']}\nnobody@acme.example\nCLOSED@acme.example\n")
    found = excluded_leads(sqlite_workspace, keys)
    assert found.lead_ids == {ids["open@acme.example"], ids["slow@acme.example"], ids["closed@acme.example"]}
    assert found.summary()["read"] == 4 and found.summary()["skipped"] == 1
    assert found.examples == [{"line": 4, "field": "lead", "value": "nobody@acme.example", "reason": "no such lead"}]
    table = write_csv(
        tmp_path / "keys.csv",
        ["name", "Email", "external_id"],
        [["a", "open@acme.example", ""], ["b", "", "crm-404"], ["c", "", ""]],
    )
    found = excluded_leads(sqlite_workspace, table)
    assert found.lead_ids == {ids["open@acme.example"]} and found.read == 3
    assert [(e["line"], e["field"], e["reason"]) for e in found.examples] == [
        (3, "external_id", "no such lead"),
        (4, "email", "no lead given"),
    ]
    bad = write_csv(tmp_path / "bad.csv", ["name", "mail"], [["a", "open@acme.example"]])
    with pytest.raises(InvalidInput, match=r"bad\.csv, line 1: the header must name the lead"):
        excluded_leads(sqlite_workspace, bad)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"open@acme.example\n\xff\xfe\n")
    with pytest.raises(InvalidInput, match=r"binary\.txt, line 2: not UTF-8"):
        excluded_leads(sqlite_workspace, binary)
    with pytest.raises(InvalidInput, match="no such file"):
        excluded_leads(sqlite_workspace, tmp_path / "missing.csv")


@pytest.mark.slow
def test_train_keeps_the_leads_of_an_exclude_file_out_of_training(
    demo: tuple[Workspace, Sources, Path], tmp_path: Path
) -> None:
    from qualify.service.analytics.training import in_ranges

    workspace, _, folder = demo
    with workspace.unit_of_work(read_only=True) as uow:
        named = uow.connection.execute(
            select(schema.leads.c.id, schema.leads.c.email, schema.leads.c.stage)
            .where(schema.leads.c.email.is_not(None))
            .order_by(schema.leads.c.id)
        ).all()
    kept_out = named[:40]
    keys = tmp_path / "keep-out.txt"
    keys.write_text("\n".join(r.email for r in kept_out) + "\nnobody@nowhere.example\n", encoding="utf-8")
    db = workspace.settings.database_url
    base = ["train", "--db", db, "--export", str(folder / "export"), "--no-store", "--exclude", str(keys)]
    args = [*base, "--target", "sql", "--within", "30", "--cutoff", "created+7"]
    result = CliRunner().invoke(app, [*args, "--json", "--out", str(tmp_path / "model.json")])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["exclude"] | {"examples": []} == {
        "file": str(keys), "read": 41, "leads": 40, "skipped": 1, "problems": {"no such lead": 1}, "examples": [],
        "excluded": 40,
    }  # fmt: skip
    assert report["training_set"]["left_out"]["excluded"] == 40 and "line 41" in result.stderr
    learnt_from = json.loads((tmp_path / "model.json").read_text())["learnt_from"]
    assert not any(in_ranges(learnt_from, r.id) for r in kept_out)
    # Known outcomes too: the named leads leave the labels (and the cross-validation).
    labels = write_csv(
        tmp_path / "labels.csv",
        ["email", "label"],
        [[r.email, "1" if r.stage in ("sql", "opportunity", "customer") else "0"] for r in named],
    )
    result = CliRunner().invoke(app, [*base, "--labels", str(labels), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["labels"]["used"] == len(named) - 40 and report["training_set"]["rows"] == len(named) - 40
    assert report["training_set"]["left_out"] == {"excluded": 40} and report["exclude"]["excluded"] == 40
