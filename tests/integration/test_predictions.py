"""Predictive models in the store and at work: versions, activation, each lead's probability
(online features equal to the training set's), explanations, and probability in the stage policy."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ibis
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from tests.conftest import built_once
from typer.testing import CliRunner

from qualify.adapters import schema
from qualify.analytics.batch_evaluator import engagement_at_cutoffs
from qualify.analytics.engines import duckdb_sources
from qualify.bootstrap import open_workspace
from qualify.demo.world import build_demo
from qualify.domain.access import Role
from qualify.domain.automation import load_automation
from qualify.domain.model_loader import default_model_text
from qualify.domain.records import Event
from qualify.entrypoints.api import create_app
from qualify.entrypoints.cli import app
from qualify.predictive.features import TrainingSet, default_end, training_set
from qualify.predictive.training import Trained, train
from qualify.service.admin.api_keys import create_key
from qualify.service.analytics.batch_scores import COLUMNS
from qualify.service.analytics.export import export_workspace
from qualify.service.automation.definitions import put_segments
from qualify.service.automation.reading import segment_members
from qualify.service.automation.segments import refresh_segments
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.predictions import serving as predictions
from qualify.service.reading.queries import lead_profile
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def learnt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, TrainingSet, dict[str, Any], Path]]:
    """A demo world, a training set of it, and the document of a model trained on it (stored, active)."""
    world = shared_trained_world(tmp_path_factory, tmp_path_factory.mktemp("predictions"))
    yield world
    world[0].close()


def shared_trained_world(
    tmp_path_factory: pytest.TempPathFactory, folder: Path
) -> tuple[Workspace, TrainingSet, dict[str, Any], Path]:
    """The world of `trained_world`, built once per run (`built_once`) and copied into `folder` for
    each module that asks (test_probability_as_of.py too)."""

    def build(scratch: Path) -> None:
        workspace, rows, document, database = trained_world(scratch)
        backup(database, scratch / "world.db")
        workspace.close()
        (scratch / "world.pickle").write_bytes(pickle.dumps((rows, document)))

    built = built_once(tmp_path_factory, "trained-world", build)
    rows, document = pickle.loads((built / "world.pickle").read_bytes())
    database = folder / "demo.db"
    shutil.copyfile(built / "world.db", database)
    return open_workspace(Settings(database_url=f"sqlite:///{database}")), rows, document, database


def trained_world(folder: Path) -> tuple[Workspace, TrainingSet, dict[str, Any], Path]:
    """The world of `learnt`, built in `folder`."""
    database = folder / "demo.db"
    workspace = open_workspace(Settings(database_url=f"sqlite:///{database}"), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
    build_demo(workspace, seed=5, leads=700, days=150, now=NOW)
    export_workspace(workspace, folder / "export")
    sources = duckdb_sources(folder / "export")
    with workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
    rows = training_set(model, sources, target="sql", within_days=60, cutoff="created+14", end=default_end(sources))
    trained = train(rows.frame, rows.labels, rows.times, rows.spec, rule_scores=rows.frame["rule_score"].to_numpy())
    document = predictions.artefact(trained, rows.recipe, {"training_set": rows.summary(), **trained.report})
    with workspace.unit_of_work() as uow:
        predictions.store_model(uow, document)
        predictions.activate(uow, predictions.version_of(document))
    predictions.refresh_all(workspace)
    return workspace, rows, document, database


def copy_of(database: Path, folder: Path) -> Path:
    """A copy of the learnt workspace's file, for a test that changes it."""
    return backup(database, folder / "copy.db")


def backup(database: Path, copy: Path) -> Path:
    """`database` copied to `copy` with SQLite's backup, not the file's bytes: what an open workspace
    still holds in its WAL is copied too."""
    source, target = sqlite3.connect(database), sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return copy


def last_events(workspace: Workspace) -> dict[int, datetime | None]:
    with workspace.unit_of_work(read_only=True) as uow:
        return dict(uow.connection.execute(select(schema.leads.c.id, schema.leads.c.last_event_at)).all())


def test_online_features_equal_the_training_set_s_at_the_same_instant(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path],
) -> None:
    workspace, rows, document, _ = learnt
    with workspace.unit_of_work(read_only=True) as uow:
        found = predictions.predictor(uow, predictions.version_of(document))
        at = {int(r.lead_id): r.cutoff.to_pydatetime() for r in rows.frame.itertuples()}
        people = {s.lead_id: s for s in predictions.subjects(uow, at.keys(), at)}
    online = found.frame([people[i] for i in rows.frame["lead_id"]])
    # Engagement included: at a cutoff before a lead's newest event it is replayed from the events up to it.
    later = sum(any(e[1] > r.cutoff for e in people[r.lead_id].events) for r in rows.frame.itertuples())
    assert later > 50
    for column in rows.spec.columns:
        expected, got = rows.frame[column].to_numpy(), online[column].to_numpy()
        if column in rows.spec.numeric:
            assert np.allclose(expected.astype(float), got.astype(float), equal_nan=True, atol=1e-6), column
        else:
            assert [None if a != a else a for a in expected] == [None if b != b else b for b in got], column
    assert np.allclose(found.trained.probabilities(rows.frame), found.trained.probabilities(online), atol=1e-9)


