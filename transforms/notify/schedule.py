"""When notices go out: allowed hours in the campaign's time zone, and daily caps.

Beam-free. Each send day has one allowed window, from the end of the quiet
hours to their next start, in local time: quiet hours 21:00-08:00 give
08:00-21:00 the same day; quiet hours 01:00-06:00 give 06:00 to 01:00 the next
day. ``not_before`` is the window's start and ``not_after`` its end (the end
counts as allowed, the quiet hours begin after it). Windows are computed with
zoneinfo, so they follow daylight saving time where the zone has it.

Caps: jobs of one channel are ordered by job id (a stable hash, so the order
is stable and spreads regions and line types evenly); the first ``cap`` go on
the first day, the next on the following day, and so on. Days already holding
jobs of the same campaign (from the history) have that much less room.
:func:`day_bounds` turns the 16-byte keys of a channel's jobs into the first key
of each new day, and :func:`assign_days` places any batch of jobs with a binary
search, so the jobs themselves never need a global sort. The engines do not
gather every key for it: :mod:`transforms.notify.day_bounds` finds the same
bounds in two passes (a histogram of the keys, then the keys of a few bins);
:func:`day_bounds` is the reference it is tested against.

Late sends: the days the caps need must end by the wave's
:meth:`~transforms.notify.campaign.Campaign.send_limit` (the deadline, or the
day before the next wave starts); :func:`check_spill` refuses a plan whose
caps push jobs past it, in one line, unless the person planning allowed late
sends (``backfill notify --allow-late-sends``).

    >>> s = Schedule("Asia/Shanghai", dt.time(21), dt.time(8))
    >>> [t.isoformat() for t in s.window(dt.date(2026, 12, 1))]
    ['2026-12-01T00:00:00+00:00', '2026-12-01T13:00:00+00:00']
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import zoneinfo
from typing import Mapping

import numpy as np

from transforms.notify.campaign import CampaignError, SendLimit

__all__ = ["Schedule", "day_bounds", "assign_days", "check_spill", "last_day", "EPOCH", "KEY_DTYPE"]

EPOCH = dt.date(1970, 1, 1)
KEY_DTYPE = "S16"  # the first 16 bytes of a job id's sha256; bytes order == job id order
UTC = dt.timezone.utc


@dataclasses.dataclass(frozen=True)
class Schedule:
    timezone: str
    quiet_start: dt.time
    quiet_end: dt.time

    @classmethod
    def of(cls, campaign) -> "Schedule":
        return cls(campaign.timezone, campaign.quiet_start, campaign.quiet_end)

    @functools.lru_cache(maxsize=4096)
    def window(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """(not_before, not_after) in UTC of the allowed window that opens on ``day``."""
        zone = zoneinfo.ZoneInfo(self.timezone)
        opens = dt.datetime.combine(day, self.quiet_end, tzinfo=zone)
        close_day = day if self.quiet_start > self.quiet_end else day + dt.timedelta(days=1)
        closes = dt.datetime.combine(close_day, self.quiet_start, tzinfo=zone)
        return opens.astimezone(UTC), closes.astimezone(UTC)

    def local_day(self, moment: dt.datetime) -> dt.date:
        """The send day whose window holds ``moment`` (an aware datetime)."""
        local = moment.astimezone(zoneinfo.ZoneInfo(self.timezone))
        if self.quiet_start < self.quiet_end and local.time() <= self.quiet_start:
            return local.date() - dt.timedelta(days=1)  # the window opened the day before
        return local.date()

    def allowed(self, moment: dt.datetime) -> bool:
        """True when ``moment`` is inside the allowed hours (the window's end included)."""
        t = moment.astimezone(zoneinfo.ZoneInfo(self.timezone)).time()
        if self.quiet_start > self.quiet_end:  # quiet across midnight
            return self.quiet_end <= t <= self.quiet_start
        return t >= self.quiet_end or t <= self.quiet_start

    def windows_us(self, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised :meth:`window`: days as int32 days since 1970 -> microseconds since 1970."""
        distinct, inverse = np.unique(days, return_inverse=True)
        opens = np.empty(len(distinct), np.int64)
        closes = np.empty(len(distinct), np.int64)
        for i, d in enumerate(distinct):
            a, b = self.window(EPOCH + dt.timedelta(days=int(d)))
            opens[i], closes[i] = _micros(a), _micros(b)
        return opens[inverse], closes[inverse]


def _micros(moment: dt.datetime) -> int:
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def day_bounds(
    keys: np.ndarray, cap: int, used: Mapping[dt.date, int] | None = None, first_day: dt.date | None = None
) -> np.ndarray:
    """The first key of each day after the first, for jobs ordered by key.

    Day ``k`` (counted from ``first_day``) takes ``cap`` minus the jobs the
    history already holds for it; a full day takes none. Returns the keys at
    the cumulative capacities, so ``assign_days(key, bounds)`` is the day of
    any job. Keys must be unique.
    """
    if cap < 1:
        raise ValueError("cap must be at least 1")
    used = used or {}
    ordered = _sorted(np.asarray(keys, KEY_DTYPE))
    bounds, total, k = [], 0, 0
    while True:
        day = first_day + dt.timedelta(days=k) if first_day else None
        total += max(cap - used.get(day, 0), 0) if day is not None else cap
        if total >= len(ordered):
            break
        bounds.append(ordered[total])
        k += 1
    return np.array(bounds, KEY_DTYPE)


def _sorted(keys: np.ndarray) -> np.ndarray:
    """Keys in byte order; sorting 64-bit integers is ~10x faster than 16-byte strings."""
    if len(keys) < 2:
        return keys.copy()
    words = np.frombuffer(np.ascontiguousarray(keys).tobytes(), ">u8").reshape(-1, 2)
    order = np.argsort(words[:, 0], kind="stable")
    high = words[order, 0]
    if (high[1:] == high[:-1]).any():  # equal first halves (about 1 in 10^8 pairs): sort on both
        order = np.lexsort((words[:, 1], words[:, 0]))
    return keys[order]


def assign_days(keys: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Day offset of each job: how many day bounds its key has reached."""
    return np.searchsorted(bounds, np.asarray(keys, KEY_DTYPE), side="right").astype(np.int32)


def last_day(first_day: dt.date, bounds: np.ndarray) -> dt.date:
    """The last send day of jobs placed with ``bounds`` (one bound per day after the first)."""
    return first_day + dt.timedelta(days=len(bounds))


def check_spill(
    channel: str, jobs: int, cap: int, first_day: dt.date, bounds: np.ndarray, limit: SendLimit | None
) -> None:
    """Refuse, in one line, caps that push a channel's jobs past the wave's send limit (None: allowed)."""
    if limit is None or not jobs:
        return
    last = last_day(first_day, bounds)
    if last <= limit.last_day:
        return
    days = (last - first_day).days + 1
    raise CampaignError(
        f"campaign {limit.source}: daily_cap.{channel}: {jobs:,} {channel} jobs at {cap:,} a day need {days} send "
        f"days, {first_day} to {last}, past {limit.last_day} ({limit.reason}); raise daily_cap.{channel}, "
        "or pass --allow-late-sends"
    )
