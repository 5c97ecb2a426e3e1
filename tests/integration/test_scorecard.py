"""Learned points: a scorecard learnt from the history, written as a scoring model that loads,
reads in words, and ranks leads it never saw."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from qualify.analytics.batch_evaluator import Sources
from qualify.analytics.engines import duckdb_sources
from qualify.bootstrap import open_workspace
from qualify.demo.world import build_demo
from qualify.domain.errors import InvalidInput
from qualify.domain.model_loader import batch_problems, default_model_text, load_default_model, load_model
from qualify.domain.scoring_model import ScoringModel
from qualify.predictive.features import TrainingSet, default_end, training_set
from qualify.predictive.models import FeatureSpec
from qualify.predictive.recipe import Recipe
from qualify.predictive.scorecard import (
    LearnedPoints,
    content_where,
    guess_content_key,
    learn_points,
    nice_number,
)
from qualify.service.analytics.export import export_workspace
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)
TARGET, WITHIN_DAYS, CUTOFF = "sql", 60, "created+7"


@dataclass
class World:
    sources: Sources
    current: ScoringModel
    rows: TrainingSet
    learned: LearnedPoints
    again: TrainingSet  # the same rows, scored by the learned model


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("scorecard")
    workspace = open_workspace(Settings(database_url=f"sqlite:///{folder / 'demo.db'}"), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
    build_demo(workspace, seed=11, leads=1000, days=360, now=NOW)
    export_workspace(workspace, folder / "export")
    with workspace.unit_of_work(read_only=True) as uow:
        current = uow.active_model()
    workspace.close()
    sources = duckdb_sources(folder / "export")
    end = default_end(sources)
    rows = training_set(current, sources, target=TARGET, within_days=WITHIN_DAYS, cutoff=CUTOFF, end=end)
    learned = learn_points(rows, current, sources=sources, current_document=default_model_text())
    again = training_set(
        learned.model, sources, target=TARGET, within_days=WITHIN_DAYS, cutoff=CUTOFF, end=end, recipe=rows.recipe
    )
    yield World(sources, current, rows, learned, again)


@pytest.mark.slow
def test_the_document_loads_and_reads_in_words(world: World) -> None:
    learned = world.learned
    model = load_model(learned.document, "learned.yaml")
    assert model.version == learned.model.version
    assert batch_problems(model) == []
    assert learned.document.startswith("# Learned points")
    assert "Target: reached sql within 60 days" in learned.document
    doc = yaml.safe_load(learned.document)
    fit_rules, engagement_rules = doc["fit"]["rules"], doc["engagement"]["rules"]
    assert len(fit_rules) >= 5 and len(engagement_rules) >= 2
    assert all(isinstance(r["points"], int) and r["points"] != 0 for r in fit_rules)
    assert all(isinstance(r["points"], int) and r["points"] > 0 for r in engagement_rules)  # awards only
    names = {r["name"] for r in fit_rules}
    assert any(name.startswith("seniority is ") for name in names)
    assert any(name.startswith("account employees ") for name in names)
    assert {r["name"] for r in engagement_rules} & {"page_view", "form_submit", "content_download"}
    items = [r for r in engagement_rules if "where" in r]
    assert all(r.get("once") is True and r["name"] == f"{r['event']} {next(iter(r['where'].values()))}" for r in items)
    # The data told which property names each item: page views by url, downloads by content_id.
    for rule in items:
        key = next(iter(rule["where"]))
        assert key == ("url" if rule["where"][key].startswith("/") else "content_id"), rule
    assert [p["name"] for p in doc["fit"]["personas"]] == ["learned"]
    assert doc["engagement"]["half_life_days"] == world.current.default_half_life_days
    # What is not learnt is the current model's, as written.
    current = yaml.safe_load(default_model_text())
    assert doc["disqualify"] == current["disqualify"]
    assert doc["handoff"] == current["handoff"]
    assert doc["policy"]["fast_track"] == current["policy"]["fast_track"]
    assert set(doc["policy"]["mql"]["thresholds"]) == set(current["policy"]["mql"]["thresholds"])
    json.dumps(learned.details)  # JSON-able
    assert learned.details["rows"]["fitting"] == len(learned.fitting_rows)
    assert learned.details["periods"]["fitting"][1] <= learned.details["periods"]["held_out"][0]


@pytest.mark.slow
def test_the_learned_rule_score_ranks_the_newest_leads(world: World) -> None:
    rows, again, learned = world.rows, world.again, world.learned
    assert list(again.frame["lead_id"]) == list(rows.frame["lead_id"])
    held_out = learned.held_out_rows
    assert len(held_out) == len(rows.frame) - len(learned.fitting_rows)
    assert set(held_out).isdisjoint(learned.fitting_rows)
    assert rows.times[held_out].min() >= rows.times[learned.fitting_rows].max()
    y = rows.labels[held_out]
    assert 0 < y.sum() < len(y)
    learned_auc = float(roc_auc_score(y, again.frame["rule_score"].to_numpy()[held_out]))
    current_auc = float(roc_auc_score(y, rows.frame["rule_score"].to_numpy()[held_out]))
    print(
        f"\nnewest 20 % ({len(y)} leads, {int(y.sum())} reached sql): rule score ROC AUC learned {learned_auc:.4f}, current {current_auc:.4f}"
    )
    assert np.isfinite(learned_auc) and learned_auc > 0.5


@pytest.mark.slow
def test_grades_follow_the_quantiles_chosen(world: World) -> None:
    # The batch side's fit of the fitting rows: the grades split them 15/25/30/30 as intended,
    # so the points learn_points computed are the points the model gives.
    grades = world.again.frame["fit_grade"].to_numpy()[world.learned.fitting_rows]
    shares = {g: float((grades == g).mean()) for g in "ABCD"}
    for grade, share in {"A": 0.15, "B": 0.25, "C": 0.30, "D": 0.30}.items():
        assert shares[grade] == pytest.approx(share, abs=0.05), shares
    assert world.learned.details["fit"]["grade_shares"] == pytest.approx(shares, abs=1e-4)


@pytest.mark.slow
def test_thresholds_qualify_as_many_leads_as_the_current_model(world: World) -> None:
    fitting = world.learned.fitting_rows

    def mql_share(frame: pd.DataFrame, model: ScoringModel) -> float:
        limits = [model.policy.mql_thresholds.get(g, np.inf) for g in frame["fit_grade"].to_numpy()[fitting]]
        return float((frame["engagement_score"].to_numpy()[fitting] >= np.asarray(limits)).mean())

    current = mql_share(world.rows.frame, world.current)
    learned = mql_share(world.again.frame, world.learned.model)
    assert current > 0
    assert learned == pytest.approx(current, abs=0.02)
    assert world.learned.details["policy"]["learned_mql_share"] == pytest.approx(learned, abs=1e-4)
    policy = world.learned.model.policy
    assert policy.decay_out_floor is not None and policy.decay_out_floor < min(policy.mql_thresholds.values())


# --- without a demo world ----------------------------------------------------------------------


def hand_made(n: int = 600, seed: int = 3) -> TrainingSet:
    """Leads whose seniority decides: VPs convert, others rarely; pricing views help a little."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    records = []
    for i in range(n):
        seniority = rng.choice(["vp", "manager", "individual", "director"])
        pricing = rng.random() < 0.3
        chance = (0.55 if seniority == "vp" else 0.06) + (0.1 if pricing else 0.0)
        records.append(
            {
                "lead_id": i + 1,
                "cutoff": start + timedelta(hours=6 * i),
                "label": int(rng.random() < chance),
                "seniority": seniority.upper() if rng.random() < 0.1 else seniority,  # case does not matter
                "department": rng.choice(["marketing", "sales", "it", None]),
                "account_employees": float(rng.choice([12, 45, 180, 900, 4000])),
                "events_page_view": rng.randint(0, 6) + (2 if pricing else 0),
                "engaged_page_view_pricing": int(pricing),
                "fit_grade": rng.choice("ABCD"),
                "engagement_score": rng.uniform(0, 60),
                "days_since_created": 14.0,
            }
        )
    frame = pd.DataFrame(records)
    recipe = Recipe({"page_view": "page_view"}, {"engaged_page_view_pricing": "page_view:/pricing"})
    spec = FeatureSpec(("events_page_view",), ("seniority", "department"))
    return TrainingSet(frame, spec, "sql", 60, "created+14", start + timedelta(days=400), recipe)


