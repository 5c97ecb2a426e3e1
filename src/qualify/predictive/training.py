"""Training: candidates fitted on the past, chosen and calibrated on the recent past, judged on the most recent.

The rows are ordered by their cutoff instant and cut in three: the oldest 60 % train the
candidates (a logistic regression and a gradient-boosted model), the next 20 % choose between
them (ROC AUC) and fit the calibration, and the newest 20 % — which neither saw — give the
metrics, beside the baselines on the same leads (the naive Bayes frequency model, and the rule
score when there is one). A model validated this way was judged the way it will be used: on
leads that came after the ones it learnt from.

Rows whose instants say nothing about time (outcomes known without dates: a snapshot export that
only says who converted) are judged by `train_cross_validated` instead: stratified k-fold
cross-validation, each candidate fitted on k−1 folds and scored on the one left out; the chosen
one is then fitted on every row and calibrated on its out-of-fold scores. Rows of accounts at
several cutoffs (predictive.account_set) are cross-validated by account: all of an account's rows
fall in one fold, so that each is judged by candidates that never saw that account.

Before that, `leakage` looks for features that almost determine the label on their own (a field
sales fills in after the first call, say) and names them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from qualify.domain.errors import InvalidInput
from qualify.predictive.metrics import evaluate
from qualify.predictive.models import (
    BoostedModel,
    Calibrator,
    FeatureSpec,
    LogisticModel,
    NaiveBayesModel,
    Trained,
    categories_of,
)

SPLIT = (0.6, 0.2, 0.2)
FOLDS = 5
FOLD_SEED = 0  # the folds of benchmarks/predictive.py: the same rows in the same order give the same folds
LEAKAGE_AUC = 0.95  # a single feature that ranks this well is suspicious
MIN_ROWS = 200


def time_split(times: np.ndarray, shares: tuple[float, float, float] = SPLIT) -> tuple[np.ndarray, ...]:
    """Row indices of the oldest, middle and newest parts, by time (ties in input order)."""
    order = np.argsort(times, kind="stable")
    first = round(shares[0] * len(order))
    second = first + round(shares[1] * len(order))
    return order[:first], order[first:second], order[second:]


def single_feature_auc(column: pd.Series, labels: np.ndarray, numeric: bool) -> float | None:
    """How well one feature alone ranks the labels: its values (numbers; missing lowest) or each
    category's share of positives. Symmetric: 0.1 counts as 0.9."""
    if labels.min() == labels.max():
        return None
    if numeric:
        numbers = pd.to_numeric(column, errors="coerce").astype(float)
        lowest = numbers.min() if numbers.notna().any() else 0.0
        values = numbers.fillna(lowest - 1.0).to_numpy()
    else:
        text = categories_of(column)
        values = text.map(pd.Series(labels, index=text.index).groupby(text).mean()).to_numpy(dtype=float)
    if np.all(values == values[0]):
        return 0.5
    auc = float(roc_auc_score(labels, values))
    return max(auc, 1.0 - auc)


def leakage(
    frame: pd.DataFrame, labels: np.ndarray, spec: FeatureSpec, threshold: float = LEAKAGE_AUC
) -> list[dict[str, Any]]:
    """Features that on their own rank the labels with an AUC of `threshold` or more: likely filled
    in after the outcome was known. Sorted, strongest first."""
    found = []
    for name in spec.columns:
        auc = single_feature_auc(frame[name], labels, name in spec.numeric)
        if auc is not None and auc >= threshold:
            found.append({"feature": name, "auc": round(auc, 4)})
    return sorted(found, key=lambda f: -f["auc"])


