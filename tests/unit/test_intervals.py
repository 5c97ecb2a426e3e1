"""Confidence intervals of the funnel's conversion rates."""

from __future__ import annotations


def test_wilson_intervals_stay_within_0_and_1_and_narrow_with_more_leads() -> None:
    from qualify.domain.statistics import wilson_interval

    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(0, 10)  # type: ignore[misc]
    assert low == 0.0 and 0.2 < high < 0.35
    assert wilson_interval(10, 10)[1] == 1.0  # type: ignore[index]
    wide, narrow = wilson_interval(5, 10), wilson_interval(500, 1000)
    assert wide[0] < 0.5 < wide[1] and narrow[1] - narrow[0] < (wide[1] - wide[0]) / 5  # type: ignore[index]
    assert wilson_interval(50, 100) == [0.4038, 0.5962]
