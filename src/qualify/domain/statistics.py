"""Small statistics the reports share: honest intervals for rates, and quantiles as SQL computes them."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> list[float] | None:
    """The 95 % Wilson score interval of a rate: honest for small counts and for rates near 0 or
    1, where the normal approximation gives bounds outside [0, 1]."""
    if trials == 0:
        return None
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def counted_rate(count: int, total: int) -> dict[str, Any]:
    """A count out of `total` as the reports give it: the count, its share rounded to 4 decimals
    (None out of nothing) and the share's 95 % Wilson interval."""
    return {
        "count": count,
        "rate": round(count / total, 4) if total else None,
        "interval_95": wilson_interval(count, total),
    }


def percentile(values: list[float], q: float) -> float:
    """The q-quantile, interpolated between the closest ranks: what SQL's `percentile_cont` gives,
    so the store-side reports and the batch engines agree."""
    ordered = sorted(values)
    return ranked_percentile(ordered.__getitem__, len(ordered), q)


def ranks_needed(count: int, q: float) -> tuple[int, int]:
    """The 0-based ranks `ranked_percentile` reads for the q-quantile of `count` values."""
    low = math.floor(q * (count - 1))
    return low, min(low + 1, count - 1)


def ranked_percentile(at_rank: Callable[[int], float], count: int, q: float) -> float:
    """The q-quantile of `count` values, read by 0-based rank in ascending order (a store that
    ranks them in SQL hands over only the ranks `ranks_needed` names)."""
    position = q * (count - 1)
    low, high = ranks_needed(count, q)
    return at_rank(low) + (at_rank(high) - at_rank(low)) * (position - low)