def test_online_engagement_equals_the_batch_side_s_at_each_lead_s_newest_event(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], tmp_path: Path
) -> None:
    workspace, _, _, _ = learnt
    export_workspace(workspace, tmp_path / "export")
    sources = duckdb_sources(tmp_path / "export")
    latest = {i: t for i, t in last_events(workspace).items() if t is not None}
    with workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
        online = {s.lead_id: s.engagement_score for s in predictions.subjects(uow, latest.keys())}
    instants = ibis.memtable({"lead_id": list(latest), "cutoff": list(latest.values())})
    batch = engagement_at_cutoffs(model, sources, instants).to_pyarrow().to_pylist()
    assert len(batch) == len(latest) > 100
    assert all(math.isclose(online[r["lead_id"]], r["engagement"] or 0.0, abs_tol=1e-6) for r in batch)


def test_every_lead_gets_the_probability_at_its_newest_activity(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path],
) -> None:
    workspace, _, document, _ = learnt
    version = predictions.version_of(document)
    with workspace.unit_of_work(read_only=True) as uow:
        stored = uow.connection.execute(
            select(
                schema.leads.c.id, schema.leads.c.probability, schema.leads.c.probability_at,
                schema.leads.c.predictive_version, schema.leads.c.last_event_at, schema.leads.c.created_at,
            ).order_by(schema.leads.c.id)
        ).all()  # fmt: skip
        found = predictions.predictor(uow, version)
        sample = stored[:40]
        again = found.probabilities(predictions.subjects(uow, [r.id for r in sample]))
    assert all(r.predictive_version == version and 0.0 <= r.probability <= 1.0 for r in stored)
    assert all(r.probability_at == (r.last_event_at or r.created_at) for r in stored)
    assert np.allclose([r.probability for r in sample], again)


def test_an_explanation_adds_up_and_speaks_the_domain_s_words(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path],
) -> None:
    workspace, _, document, _ = learnt
    with workspace.unit_of_work(read_only=True) as uow:
        lead_id = uow.connection.execute(
            select(schema.leads.c.id).order_by(schema.leads.c.probability.desc()).limit(1)
        ).scalar_one()
        found = predictions.predictor(uow, predictions.version_of(document))
        [subject] = predictions.subjects(uow, [lead_id])
        profile = lead_profile(uow, f"#{lead_id}")
    [explanation] = found.explain([subject])
    raw = float(found.trained.model.raw(found.frame([subject]))[0])
    base = float(np.asarray(found.trained.model.contributions(found.frame([subject]))[1]).reshape(-1)[0])
    assert math.isclose(base + sum(c.log_odds for c in explanation.contributions), raw, abs_tol=1e-6)
    assert math.isclose(explanation.probability, float(found.probabilities([subject])[0]), abs_tol=1e-9)
    prediction = profile.prediction
    assert prediction is not None and math.isclose(prediction["probability"], explanation.probability, abs_tol=1e-4)
    assert prediction["top_positive"] and prediction["top_negative"]
    assert all(p["log_odds"] > 0 for p in prediction["top_positive"])
    assert all(p["log_odds"] < 0 for p in prediction["top_negative"])
    words = [p["words"] for p in prediction["top_positive"] + prediction["top_negative"]]
    assert all(w and "_" not in w.split(":")[0] for w in words), words  # no column names


def test_ingesting_an_event_updates_the_probability_and_the_policy_can_use_it(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], tmp_path: Path
) -> None:
    _, _, document, database = learnt
    copy = copy_of(database, tmp_path)
    workspace = open_workspace(Settings(database_url=f"sqlite:///{copy}"))
    # Engagement can no longer qualify anyone; a probability of 0 or more does, for grades A–C.
    text = default_model_text().replace(
        "    thresholds: {A: 25, B: 40, C: 70}\n",
        "    thresholds: {A: 900, B: 900, C: 900}\n    probability: {A: 0.0, B: 0.0, C: 0.0}\n",
    )
    with workspace.unit_of_work() as uow:
        activate_model(uow, text)
        lead = uow.connection.execute(
            select(schema.leads.c.id, schema.leads.c.email)
            .where(schema.leads.c.stage == "lead", schema.leads.c.fit_grade != "D", schema.leads.c.email.is_not(None))
            .limit(1)
        ).one()
    at = NOW + timedelta(hours=1)
    with workspace.unit_of_work() as uow:
        [outcome] = ingest_events(
            uow, [Event(event_id="pv-1", type="page_view", occurred_at=at, email=lead.email, properties={})], now=at
        )
    assert outcome.status == "accepted"
    with workspace.unit_of_work(read_only=True) as uow:
        row = uow.connection.execute(select(schema.leads).where(schema.leads.c.id == lead.id)).one()
        moved = uow.connection.execute(
            select(schema.stage_history.c.reason).where(
                schema.stage_history.c.lead_id == lead.id, schema.stage_history.c.to_stage == "mql"
            )
        ).scalars().all()  # fmt: skip
        expected = predictions.predictor(uow, predictions.version_of(document)).probabilities(
            predictions.subjects(uow, [lead.id])
        )
    assert row.probability_at == at and math.isclose(row.probability, float(expected[0]), abs_tol=1e-9)
    assert row.stage == "mql" and moved and "probability" in moved[-1]
    workspace.close()


