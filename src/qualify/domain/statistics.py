"""Small statistics the reports share: honest intervals for rates, and quantiles as SQL computes them."""

from __future__ import annotations

import math


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> list[float] | None:
    """The 95 % Wilson score interval of a rate: honest for small counts and for rates near 0 or
    1, where the normal approximation gives bounds outside [0, 1]."""
    if trials == 0:
        return None
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def percentile(values: list[float], q: float) -> float:
    """The q-quantile, interpolated between the closest ranks: what SQL's `percentile_cont` gives,
    so the store-side reports and the batch engines agree."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
