"""Scheduling: allowed hours across midnight and in two time zones, daily caps with spill-over."""

from __future__ import annotations

import datetime as dt
import random
import zoneinfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tests.support.notify import make_campaign
from transforms.notify.jobs import finish_jobs, keys_of, with_job_ids
from transforms.notify.schedule import Schedule, assign_days, day_bounds

UTC = dt.timezone.utc
SHANGHAI, NEW_YORK = zoneinfo.ZoneInfo("Asia/Shanghai"), zoneinfo.ZoneInfo("America/New_York")


def local(day: dt.date, hh: int, mm: int, zone) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hh, mm), tzinfo=zone)


def test_quiet_hours_across_midnight_shanghai():
    s = Schedule("Asia/Shanghai", dt.time(21), dt.time(8))
    start, end = s.window(dt.date(2026, 12, 1))
    assert start == dt.datetime(2026, 12, 1, 0, 0, tzinfo=UTC) and end == dt.datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
    assert s.allowed(start) and s.allowed(end)  # both ends are allowed hours
    day = dt.date(2026, 12, 1)
    assert s.allowed(local(day, 20, 59, SHANGHAI)) and not s.allowed(local(day, 21, 1, SHANGHAI))
    assert not s.allowed(local(day, 23, 30, SHANGHAI)) and not s.allowed(local(day, 3, 0, SHANGHAI))
    assert not s.allowed(local(day, 7, 59, SHANGHAI)) and s.allowed(local(day, 8, 0, SHANGHAI))


def test_quiet_hours_within_one_night_give_a_window_across_midnight():
    s = Schedule("Asia/Shanghai", dt.time(1), dt.time(6))  # quiet 01:00-06:00 only
    start, end = s.window(dt.date(2026, 12, 1))
    assert start.astimezone(SHANGHAI) == local(dt.date(2026, 12, 1), 6, 0, SHANGHAI)
    assert end.astimezone(SHANGHAI) == local(dt.date(2026, 12, 2), 1, 0, SHANGHAI)
    assert s.allowed(local(dt.date(2026, 12, 1), 23, 59, SHANGHAI)) and s.allowed(end)
    assert not s.allowed(local(dt.date(2026, 12, 2), 1, 1, SHANGHAI))
    assert s.local_day(local(dt.date(2026, 12, 2), 0, 30, SHANGHAI)) == dt.date(2026, 12, 1)


def test_two_time_zones_and_daylight_saving():
    shanghai = Schedule("Asia/Shanghai", dt.time(22), dt.time(7))
    new_york = Schedule("America/New_York", dt.time(22), dt.time(7))
    day = dt.date(2026, 12, 1)
    assert shanghai.window(day)[0] == dt.datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # 07:00 UTC+8
    assert new_york.window(day)[0] == dt.datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # 07:00 UTC-5
    assert new_york.window(day)[1] == dt.datetime(2026, 12, 2, 3, 0, tzinfo=UTC)  # 22:00 UTC-5
    # New York moves to UTC-4 on 2026-03-08: the same local window starts an hour earlier in UTC.
    assert new_york.window(dt.date(2026, 3, 7))[0].hour == 12 and new_york.window(dt.date(2026, 3, 8))[0].hour == 11
    for s, zone in ((shanghai, SHANGHAI), (new_york, NEW_YORK)):
        for d in (dt.date(2026, 3, 7), dt.date(2026, 3, 8), dt.date(2026, 11, 1), day):
            a, b = s.window(d)
            assert s.allowed(a) and s.allowed(b) and a.astimezone(zone).time() == dt.time(7)
            assert b.astimezone(zone).time() == dt.time(22) and not s.allowed(b + dt.timedelta(minutes=1))


def test_vectorised_windows_match():
    s = Schedule("America/New_York", dt.time(21), dt.time(8))
    days = np.array([20424, 20423, 20424, 20520], np.int32)  # days since 1970
    opens, closes = s.windows_us(days)
    for d, a, b in zip(days, opens, closes):
        start, end = s.window(dt.date(1970, 1, 1) + dt.timedelta(days=int(d)))
        assert a == int(start.timestamp()) * 1_000_000 and b == int(end.timestamp()) * 1_000_000


def _keys(n: int, seed: int = 1) -> np.ndarray:
    rng = random.Random(seed)
    return np.array([rng.randbytes(16) for _ in range(n)], "S16")


def test_daily_cap_spills_in_key_order_and_is_stable():
    keys = _keys(10)
    bounds = day_bounds(keys, 3)
    days = assign_days(keys, bounds)
    assert np.bincount(days).tolist() == [3, 3, 3, 1]
    order = np.argsort(keys)
    assert days[order].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]  # ordered by key: the first three first
    shuffled = np.random.default_rng(5).permutation(10)
    assert assign_days(keys[shuffled], day_bounds(keys[shuffled], 3)).tolist() == days[shuffled].tolist()
    assert assign_days(keys[:4], bounds).tolist() == days[:4].tolist()  # any batch finds its day alone


def test_daily_cap_counts_days_already_used():
    keys = _keys(7)
    first = dt.date(2026, 12, 1)
    used = {first: 2, first + dt.timedelta(days=1): 5}  # day 2 is full already
    days = assign_days(keys, day_bounds(keys, 4, used, first))
    assert np.bincount(days, minlength=4).tolist() == [2, 0, 4, 1]


def test_jobs_are_scheduled_inside_allowed_hours_with_caps():
    campaign = make_campaign(
        daily_cap={"sms": 10, "call": 10, "announcement": 10},
        timezone="America/New_York",
        operator_timezone="America/New_York",  # an operator off Beijing time says so (docs/notify.md)
        quiet_hours={"start": "20:30", "end": "09:15"},
    )
    jobs = pa.table(
        {
            "line_id": [f"L{i:03d}" for i in range(25)],
            "msisdn": ["13800138000"] * 25,
            "line_type": ["MOBILE"] * 25,
            "region": ["110105"] * 25,
            "channel": ["sms"] * 25,
            "route": ["PRIMARY"] * 25,
        }
    )
    jobs = with_job_ids(jobs, campaign.campaign_id, 1, "sms")
    first = dt.date(2026, 12, 1)
    schedule = Schedule.of(campaign)
    table = finish_jobs(
        jobs, "sms", campaign, 1, schedule, day_bounds(keys_of(jobs.column("_key")), 10, {}, first), first
    )
    rows = sorted(table.to_pylist(), key=lambda r: r["job_id"])
    assert [r["send_day"] for r in rows] == [first] * 10 + [first + dt.timedelta(days=1)] * 10 + [
        first + dt.timedelta(days=2)
    ] * 5
    for r in rows:
        assert schedule.allowed(r["not_before"]) and schedule.allowed(r["not_after"])
        assert r["not_before"].astimezone(NEW_YORK).time() == dt.time(9, 15)
        assert r["not_after"].astimezone(NEW_YORK).time() == dt.time(20, 30)
        assert r["not_before"].astimezone(NEW_YORK).date() == r["send_day"]
    assert pc.max(table.column("send_day")).as_py() == dt.date(2026, 12, 3)