def test_models_are_listed_activated_and_deactivated_on_the_command_line(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], tmp_path: Path
) -> None:
    _, _, document, database = learnt
    copy = copy_of(database, tmp_path)
    runner, db = CliRunner(), ["--db", f"sqlite:///{copy}"]
    version = predictions.version_of(document)
    listed = runner.invoke(app, ["models", *db, "--json"])
    assert listed.exit_code == 0, listed.output
    [entry] = json.loads(listed.output)["models"]
    assert entry["version"] == version and entry["active"] and entry["target"] == "sql"
    assert entry["metrics"]["roc_auc"] is not None and entry["data_from"] < entry["data_to"]
    table = runner.invoke(app, ["models", *db])
    assert version in table.output and "AUC (rule" in table.output
    shown = runner.invoke(app, ["models", "show", version, *db])
    assert json.loads(shown.output)["report"]["choice"]["chosen"] in ("logistic", "boosted")
    off = runner.invoke(app, ["models", "deactivate", *db])
    assert off.exit_code == 0 and "Deactivated" in off.output
    workspace = open_workspace(Settings(database_url=f"sqlite:///{copy}"))
    with workspace.unit_of_work(read_only=True) as uow:
        assert predictions.count_scored(uow) == 0
        assert lead_profile(uow, "#1").prediction is None
    workspace.close()
    on = runner.invoke(app, ["models", "activate", version, *db])
    assert on.exit_code == 0 and "leads scored" in on.output, on.output
    unknown = runner.invoke(app, ["models", "activate", "pnope", *db])
    assert unknown.exit_code != 0 and "no predictive model 'pnope'" in unknown.output
    lead = runner.invoke(app, ["lead", "#1", *db])
    assert "Probability" in lead.output and "what raises it" in lead.output


@pytest.mark.slow
def test_train_stores_a_version_that_a_second_identical_run_finds_again(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], tmp_path: Path
) -> None:
    _, _, _, database = learnt
    copy = copy_of(database, tmp_path)
    runner = CliRunner()
    args = ["train", "--db", f"sqlite:///{copy}", "--target", "sql", "--within", "60", "--json"]
    first = json.loads(runner.invoke(app, args).output)
    # --force: on this small world the model does not beat the rule score (tested in
    # test_predictive_use_cases.py); here what matters is that the same run finds the same version.
    second = runner.invoke(app, [*args, "--activate", "--force", "--out", str(tmp_path / "model.json")])
    assert second.exit_code == 0, second.output
    again = json.loads(second.output)
    assert first["stored"] and again["version"] == first["version"] and again["active"]
    written = json.loads((tmp_path / "model.json").read_text())
    assert predictions.version_of(written) == first["version"] and set(written["recipe"]) == {
        "kinds", "items", "recent_days", "attributes", "numeric_attributes", "flags",
        "numbers", "values", "weighted", "deals", "account",
    }  # fmt: skip
    assert written["recipe"]["attributes"] == {"attribute_budget": "budget"} and written["recipe"]["flags"]
    assert written["learnt_from"] and all(first <= last for first, last in written["learnt_from"])


