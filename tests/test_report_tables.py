"""The report's small tables and inputs on made-up figures: variants and their statistics, funnel rows, regions and
provinces, the scan's data quality, the notify runs that sent, the previous report. Expected values are computed here
with textbook formulas and loops. Run:
.venv/bin/python -m pytest tests/test_report_tables.py -q
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.common import UserError
from pipelines.io.report_notify import NotifyOutput, check_campaign_found, latest_campaign_run, sending_runs, wave_sends
from pipelines.io.report_previous import previous_headline
from transforms.compliance.report_funnel import funnel_table
from transforms.compliance.report_groups import fact_table
from transforms.compliance.report_quality import scan_quality
from transforms.compliance.report_regions import by_province, by_region
from transforms.compliance.report_variants import two_proportion_p, variants_table, wilson_interval, wilson_low

DIVISIONS = "110000\t北京市\n110100\t市辖区\n110105\t朝阳区\n440000\t广东省\n440300\t深圳市\n440305\t南山区\n"


def _textbook_wilson(k: int, n: int) -> tuple[float, float]:
    z, p = 1.959963984540054, k / n
    spread = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return ((p + z**2 / (2 * n) - spread) / (1 + z**2 / n), (p + z**2 / (2 * n) + spread) / (1 + z**2 / n))


def test_variants_their_intervals_and_a_significant_difference():
    counts = {"A": (1000, 100), "B": (1000, 150), "C": (1000, 105)}
    fact = fact_table(
        "wave_variant",
        {
            "wave": [1, 1, 1],
            "variant": list(counts),
            "sent": [n for n, _ in counts.values()],
            "registered_after": [k for _, k in counts.values()],
        },
    )
    table = variants_table(fact, {1: [("A", 2.0), ("B", 1.0), ("C", 1.0)], 2: []}).to_pylist()
    assert [(r["variant"], r["control"], r["weight"]) for r in table] == [
        ("A", True, 2.0),
        ("B", False, 1.0),
        ("C", False, 1.0),
    ]
    for r in table:
        n, k = counts[r["variant"]]
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(_textbook_wilson(k, n), abs=1e-6)
    pooled = 250 / 2000
    z = (0.15 - 0.10) / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert table[1]["p_value"] == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(z / math.sqrt(2)))), rel=1e-9)
    assert table[1]["p_value"] < 0.025 and table[1]["significant"] is True  # Bonferroni: two comparisons
    assert table[2]["p_value"] > 0.025 and table[2]["significant"] is False
    assert table[0]["p_value"] is None and table[0]["significant"] is None
    assert table[1]["difference"] == pytest.approx(0.05)


def test_the_statistics_at_their_edges():
    assert wilson_interval(0, 0) == (None, None) and two_proportion_p(1, 0, 1, 5) is None
    assert two_proportion_p(0, 10, 0, 20) == 1.0 and two_proportion_p(5, 5, 9, 9) == 1.0
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0 < high < 0.35
    assert list(wilson_low([0, 3, 7], [0, 10, 7])) == pytest.approx(
        [0.0, wilson_interval(3, 10)[0], wilson_interval(7, 7)[0]]
    )
    variants = variants_table(
        fact_table("wave_variant", {"wave": [], "variant": [], "sent": [], "registered_after": []}),
        {1: [("A", 1), ("B", 1)]},
    )
    assert [(r["variant"], r["sent"], r["conversion"]) for r in variants.to_pylist()] == [
        ("A", 0, None),
        ("B", 0, None),
    ]


def test_a_funnel_row_per_wave_and_channel_planned_or_sent():
    fact = fact_table(
        "wave_channel",
        {
            "wave": [1, 1, 2],
            "channel": ["sms", "announcement", "call"],
            "sent": [10, 3, 4],
            "delivered": [6, 0, 2],
            "failed": [3, 0, 1],
            "fell_back_to_call": [2, 0, 0],
            "registered_after": [4, 0, 1],
        },
    )
    sends = {1: {"targeted": {"sms": 10, "call": 5, "announcement": 7}, "segments": 20, "cost": 0.9}}
    rows = {(r["wave"], r["channel"]): r for r in funnel_table(fact, sends).to_pylist()}
    assert list(rows) == [(1, "sms"), (1, "call"), (1, "announcement"), (2, "call")]
    sms = rows[(1, "sms")]
    assert (sms["targeted"], sms["sent"], sms["delivered"], sms["failed"], sms["no_receipt"]) == (10, 10, 6, 3, 1)
    assert (sms["fell_back_to_call"], sms["registered_after"], sms["conversion"]) == (2, 4, 0.4)
    assert (sms["segments"], sms["cost"], sms["cost_per_registration"]) == (20, 0.9, 0.225)
    assert rows[(1, "call")]["targeted"] == 5 and rows[(1, "call")]["sent"] == 0  # planned, none recorded
    assert rows[(1, "announcement")]["conversion"] is None and rows[(1, "announcement")]["targeted"] == 7
    assert rows[(2, "call")]["targeted"] is None and rows[(2, "call")]["segments"] is None


def test_regions_named_and_rolled_up_with_unknown_and_missing_codes_kept():
    fact = fact_table(
        "region",
        {
            "region": ["110105", "440305", "999999", "ABC", None],
            "needed": [10, 20, 5, 2, 1],
            "complete": [9, 5, 0, 1, 0],
            "registered": [9, 5, 0, 1, 0],
            "past_deadline": [0, 3, 1, 0, 1],
        },
    )
    regions = by_region(fact, DIVISIONS).to_pylist()
    assert [r["region"] for r in regions] == ["440305", "999999", "110105", "ABC", None]  # backlog 15, 5, 1, 1, 1
    named = {r["region"]: (r["region_name"], r["province"], r["province_name"]) for r in regions}
    assert named["110105"] == ("北京市朝阳区", "110000", "北京市") and named["440305"] == (
        "广东省深圳市南山区",
        "440000",
        "广东省",
    )
    assert (
        named["999999"] == (None, "990000", None)
        and named["ABC"] == (None, None, None)
        and named[None] == (None, None, None)
    )
    provinces = {p["province"]: p for p in by_province(by_region(fact, DIVISIONS), DIVISIONS).to_pylist()}
    assert provinces[None]["regions"] == 2 and provinces[None]["needed"] == 3 and provinces["440000"]["remaining"] == 15
    assert sum(p["needed"] for p in provinces.values()) == 38


def test_the_scans_data_quality_rows():
    summary = {
        "rows_in": 110,
        "classified": 100,
        "identity_status": {"COMPLETE": 60, "MISSING": 40},
        "reasons": {"NAME_MISSING": 30, "DOC_MISSING": 35},
        "flags": {"DOC_LINE_LIMIT": 2},
        "needs_registration": 40,
        "needs_review": 2,
        "dead_letter_reasons": {"BAD_DATE": 10},
    }
    rows = [(r["kind"], r["code"], r["lines"], r["share"]) for r in scan_quality(summary).to_pylist()]
    assert rows[:4] == [
        ("identity_status", "COMPLETE", 60, 0.6),
        ("identity_status", "MISSING", 40, 0.4),
        ("reason", "DOC_MISSING", 35, 0.35),
        ("reason", "NAME_MISSING", 30, 0.3),
    ]
    assert rows[-1] == ("dead_letter_reason", "BAD_DATE", 10, round(10 / 110, 6))
    assert scan_quality({}).num_rows == 2  # a scan without a summary: only the two "needs" rows, at zero


def _run(mode, campaign_id=None, wave=None, handed=0, **counts):
    run = {"mode": mode, "counts": {"handed_over": {"sms": handed}, **counts}}
    return {**run, "campaign": {"campaign_id": campaign_id, "wave": wave}} if campaign_id else run


def test_the_campaign_comes_from_the_runs_that_sent():
    outcomes = {"sms": 5, "call": 2, "not_in_wave": 1, "registered": 9}
    runs = [
        _run("files", "c1", 1, 8, outcomes=outcomes, segments=10, cost=0.45),
        _run("files", "c1", 1, 3, outcomes={"sms": 3}, segments=3, cost=0.1),  # a re-run: only the lines left
        {
            **_run("pubsub", "c1", 2, 4, outcomes={"sms": 4}),
            "campaign": {"campaign_id": "c1", "wave": 2, "variants": [{"name": "x", "weight": 2}]},
        },
        _run("files", "c2", 1, 0, outcomes={"sms": 0}),  # sent nothing
        _run("receipts"),
    ]
    notify = NotifyOutput("n", ["h.parquet"], runs)
    assert [r["campaign"]["wave"] for r in sending_runs(notify)] == [1, 1, 2]
    assert latest_campaign_run(notify)["campaign_id"] == "c1"
    sends = wave_sends(notify, "c1")
    assert sends[1] == {
        "targeted": {"sms": 8, "call": 2, "announcement": 1},
        "segments": 13,
        "cost": 0.55,
        "variants": [],
    }
    assert sends[2]["variants"] == [("x", 2.0)]
    with pytest.raises(UserError, match="give --campaign"):
        check_campaign_found(NotifyOutput("n", ["h.parquet"], [_run("receipts")]), None)
    check_campaign_found(NotifyOutput("n", [], [_run("receipts")]), None)  # no notices: nothing to credit


def _report_day(folder: str, day: str, campaign_id: str, complete: int) -> None:
    part = os.path.join(folder, "parquet", "completion", f"as_of={day}")
    os.makedirs(part)
    pq.write_table(
        pa.table({"campaign_id": [campaign_id], "complete": [complete]}), os.path.join(part, "part-0.parquet")
    )
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as handle:
        json.dump({"step": "report"}, handle)


def test_the_previous_report_is_found_in_out_then_beside_it(tmp_path):
    out = str(tmp_path / "reports" / "2026-12-10")
    for day, complete in (("2026-12-08", 8), ("2026-12-09", 9), ("2026-12-11", 11)):
        _report_day(str(tmp_path / "reports" / day), day, "c1", complete)
    _report_day(str(tmp_path / "reports" / "other"), "2026-12-09", "c2", 99)
    as_of = dt.date(2026, 12, 10)
    assert previous_headline(out, as_of, "c1")["complete"] == 9  # beside OUT: the latest earlier day
    assert previous_headline(out, as_of, "c2")["complete"] == 99 and previous_headline(out, as_of, "c3") is None
    given = str(tmp_path / "reports" / "2026-12-08")
    assert previous_headline(out, as_of, "c1", given)["report_date"] == dt.date(2026, 12, 8)
    _report_day(out, "2026-12-05", "c1", 5)  # OUT's own history comes first
    assert previous_headline(out, as_of, "c1")["complete"] == 5
    assert previous_headline(out, dt.date(2026, 12, 5), "c1") is None  # nothing of c1 before that day
