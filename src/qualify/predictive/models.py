"""The models that learn the probability of converting, and the baselines they must beat.

Each model takes a pandas frame with the columns of its `FeatureSpec` (numbers and categories)
and gives a probability per row, and additive contributions per feature in log-odds (a linear
model's terms; a boosted model's TreeSHAP values) that add up, with the base value, to the
model's raw log-odds. Every model is kept as JSON-able data (`to_dict`): no pickles in the store.

- `LogisticModel`: L2-regularised logistic regression on standardised numbers and one-hot
  categories (rare ones pooled);
- `BoostedModel`: gradient-boosted trees (LightGBM), categories as categories;
- `NaiveBayesModel`: the frequency model CRMs such as Odoo use for predictive lead scoring,
  kept as a baseline: per field value, how much more often won leads had it than lost ones;
- `Calibrator`: isotonic regression or Platt scaling, fitted on data the model did not see.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

OTHER = "(other)"
ISOTONIC_MIN = 1000
MISSING = "(missing)"


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns are numbers and which are categories."""

    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical)

    def to_dict(self) -> dict[str, Any]:
        return {"numeric": list(self.numeric), "categorical": list(self.categorical)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        return cls(tuple(data["numeric"]), tuple(data["categorical"]))


def category_text(value: Any) -> str:
    """One value as `categories_of` reads it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return str(value)


def _number(value: Any) -> float | None:
    """One value as the models read numbers: None where missing or not a number."""
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def categories_of(column: pd.Series) -> pd.Series:
    """A categorical column as text, missing values as `(missing)`."""
    return column.astype("object").where(column.notna(), MISSING).astype(str)


class Model(Protocol):
    spec: FeatureSpec

    def fit(self, frame: pd.DataFrame, labels: np.ndarray) -> Model: ...
    def raw(self, frame: pd.DataFrame) -> np.ndarray: ...
    def contributions(self, frame: pd.DataFrame) -> tuple[np.ndarray, float | np.ndarray]: ...
    def to_dict(self) -> dict[str, Any]: ...


def sigmoid(values: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(values, -500.0, 500.0))))  # no overflow


# --- logistic regression -------------------------------------------------------------------------


@dataclass
class LogisticModel:
    """L2-regularised logistic regression; numbers imputed with the median and standardised,
    categories one-hot with values seen fewer than `min_count` times pooled as `(other)`."""

    spec: FeatureSpec
    c: float = 1.0
    min_count: int = 10
    medians: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)
    levels: dict[str, list[str]] = field(default_factory=dict)
    coefficients: list[float] = field(default_factory=list)
    intercept: float = 0.0

    def _matrix(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        blocks, owners = [], []
        for name in self.spec.numeric:
            values = pd.to_numeric(frame[name], errors="coerce").astype(float).fillna(self.medians[name]).to_numpy()
            blocks.append(((values - self.means[name]) / self.scales[name])[:, None])
            owners.append(name)
        for name in self.spec.categorical:
            text = categories_of(frame[name])
            known = self.levels[name]
            text = text.where(text.isin(known), OTHER)
            blocks.append(np.stack([(text == level).to_numpy(dtype=float) for level in known], axis=1))
            owners += [name] * len(known)
        matrix = np.hstack(blocks) if blocks else np.zeros((len(frame), 0))
        return matrix, owners

    def fit(self, frame: pd.DataFrame, labels: np.ndarray) -> LogisticModel:
        from sklearn.linear_model import LogisticRegression

        for name in self.spec.numeric:
            values = pd.to_numeric(frame[name], errors="coerce").astype(float)
            median = float(values.median()) if values.notna().any() else 0.0
            filled = values.fillna(median)
            self.medians[name] = median
            self.means[name] = float(filled.mean())
            self.scales[name] = float(filled.std()) or 1.0
        for name in self.spec.categorical:
            counts = categories_of(frame[name]).value_counts()
            self.levels[name] = [*sorted(counts[counts >= self.min_count].index.tolist()), OTHER]
        matrix, _ = self._matrix(frame)
        fitted = LogisticRegression(C=self.c, max_iter=5000).fit(matrix, labels)
        self.coefficients = [float(v) for v in fitted.coef_[0]]
        self.intercept = float(fitted.intercept_[0])
        return self

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        matrix, _ = self._matrix(frame)
        return np.asarray(matrix @ np.asarray(self.coefficients) + self.intercept)

    def raw_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """`raw` of leads given as dicts of features, without pandas."""
        return np.asarray([self.raw_one(row) for row in rows], dtype=float)

    def raw_one(self, row: Mapping[str, Any]) -> float:
        """`raw` of one lead given as a dict of features, without pandas (the replay's hot path)."""
        total, at = self.intercept, 0
        for name in self.spec.numeric:
            value = _number(row.get(name))
            value = self.medians[name] if value is None else value
            total += self.coefficients[at] * (value - self.means[name]) / self.scales[name]
            at += 1
        for name in self.spec.categorical:
            known = self.levels[name]
            text = category_text(row.get(name))
            index = known.index(text) if text in known else known.index(OTHER)
            total += self.coefficients[at + index]
            at += len(known)
        return total

    def contributions(self, frame: pd.DataFrame) -> tuple[np.ndarray, float]:
        """Per feature, the sum of its terms (coefficient × value), one column per spec column."""
        matrix, owners = self._matrix(frame)
        terms = matrix * np.asarray(self.coefficients)
        out = np.zeros((len(frame), len(self.spec.columns)))
        for j, owner in enumerate(owners):
            out[:, self.spec.columns.index(owner)] += terms[:, j]
        return out, self.intercept

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "logistic",
            "spec": self.spec.to_dict(),
            "c": self.c,
            "min_count": self.min_count,
            "medians": self.medians,
            "means": self.means,
            "scales": self.scales,
            "levels": self.levels,
            "coefficients": self.coefficients,
            "intercept": self.intercept,
        }


# --- gradient boosting ---------------------------------------------------------------------------


@dataclass
class BoostedModel:
    """Gradient-boosted trees (LightGBM). Categories keep the levels seen in training (others are
    missing); contributions are TreeSHAP values in log-odds."""

    spec: FeatureSpec
    params: dict[str, Any] = field(default_factory=dict)
    levels: dict[str, list[str]] = field(default_factory=dict)
    booster: str = ""  # LightGBM's own text format
    _model: Any = field(default=None, repr=False)

    DEFAULTS: ClassVar[dict[str, Any]] = {
        # Many small trees learn slowly: on the X Education leads (5-fold AUC) 0.908 against
        # 0.906 for 400 trees of 31 leaves (benchmarks/predictive.py).
        "n_estimators": 800,
        "learning_rate": 0.02,
        "num_leaves": 15,
        "min_child_samples": 30,
        "subsample": 0.8,
        "subsample_freq": 1,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "random_state": 7,
        "n_jobs": 2,
        "verbose": -1,
    }

    def _frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=frame.index)
        for name in self.spec.numeric:
            out[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
        for name in self.spec.categorical:
            text = categories_of(frame[name])
            known = text.where(text.isin(self.levels[name]))  # a category never seen is missing
            out[name] = pd.Categorical(known, categories=self.levels[name])
        return out

    def fit(self, frame: pd.DataFrame, labels: np.ndarray) -> BoostedModel:
        import lightgbm as lgb

        for name in self.spec.categorical:
            self.levels[name] = sorted(categories_of(frame[name]).unique().tolist())
        model = lgb.LGBMClassifier(**(self.DEFAULTS | self.params))
        model.fit(self._frame(frame), labels)
        self.booster = model.booster_.model_to_string()
        self._model = model.booster_
        return self

    def _booster(self) -> Any:
        if self._model is None:
            import lightgbm as lgb

            self._model = lgb.Booster(model_str=self.booster)
        return self._model

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self._booster().predict(self._frame(frame), raw_score=True))

    def raw_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """`raw` of leads given as dicts of features: categories as their codes, without pandas."""
        numeric = self.spec.numeric
        try:  # feature rows hold numbers, booleans and None (NaN) in the numeric columns: read at once
            numbers = np.array([[row.get(name) for name in numeric] for row in rows], dtype=float)
        except (TypeError, ValueError):  # text that is no number among them: each value as `_number` reads it
            numbers = np.array(
                [[math.nan if (v := _number(row.get(name))) is None else v for name in numeric] for row in rows],
                dtype=float,
            )
        codes = [
            (name, {level: float(i) for i, level in enumerate(self.levels[name])}) for name in self.spec.categorical
        ]
        categories = np.array(
            [[known.get(category_text(row.get(name)), math.nan) for name, known in codes] for row in rows], dtype=float
        )
        shaped = np.hstack([numbers.reshape(len(rows), len(numeric)), categories.reshape(len(rows), len(codes))])
        return np.asarray(self._booster().predict(shaped, raw_score=True), dtype=float)

    def raw_one(self, row: Mapping[str, Any]) -> float:
        """`raw` of one lead given as a dict of features, without pandas."""
        return float(self.raw_rows([row])[0])

    def contributions(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(self._booster().predict(self._frame(frame), pred_contrib=True))
        return values[:, :-1], values[:, -1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "boosted",
            "spec": self.spec.to_dict(),
            "params": self.params,
            "levels": self.levels,
            "booster": self.booster,
        }


# --- naive Bayes: the baseline -------------------------------------------------------------------


@dataclass
class NaiveBayesModel:
    """Per field, the frequency of each value among won and lost leads (Laplace-smoothed); the
    log-odds are the prior's plus each field's log ratio. Numbers are cut into `bins` quantile bins."""

    spec: FeatureSpec
    bins: int = 10
    edges: dict[str, list[float]] = field(default_factory=dict)
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)
    prior: float = 0.0

    def _values(self, frame: pd.DataFrame, name: str) -> pd.Series:
        if name in self.spec.numeric:
            numbers = pd.to_numeric(frame[name], errors="coerce").astype(float)
            index = np.searchsorted(self.edges[name], numbers.fillna(np.inf).to_numpy(), side="right")
            return pd.Series(np.where(numbers.isna(), MISSING, index.astype(str)), index=frame.index)
        return categories_of(frame[name])

    def fit(self, frame: pd.DataFrame, labels: np.ndarray) -> NaiveBayesModel:
        won = labels == 1
        for name in self.spec.numeric:
            numbers = pd.to_numeric(frame[name], errors="coerce").astype(float).dropna()
            quantiles: Any = (
                np.unique(np.quantile(numbers, np.linspace(0, 1, self.bins + 1)[1:-1])) if len(numbers) else []
            )
            self.edges[name] = [float(v) for v in quantiles]
        n_won, n_lost = int(won.sum()), int((~won).sum())
        self.prior = math.log((n_won + 1) / (n_lost + 1))
        for name in self.spec.columns:
            values = self._values(frame, name)
            levels = values.unique().tolist()
            won_counts = values[won].value_counts()
            lost_counts = values[~won].value_counts()
            k = len(levels) + 1
            self.ratios[name] = {
                str(level): math.log((won_counts.get(level, 0) + 1) / (n_won + k))
                - math.log((lost_counts.get(level, 0) + 1) / (n_lost + k))
                for level in levels
            }
            # A value never seen says nothing (as in Odoo's frequency model); Laplace's estimate
            # for it would lean towards the larger class.
            self.ratios[name][OTHER] = 0.0
        return self

    def contributions(self, frame: pd.DataFrame) -> tuple[np.ndarray, float]:
        out = np.zeros((len(frame), len(self.spec.columns)))
        for j, name in enumerate(self.spec.columns):
            ratios = self.ratios[name]
            out[:, j] = self._values(frame, name).map(lambda v, r=ratios: r.get(v, r[OTHER])).to_numpy(dtype=float)
        return out, self.prior

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        terms, base = self.contributions(frame)
        return np.asarray(terms.sum(axis=1) + base)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "naive_bayes",
            "spec": self.spec.to_dict(),
            "bins": self.bins,
            "edges": self.edges,
            "ratios": self.ratios,
            "prior": self.prior,
        }