def test_a_stored_model_works_on_postgresql_too(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], postgres_schema_url: str
) -> None:
    _, _, document, _ = learnt
    workspace = open_workspace(Settings(database_url=postgres_schema_url), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
        version, new = predictions.store_model(uow, document)
        assert new and predictions.store_model(uow, document) == (version, False)
        predictions.activate(uow, version)
    at = NOW
    events = [
        Event(event_id=f"e{i}", type=kind, occurred_at=at + timedelta(minutes=i), email=f"p{i % 3}@acme.example")
        for i, kind in enumerate(["page_view", "email_open", "page_view", "content_download", "page_view"])
    ]
    with workspace.unit_of_work() as uow:
        assert {o.status for o in ingest_events(uow, events, now=at + timedelta(hours=1))} == {"accepted"}
    with workspace.unit_of_work(read_only=True) as uow:
        rows = uow.connection.execute(select(schema.leads.c.id, schema.leads.c.probability)).all()
        expected = predictions.predictor(uow, version).probabilities(predictions.subjects(uow, [r.id for r in rows]))
        assert lead_profile(uow, "p0@acme.example").prediction is not None
    assert len(rows) == 3 and np.allclose(sorted(r.probability for r in rows), sorted(expected))
    later = [replace(e, event_id=f"later-{e.event_id}", occurred_at=e.occurred_at + timedelta(days=9)) for e in events]
    with workspace.unit_of_work() as uow:  # folded into each lead's kept behaviour (the recent windows cut)
        assert {o.status for o in ingest_events(uow, later[:3], now=at + timedelta(days=10))} == {"accepted"}
    stored, whole, kept_version = _kept_and_whole(workspace, [r.id for r in rows])
    assert kept_version == version
    for lead, (probability, kept_row, newest_event) in stored.items():
        assert math.isclose(probability, whole[lead][0], abs_tol=1e-9)
        assert kept_row.version == version and kept_row.through_event == newest_event
    with workspace.unit_of_work() as uow:
        uow.connection.execute(update(schema.predictive_models).values(active=False))
    workspace.close()


def test_trained_documents_round_trip() -> None:
    spec_doc: dict[str, Any] = {
        "model": {
            "kind": "logistic", "spec": {"numeric": ["x"], "categorical": []}, "c": 1.0, "min_count": 10,
            "medians": {"x": 0.0}, "means": {"x": 0.0}, "scales": {"x": 1.0}, "levels": {},
            "coefficients": [2.0], "intercept": -1.0,
        },
        "calibrator": {"method": "platt", "a": 1.0, "b": 0.0},
        "recipe": {"kinds": {}, "items": {}, "recent_days": 7},
        "report": {},
    }  # fmt: skip
    trained = Trained.from_dict(spec_doc)
    assert predictions.version_of(spec_doc) == predictions.version_of(json.loads(json.dumps(spec_doc)))
    assert math.isclose(float(trained.calibrator(np.array([0.0]))[0]), 0.5)


@pytest.mark.slow
def test_advise_recommends_a_threshold_from_capacity_or_costs(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path],
) -> None:
    _, _, _, database = learnt
    runner, db = CliRunner(), ["--db", f"sqlite:///{database}"]
    base = ["advise", *db, "--target", "sql", "--within", "60"]
    by_capacity = runner.invoke(app, [*base, "--capacity", "5", "--json"])
    assert by_capacity.exit_code == 0, by_capacity.output
    advice = json.loads(by_capacity.output)
    assert advice["score"] == "probability" and advice["chosen"]["volume_per_week"] <= 5
    assert 0 < advice["leads"] < 286  # only the leads of the model's test period by default
    by_cost = json.loads(runner.invoke(app, [*base, "--miss-cost", "20", "--score", "rule", "--json"]).output)
    assert by_cost["score"] == "rule" and by_cost["break_even_probability"] == round(1 / 21, 4)
    assert by_cost["chosen"]["cost_per_week"] == min(p["cost_per_week"] for p in by_cost["around"])
    shown = runner.invoke(app, [*base, "--capacity", "5"])
    assert "MQL when probability ≥" in shown.output and "precision" in shown.output
    line = f"{advice['chosen']['threshold']:.2f}"
    assert f"policy.mql.probability: {{A: {line}, B: {line}, C: {line}}}" in shown.output  # what to write
    assert "cost / week" not in shown.output  # no costs were given: no empty column
    costs = runner.invoke(app, [*base, "--miss-cost", "20", "--score", "rule"]).output
    assert "cost / week" in costs and "the policy has no line on fit + engagement" in costs
    neither = runner.invoke(app, base)
    assert neither.exit_code != 0 and "either --capacity or --miss-cost" in neither.output


@pytest.mark.slow
def test_learn_points_writes_a_model_to_edit_judged_beside_the_active_one(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], tmp_path: Path
) -> None:
    _, rows, _, database = learnt
    runner, db, out = CliRunner(), ["--db", f"sqlite:///{database}"], tmp_path / "learned.yaml"
    learned = runner.invoke(
        app, ["learn-points", *db, "--target", "sql", "--within", "60", "--out", str(out), "--json"]
    )
    assert learned.exit_code == 0, learned.output
    report = json.loads(learned.output)
    assert report["held_out"]["rows"] == round(0.2 * len(rows.frame)) and report["held_out"]["positives"] > 0
    for name in ("learned", "current"):
        assert 0.0 <= report["test"][name]["roc_auc"] <= 1.0
    assert report["learned_model"] != report["current_model"]
    valid = runner.invoke(app, ["model", "validate", str(out), "--json"])
    assert json.loads(valid.output)["valid"] and json.loads(valid.output)["version"] == report["learned_model"]
    shown = runner.invoke(app, ["learn-points", *db, "--target", "sql", "--within", "60", "--out", str(out)])
    assert "learned points" in shown.output and "active model" in shown.output