def train(
    frame: pd.DataFrame,
    labels: np.ndarray,
    times: np.ndarray,
    spec: FeatureSpec,
    *,
    rule_scores: np.ndarray | None = None,
    exclude_leaks: bool = False,
) -> Trained:
    """Fit, choose, calibrate and judge (module doc). `rule_scores` (the active model's score of
    the same leads) is judged beside it; `exclude_leaks` drops the features `leakage` names."""
    labels = np.asarray(labels, dtype=int)
    spec, leaks = _checked(frame, labels, spec, exclude_leaks)
    old, middle, new = time_split(np.asarray(times))
    for name, rows in (("oldest 60 %", old), ("middle 20 %", middle), ("newest 20 %", new)):
        if len(np.unique(labels[rows])) < 2:
            raise InvalidInput(
                f"the {name} of the rows (by time) holds only one outcome: cannot train, choose and judge on it; "
                "widen the data (--end, --within) or change the target",
                field="labels",
            )
    part = {name: frame.iloc[rows] for name, rows in (("train", old), ("choose", middle), ("test", new))}
    y = {"train": labels[old], "choose": labels[middle], "test": labels[new]}
    candidates: dict[str, LogisticModel | BoostedModel] = {
        "logistic": LogisticModel(spec).fit(part["train"], y["train"]),
        "boosted": BoostedModel(spec).fit(part["train"], y["train"]),
    }
    choice_auc = {
        name: round(float(roc_auc_score(y["choose"], model.raw(part["choose"]))), 4)
        for name, model in candidates.items()
    }
    chosen = max(choice_auc, key=lambda name: choice_auc[name])
    model = candidates[chosen]
    calibrator = Calibrator.fit(model.raw(part["choose"]), y["choose"])
    trained = Trained(model, calibrator)
    test = {
        "model": evaluate(y["test"], trained.probabilities(part["test"])),
        **{
            f"{name} (uncalibrated)": evaluate(y["test"], other.raw(part["test"]), probabilities=False)
            for name, other in candidates.items()
        },
        "naive_bayes": evaluate(
            y["test"], NaiveBayesModel(spec).fit(part["train"], y["train"]).raw(part["test"]), probabilities=False
        ),
    }
    if rule_scores is not None:
        test["rule_score"] = evaluate(y["test"], np.asarray(rule_scores)[new], probabilities=False)
    trained.report = {
        "rows": len(labels),
        "positives": int(labels.sum()),
        "validation": {"method": "time split", "shares": list(SPLIT)},
        "split": {name: len(rows) for name, rows in (("train", old), ("choose", middle), ("test", new))},
        "periods": {
            name: [_instant(times, rows, min), _instant(times, rows, max)]
            for name, rows in (("train", old), ("choose", middle), ("test", new))
        },
        "features": spec.to_dict(),
        "leakage": leaks,
        "leaks_excluded": bool(exclude_leaks and leaks),
        "choice": {"by": "roc_auc on the choose part", "auc": choice_auc, "chosen": chosen},
        "calibration": calibrator.method,
        "test": test,
    }
    return trained


def _checked(
    frame: pd.DataFrame, labels: np.ndarray, spec: FeatureSpec, exclude_leaks: bool
) -> tuple[FeatureSpec, list[dict[str, Any]]]:
    """Enough rows of each outcome; the leakage check, and its features dropped if asked."""
    if len(labels) < MIN_ROWS:
        raise InvalidInput(f"{len(labels)} rows is too few to train on: at least {MIN_ROWS}", field="rows")
    if labels.sum() < 10 or (len(labels) - labels.sum()) < 10:
        raise InvalidInput(
            f"{int(labels.sum())} positive rows of {len(labels)}: need at least 10 of each outcome", field="labels"
        )
    leaks = leakage(frame, labels, spec)
    if exclude_leaks and leaks:
        named = {f["feature"] for f in leaks}
        spec = FeatureSpec(
            tuple(c for c in spec.numeric if c not in named), tuple(c for c in spec.categorical if c not in named)
        )
    return spec, leaks


Factory = Callable[[], LogisticModel | BoostedModel | NaiveBayesModel]


