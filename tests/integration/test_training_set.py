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
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)


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
    censored = before = 0
    for lead_id, at in created.items():
        cut = at + timedelta(days=7)
        first = next((t for s, t in moves[lead_id] if s == "sql"), None)
        if cut + timedelta(days=30) > end:
            censored += 1
        elif first is not None and first <= cut:
            before += 1
        else:
            expected[lead_id] = int(first is not None and first <= cut + timedelta(days=30))
    assert dict(zip(rows.frame["lead_id"], rows.labels, strict=True)) == expected
    assert rows.left_out == {"censored": censored, "reached_before_cutoff": before}
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