# --- calibration ---------------------------------------------------------------------------------


@dataclass
class Calibrator:
    """Raw log-odds → probability. `isotonic` (a monotone step function, for enough data) or
    `platt` (a logistic curve: two numbers)."""

    method: str = "platt"
    a: float = 1.0
    b: float = 0.0
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, raw: np.ndarray, labels: np.ndarray, *, method: str | None = None) -> Calibrator:
        """Isotonic where there are at least `ISOTONIC_MIN` of each outcome, else Platt (unless told):
        on less, isotonic's steps tie leads that the model ranked apart (on the Olist MQLs, 150
        wins, it cost 0.03 of ROC AUC)."""
        positives = int(labels.sum())
        chosen = method or ("isotonic" if min(positives, len(labels) - positives) >= ISOTONIC_MIN else "platt")
        if chosen == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, labels)
            return cls("isotonic", xs=[float(v) for v in iso.X_thresholds_], ys=[float(v) for v in iso.y_thresholds_])
        from sklearn.linear_model import LogisticRegression

        platt = LogisticRegression(C=1e6, max_iter=1000).fit(raw[:, None], labels)
        slope = float(platt.coef_[0][0])
        if slope <= 0.0:
            # The model ranked these leads no better than chance (or backwards): a calibration
            # must not turn its ranking round, so every lead gets the base rate instead.
            rate = min(max(float(np.mean(labels)), 1e-6), 1 - 1e-6)
            return cls("platt", a=0.0, b=math.log(rate / (1 - rate)))
        return cls("platt", a=slope, b=float(platt.intercept_[0]))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            return np.asarray(np.interp(raw, self.xs, self.ys))
        return np.asarray(sigmoid(self.a * raw + self.b))

    def to_dict(self) -> dict[str, Any]:
        if self.method == "isotonic":
            return {"method": "isotonic", "xs": self.xs, "ys": self.ys}
        return {"method": "platt", "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(data["method"], data.get("a", 1.0), data.get("b", 0.0), data.get("xs", []), data.get("ys", []))


def model_from_dict(data: dict[str, Any]) -> LogisticModel | BoostedModel | NaiveBayesModel:
    """A stored model back: the inverse of each model's `to_dict`."""
    spec = FeatureSpec.from_dict(data["spec"])
    kind = data["kind"]
    if kind == "logistic":
        return LogisticModel(
            spec, data["c"], data["min_count"], data["medians"], data["means"], data["scales"], data["levels"],
            data["coefficients"], data["intercept"],
        )  # fmt: skip
    if kind == "boosted":
        return BoostedModel(spec, data["params"], data["levels"], data["booster"])
    if kind == "naive_bayes":
        return NaiveBayesModel(spec, data["bins"], data["edges"], data["ratios"], data["prior"])
    raise ValueError(f"unknown model kind {kind!r}")


@dataclass
class Trained:
    """A calibrated model ready to score, with how it was chosen and how it did."""

    model: LogisticModel | BoostedModel
    calibrator: Calibrator
    report: dict[str, Any] = field(default_factory=dict)
    out_of_fold: np.ndarray | None = field(default=None, repr=False)  # cross-validated: each row's probability

    @property
    def spec(self) -> FeatureSpec:
        return self.model.spec

    def probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        return self.calibrator(self.model.raw(frame))

    def probability_one(self, row: dict[str, Any]) -> float:
        """One lead's probability from a dict of its features, without pandas."""
        return float(self.calibrator(np.asarray([self.model.raw_one(row)]))[0])

    def probabilities_of(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """`probabilities` of leads given as dicts of their features, without pandas (the online path)."""
        if not rows:
            return np.zeros(0)
        return np.asarray(self.calibrator(self.model.raw_rows(rows)))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "calibrator": self.calibrator.to_dict(), "report": self.report}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trained:
        model = model_from_dict(data["model"])
        assert not isinstance(model, NaiveBayesModel)
        return cls(model, Calibrator.from_dict(data["calibrator"]), data.get("report", {}))
