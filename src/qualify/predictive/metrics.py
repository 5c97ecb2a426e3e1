"""How good a probability is: ranking (ROC AUC, PR AUC), calibration (Brier, reliability table,
expected calibration error) and what it buys sales (lift and capture at the top of the list);
with `intervals`, each with its 95 % interval: DeLong's for ROC AUC, Wilson's for the rates at the
top of the list, a seeded bootstrap for PR AUC, Brier and ECE.

>>> report = evaluate([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
>>> report["roc_auc"], report["positives"]
(0.75, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from qualify.domain.statistics import wilson_interval

TOP_SHARES = (0.1, 0.2, 0.3)
Z95 = 1.959964
BOOTSTRAP = 400  # resamples for the bootstrap intervals
BOOTSTRAP_SEED = 0


def delong_interval(labels: np.ndarray, scores: np.ndarray, z: float = Z95) -> list[float] | None:
    """The 95 % interval of ROC AUC from DeLong's variance (the fast form of Sun and Xu, 2014):
    exact in its ranks, no resampling. None with one outcome only."""
    from scipy.stats import rankdata  # type: ignore[import-untyped]

    positives, negatives = scores[labels == 1], scores[labels == 0]
    m, n = len(positives), len(negatives)
    if m < 2 or n < 2:
        return None
    within_pos, within_neg = rankdata(positives), rankdata(negatives)
    together = rankdata(np.concatenate([positives, negatives]))
    auc = (together[:m].sum() - m * (m + 1) / 2) / (m * n)
    v01 = (together[:m] - within_pos) / n
    v10 = 1.0 - (together[m:] - within_neg) / m
    half = z * float(np.sqrt(v01.var(ddof=1) / m + v10.var(ddof=1) / n))
    return [round(max(0.0, float(auc) - half), 4), round(min(1.0, float(auc) + half), 4)]


def _bootstrap(labels: np.ndarray, scores: np.ndarray, probabilities: bool) -> dict[str, list[float] | None]:
    """Percentile intervals (2.5 %, 97.5 %) of PR AUC, and for probabilities Brier and ECE, over
    `BOOTSTRAP` resamples of the leads (seeded: the same leads give the same intervals)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    found: dict[str, list[float]] = {"pr_auc": [], "brier": [], "ece": []}
    for _ in range(BOOTSTRAP):
        pick = rng.integers(0, len(labels), len(labels))
        y, s = labels[pick], scores[pick]
        if 0 < y.sum() < len(y):
            found["pr_auc"].append(float(average_precision_score(y, s)))
        if probabilities:
            found["brier"].append(float(np.mean((s - y) ** 2)))
            found["ece"].append(expected_calibration_error(calibration_table(y, s)))

    def bounds(values: list[float]) -> list[float] | None:
        if not values:
            return None
        low, high = np.percentile(values, [2.5, 97.5])
        return [round(float(low), 4), round(float(high), 4)]

    return {name: bounds(values) for name, values in found.items() if probabilities or name == "pr_auc"}


def calibration_table(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Predictions cut into `bins` equal-width probability bins: count, mean predicted, observed rate."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probabilities, edges[1:-1], right=False), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        rows.append(
            {
                "bin": [round(float(edges[b]), 2), round(float(edges[b + 1]), 2)],
                "count": count,
                "predicted": round(float(probabilities[mask].mean()), 4) if count else None,
                "observed": round(float(labels[mask].mean()), 4) if count else None,
            }
        )
    return rows


def expected_calibration_error(table: list[dict[str, Any]]) -> float:
    """Σ (count / n) · |observed − predicted| over the bins of `calibration_table`."""
    total = sum(row["count"] for row in table)
    if not total:
        return 0.0
    return float(sum(row["count"] / total * abs(row["observed"] - row["predicted"]) for row in table if row["count"]))


def lift_and_capture(
    labels: np.ndarray, scores: np.ndarray, shares: Sequence[float] = TOP_SHARES, *, intervals: bool = False
) -> list[dict[str, Any]]:
    """For the top share of leads by score: the conversion rate there over the base rate (lift),
    and the share of all conversions found there (capture). Ties keep the input order. With
    `intervals`, Wilson's 95 % intervals of the rate and the capture, and the rate's over the base
    rate for the lift."""
    order = np.argsort(-scores, kind="stable")
    positives = labels.sum()
    base = labels.mean() if len(labels) else 0.0
    out = []
    for share in shares:
        top = max(1, round(share * len(labels)))
        hits = labels[order[:top]].sum()
        row: dict[str, Any] = {
            "top": share,
            "leads": top,
            "rate": round(float(hits / top), 4),
            "lift": round(float(hits / top / base), 3) if base else None,
            "capture": round(float(hits / positives), 4) if positives else None,
        }
        if intervals:
            rate = wilson_interval(int(hits), top)
            row["rate_95"] = rate
            row["lift_95"] = [round(float(v / base), 3) for v in rate] if base and rate else None
            row["capture_95"] = wilson_interval(int(hits), int(positives)) if positives else None
        out.append(row)
    return out


def evaluate(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    probabilities: bool = True,
    intervals: bool = False,
) -> dict[str, Any]:
    """Every metric of one scoring on one set of leads. Brier and calibration only for
    probabilities (a rule score's ranking metrics still compare). With `intervals`, each metric's
    95 % interval beside it (`roc_auc_95`, `pr_auc_95`, `brier_95`, `ece_95`; module doc)."""
    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    both = 0 < y.sum() < len(y)
    out: dict[str, Any] = {
        "leads": len(y),
        "positives": int(y.sum()),
        "roc_auc": round(float(roc_auc_score(y, s)), 4) if both else None,
        "pr_auc": round(float(average_precision_score(y, s)), 4) if both else None,
        "top": lift_and_capture(y, s, intervals=intervals),
    }
    if probabilities:
        table = calibration_table(y, s)
        out |= {
            "brier": round(float(brier_score_loss(y, s)), 4),
            "ece": round(expected_calibration_error(table), 4),
            "calibration": table,
        }
    if intervals:
        out["roc_auc_95"] = delong_interval(y, s) if both else None
        out |= {f"{name}_95": bounds for name, bounds in _bootstrap(y, s, probabilities).items()}
    return out