def test_rescoring_refreshes_the_probabilities_with_the_new_scores(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], tmp_path: Path
) -> None:
    from qualify.service.lifecycle.rescoring import rescore_all

    _, _, document, database = learnt
    copy = copy_of(database, tmp_path)
    workspace = open_workspace(Settings(database_url=f"sqlite:///{copy}"))
    with workspace.unit_of_work() as uow:  # a stale number everywhere, as after a change of fit rules
        uow.connection.execute(update(schema.leads).values(probability=0.5))
    rescore_all(workspace, now=NOW)
    with workspace.unit_of_work(read_only=True) as uow:
        rows = uow.connection.execute(
            select(schema.leads.c.id, schema.leads.c.probability).order_by(schema.leads.c.id).limit(50)
        ).all()
        expected = predictions.predictor(uow, predictions.version_of(document)).probabilities(
            predictions.subjects(uow, [r.id for r in rows])
        )
    assert np.allclose([r.probability for r in rows], expected) and not np.allclose(expected, 0.5)
    workspace.close()


def test_one_lead_at_a_time_gives_the_same_probability_as_a_table_for_both_model_kinds(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path],
) -> None:
    from qualify.predictive.models import BoostedModel, Calibrator, LogisticModel
    from qualify.predictive.online import Predictor
    from qualify.predictive.recipe import feature_row

    workspace, rows, _, _ = learnt
    with workspace.unit_of_work(read_only=True) as uow:
        ids = list(uow.connection.execute(select(schema.leads.c.id).order_by(schema.leads.c.id).limit(300)).scalars())
        people = predictions.subjects(uow, ids)
    for model in (LogisticModel(rows.spec), BoostedModel(rows.spec, {"n_estimators": 60})):
        model.fit(rows.frame, rows.labels)
        trained = Trained(model, Calibrator.fit(model.raw(rows.frame), rows.labels))
        found = Predictor("test", trained, rows.recipe)
        one = [found.probability_one(person) for person in people]
        assert np.allclose(one, found.probabilities(people), atol=1e-9), type(model).__name__
        assert feature_row(people[0], rows.recipe)["stage"] is not None


@pytest.mark.slow
def test_a_backtest_replays_probability_thresholds_with_the_active_predictive_model(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path],
) -> None:
    from qualify.domain.model_loader import load_model
    from qualify.service.analytics.backtest import backtest

    workspace, _, document, _ = learnt
    base = default_model_text().replace(
        "    thresholds: {A: 25, B: 40, C: 70}\n", "    thresholds: {A: 900, B: 900, C: 900}\n"
    )
    with_floor = base.replace("    floor: 10 ", "    floor: 5 ")  # any floor below the thresholds
    models = {
        "none": load_model(with_floor),
        "everyone": load_model(
            with_floor.replace("C: 900}\n", "C: 900}\n    probability: {A: 0.0, B: 0.0, C: 0.0}\n", 1)
        ),
    }
    with workspace.unit_of_work(read_only=True) as uow:
        default = uow.active_model()
    mqls = {}
    for name, candidate in models.items():
        # The second in two worker processes: each loads the predictive model by its version.
        report = backtest(workspace, candidate, default, end=NOW, chunk=350, workers=1 if name == "none" else 2)
        side = report.models["candidate"]
        mqls[name] = side["mqls"]
        expected = None if name == "none" else predictions.version_of(document)
        assert side["predictive_model"] == expected and report.models["against"]["predictive_model"] is None
    # Only fast tracks qualify without probability; a threshold of 0 qualifies every lead of
    # grades A-C at its first event. (That a probability under its threshold qualifies nobody is
    # held by tests/unit/test_policy.py: a third replay of this world cost the suite 20 s.)
    assert mqls["none"] < mqls["everyone"]


def test_a_profile_change_refreshes_the_probability_and_erasure_clears_it(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], tmp_path: Path
) -> None:
    from qualify.domain.records import Lead
    from qualify.service.lifecycle.lead_admin import erase_lead
    from qualify.service.lifecycle.leads import upsert_leads

    _, _, document, database = learnt
    copy = copy_of(database, tmp_path)
    workspace = open_workspace(Settings(database_url=f"sqlite:///{copy}"))
    with workspace.unit_of_work() as uow:
        lead = uow.connection.execute(
            select(schema.leads.c.id, schema.leads.c.email, schema.leads.c.seniority).where(
                schema.leads.c.email.is_not(None)
            )
        ).first()
        assert lead is not None
        upsert_leads(uow, [Lead(email=lead.email, seniority="vp" if lead.seniority != "vp" else "individual")])
    with workspace.unit_of_work(read_only=True) as uow:
        stored = uow.connection.execute(select(schema.leads.c.probability).where(schema.leads.c.id == lead.id)).scalar()
        expected = predictions.predictor(uow, predictions.version_of(document)).probabilities(
            predictions.subjects(uow, [lead.id])
        )
    assert math.isclose(stored, float(expected[0]), abs_tol=1e-9)
    with workspace.unit_of_work() as uow:
        erase_lead(uow, lead.email, by="test")
    with workspace.unit_of_work(read_only=True) as uow:
        row = uow.connection.execute(select(schema.leads).where(schema.leads.c.id == lead.id)).one()
    assert row.probability is None and row.predictive_version is None
    workspace.close()


