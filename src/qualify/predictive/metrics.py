"""How good a probability is: ranking (ROC AUC, PR AUC), calibration (Brier, reliability table,
expected calibration error) and what it buys sales (lift and capture at the top of the list).

>>> report = evaluate([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
>>> report["roc_auc"], report["positives"]
(0.75, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

TOP_SHARES = (0.1, 0.2, 0.3)


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
    labels: np.ndarray, scores: np.ndarray, shares: Sequence[float] = TOP_SHARES
) -> list[dict[str, Any]]:
    """For the top share of leads by score: the conversion rate there over the base rate (lift),
    and the share of all conversions found there (capture). Ties keep the input order."""
    order = np.argsort(-scores, kind="stable")
    positives = labels.sum()
    base = labels.mean() if len(labels) else 0.0
    out = []
    for share in shares:
        top = max(1, round(share * len(labels)))
        hits = labels[order[:top]].sum()
        out.append(
            {
                "top": share,
                "leads": top,
                "rate": round(float(hits / top), 4),
                "lift": round(float(hits / top / base), 3) if base else None,
                "capture": round(float(hits / positives), 4) if positives else None,
            }
        )
    return out


def evaluate(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, *, probabilities: bool = True
) -> dict[str, Any]:
    """Every metric of one scoring on one set of leads. Brier and calibration only for
    probabilities (a rule score's ranking metrics still compare)."""
    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    both = 0 < y.sum() < len(y)
    out: dict[str, Any] = {
        "leads": len(y),
        "positives": int(y.sum()),
        "roc_auc": round(float(roc_auc_score(y, s)), 4) if both else None,
        "pr_auc": round(float(average_precision_score(y, s)), 4) if both else None,
        "top": lift_and_capture(y, s),
    }
    if probabilities:
        table = calibration_table(y, s)
        out |= {
            "brier": round(float(brier_score_loss(y, s)), 4),
            "ece": round(expected_calibration_error(table), 4),
            "calibration": table,
        }
    return out
