"""The predictive core: metrics, models that explain themselves additively, calibration, training."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qualify.domain.errors import InvalidInput
from qualify.predictive.metrics import calibration_table, evaluate, expected_calibration_error, lift_and_capture
from qualify.predictive.models import (
    BoostedModel,
    Calibrator,
    FeatureSpec,
    LogisticModel,
    NaiveBayesModel,
    model_from_dict,
)
from qualify.predictive.training import Trained, leakage, time_split, train

SPEC = FeatureSpec(numeric=("visits", "minutes"), categorical=("source", "country"))


def world(n: int = 1500, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    visits = rng.poisson(3, n).astype(float)
    minutes = rng.exponential(10, n)
    source = rng.choice(["ads", "organic", "referral", "event"], n)
    country = rng.choice(["US", "DE", "IN", None], n)
    logit = (
        -2 + 0.3 * visits + 0.05 * minutes + np.where(source == "referral", 1.2, 0) - np.where(country == "IN", 0.8, 0)
    )
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    minutes[rng.random(n) < 0.05] = np.nan
    frame = pd.DataFrame({"visits": visits, "minutes": minutes, "source": source, "country": country})
    return frame, labels, np.arange(n)


def test_metrics_on_a_small_known_case() -> None:
    report = evaluate([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert report["roc_auc"] == 0.75 and report["positives"] == 2
    assert report["brier"] == round((0.01 + 0.16 + 0.4225 + 0.04) / 4, 4)
    top = lift_and_capture(np.array([1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), np.arange(10, 0, -1).astype(float), (0.1, 0.2))
    assert top[0] == {"top": 0.1, "leads": 1, "rate": 1.0, "lift": 5.0, "capture": 0.5}
    assert top[1]["capture"] == 0.5 and top[1]["lift"] == 2.5
    table = calibration_table(np.array([0, 1, 1, 1]), np.array([0.05, 0.95, 0.95, 0.92]))
    assert table[0]["count"] == 1 and table[9]["count"] == 3
    assert expected_calibration_error(table) == pytest.approx(0.25 * 0.05 + 0.75 * (1 - 0.94), abs=1e-4)


@pytest.mark.parametrize("kind", [LogisticModel, BoostedModel, NaiveBayesModel])
def test_contributions_add_up_and_a_stored_model_scores_the_same(kind: type) -> None:
    frame, labels, _ = world()
    model = kind(SPEC).fit(frame, labels)
    raw = model.raw(frame)
    terms, base = model.contributions(frame)
    assert terms.shape == (len(frame), len(SPEC.columns))
    assert np.allclose(terms.sum(axis=1) + base, raw, atol=1e-6)
    stored = model_from_dict(json.loads(json.dumps(model.to_dict())))
    assert np.allclose(stored.raw(frame), raw, atol=1e-9)
    unseen = frame.head(3).assign(source="never seen", country="ZZ")
    assert np.isfinite(model.raw(unseen)).all()


def test_the_models_learn_the_signal() -> None:
    frame, labels, _ = world(3000)
    for kind in (LogisticModel, BoostedModel, NaiveBayesModel):
        model = kind(SPEC).fit(frame.iloc[:2000], labels[:2000])
        assert evaluate(labels[2000:], model.raw(frame.iloc[2000:]), probabilities=False)["roc_auc"] > 0.7, kind


def test_calibration_maps_raw_scores_to_probabilities() -> None:
    rng = np.random.default_rng(1)
    raw = rng.normal(0, 2, 5000)
    labels = (rng.random(5000) < 1 / (1 + np.exp(-(0.5 * raw - 1)))).astype(int)
    platt = Calibrator.fit(raw, labels, method="platt")
    assert platt.a == pytest.approx(0.5, abs=0.1) and platt.b == pytest.approx(-1, abs=0.15)
    iso = Calibrator.fit(raw, labels)
    assert iso.method == "isotonic"  # enough of each outcome
    assert np.all(np.diff(iso(np.sort(raw))) >= 0)
    assert Calibrator.from_dict(iso.to_dict())(raw[:10]).tolist() == iso(raw[:10]).tolist()
    few = Calibrator.fit(raw[:500], labels[:500])
    assert few.method == "platt"


def test_leakage_names_a_field_filled_in_after_the_outcome() -> None:
    frame, labels, _ = world()
    frame["sales_verdict"] = np.where(labels == 1, "will enroll", "not interested")
    frame.loc[frame.index[:30], "sales_verdict"] = None
    spec = FeatureSpec(SPEC.numeric, (*SPEC.categorical, "sales_verdict"))
    found = leakage(frame, labels, spec)
    assert [f["feature"] for f in found] == ["sales_verdict"] and found[0]["auc"] > 0.95


def test_training_chooses_calibrates_and_judges_on_the_newest_leads() -> None:
    frame, labels, times = world(2000)
    frame["sales_verdict"] = np.where(labels == 1, "yes", "no")
    spec = FeatureSpec(SPEC.numeric, (*SPEC.categorical, "sales_verdict"))
    rule = frame["visits"].to_numpy()
    trained = train(frame, labels, times, spec, rule_scores=rule, exclude_leaks=True)
    report = trained.report
    assert report["split"] == {"train": 1200, "choose": 400, "test": 400}
    assert report["leakage"][0]["feature"] == "sales_verdict" and report["leaks_excluded"]
    assert "sales_verdict" not in trained.spec.columns
    assert report["choice"]["chosen"] in ("logistic", "boosted")
    test = report["test"]
    assert set(test) == {"model", "logistic (uncalibrated)", "boosted (uncalibrated)", "naive_bayes", "rule_score"}
    assert test["model"]["leads"] == 400 and 0 <= test["model"]["brier"] < 0.25
    assert test["model"]["roc_auc"] > test["rule_score"]["roc_auc"] - 0.05
    again = Trained.from_dict(json.loads(json.dumps(trained.to_dict())))
    assert np.allclose(again.probabilities(frame), trained.probabilities(frame))
    assert report["periods"]["test"] == [1600, 1999]


def test_time_split_keeps_time_order() -> None:
    old, middle, new = time_split(np.array([5, 1, 4, 2, 3, 9, 8, 7, 6, 0]))
    assert old.tolist() == [9, 1, 3, 4, 2, 0] and middle.tolist() == [8, 7] and new.tolist() == [6, 5]


def test_too_little_data_is_a_clear_error() -> None:
    frame, labels, times = world(100)
    with pytest.raises(InvalidInput, match="too few"):
        train(frame, labels, times, SPEC)


def test_advice_for_a_capacity_takes_the_lowest_threshold_that_fits() -> None:
    from qualify.predictive.advice import advise

    scores = np.linspace(1.0, 0.01, 100)
    labels = (np.arange(100) % 4 == 0).astype(int)  # every 4th lead converts, at all score levels
    advice = advise(scores, labels, weeks=10.0, capacity_per_week=3)
    chosen = advice["chosen"]
    assert chosen["flagged"] == 30 and chosen["volume_per_week"] == 3.0
    assert chosen["converted"] == 8 and chosen["recall"] == round(8 / 25, 4)
    lower, upper = chosen["precision_95"]
    assert lower < chosen["precision"] < upper
    assert all(p["volume_per_week"] > 3 for p in advice["around"] if p["threshold"] < chosen["threshold"])


def test_advice_for_costs_minimises_the_expected_cost_and_can_flag_no_one() -> None:
    from qualify.predictive.advice import advise

    scores = np.array([0.9, 0.7, 0.5, 0.3, 0.1])
    labels = np.array([0, 1, 0, 0, 0])
    cheap_miss = advise(scores, labels, weeks=1.0, miss_cost=0.5)
    assert cheap_miss["chosen"]["threshold"] is None  # a miss costs less than a call: call no one
    dear_miss = advise(scores, labels, weeks=1.0, miss_cost=10.0)
    assert dear_miss["chosen"]["threshold"] == 0.7 and dear_miss["chosen"]["cost_per_week"] == 1.0
    assert dear_miss["break_even_probability"] == round(1 / 11, 4)
    with pytest.raises(ValueError, match="either a capacity"):
        advise(scores, labels, weeks=1.0)


def test_platt_calibration_never_turns_a_ranking_round() -> None:
    from qualify.predictive.models import Calibrator

    raw = np.linspace(-2.0, 2.0, 200)
    labels = (raw < 0).astype(int)  # the model ranked these backwards
    calibrator = Calibrator.fit(raw, labels, method="platt")
    probabilities = calibrator(raw)
    assert calibrator.a == 0.0 and np.allclose(probabilities, labels.mean())


def test_content_items_read_values_as_the_export_writes_them() -> None:
    from qualify.domain.content import content_item

    assert content_item("content_download", {"content_id": 200.0}) == "content_download:200.0"
    assert content_item("webinar", {"webinar_id": {"name": "spring"}}) == 'webinar:{"name":"spring"}'
    assert content_item("page_view", {"url": "/pricing", "campaign": None}) == "page_view:/pricing"
    assert content_item("page_view", {}) is None


def test_capacity_is_compared_before_rounding() -> None:
    from qualify.predictive.advice import advise

    scores = np.linspace(1.0, 0.0, 3003)
    labels = np.zeros(3003, dtype=int)
    labels[::3] = 1
    advice = advise(scores, labels, weeks=1000.0, capacity_per_week=3)  # 3,003 leads: 3.003 a week in all
    assert advice["chosen"]["flagged"] <= 3000


def test_training_refuses_a_time_split_with_one_outcome() -> None:
    frame = pd.DataFrame({"x": np.arange(400, dtype=float)})
    labels = np.zeros(400, dtype=int)
    labels[:40] = 1  # every positive among the oldest rows
    with pytest.raises(InvalidInput, match="holds only one outcome"):
        train(frame, labels, np.arange(400), FeatureSpec(("x",), ()))