def test_a_segment_on_probability_sees_the_probability_of_the_change_that_moved_it(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], tmp_path: Path
) -> None:
    """Online, a lead enters a segment on `probability` with the event that raised it (not one
    change later); turning the model off takes everyone out of it."""
    _, _, _, database = learnt
    at = NOW + timedelta(hours=1)
    demo = [Event(event_id=f"dr-{i}", type="demo_request", occurred_at=at, email="", properties={}) for i in range(3)]

    def probability_after(workspace: Workspace, email: str) -> float:
        with workspace.unit_of_work() as uow:
            ingest_events(uow, [replace(e, email=email) for e in demo], now=at)
            return float(
                uow.connection.execute(
                    select(schema.leads.c.probability).where(schema.leads.c.email == email)
                ).scalar_one()
            )

    (tmp_path / "trial").mkdir()
    (tmp_path / "real").mkdir()
    trial = open_workspace(Settings(database_url=f"sqlite:///{copy_of(database, tmp_path / 'trial')}"))
    with trial.unit_of_work(read_only=True) as uow:
        lead = uow.connection.execute(
            select(schema.leads.c.email, schema.leads.c.probability)
            .where(schema.leads.c.email.is_not(None), schema.leads.c.stage == "lead")
            .where(schema.leads.c.probability.is_not(None))
            .order_by(schema.leads.c.probability)
            .limit(1)
        ).one()
    after = probability_after(trial, lead.email)
    trial.close()
    assert after > lead.probability  # three demo requests raise it
    threshold = (lead.probability + after) / 2
    workspace = open_workspace(Settings(database_url=f"sqlite:///{copy_of(database, tmp_path / 'real')}"))
    document = load_automation(
        f"segments:\n  - name: likely\n    when: [{{field: probability, range: {{min: {threshold}}}}}]\n"
    )
    with workspace.unit_of_work() as uow:
        put_segments(uow, document.segments, by="test", now=NOW)
    refresh_segments(workspace, NOW)

    def members() -> set[str]:
        with workspace.unit_of_work(read_only=True) as uow:
            return {m["lead"] for m in segment_members(uow, "likely", limit=100_000)}

    before = members()
    assert lead.email not in before
    assert probability_after(workspace, lead.email) == after
    assert members() == before | {lead.email}
    with workspace.unit_of_work() as uow:
        predictions.activate(uow, None)
    predictions.refresh_all(workspace)
    assert members() == set()
    workspace.close()


# --- the probability as of any instant, in batch (qualify rescore --as-of) ------------------------------