def fold_indices(
    labels: np.ndarray, folds: int = FOLDS, groups: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds (shuffled with a fixed seed): (rows to fit on, rows to score) per fold. With
    `groups` (an account per row, say) every row of a group falls in the same fold."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    smallest = int(min(labels.sum(), len(labels) - labels.sum()))
    if folds < 2 or smallest < folds:
        raise InvalidInput(f"{folds} folds need at least {max(folds, 2)} rows of each outcome", field="folds")
    if groups is None:
        split = StratifiedKFold(folds, shuffle=True, random_state=FOLD_SEED).split(np.zeros(len(labels)), labels)
    else:
        if len(np.unique(groups)) < folds:
            raise InvalidInput(f"{folds} folds need at least {folds} groups", field="folds")
        grouped = StratifiedGroupKFold(folds, shuffle=True, random_state=FOLD_SEED)
        split = grouped.split(np.zeros(len(labels)), labels, groups)
    return [(np.asarray(fit), np.asarray(held)) for fit, held in split]


def out_of_fold(
    make: Factory, frame: pd.DataFrame, labels: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Every row's raw score from a model (`make()`) fitted on the other folds."""
    raw = np.zeros(len(labels))
    for fit, held in folds:
        raw[held] = make().fit(frame.iloc[fit], labels[fit]).raw(frame.iloc[held])
    return raw


def cross_calibrated(raw: np.ndarray, labels: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Out-of-fold raw scores as probabilities, each fold's through a calibration fitted on the
    other folds' (so that no row's own label shapes its probability)."""
    probabilities = np.zeros(len(labels))
    for fit, held in folds:
        probabilities[held] = Calibrator.fit(raw[fit], labels[fit])(raw[held])
    return probabilities


def per_fold_auc(labels: np.ndarray, scores: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """ROC AUC in each held-out fold, their mean and standard deviation (as benchmarks/predictive.py prints)."""
    values = [float(roc_auc_score(labels[held], scores[held])) for _, held in folds]
    return {
        "mean": round(float(np.mean(values)), 4),
        "std": round(float(np.std(values)), 4),
        "folds": [round(v, 4) for v in values],
    }


def refit_like(model: LogisticModel | BoostedModel) -> Factory:
    """A factory of untrained models of the same kind, features and settings (to refit it on folds)."""
    if isinstance(model, LogisticModel):
        return lambda: LogisticModel(model.spec, model.c, model.min_count)
    return lambda: BoostedModel(model.spec, dict(model.params))


def train_cross_validated(
    frame: pd.DataFrame,
    labels: np.ndarray,
    times: np.ndarray,
    spec: FeatureSpec,
    *,
    rule_scores: np.ndarray | None = None,
    exclude_leaks: bool = False,
    folds: int = FOLDS,
    groups: np.ndarray | None = None,
) -> Trained:
    """Fit, choose, calibrate and judge by cross-validation (module doc): for rows whose order in
    time is unknown, or (`groups`) judged on groups held out whole, accounts say. The metrics are
    out of fold (the probabilities in `Trained.out_of_fold`); the model kept is fitted on every row."""
    labels = np.asarray(labels, dtype=int)
    spec, leaks = _checked(frame, labels, spec, exclude_leaks)
    parts = fold_indices(labels, folds, groups)
    makers: dict[str, Factory] = {"logistic": lambda: LogisticModel(spec), "boosted": lambda: BoostedModel(spec)}
    raw = {name: out_of_fold(make, frame, labels, parts) for name, make in makers.items()}
    cv = {name: per_fold_auc(labels, values, parts) for name, values in raw.items()}
    chosen = max(cv, key=lambda name: cv[name]["mean"])
    model = makers[chosen]().fit(frame, labels)
    assert not isinstance(model, NaiveBayesModel)
    trained = Trained(model, Calibrator.fit(raw[chosen], labels))
    probabilities = cross_calibrated(raw[chosen], labels, parts)
    trained.out_of_fold = probabilities
    naive = out_of_fold(lambda: NaiveBayesModel(spec), frame, labels, parts)
    test = {
        "model": evaluate(labels, probabilities),
        **{f"{name} (uncalibrated)": evaluate(labels, raw[name], probabilities=False) for name in makers},
        "naive_bayes": evaluate(labels, naive, probabilities=False),
    }
    folded = {
        "model": per_fold_auc(labels, probabilities, parts),
        **{f"{name} (uncalibrated)": cv[name] for name in makers},
        "naive_bayes": per_fold_auc(labels, naive, parts),
    }
    if rule_scores is not None:
        test["rule_score"] = evaluate(labels, np.asarray(rule_scores), probabilities=False)
        folded["rule_score"] = per_fold_auc(labels, np.asarray(rule_scores, dtype=float), parts)
    everything = np.arange(len(labels))
    trained.report = {
        "rows": len(labels),
        "positives": int(labels.sum()),
        "validation": {"method": "cross-validation", "folds": folds, "seed": FOLD_SEED}
        | ({"groups": len(np.unique(groups))} if groups is not None else {}),
        "split": {f"fold {i + 1}": len(held) for i, (_, held) in enumerate(parts)},
        "periods": {"all": [_instant(times, everything, min), _instant(times, everything, max)]},
        "features": spec.to_dict(),
        "leakage": leaks,
        "leaks_excluded": bool(exclude_leaks and leaks),
        "choice": {
            "by": f"mean roc_auc over {folds} folds",
            "auc": {name: cv[name]["mean"] for name in makers},
            "chosen": chosen,
        },
        "calibration": trained.calibrator.method,
        "test": test,
        "cross_validation": folded,
    }
    return trained


def _instant(times: np.ndarray, rows: np.ndarray, pick: Any) -> Any:
    """The earliest or latest time of a part, as JSON: ISO text for instants, numbers as numbers."""
    if not len(rows):
        return None
    value = pick(np.asarray(times)[rows])
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="s")) + "Z"
    if isinstance(value, np.generic):
        return value.item()
    return value.isoformat() if hasattr(value, "isoformat") else value