def test_the_category_that_predicts_gets_the_most_points() -> None:
    current = load_default_model()
    learned = learn_points(hand_made(), current)  # no document: the kept sections are rebuilt
    doc = yaml.safe_load(learned.document)
    best = max(doc["fit"]["rules"], key=lambda r: r["points"])
    assert best["name"] == "seniority is vp"
    assert best["when"] == {"field": "seniority", "equals": "vp"}
    points = learned.details["fit"]["points"]["seniority"]
    assert points["vp"] == max(v for column in learned.details["fit"]["points"].values() for v in column.values())
    assert points["vp"] - max(p for value, p in points.items() if value != "vp") >= 10
    pricing = next(r for r in doc["engagement"]["rules"] if "where" in r)
    assert pricing["where"] == {"url": "/pricing"} and pricing["once"] is True and pricing["points"] > 0
    # Rebuilt from the loaded model, the kept sections mean what the current model's do.
    model = learned.model
    assert model.disqualify == current.disqualify
    assert model.handoff == current.handoff
    assert model.policy.fast_track == current.policy.fast_track
    assert model.policy.requalify_after_days == current.policy.requalify_after_days
    assert set(model.policy.mql_thresholds) == set(current.policy.mql_thresholds)
    assert learned.details["policy"]["learned_engagement"].startswith("estimated")