def test_rescore_exports_every_lead_s_scores_and_probability_and_leads_carry_the_stored_one(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    workspace, _, document, database = learnt
    runner, db = CliRunner(), ["--db", f"sqlite:///{database}"]
    version = predictions.version_of(document)
    past = NOW - timedelta(days=40)
    done = runner.invoke(
        app, ["rescore", *db, "--as-of", past.isoformat(), "--out", str(tmp_path / "leads.csv"), "--json"]
    )
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["predictive_model"] == version and 100 < summary["probabilities"] < summary["leads"] == 700
    written = pd.read_csv(tmp_path / "leads.csv")
    assert list(written.columns) == list(COLUMNS)
    with workspace.unit_of_work(read_only=True) as uow:
        found = predictions.predictor(uow, version)
        scored = written[written["probability"].notna()]
        ids = [int(i) for i in scored["lead_id"]]
        online = found.probabilities(predictions.subjects(uow, ids, dict.fromkeys(ids, past)))
        emails = dict(uow.connection.execute(select(schema.leads.c.id, schema.leads.c.email)).all())
    assert np.allclose(scored["probability"].to_numpy(), online, atol=1e-9)
    assert [e if e == e else None for e in written["email"]] == [emails[int(i)] for i in written["lead_id"]]
    parquet = runner.invoke(app, ["rescore", *db, "--as-of", past.isoformat(), "--out", str(tmp_path / "l.parquet")])
    assert parquet.exit_code == 0 and "Probability of" in parquet.stdout and version in parquet.stdout
    from_parquet = pq.read_table(tmp_path / "l.parquet").to_pandas()
    assert list(from_parquet.columns) == list(COLUMNS)
    assert np.allclose(from_parquet["probability"], written["probability"], equal_nan=True, atol=1e-12)
    # The stored probability (as of each lead's newest activity) in the list and the Parquet export.
    listed = json.loads(runner.invoke(app, ["leads", *db, "--json", "--limit", "5"]).stdout)
    assert all(r["predictive_version"] == version and 0 <= r["probability"] <= 1 for r in listed)
    assert all(r["probability_at"] for r in listed)
    with workspace.unit_of_work() as uow:
        token, _ = create_key(uow, "reader", Role.ADMIN.value)
    with TestClient(create_app(workspace=workspace)) as client:
        page = client.get("/v1/leads", params={"limit": 5}, headers={"Authorization": f"Bearer {token}"}).json()
    assert [(r["id"], r["probability"]) for r in page["items"]] == [(r["id"], r["probability"]) for r in listed]
    assert all(r["predictive_version"] == version and r["probability_at"] for r in page["items"])
    exported = runner.invoke(app, ["export", "parquet", str(tmp_path / "export"), *db, "--json"])
    assert exported.exit_code == 0, exported.output
    leads = pq.read_table(tmp_path / "export" / "leads.parquet").to_pylist()
    assert len(leads) == 700 and all(r["predictive_version"] == version and r["probability_at"] for r in leads)


def test_the_dashboard_shows_each_model_beside_the_rule_score_and_an_admin_switches_it(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], tmp_path: Path
) -> None:
    import re

    from qualify.service.admin.users import add_user

    _, _, document, database = learnt
    version = predictions.version_of(document)
    workspace = open_workspace(Settings(database_url=f"sqlite:///{copy_of(database, tmp_path)}"))
    with workspace.unit_of_work() as uow:
        add_user(uow, "ana", "admin", "a long enough password")
        add_user(uow, "mia", "marketing", "a long enough password")

    def signed_in(client: TestClient, name: str) -> str:
        form = client.get("/app/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf
        client.post("/app/login", data={"name": name, "password": "a long enough password", "csrf": csrf.group(1)})
        page = client.get("/app/predictive").text
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token
        return token.group(1)

    with TestClient(create_app(workspace=workspace)) as client:
        signed_in(client, "mia")
        listed = client.get("/app/predictive").text
        assert f'data-version="{version}"' in listed and "<strong>active</strong>" in listed
        assert "Deactivate" not in listed  # marketing reads, an admin switches
        page = client.get(f"/app/predictive/{version}").text
        test = document["report"]["test"]
        assert f'data-metric="roc_auc">{test["model"]["roc_auc"]:.3f}' in page
        assert f"{test['rule_score']['roc_auc']:.3f}" in page
        assert page.count('class="dot"') == sum(1 for b in test["model"]["calibration"] if b["count"])
        assert "Leakage check" in page and len(re.findall(r"data-importance=", page)) >= 3
        assert client.get("/app/predictive/p000000000").status_code == 404
        client.cookies.clear()
        csrf = signed_in(client, "ana")
        off = client.post("/app/predictive/none/activate", data={"csrf": csrf})
        assert off.status_code == 200 and f"Deactivated {version}" in off.text
        with workspace.unit_of_work(read_only=True) as uow:
            assert predictions.active_predictor(uow) is None
            assert predictions.count_scored(uow) == 0  # the background refresh cleared every probability
        on = client.post(f"/app/predictive/{version}/activate", data={"csrf": csrf})
        assert f"Activated {version}" in on.text
        with workspace.unit_of_work(read_only=True) as uow:
            assert predictions.count_scored(uow) > 0
    workspace.close()


def _active_leads(workspace: Workspace, n: int) -> list[Any]:
    """The first `n` leads with an email and events (id, email, last_event_at)."""
    leads = schema.leads
    with workspace.unit_of_work(read_only=True) as uow:
        return list(
            uow.connection.execute(
                select(leads.c.id, leads.c.email, leads.c.last_event_at)
                .where(leads.c.email.is_not(None), leads.c.last_event_at.is_not(None), leads.c.erased_at.is_(None))
                .order_by(leads.c.id)
                .limit(n)
            ).all()
        )


def _kept_and_whole(workspace: Workspace, ids: list[int]) -> tuple[dict[int, Any], dict[int, Any], str]:
    """Per lead: its stored probability with its kept behaviour row, and the probability with the
    feature row computed from all its events."""
    from qualify.predictive.recipe import feature_row

    with workspace.unit_of_work(read_only=True) as uow:
        found = predictions.active_predictor(uow)
        assert found is not None
        people = predictions.subjects(uow, ids, recipe=found.recipe)
        whole = {
            s.lead_id: (float(p), feature_row(s, found.recipe))
            for s, p in zip(people, found.probabilities(people), strict=True)
        }
        kept_rows = {
            row.lead_id: row
            for row in uow.connection.execute(
                select(schema.lead_behaviour).where(schema.lead_behaviour.c.lead_id.in_(ids))
            )
        }
        stored = {
            row.id: (row.probability, kept_rows.get(row.id), uow.connection.execute(
                select(func.max(schema.events.c.id)).where(schema.events.c.lead_id == row.id)
            ).scalar())
            for row in uow.connection.execute(select(schema.leads).where(schema.leads.c.id.in_(ids)))
        }  # fmt: skip
        return stored, whole, found.version


def test_each_batch_folds_only_its_events_into_the_kept_behaviour_and_gives_the_full_read_s_probability(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], tmp_path: Path
) -> None:
    """Batches of events, some dated before the lead's newest and some days apart (the recent
    windows are cut between batches), then a merge and an erasure: after each, every lead's stored
    probability and kept behaviour agree with a computation from its whole history."""
    from qualify.service.lifecycle.lead_admin import erase_lead, merge_leads

    _, _, _, database = learnt
    workspace = open_workspace(Settings(database_url=f"sqlite:///{copy_of(database, tmp_path)}"))
    people = _active_leads(workspace, 4)
    ids = [p.id for p in people]
    kinds = ["page_view", "email_open", "content_download", "email_click", "page_view"]

    def check() -> None:
        stored, whole, version = _kept_and_whole(workspace, ids)
        for lead in ids:
            probability, kept_row, newest_event = stored[lead]
            assert math.isclose(probability, whole[lead][0], abs_tol=1e-9)
            assert kept_row is not None and kept_row.version == version and kept_row.through_event == newest_event
            from qualify.predictive.recipe import Behaviour

            with workspace.unit_of_work(read_only=True) as uow:
                found = predictions.active_predictor(uow)
                assert found is not None
                at = uow.connection.execute(
                    select(schema.leads.c.probability_at).where(schema.leads.c.id == lead)
                ).scalar()
            features = Behaviour.from_json(kept_row.state).features(found.recipe, at)
            for column, value in features.items():
                expected = whole[lead][1][column]
                assert (math.isnan(value) and math.isnan(expected)) or math.isclose(value, expected, abs_tol=1e-9), (
                    column
                )

    for batch in range(4):
        at = NOW + timedelta(days=4 * batch)
        events = [
            Event(
                event_id=f"kept-{batch}-{i}", type=kinds[(batch + i) % len(kinds)],
                occurred_at=at - timedelta(days=i % 3 * 5, minutes=i), email=p.email,
                properties={"url": "/pricing"} if i % 2 else {},
            )
            for i, p in enumerate(people * 2)
        ]  # fmt: skip
        with workspace.unit_of_work() as uow:
            assert {o.status for o in ingest_events(uow, events, now=at)} == {"accepted"}
        check()
    with workspace.unit_of_work() as uow:
        merge_leads(uow, people[0].email, people[1].email, by="test")  # the kept lead's built again from its events
        kept_ids = select(schema.lead_behaviour.c.lead_id).where(schema.lead_behaviour.c.lead_id.in_(ids[:2]))
        assert uow.connection.execute(kept_ids).scalars().all() == [people[0].id]
    ids.remove(people[1].id)
    with workspace.unit_of_work() as uow:
        later = NOW + timedelta(days=20)
        event = Event(event_id="kept-after-merge", type="page_view", occurred_at=later, email=people[0].email)
        ingest_events(uow, [event], now=later)
        erase_lead(uow, people[2].email, by="test")
        assert (
            uow.connection.execute(
                select(schema.lead_behaviour.c.lead_id).where(schema.lead_behaviour.c.lead_id == people[2].id)
            ).all()
            == []
        )
    ids.remove(people[2].id)
    check()
    workspace.close()


