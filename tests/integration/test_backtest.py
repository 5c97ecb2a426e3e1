"""Backtests replay the recorded history: the live model reproduces it, nothing after the end is used."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qualify.bootstrap import open_workspace
from qualify.demo.world import build_demo
from qualify.domain.errors import InvalidInput
from qualify.domain.model_loader import default_model_text, load_model
from qualify.entrypoints.cli import app
from qualify.service.analytics.backtest import backtest
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
STRICTER = default_model_text().replace("thresholds: {A: 25, B: 40, C: 70}", "thresholds: {A: 45, B: 65, C: 95}")


def demo_world(url: str, leads: int = 250) -> Workspace:
    workspace = open_workspace(Settings(database_url=url), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
    build_demo(workspace, seed=5, leads=leads, days=120, now=NOW)
    return workspace


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    workspace = demo_world(f"sqlite:///{tmp_path_factory.mktemp('backtest') / 'demo.db'}")
    yield workspace  # type: ignore[misc]
    workspace.close()


def active(workspace: Workspace):  # type: ignore[no-untyped-def]
    with workspace.unit_of_work(read_only=True) as uow:
        return uow.active_model()


def test_the_live_model_replayed_reproduces_the_recorded_stage_history_in_one_process_or_several(
    database_url: str,
) -> None:
    workspace = demo_world(database_url, leads=120)
    model = active(workspace)
    report = backtest(workspace, model, model, end=NOW)
    check = report.history_check
    assert check["recorded_mqls"] > 10
    assert check["replayed_mqls"] == check["matching"] == check["recorded_mqls"]
    assert check["agreement"] == 1.0
    against, candidate = report.models["against"], report.models["candidate"]
    assert against == candidate and against["actions"] == {"skipped": 0, "from_another_stage": 0}
    assert report.differences["stage_changes"] == 0 and report.changes == []
    # Leads are independent: replayed in parts by two processes, the report is the same.
    stricter = load_model(STRICTER)
    alone = backtest(workspace, stricter, model, end=NOW, chunk=50)
    together = backtest(workspace, stricter, model, end=NOW, chunk=50, workers=2)
    assert together.as_dict() == alone.as_dict() and alone.models["candidate"] != alone.models["against"]
    workspace.close()


def test_the_totals_are_the_weeks_put_together(world: Workspace) -> None:
    model = active(world)
    report = backtest(world, load_model(STRICTER), model, end=NOW)
    assert report.start <= NOW - timedelta(days=119) and report.weeks[0]["week"] <= report.start.date().isoformat()
    for side in ("against", "candidate"):
        total = report.models[side]
        weekly = [w[side] for w in report.weeks]
        assert sum(w["customers"] for w in weekly) == total["customers"]
        assert sum(w["recall"]["count"] for w in weekly) == total["recall"]["count"]
        # A lead can be made MQL in several weeks; in total it counts once.
        assert sum(w["mqls"] for w in weekly) >= total["mqls"] > 0
        precision = total["precision"]
        assert precision["sql"]["count"] >= precision["opportunity"]["count"] >= precision["customer"]["count"]
        for rate in precision.values():
            low, high = rate["interval_95"]
            assert low <= rate["rate"] <= high


def test_a_stricter_model_hands_over_fewer_leads_and_flags_fewer_customers_in_time(world: Workspace) -> None:
    model = active(world)
    report = backtest(world, load_model(STRICTER), model, end=NOW, changes=5)
    a, c, d = report.models["against"], report.models["candidate"], report.differences
    assert c["mqls"] < a["mqls"] and d["mqls"] == c["mqls"] - a["mqls"]
    assert c["recall"]["count"] <= a["recall"]["count"] and c["customers"] == a["customers"]
    assert d["mql_only_against"] > 0
    # Sales worked some leads the stricter model never handed over: their accepts still happen.
    assert c["actions"]["from_another_stage"] > 0
    assert d["stage_changes"] > 0 and len(report.changes) == min(5, d["stage_changes"])
    assert sum(d["stage_changes_by_move"].values()) == d["stage_changes"]
    for row in report.changes:
        assert row["against"]["stage"] != row["candidate"]["stage"]


def test_a_backtest_uses_nothing_after_its_end(world: Workspace) -> None:
    """Weeks before an earlier end come out the same as in a backtest to a later one: what
    happened afterwards changes none of the decisions taken before."""
    model, candidate = active(world), load_model(STRICTER)
    cut = NOW - timedelta(days=45)
    start = NOW - timedelta(days=110)
    early = backtest(world, candidate, model, start=start, end=cut)
    late = backtest(world, candidate, model, start=start, end=NOW)
    full_weeks = [
        w for w in early.weeks if datetime.fromisoformat(w["week"]).replace(tzinfo=UTC) + timedelta(days=7) <= cut
    ]
    assert len(full_weeks) >= 8
    by_week = {w["week"]: w for w in late.weeks}
    for week in full_weeks:
        for side in ("against", "candidate"):
            assert week[side]["mqls"] == by_week[week["week"]][side]["mqls"], (week["week"], side)
    assert early.events < late.events


def test_backtest_on_the_command_line(world: Workspace, tmp_path: Path) -> None:
    runner = CliRunner()
    candidate = tmp_path / "stricter.yaml"
    candidate.write_text(STRICTER)
    db = world.settings.database_url
    result = runner.invoke(app, ["backtest", str(candidate), "--db", db, "--to", "2026-06-01", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["end"] == "2026-06-01T00:00:00+00:00" and len(data["changes"]) <= 20
    text = runner.invoke(app, ["backtest", str(candidate), "--db", db, "--to", "2026-06-01", "--changes", "3"])
    assert text.exit_code == 0, text.stderr
    assert "Week by week" in text.stdout and "Leads whose stage would change" in text.stdout
    missing = runner.invoke(app, ["backtest", str(tmp_path / "nope.yaml"), "--db", db])
    assert missing.exit_code == 2 and "neither `active`" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\npolicy: {mql: {thresholds: {A: -}}}\n")
    bad = runner.invoke(app, ["backtest", str(broken), "--db", db])
    assert bad.exit_code == 2 and "broken.yaml" in bad.stderr
    reversed_period = runner.invoke(
        app, ["backtest", "active", "--db", db, "--from", "2026-06-01", "--to", "2026-05-01"]
    )
    assert reversed_period.exit_code == 2 and "must be before" in reversed_period.stderr
    too_early = runner.invoke(app, ["backtest", "active", "--db", db, "--to", "2020-01-01"])
    assert too_early.exit_code == 2 and "nothing to replay" in too_early.stderr


def test_an_unknown_engine_is_refused(world: Workspace) -> None:
    model = active(world)
    with pytest.raises(InvalidInput, match="unknown engine 'dask'; expected one of: local, spark"):
        backtest(world, model, model, end=NOW, engine="dask")
