"""Threshold advice: where to put the MQL line, from what sales can take or what a mistake costs.

Given a score for past leads at their cutoff (a probability, or an engagement or rule score),
whether each one converted, and when, every candidate threshold implies a weekly volume of MQLs,
a precision (the share of them that converted) and a recall (the share of converters flagged):

- with a **capacity** (leads sales can work per week), the advice is the lowest threshold whose
  weekly volume fits in it: the most converters sales can reach without being swamped;
- with **costs** (a missed converter against a wasted call), the threshold that makes the
  expected weekly cost `miss × missed + call × (flagged − converted)` smallest. For a calibrated
  probability that is near `call / (call + miss)`, which is reported beside it.

>>> advice = advise([0.9, 0.8, 0.3, 0.2, 0.1, 0.05], [1, 1, 0, 1, 0, 0], weeks=1.0, capacity_per_week=3)
>>> advice["chosen"]["threshold"], advice["chosen"]["volume_per_week"], advice["chosen"]["recall"]
(0.3, 3.0, 0.6667)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Z95 = 1.959964
CANDIDATES = 200


def _wilson(successes: int, trials: int) -> list[float] | None:
    if trials == 0:
        return None
    share = successes / trials
    spread = Z95 * math.sqrt(share * (1 - share) / trials + Z95**2 / (4 * trials**2))
    middle = share + Z95**2 / (2 * trials)
    scale = 1 + Z95**2 / trials
    return [round((middle - spread) / scale, 4), round((middle + spread) / scale, 4)]


def operating_point(
    scores: np.ndarray, labels: np.ndarray, threshold: float, weeks: float, miss: float, call: float
) -> dict[str, Any]:
    flagged = scores >= threshold
    count, hits, positives = int(flagged.sum()), int(labels[flagged].sum()), int(labels.sum())
    return {
        "_volume": count / weeks,  # unrounded, for the capacity test (dropped from the answer)
        "threshold": round(float(threshold), 6) if math.isfinite(threshold) else None,  # None: flag no one
        "volume_per_week": round(count / weeks, 2),
        "flagged": count,
        "converted": hits,
        "precision": round(hits / count, 4) if count else None,
        "precision_95": _wilson(hits, count),
        "recall": round(hits / positives, 4) if positives else None,
        "cost_per_week": round((miss * (positives - hits) + call * (count - hits)) / weeks, 2),
    }


def advise(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    weeks: float,
    capacity_per_week: float | None = None,
    miss_cost: float | None = None,
    call_cost: float = 1.0,
) -> dict[str, Any]:
    """The advised threshold and the table of operating points around it (module doc)."""
    values = np.asarray(scores, dtype=float)
    outcome = np.asarray(labels, dtype=int)
    if (capacity_per_week is None) == (miss_cost is None):
        raise ValueError("give either a capacity per week or a cost of a missed converter")
    if not len(values):
        raise ValueError("no leads to advise from")
    weeks = max(weeks, 1 / 7)  # the leads of a single day count as one day's worth
    distinct = np.unique(values)
    if len(distinct) > CANDIDATES:
        distinct = np.unique(np.quantile(values, np.linspace(0.0, 1.0, CANDIDATES)))
    candidates = np.append(distinct, np.inf)  # inf: flag no one
    miss = miss_cost if miss_cost is not None else 0.0
    points = [operating_point(values, outcome, t, weeks, miss, call_cost) for t in candidates]
    if capacity_per_week is not None:
        fitting = [i for i, p in enumerate(points) if p["_volume"] <= capacity_per_week]
        chosen = fitting[0]  # the last candidate flags no one, so one always fits
        rule = f"lowest threshold with at most {capacity_per_week:g} MQLs per week"
    else:
        chosen = min(range(len(points)), key=lambda i: (points[i]["cost_per_week"], -candidates[i]))
        rule = f"least expected cost: a missed converter {miss:g}, a wasted call {call_cost:g}"
    near = sorted({max(0, chosen - 2 * step) for step in range(1, 4)} | {chosen} | {
        min(len(points) - 1, chosen + 2 * step) for step in range(1, 4)
    })  # fmt: skip
    table = [points[i] for i in near if points[i]["threshold"] is not None]
    for point in points:
        point.pop("_volume")
    out: dict[str, Any] = {
        "rule": rule,
        "leads": len(values),
        "converted": int(outcome.sum()),
        "weeks": round(weeks, 2),
        "chosen": points[chosen],
        "around": table,
    }
    if miss_cost is not None:
        out["break_even_probability"] = round(call_cost / (call_cost + miss_cost), 4)
    return out