def test_an_event_dated_after_the_lead_s_newest_activity_is_left_out_and_its_behaviour_not_kept(
    learnt: tuple[Workspace, TrainingSet, dict[str, Any], Path], tmp_path: Path
) -> None:
    """An import stores an event older than a lead's newest stage change unscored: it can be dated
    after the lead's newest event, the instant its probability is computed at. The features leave it
    out, as a read of every event does, and the lead's kept behaviour (which would hold it) is dropped."""
    from qualify.adapters import repository as repo

    _, _, _, database = learnt
    workspace = open_workspace(Settings(database_url=f"sqlite:///{copy_of(database, tmp_path)}"))
    [lead] = _active_leads(workspace, 1)
    later = lead.last_event_at + timedelta(days=2)
    with workspace.unit_of_work() as uow:
        row = {"event_id": "late-unscored", "lead_id": lead.id, "type": "page_view", "occurred_at": later,
               "received_at": later, "properties": {"url": "/pricing"}, "awards": []}  # fmt: skip
        repo.insert_events(uow.connection, [row])
        computed = predictions.refresh(uow, [lead.id], keep=True)
        kept_row = uow.connection.execute(
            select(schema.lead_behaviour).where(schema.lead_behaviour.c.lead_id == lead.id)
        ).first()
    _, whole, _ = _kept_and_whole(workspace, [lead.id])
    assert computed[lead.id][1] == lead.last_event_at and kept_row is None
    assert math.isclose(computed[lead.id][0], whole[lead.id][0], abs_tol=1e-9)
    workspace.close()