def test_too_few_outcomes_are_refused() -> None:
    rows = hand_made()
    rows.frame["label"] = 0
    rows.frame.loc[:5, "label"] = 1
    with pytest.raises(InvalidInput, match="need at least 10 of each outcome"):
        learn_points(rows, load_default_model())


def test_content_items_and_round_numbers() -> None:
    assert content_where("url", "/pricing") == {"url": "/pricing"}
    with pytest.raises(InvalidInput):
        content_where("title", "Scoring guide")
    assert guess_content_key("page_view", "/pricing") == "url"
    assert guess_content_key("webinar_attended", "w-12") == "webinar_id"
    assert guess_content_key("email_click", "Spring launch") == "campaign"
    assert guess_content_key("content_download", "intent-data-101") == "content_id"
    assert [nice_number(v) for v in (147.5, 360, 1007.5, 24_300_000, 0.042)] == [150, 400, 1000, 25_000_000, 0.04]


def test_a_written_document_round_trips(tmp_path: Path) -> None:
    learned = learn_points(hand_made(seed=5), load_default_model(), scale=8.0)
    path = tmp_path / "learned.yaml"
    path.write_text(learned.document, encoding="utf-8")
    assert load_model(path.read_text(encoding="utf-8"), str(path)).version == learned.model.version
    assert learned.details["scale"]["used"] <= 8.0


@pytest.mark.parametrize("thresholds", ["{A: 25, B: 40, C: 70}", "{}"])
def test_probability_thresholds_are_kept(thresholds: str) -> None:
    text = default_model_text().replace(
        "thresholds: {A: 25, B: 40, C: 70}",
        f"thresholds: {thresholds}\n    probability: {{A: 0.2, B: 0.35}}\n    combine: all",
    )
    if thresholds == "{}":
        text = text.replace("floor: 10 ", "floor: null ")
    current = load_model(text)
    assert current.policy.mql_probability == {"A": 0.2, "B": 0.35}
    for document in (text, None):
        policy = learn_points(hand_made(), current, current_document=document).model.policy
        assert policy.mql_probability == {"A": 0.2, "B": 0.35} and policy.combine == "all"
        assert set(policy.mql_thresholds) == set(current.policy.mql_thresholds)
