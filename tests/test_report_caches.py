"""The report's shortcuts give what the long ways give: the shipped stdnum division table, the report's own bucket
of a line id, the first row per key, small batches gathered before they are bucketed, charts drawn by a forked
process. Run: .venv/bin/python -m pytest tests/test_report_caches.py -q
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import time
from importlib import resources

import numpy as np
import pyarrow as pa
import pytest

import schemas
from pipelines.io.report_buckets import BucketStore, read_refs
from transforms.scan.keyed_hash import bucket_of
from pipelines.render import report_charts
from transforms.compliance.report_groups import _codes, first_per_key
from transforms.scan import crossrecord, divisions


def test_the_shipped_stdnum_table_is_the_one_parsed_from_the_installed_python_stdnum():
    shipped = json.loads(resources.files(schemas).joinpath(divisions.STDNUM_CACHE).read_text("utf-8"))
    parsed = divisions.parse_stdnum_divisions()
    # a new python-stdnum: write schemas/stdnum_cn_loc.json again with divisions.stdnum_cache_text()
    assert shipped["loc_sha256"] == divisions.stdnum_loc_digest(), "python-stdnum changed: regenerate the cache"
    assert shipped["divisions"] == parsed and len(parsed) > 6000
    divisions.stdnum_divisions.cache_clear()
    try:
        assert divisions.stdnum_divisions() == parsed
        assert list(divisions.stdnum_divisions()) == list(parsed)
    finally:
        divisions.stdnum_divisions.cache_clear()


def test_a_table_of_another_loc_file_is_not_used(monkeypatch):
    monkeypatch.setattr(divisions, "stdnum_loc_digest", lambda: "0" * 64)
    assert divisions._cached_divisions() is None
    divisions.stdnum_divisions.cache_clear()
    try:
        assert divisions.stdnum_divisions() == divisions.parse_stdnum_divisions()
    finally:
        divisions.stdnum_divisions.cache_clear()


def _ids(rng: random.Random, n: int) -> list:
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.05:
            out.append(None)
        elif kind < 0.1:
            out.append("x" * rng.randint(0, 90))  # empty, and past one cipher block's 64 bytes
        elif kind < 0.2:
            out.append("号码" * rng.randint(1, 12))
        else:
            out.append(f"L{rng.randint(0, 10**9):010d}")
    return out


@pytest.mark.parametrize("n_buckets", [1, 2, 3, 4, 7, 64])
def test_the_reports_bucket_of_a_line_is_the_shuffles(n_buckets):
    import pipelines.io.report_buckets as report_buckets

    assert report_buckets.bucket_of is crossrecord.bucket_of is bucket_of  # one function for every shuffle
    rng = random.Random(n_buckets)
    values = pa.array(_ids(rng, 3000), pa.string())
    whole = bucket_of(values, n_buckets)
    assert whole.min() >= 0 and whole.max() < n_buckets
    chunked = pa.chunked_array([values.slice(0, 1000), values.slice(1000)])
    assert np.array_equal(bucket_of(chunked, n_buckets), whole)
    assert np.array_equal(bucket_of(values.slice(17, 500), n_buckets), whole[17:517])


def _first_per_key_by_hand(table: pa.Table, key: str) -> pa.Table:
    codes, groups = _codes(table[key])
    first = np.full(len(groups), len(codes), np.int64)
    np.minimum.at(first, codes, np.arange(len(codes), dtype=np.int64))
    return table.take(pa.array(np.sort(first)))


def test_the_first_row_per_key_is_the_smallest_row_of_each_key():
    rng = random.Random(7)
    for _ in range(2000):
        n = rng.randint(0, 40)
        values = [rng.choice([None, "a", "b", "c", "d", str(rng.randint(0, 60))]) for _ in range(n)]
        table = pa.table({"k": pa.array(values, pa.string()), "row": pa.array(range(n), pa.int64())})
        if n and rng.random() < 0.3:
            table = pa.concat_tables([table.slice(0, n // 2), table.slice(n // 2)])
        assert first_per_key(table, "k").equals(_first_per_key_by_hand(table, "k")), values


def _buckets_of_each_batch(batches: list[pa.Table], n: int) -> dict[int, pa.Table]:
    """Each batch split alone (as before small batches were gathered)."""
    out: dict[int, list[pa.Table]] = {}
    for batch in batches:
        buckets = bucket_of(batch["line_id"], n)
        for b in range(n):
            out.setdefault(b, []).append(batch.filter(pa.array(buckets == b)))
    return {b: pa.concat_tables(parts) for b, parts in out.items()}


@pytest.mark.parametrize("spill", [True, False])
def test_small_batches_gathered_keep_each_buckets_rows_in_order(tmp_path, spill, monkeypatch):
    import pipelines.io.report_buckets as report_buckets

    monkeypatch.setattr(report_buckets, "GATHER_ROWS", 250)
    rng = random.Random(3)
    batches = []
    for b in range(9):
        n = rng.randint(0, 120)
        batches.append(pa.table({"line_id": pa.array(_ids(rng, n), pa.string()), "batch": pa.array([b] * n)}))
    store = BucketStore(3, str(tmp_path) if spill else None)
    for batch in batches:
        store.add("history", batch, "line_id")
    want = _buckets_of_each_batch(batches, 3)
    for bucket in range(3):
        got = read_refs(store.refs(bucket)) if spill else store.tables(bucket)
        expected = want[bucket]
        if expected.num_rows == 0:
            assert "history" not in got
        else:
            assert got["history"].equals(expected.cast(got["history"].schema))


def _chart_tables() -> dict[str, pa.Table]:
    days = [dt.date(2026, 12, 1) + dt.timedelta(days=i) for i in range(10)]
    return {
        "completion": pa.table({"needed": [100]}),
        "by_day": pa.table(
            {"day": days, "registrations": list(range(10)), "completion_rate": [i / 20 for i in range(10)]}
        ),
        "funnel": pa.table(
            {
                "wave": [1, 1, 2],
                "channel": ["sms", "announcement", "call"],
                "sent": [80, 3, 20],
                "delivered": [70, None, 15],
                "failed": [10, None, 5],
                "registered_after": [30, None, 8],
            }
        ),
        "by_variant": pa.table(
            {
                "wave": [1, 1],
                "variant": ["a", "b"],
                "conversion": [0.3, 0.4],
                "ci_low": [0.2, 0.3],
                "ci_high": [0.4, 0.5],
                "significant": [False, True],
            }
        ),
        "by_province": pa.table(
            {
                "province": ["110000", "310000"],
                "province_name": ["北京市", "上海市"],
                "remaining": [40, 30],
                "complete": [20, 10],
            }
        ),
        "backlog_by_reason": pa.table(
            {"kind": ["reason", "reason"], "code": ["DOC_MISSING", "NAME_PLACEHOLDER"], "lines": [5, 3]}
        ),
    }


def test_charts_drawn_by_a_forked_process_are_the_same_bytes():
    tables, deadline, waves = _chart_tables(), dt.date(2026, 12, 8), [(1, dt.date(2026, 12, 2))]
    here = report_charts.charts(tables, deadline, waves)
    assert set(here) == set(report_charts.CHARTS) and all(here.values())
    aside = report_charts.draw_aside(tables, deadline, waves, ("completion_curve", "funnel"))
    rest = report_charts.charts(tables, deadline, waves, skip=aside.names)
    assert set(rest) == {"variants", "provinces", "backlog"}
    assert {**rest, **aside.result()} == here


def test_charts_a_forked_process_failed_to_draw_are_drawn_here(monkeypatch):
    tables, deadline, waves = _chart_tables(), None, []
    here = report_charts.charts(tables, deadline, waves, skip=("provinces", "backlog", "variants"))
    real = report_charts.charts

    def broken(*args, **kwargs):  # what the forked process calls: it fails there
        raise RuntimeError("no")

    monkeypatch.setattr(report_charts, "charts", broken)
    aside = report_charts.draw_aside(tables, deadline, waves, ("completion_curve", "funnel"))
    monkeypatch.setattr(report_charts, "charts", real)  # in this process: the failure was the forked one's
    assert aside.result() == here


def test_charts_of_a_stuck_forked_process_are_drawn_here_after_the_time_limit(monkeypatch):
    tables, deadline, waves = _chart_tables(), None, []
    here = report_charts.charts(tables, deadline, waves, skip=("provinces", "backlog", "variants"))
    real = report_charts.charts

    def stuck(*args, **kwargs):  # what the forked process calls: it never returns (a lock held at fork)
        time.sleep(3600)

    monkeypatch.setattr(report_charts, "charts", stuck)
    monkeypatch.setattr(report_charts, "ASIDE_SECONDS", 1)
    aside = report_charts.draw_aside(tables, deadline, waves, ("completion_curve", "funnel"))
    pid = aside._pid
    monkeypatch.setattr(report_charts, "charts", real)
    started = time.monotonic()
    assert aside.result() == here
    assert time.monotonic() - started < 30
    with pytest.raises(ChildProcessError):  # killed and reaped: nothing left behind
        os.waitpid(pid, 0)
