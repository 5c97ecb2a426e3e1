"""The predictive use cases without the command line: train (and store, activate), advise a
threshold, learn points; each returns plain data the CLI renders."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from qualify.adapters import schema
from qualify.bootstrap import open_workspace
from qualify.demo.world import build_demo
from qualify.domain.errors import InvalidInput, NotFound
from qualify.domain.model_loader import default_model_text, load_model
from qualify.service.analytics.advice import EITHER, NO_PREDICTOR, advise_threshold
from qualify.service.analytics.export import export_workspace
from qualify.service.analytics.learned_points import learn_scorecard
from qualify.service.analytics.training import TrainingOutcome, train_model
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.predictions import serving as predictions
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
ASKED = {"target": "sql", "within_days": 60}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Path, TrainingOutcome]]:
    """A demo world, its export, and a model trained on it through the use case (stored, active)."""
    folder = tmp_path_factory.mktemp("use_cases")
    workspace = open_workspace(Settings(database_url=f"sqlite:///{folder / 'demo.db'}"), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
    build_demo(workspace, seed=5, leads=600, days=150, now=NOW)
    export_workspace(workspace, folder / "export")
    # On this small world the model ranks no better than the rule score: --activate alone stores it
    # and says why it was not made active; forced, it is.
    refused = train_model(workspace, **ASKED, activate=True, export=folder / "export")
    assert refused.stored and not refused.active
    assert refused.refused is not None and "not above the rule score's" in refused.refused
    with workspace.unit_of_work() as uow:
        assert predictions.active_predictor(uow) is None
        predictions.activate(uow, refused.version)  # what --force does, without training again
    predictions.refresh_all(workspace)
    outcome = dataclasses.replace(refused, active=True, refused=None)
    yield workspace, folder / "export", outcome
    workspace.close()


def test_training_stores_activates_and_answers_plain_data(
    trained: tuple[Workspace, Path, TrainingOutcome],
) -> None:
    workspace, export, outcome = trained
    assert outcome.stored and outcome.active and outcome.version == predictions.version_of(outcome.document)
    report = outcome.report
    assert report["training_set"]["rows"] == sum(report["split"].values()) and report["scoring_model"]
    assert set(report["test"]) >= {"model", "rule_score", "naive_bayes"}
    assert outcome.as_dict() == report | {
        "version": outcome.version,
        "stored": True,
        "active": True,
        "activation_refused": None,
    }
    json.dumps(outcome.as_dict(), default=str)  # plain data
    with workspace.unit_of_work(read_only=True) as uow:
        found = predictions.active_predictor(uow)
        assert found is not None and found.version == outcome.version
        stored = uow.connection.execute(select(func.count()).select_from(schema.predictive_models)).scalar()
    again = train_model(workspace, **ASKED, store=False, export=export)
    assert (again.version, again.stored, again.active) == (outcome.version, False, False)
    with workspace.unit_of_work(read_only=True) as uow:
        assert uow.connection.execute(select(func.count()).select_from(schema.predictive_models)).scalar() == stored


def test_advice_from_capacity_or_costs_with_the_conversion_it_was_judged_on(
    trained: tuple[Workspace, Path, TrainingOutcome],
) -> None:
    workspace, export, outcome = trained
    notes: list[str] = []
    advice = advise_threshold(workspace, capacity=5, export=export, note=notes.append)
    assert (advice.target, advice.within_days, advice.cutoff) == ("sql", 60, "created+14") and notes == []
    assert advice.report["score"] == "probability" and advice.report["model_version"] == outcome.version
    assert advice.report["chosen"]["volume_per_week"] <= 5
    by_cost = advise_threshold(
        workspace, miss_cost=20, score="rule", target="customer", within_days=90, export=export, note=notes.append
    )
    assert by_cost.report["score"] == "rule" and by_cost.report["break_even_probability"] == round(1 / 21, 4)
    assert (by_cost.target, by_cost.within_days) == ("customer", 90) and notes == []  # no model: nothing to differ
    advise_threshold(workspace, capacity=5, target="customer", export=export, note=notes.append)
    assert notes == [
        "the model predicts sql within 60 days of created+14; judged here against customer within 60 days of created+14"
    ]
    with pytest.raises(InvalidInput, match=EITHER):
        advise_threshold(workspace, export=export)
    with pytest.raises(InvalidInput, match=EITHER):
        advise_threshold(workspace, capacity=5, miss_cost=20, export=export)


def test_advice_on_the_probability_needs_an_active_predictive_model(workspace: Workspace) -> None:
    with pytest.raises(NotFound) as refused:
        advise_threshold(workspace, capacity=5)
    assert str(refused.value) == NO_PREDICTOR


def test_learned_points_are_a_model_document_judged_beside_the_active_one(
    trained: tuple[Workspace, Path, TrainingOutcome],
) -> None:
    workspace, export, _ = trained
    learned = learn_scorecard(workspace, **ASKED, export=export)
    model = load_model(learned.document, "learned")
    report = learned.report
    assert report["learned_model"] == model.version != report["current_model"]
    assert (learned.fit_rules, learned.engagement_rules) == (len(model.fit.rules), len(model.engagement_rules))
    rows = report["training_set"]["rows"]
    held = rows - round(0.6 * rows) - round(0.2 * rows)  # the newest part of training.time_split
    assert report["held_out"]["rows"] == held and 0 < learned.fitting_rows <= rows - held
    assert set(report["test"]) == {"learned", "current"} and 0.0 <= report["test"]["learned"]["roc_auc"] <= 1.0
    json.dumps(report, default=str)
