"""The probability as of any instant, in batch (`qualify rescore --as-of`), equals the online one:
on DuckDB, PostgreSQL and Spark. Apart from test_predictions.py so that the two run side by side."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from tests.conftest import batch_equals_online, workspace_on
from tests.integration.test_crm_features import AS_OF, build
from tests.integration.test_predictions import NOW, shared_trained_world

from qualify.adapters import schema
from qualify.analytics.engines import duckdb_sources
from qualify.bootstrap import open_workspace
from qualify.demo.world import build_demo
from qualify.domain.model_loader import default_model_text
from qualify.predictive.features import TrainingSet
from qualify.service.analytics.batch_scores import COLUMNS, batch_scores
from qualify.service.analytics.export import export_workspace
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.predictions import serving as predictions
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings


@pytest.fixture(scope="module")
def learnt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, TrainingSet, dict[str, Any], Path]]:
    """test_predictions.py's trained demo world, a copy for this module."""
    world = shared_trained_world(tmp_path_factory, tmp_path_factory.mktemp("probability-as-of"))
    yield world
    world[0].close()


def test_the_probability_as_of_any_instant_in_batch_equals_the_online_one(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], tmp_path: Path
) -> None:
    workspace, _, document, _ = learnt
    export_workspace(workspace, tmp_path / "export")
    sources = duckdb_sources(tmp_path / "export")
    past = NOW - timedelta(days=40)
    with workspace.unit_of_work(read_only=True) as uow:
        later = uow.connection.execute(
            select(func.count(func.distinct(schema.events.c.lead_id))).where(schema.events.c.occurred_at > past)
        ).scalar_one()
    assert later > 100  # leads whose events after the instant the batch side must not read
    compared = [batch_equals_online(workspace, sources, at) for at in (past, NOW + timedelta(days=1))]
    assert 100 < compared[0] < compared[1] == 700
    scores = batch_scores(workspace, engine="duckdb", as_of=past, export=tmp_path / "export")
    assert scores.table.column_names == list(COLUMNS) and scores.predictive_version == predictions.version_of(document)
    rows = scores.table.to_pylist()
    assert len(rows) == 700 and sum(r["probability"] is not None for r in rows) == compared[0]
    assert scores.summary()["probabilities"] == compared[0] and scores.summary()["predictive_model"]


@pytest.mark.slow
def test_the_probability_as_of_an_instant_on_postgresql_equals_the_online_one(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], postgres_schema_url: str
) -> None:
    from qualify.analytics.engines import postgres_sources

    _, _, document, _ = learnt
    workspace = open_workspace(Settings(database_url=postgres_schema_url), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
    build_demo(workspace, seed=3, leads=250, days=90, now=NOW)
    with workspace.unit_of_work() as uow:  # the model learnt on SQLite: its recipe fixes the features
        version, _ = predictions.store_model(uow, document)
        predictions.activate(uow, version)
    sources = postgres_sources(postgres_schema_url)
    past = NOW - timedelta(days=30)
    compared = [batch_equals_online(workspace, sources, at) for at in (past, NOW + timedelta(days=1))]
    assert 50 < compared[0] < compared[1] == 250
    scores = batch_scores(workspace, engine="postgres", as_of=past)
    assert sum(r["probability"] is not None for r in scores.table.to_pylist()) == compared[0]
    workspace.close()


@pytest.mark.slow
def test_the_probability_as_of_an_instant_on_spark_equals_the_online_one(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], tmp_path: Path
) -> None:
    pytest.importorskip("pyspark", reason="Spark is an optional engine: pip install 'qualify[spark]'")
    from qualify.analytics.engines import spark_sources

    _, _, document, _ = learnt
    workspace = open_workspace(Settings(database_url=f"sqlite:///{tmp_path / 'small.db'}"), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
    build_demo(workspace, seed=4, leads=120, days=60, now=NOW)
    with workspace.unit_of_work() as uow:
        version, _ = predictions.store_model(uow, document)
        predictions.activate(uow, version)
    export_workspace(workspace, tmp_path / "export")
    assert batch_equals_online(workspace, spark_sources(tmp_path / "export"), NOW - timedelta(days=20)) > 30
    workspace.close()


@pytest.mark.slow
def test_features_from_a_crm_history_on_spark_equal_the_online_ones(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Event properties, recency weights, deals and account roll-ups (test_crm_features.py) on Spark."""
    pytest.importorskip("pyspark", reason="Spark is an optional engine: pip install 'qualify[spark]'")
    from qualify.analytics.engines import spark_sources

    with workspace_on("sqlite", request, tmp_path) as workspace:
        crm = build(workspace, tmp_path, "sqlite")
        assert crm.predictor.recipe.deals and crm.predictor.recipe.account and crm.predictor.recipe.numbers
        assert batch_equals_online(workspace, spark_sources(tmp_path / "export"), AS_OF) > 50
