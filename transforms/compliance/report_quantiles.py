"""Exact median and 90th percentile of the time to register, without gathering every value in one place.

The times (microseconds from a line's first notice to its registration) are
grouped by whole hour; the count per hour (the ``hours_to_register`` fact) says
which hour holds each order statistic a quantile needs, so only the values of
those few hours are ever sorted, one hour at a time:

    wanted = ranks(n)                                   # 0-based order statistics of n values
    picked = pick(values_of_hour, first_rank_of_hour, wanted)   # {rank: microseconds}, per hour
    time = quantile_hours(n, picked)                    # (median, p90) in hours, rounded to 3 places

The interpolation is numpy's default ("linear", Hyndman & Fan's 7th method),
computed the way ``numpy.quantile`` computes it, so the figures equal those of
``numpy.quantile`` over every value.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

__all__ = ["QUANTILES", "ranks", "first_ranks", "pick", "quantile_hours"]

QUANTILES = (0.5, 0.9)
_HOUR_US = 3_600_000_000.0


def _neighbours(n: int, q: float) -> tuple[int, int, np.float64]:
    """The two order statistics numpy interpolates between for quantile ``q`` of ``n`` values, and the weight."""
    virtual = np.float64(n - 1) * np.float64(q)
    if virtual >= n - 1:
        return n - 1, n - 1, np.float64(0.0)
    below = int(math.floor(virtual))
    return below, below + 1, np.float64(virtual - below)


def ranks(n: int) -> list[int]:
    """The 0-based order statistics the quantiles of ``n`` values need."""
    if n <= 0:
        return []
    return sorted({r for q in QUANTILES for r in _neighbours(n, q)[:2]})


def first_ranks(per_hour: Mapping[int, int]) -> dict[int, int]:
    """The rank of the first value of each hour (values of earlier hours are smaller)."""
    out, seen = {}, 0
    for hour in sorted(per_hour):
        out[hour] = seen
        seen += int(per_hour[hour])
    return out


def pick(values: np.ndarray, first_rank: int, wanted: list[int]) -> dict[int, int]:
    """The wanted order statistics that fall among one hour's ``values``: {rank: value}."""
    inside = [r for r in wanted if first_rank <= r < first_rank + len(values)]
    if not inside:
        return {}
    ordered = np.sort(np.asarray(values, np.int64), kind="stable")
    return {r: int(ordered[r - first_rank]) for r in inside}


def _lerp(a: np.float64, b: np.float64, t: np.float64) -> np.float64:
    """numpy's interpolation between two neighbours (exact at both ends)."""
    diff = b - a
    return b - diff * (np.float64(1.0) - t) if t >= 0.5 else a + diff * t


def quantile_hours(n: int, picked: Mapping[int, int]) -> tuple[float | None, float | None]:
    """Median and 90th percentile in hours, rounded to 3 places (None when nothing was timed)."""
    if n <= 0:
        return None, None
    out = []
    for q in QUANTILES:
        below, above, weight = _neighbours(n, q)
        a, b = (np.float64(picked[r]) / _HOUR_US for r in (below, above))
        out.append(round(float(_lerp(a, b, weight)), 3))
    return out[0], out[1]
