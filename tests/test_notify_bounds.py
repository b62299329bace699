"""The send-day bounds in two passes (transforms/notify/day_bounds.py) against ``schedule.day_bounds`` on
every key: random keys of many sizes, bins filled by equal prefixes, keys split over parts, caps of 1 to
more than the jobs, full and partial used days, with and without a first day; the batch steps both engines
call; and the Beam job (BuildNotificationJobs, FnApiRunner) placing a few thousand jobs on the days the
reference gives."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that

from tests.support.notify import classified_table, history_table, line, make_campaign
from tests.support.rows import RUNNER
from transforms.notify.batch_steps import add_histograms, bounds_from_wanted, channel_histograms, send_day_bins
from transforms.notify.batch_steps import send_day_bounds, wanted_keys
from transforms.notify.campaign import CampaignError
from transforms.notify.composite import BuildNotificationJobs
from transforms.notify.day_bounds import BINS, bounds_from_bins, in_bins, key_bins, key_histogram, wanted_bins
from transforms.notify.jobs import job_ids, keys_of
from transforms.notify.schedule import assign_days, day_bounds

FIRST = dt.date(2026, 12, 1)


def random_keys(rng, n: int) -> np.ndarray:
    return np.frombuffer(rng.bytes(16 * n), "S16").copy()


def clustered_keys(rng, n: int, prefixes=(b"\x12\x34", b"\x00\x00", b"\xff\xff")) -> np.ndarray:
    """``n`` random keys, most of them sharing one of a few 2-byte prefixes (a few bins filled heavily)."""
    raw = np.frombuffer(rng.bytes(16 * n), np.uint8).reshape(n, 16).copy()
    pick = rng.integers(0, len(prefixes) + 1, n)  # the last: no shared prefix
    for i, prefix in enumerate(prefixes):
        raw[pick == i, :2] = np.frombuffer(prefix, np.uint8)
    return np.frombuffer(raw.tobytes(), "S16").copy()


def two_pass(parts: list[np.ndarray], cap: int, used, first_day) -> tuple[np.ndarray, int]:
    """(the bounds, the keys gathered), as the engines do: a histogram per part, summed; the wanted bins'
    keys filtered per part, gathered; the bounds picked."""
    hist = np.zeros(BINS, np.int64)
    for part in parts:
        hist += key_histogram(part)
    wanted = wanted_bins(hist, cap, used, first_day)
    gathered = [part[in_bins(part, wanted.needed)] for part in parts]
    few = np.concatenate(gathered) if gathered else np.array([], "S16")
    rng = np.random.default_rng(len(few))
    return bounds_from_bins(few[rng.permutation(len(few))], wanted), len(few)  # any order


def split(keys: np.ndarray, n_parts: int, rng) -> list[np.ndarray]:
    cuts = np.sort(rng.integers(0, len(keys) + 1, max(n_parts - 1, 0)))
    return np.split(keys, cuts)


USED = [
    None,
    {FIRST: 10**9},  # the first day full
    {FIRST + dt.timedelta(days=1): 10**9, FIRST + dt.timedelta(days=2): 1},  # a full day, then a partial one
    {FIRST + dt.timedelta(days=k): 3 * k for k in range(0, 40, 3)},  # partial days, some full for small caps
    {FIRST - dt.timedelta(days=1): 5, FIRST + dt.timedelta(days=3): 7},  # a day before the first: ignored
]


@pytest.mark.parametrize("n", [0, 1, 2, 17, 1000, 20_000])
@pytest.mark.parametrize("make", [random_keys, clustered_keys])
def test_two_passes_equal_day_bounds_on_all_keys(n, make):
    rng = np.random.default_rng(n * 7 + (make is clustered_keys))
    keys = make(rng, n)
    for cap in sorted({1, 3, 97, max(n // 3, 1), max(n, 1), n + 5, 10**9}):
        if cap == 1 and n > 2000:
            continue  # a bound per job: see the next test
        for used in USED:
            for first_day in (FIRST, None):
                expected = day_bounds(keys, cap, used, first_day)
                for n_parts in (1, 4):
                    got, gathered = two_pass(split(keys, n_parts, rng), cap, used, first_day)
                    assert got.dtype == expected.dtype and got.tolist() == expected.tolist(), (n, cap, used)
                    assert gathered <= n


def test_a_cap_of_one_gathers_every_key_and_still_agrees():
    rng = np.random.default_rng(5)
    keys = clustered_keys(rng, 3000)
    used = {FIRST + dt.timedelta(days=k): 1 for k in range(0, 3000, 2)}  # every other day full
    expected = day_bounds(keys, 1, used, FIRST)
    got, gathered = two_pass(split(keys, 5, rng), 1, used, FIRST)
    assert got.tolist() == expected.tolist() and len(expected) == 4499  # 1,500 full days among the first 3,000
    assert gathered == 3000


def test_few_keys_are_gathered_from_random_keys():
    rng = np.random.default_rng(11)
    keys = random_keys(rng, 400_000)
    got, gathered = two_pass(split(keys, 8, rng), 50_000, {}, FIRST)
    assert got.tolist() == day_bounds(keys, 50_000, {}, FIRST).tolist() and len(got) == 7
    assert gathered <= 7 * 3 * 400_000 // BINS  # about N / 65,536 a bound (here 6)


def test_bins_follow_the_key_order():
    rng = np.random.default_rng(3)
    keys = np.sort(clustered_keys(rng, 5000))
    bins = key_bins(keys)
    assert bins.dtype == np.uint16 and (np.diff(bins.astype(np.int64)) >= 0).all()
    assert bins.tolist() == [
        int(k[0]) * 256 + int(k[1]) for k in np.frombuffer(keys.tobytes(), np.uint8).reshape(-1, 16)
    ]
    assert key_bins(np.array([], "S16")).tolist() == [] and key_histogram(np.array([], "S16")).sum() == 0


def test_missing_keys_of_a_wanted_bin_are_refused():
    rng = np.random.default_rng(8)
    keys = clustered_keys(rng, 2000)
    wanted = wanted_bins(key_histogram(keys), 300)
    few = keys[in_bins(keys, wanted.needed)]
    with pytest.raises(ValueError, match="every key of the wanted bins"):
        bounds_from_bins(few[1:], wanted)
    assert bounds_from_bins(keys, wanted).tolist() == day_bounds(keys, 300).tolist()  # other bins may be there


def test_batch_steps_by_channel_with_history_loads_and_the_spill_check():
    rng = np.random.default_rng(21)
    keys = {"sms": random_keys(rng, 5000), "call": clustered_keys(rng, 700), "announcement": random_keys(rng, 3)}
    caps = {"sms": 400, "call": 90, "announcement": 1}
    used = [{"used": {"sms|2026-12-01": 400, "sms|2026-12-03": 150}}, {"used": {"call|2026-12-02": 89}}]
    loads = {"sms": {FIRST: 400, FIRST + dt.timedelta(days=2): 150}, "call": {FIRST + dt.timedelta(days=1): 89}}
    expected = {c: day_bounds(k, caps[c], loads.get(c), FIRST) for c, k in keys.items()}
    hists: dict = {}
    parts = [{c: k[i::3] for c, k in keys.items()} for i in range(3)]
    for part in parts:
        add_histograms(hists, channel_histograms(part))
    wanted = send_day_bins(hists, used, caps, FIRST)
    needed = {c: w.needed for c, w in wanted.items()}
    found: dict = {}
    for part in parts:
        for c, few in wanted_keys(part, needed).items():
            found[c] = np.concatenate([found.get(c, np.array([], "S16")), few])
    got = bounds_from_wanted(found, wanted)
    assert {c: b.tolist() for c, b in got.items()} == {c: b.tolist() for c, b in expected.items()}
    assert {c: b.tolist() for c, b in send_day_bounds(keys, used, caps, FIRST).items()} == {
        c: b.tolist() for c, b in expected.items()
    }
    limit = make_campaign().send_limit(1)  # the day before wave 2 (2026-12-15)
    with pytest.raises(CampaignError, match=r"daily_cap\.sms: 5,000 sms jobs at 400 a day need 13 send days"):
        send_day_bins(hists, used, caps, FIRST + dt.timedelta(days=3), limit)
    send_day_bins(hists, used, caps, FIRST, limit)  # fits: 14 days, 2026-12-01 (full) to 2026-12-14


def test_the_beam_job_places_a_few_thousand_jobs_on_the_reference_days():
    caps = {"sms": 97, "call": 13, "announcement": 1}
    campaign = make_campaign(daily_cap=caps)
    rows = [
        line(f"L{i:05d}", f"010{i:08d}", "FIXED") if i % 11 == 0 else line(f"L{i:05d}", f"139{i:08d}")
        for i in range(3000)
    ]
    rows += [line(f"R{i}", f"137{i:08d}", region="310115") for i in range(5)]  # a second region
    earlier = [(f"H{i}", "sms", FIRST) for i in range(97)]  # day 1 of sms full
    earlier += [(f"H{i}", "sms", FIRST + dt.timedelta(days=2)) for i in range(100, 140)]  # day 3 partly
    earlier += [(f"H{i}", "call", FIRST + dt.timedelta(days=1)) for i in range(200, 205)]
    history = history_table(
        [
            {"job_id": f"h-{lid}-{c}", "line_id": lid, "channel": c, "campaign_id": "rn-test", "wave": 1, "send_day": d}
            for lid, c, d in earlier
        ]
    )
    loads: dict = {}
    for _, c, d in earlier:
        loads.setdefault(c, {}).setdefault(d, 0)
        loads[c][d] += 1
    targets = {
        "sms": [r["line_id"] for r in rows if r["line_type"] == "MOBILE"],
        "call": [r["line_id"] for r in rows if r["line_type"] == "FIXED"],
        "announcement": ["110105", "310115"],
    }
    expected = {}
    for channel, ids in targets.items():
        hex_ids, key = job_ids("rn-test", 1, channel, pa.array(ids))
        keys = keys_of(key)
        days = assign_days(keys, day_bounds(keys, caps[channel], loads.get(channel), FIRST))
        two, _ = two_pass(split(keys, 3, np.random.default_rng(1)), caps[channel], loads.get(channel), FIRST)
        assert two.tolist() == day_bounds(keys, caps[channel], loads.get(channel), FIRST).tolist()
        expected[channel] = sorted(zip(hex_ids.to_pylist(), days.tolist()))
    assert max(d for _, d in expected["sms"]) > 20 and max(d for _, d in expected["call"]) > 10

    def days_are(channel):
        def check(tables):
            got = sorted((r["job_id"], (r["send_day"] - FIRST).days) for t in tables for r in t.to_pylist())
            assert got == expected[channel], channel

        return check

    p = BeamTestPipeline(runner=RUNNER)
    tables = [classified_table(rows[i : i + 700]) for i in range(0, len(rows), 700)]
    inputs = {
        "lines": p | "Lines" >> beam.Create(tables).with_output_types(pa.Table),
        "history": p | "History" >> beam.Create([history]).with_output_types(pa.Table),
    }
    out = inputs | "Build" >> BuildNotificationJobs(campaign, 1, FIRST, n_buckets=3, allow_late_sends=True)
    for channel in ("sms", "call", "announcement"):
        assert_that(getattr(out, channel), days_are(channel), label=f"assert:{channel}")
    p.run().wait_until_finish()
