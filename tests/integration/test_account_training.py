"""Accounts learnt and backtested at account level: point-in-time rows, held-out accounts, the MQA bar."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from qualify.adapters import schema
from qualify.analytics.batch_evaluator import Sources
from qualify.analytics.engines import duckdb_sources
from qualify.bootstrap import open_workspace
from qualify.demo.world import build_demo
from qualify.domain.model_loader import default_model_text, load_model
from qualify.entrypoints.cli import app
from qualify.predictive.account_set import AccountSet, account_set, mqa_bar_met
from qualify.predictive.features import default_end
from qualify.predictive.training import fold_indices
from qualify.service.analytics.account_training import backtest_accounts, train_accounts
from qualify.service.analytics.export import export_workspace
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
WITHIN, EVERY = 21, 14


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Sources, Path]]:
    folder = tmp_path_factory.mktemp("account-training")
    workspace = open_workspace(Settings(database_url=f"sqlite:///{folder / 'demo.db'}"), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
    build_demo(workspace, seed=3, leads=500, days=150, now=NOW)
    export_workspace(workspace, folder / "export")
    yield workspace, duckdb_sources(folder / "export"), folder
    workspace.close()


@pytest.fixture(scope="module")
def rows(world: tuple[Workspace, Sources, Path]) -> AccountSet:
    workspace, sources, _ = world
    with workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
    return account_set(model, sources, within_days=WITHIN, every_days=EVERY, end=default_end(sources))


def _stored(workspace: Workspace) -> tuple[pd.DataFrame, pd.DataFrame]:
    with workspace.unit_of_work(read_only=True) as uow:
        leads = pd.DataFrame(
            uow.connection.execute(select(schema.leads.c.id, schema.leads.c.account_id, schema.leads.c.created_at))
            .mappings()
            .all()
        )
        history = pd.DataFrame(
            uow.connection.execute(
                select(schema.stage_history.c.lead_id, schema.stage_history.c.to_stage, schema.stage_history.c.at)
            )
            .mappings()
            .all()
        )
    for frame, column in ((leads, "created_at"), (history, "at")):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return leads, history


def test_each_row_is_an_account_at_a_cutoff_labelled_by_what_its_people_did_after_it(
    world: tuple[Workspace, Sources, Path], rows: AccountSet
) -> None:
    leads, history = _stored(world[0])
    assert len(rows.frame) > 100 and 0 < rows.labels.sum() < len(rows.labels)
    assert len(rows.cutoffs) >= 5 and all(b - a == timedelta(days=EVERY) for a, b in itertools.pairwise(rows.cutoffs))
    assert rows.cutoffs[-1] + timedelta(days=WITHIN) <= default_end(world[1])  # no row is censored
    assert not rows.frame.duplicated(["account_id", "cutoff"]).any()
    checked = rows.frame.assign(label=rows.labels).sample(60, random_state=1)
    for row in checked.itertuples():
        people = leads[leads["account_id"] == row.account_id]
        there = people[people["created_at"] <= row.cutoff]
        assert row.people == len(there) > 0  # only the people who were leads then
        mine = history[history["lead_id"].isin(people["id"])]
        stage_then = mine[mine["at"] <= row.cutoff].sort_values("at").groupby("lead_id")["to_stage"].last()
        assert not stage_then.isin(["opportunity", "customer", "evangelist"]).any()  # none of them in a deal
        assert row.people_in_mql == int((stage_then == "mql").sum())
        opened = mine[
            (mine["to_stage"] == "opportunity")
            & (mine["at"] > row.cutoff)
            & (mine["at"] <= row.cutoff + timedelta(days=WITHIN))
        ]
        assert row.label == int(len(opened) > 0), (row.account_id, row.cutoff)
    assert rows.summary()["left_out"]["in_a_deal"] > 0


def test_the_rows_hold_the_account_scores_the_batch_gives_at_each_cutoff(
    world: tuple[Workspace, Sources, Path], rows: AccountSet
) -> None:
    from qualify.analytics.batch_evaluator import account_scores_as_of

    workspace, sources, _ = world
    with workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
    cutoff = rows.cutoffs[len(rows.cutoffs) // 2]
    batch = account_scores_as_of(model, sources, cutoff).to_pandas().set_index("account_id")
    at = rows.frame[rows.frame["cutoff"] == pd.Timestamp(cutoff)].set_index("account_id")
    assert len(at) > 20
    assert np.allclose(at["account_engagement"], batch.loc[at.index, "engagement"])
    assert (at["roles_covered"] == batch.loc[at.index, "covered"]).all()
    assert model.accounts is not None and model.accounts.mqa is not None
    bar = model.accounts.mqa
    expected = [bar.why(r.account_fit, r.account_engagement, int(r.roles_covered)) is not None for r in at.itertuples()]
    assert list(at["mqa"]) == expected == list(mqa_bar_met(model.accounts, at))


def test_folds_hold_out_whole_accounts() -> None:
    labels = np.array([0, 1] * 50)
    groups = np.repeat(np.arange(20), 5)
    folds = fold_indices(labels, 5, groups)
    for fit, held in folds:
        assert not set(groups[fit]) & set(groups[held])
    assert sorted(np.concatenate([held for _, held in folds])) == list(range(100))


def test_the_account_model_is_judged_on_held_out_accounts_beside_the_policy_and_the_lead_level_scores(
    world: tuple[Workspace, Sources, Path], rows: AccountSet
) -> None:
    workspace, _, folder = world
    result = train_accounts(workspace, within_days=WITHIN, every_days=EVERY, export=folder / "export")
    report = result.report
    assert report["subject"] == "accounts" and report["validation"]["method"] == "cross-validation"
    assert report["validation"]["groups"] == rows.frame["account_id"].nunique()
    assert report["training_set"]["rows"] == len(rows.frame)
    assert {"model", "MQA bar", "account engagement", "best person's score (fit + engagement)"} <= set(report["test"])
    for name in report["test"]:
        if "uncalibrated" not in name:
            assert 0.0 <= report["cross_validation"][name]["mean"] <= 1.0
    at = report["at_mqa_threshold"]
    assert at["flagged"] == int(rows.frame["mqa"].sum()) > 0
    mqa = at["MQA bar"]
    assert mqa["flagged"] == at["flagged"] and mqa["opened"] == int(rows.labels[rows.frame["mqa"].to_numpy()].sum())
    lead_level = f"lead level: {report['best_lead_level']}"
    for flag in (at["model"], at[lead_level]):
        assert flag["flagged"] == at["flagged"] and 0 <= flag["opened"] <= flag["flagged"]
    assert result.document["kind"] == "account opportunity" and result.document["model"]


def test_train_and_backtest_accounts_on_the_command_line(world: tuple[Workspace, Sources, Path]) -> None:
    workspace, _, folder = world
    db = workspace.settings.database_url
    runner = CliRunner()
    written = folder / "account-model.json"
    done = runner.invoke(
        app,
        ["train", "--accounts", "--within", str(WITHIN), "--every", str(EVERY), "--db", db, "--out", str(written),
         "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    printed = json.loads(done.output)  # the words are run by docs/accounts.md's example
    assert printed["subject"] == "accounts" and printed["out"] == str(written)
    assert printed["at_mqa_threshold"]["flagged"] == printed["at_mqa_threshold"]["MQA bar"]["flagged"]
    assert json.loads(written.read_text())["report"]["subject"] == "accounts"
    refused = runner.invoke(app, ["train", "--accounts", "--label", "converted", "--db", db])
    assert refused.exit_code != 0 and "--label cannot be used with --accounts" in refused.output

    candidate = folder / "lower-bar.yaml"
    candidate.write_text(
        default_model_text().replace("mqa: {fit: 45, engagement: 60, roles: 2}", "mqa: {fit: 45, engagement: 30}"),
        encoding="utf-8",
    )
    done = runner.invoke(
        app,
        ["backtest", str(candidate), "--accounts", "--within", str(WITHIN), "--every", str(EVERY), "--db", db,
         "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    lower, current = report["models"]["candidate"], report["models"]["against"]
    assert lower["bar"] == {"fit": 45, "engagement": 30, "roles": None}
    assert lower["flagged"] >= current["flagged"] and lower["accounts_caught"] >= current["accounts_caught"]
    assert lower["accounts_opened"] == current["accounts_opened"] > 0
    refused = runner.invoke(app, ["backtest", str(candidate), "--accounts", "--from", "2026-01-01", "--db", db])
    assert refused.exit_code != 0 and "--from cannot be used with --accounts" in refused.output


def test_the_same_policy_backtests_the_same(world: tuple[Workspace, Sources, Path]) -> None:
    workspace, _, folder = world
    model = load_model(default_model_text(), "default")
    report = backtest_accounts(
        workspace, model, model, within_days=WITHIN, every_days=EVERY * 2, export=folder / "export"
    )
    assert report["models"]["candidate"] == report["models"]["against"]
    assert report["models"]["candidate"]["flagged"] > 0
