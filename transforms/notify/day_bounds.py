"""Send-day bounds without gathering every key: a two-pass exact selection (Beam-free).

:func:`transforms.notify.schedule.day_bounds` sorts every key of a channel to pick the keys at the
cumulative daily capacities; at 100M jobs that is 1.6 GB in one process. The same bounds, in two passes
over the parts of the jobs (each part of the work holds its own keys only):

    hist = key_histogram(keys)                               # pass 1, per part: keys by their first 16 bits
    wanted = wanted_bins(sum_of_hists, cap, used, first_day) # the bounds' ranks -> (bin, rank within the bin)
    few = keys[in_bins(keys, wanted.needed)]                 # pass 2, per part: the keys of the wanted bins
    bounds = bounds_from_bins(gathered_few, wanted)          # == day_bounds(all keys, cap, used, first_day)

A key's bin is the big-endian uint16 of its first two bytes, so bin order is key byte order: the key of
rank ``r`` lies in the bin where the cumulative counts pass ``r``, at rank ``r`` minus the keys of the earlier
bins within it. Only the wanted bins' keys are gathered and sorted: (number of send days) x (keys per bin),
about N / 65,536 per day bound for job keys (sha256 prefixes, spread evenly): 100M jobs over 500 days
gather about 760,000 keys (12 MB) instead of 100M (1.6 GB); a histogram is 65,536 counts per channel.
Exact for any keys (equal prefixes only make a bin fuller); :func:`day_bounds` stays the reference.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Mapping

import numpy as np

from transforms.notify.schedule import KEY_DTYPE, _sorted

__all__ = ["BINS", "Wanted", "key_bins", "key_histogram", "day_ranks", "wanted_bins", "in_bins", "bounds_from_bins"]

BINS = 1 << 16  # bins of the first 16 bits of a key


def key_bins(keys: np.ndarray) -> np.ndarray:
    """Each key's bin (``uint16``): the big-endian value of its first two bytes."""
    keys = np.ascontiguousarray(np.asarray(keys, KEY_DTYPE))
    if not len(keys):
        return np.empty(0, np.uint16)
    return keys.view(">u2").reshape(-1, 8)[:, 0].astype(np.uint16)


def key_histogram(keys: np.ndarray) -> np.ndarray:
    """Pass 1: the keys counted by bin (``BINS`` int64 counts); histograms of parts add up."""
    return np.bincount(key_bins(keys), minlength=BINS).astype(np.int64)


def day_ranks(
    n: int, cap: int, used: Mapping[dt.date, int] | None = None, first_day: dt.date | None = None
) -> np.ndarray:
    """The rank (0-based, in key order) of the first job of each day after the first, for ``n`` jobs: the
    loop of :func:`~transforms.notify.schedule.day_bounds` (a full day repeats the rank before it)."""
    if cap < 1:
        raise ValueError("cap must be at least 1")
    used = used or {}
    ranks, total, k = [], 0, 0
    while True:
        day = first_day + dt.timedelta(days=k) if first_day else None
        total += max(cap - used.get(day, 0), 0) if day is not None else cap
        if total >= n:
            break
        ranks.append(total)
        k += 1
    return np.array(ranks, np.int64)


@dataclasses.dataclass(frozen=True)
class Wanted:
    """Where a channel's day bounds lie: per bound its rank, its bin and its rank within the bin; the
    distinct bins (``needed``, sorted) and their keys' counts (``sizes``)."""

    ranks: np.ndarray
    bins: np.ndarray
    within: np.ndarray
    needed: np.ndarray
    sizes: np.ndarray


def wanted_bins(
    hist: np.ndarray, cap: int, used: Mapping[dt.date, int] | None = None, first_day: dt.date | None = None
) -> Wanted:
    """From a channel's summed histogram: the bounds' ranks (as :func:`day_ranks` for all its jobs) and where
    they lie. ``len(wanted.ranks)`` is the number of bounds, so the last send day is known before pass 2."""
    hist = np.asarray(hist, np.int64)
    ranks = day_ranks(int(hist.sum()), cap, used, first_day)
    ends = np.cumsum(hist)
    bins = np.searchsorted(ends, ranks, side="right").astype(np.int64)
    within = ranks - (ends[bins] - hist[bins])
    needed = np.unique(bins)
    return Wanted(ranks, bins, within, needed, hist[needed])


def in_bins(keys: np.ndarray, needed: np.ndarray) -> np.ndarray:
    """Pass 2: which of ``keys`` lie in the ``needed`` bins (a boolean mask)."""
    mask = np.zeros(BINS, bool)
    mask[np.asarray(needed, np.int64)] = True
    return mask[key_bins(keys)]


def bounds_from_bins(keys: np.ndarray, wanted: Wanted) -> np.ndarray:
    """The day bounds (as ``day_bounds`` returns them) from every key of the wanted bins (any order; keys of
    other bins may be there too). Raises ValueError when a wanted bin's keys are not all there."""
    ordered = _sorted(np.asarray(keys, KEY_DTYPE))
    bins = key_bins(ordered)
    starts = np.searchsorted(bins, wanted.needed, side="left")
    if not np.array_equal(np.searchsorted(bins, wanted.needed, side="right") - starts, wanted.sizes):
        raise ValueError("the gathered keys do not hold every key of the wanted bins")
    first = np.searchsorted(bins, wanted.bins, side="left")
    return np.asarray(ordered[first + wanted.within], KEY_DTYPE)
