"""BuildNotificationJobs in a real pipeline (FnApiRunner): every output, the counts and the counters."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that

from tests.support.rows import RUNNER
from tests.support.notify import classified_table, history_table, line, make_campaign
from transforms.core.metrics import NAMESPACE
from transforms.notify.composite import BuildNotificationJobs
from transforms.notify.summary import SummariseJobs
from transforms.notify.jobs import job_ids

FIRST = dt.date(2026, 12, 1)
ROWS = [line(f"M{i:02d}", f"138001380{i:02d}", region="110105" if i % 2 else "310115") for i in range(12)] + [
    line("F1", "01065529988", "FIXED"),
    line("F2", "1065529988", "FIXED", region="310115"),
    line("X1", "123", "MOBILE"),
    line("C1", "13800138999", needs=False, status="COMPLETE"),
]


def rows_of(tables):
    return [r for t in tables for r in t.to_pylist()]


def line_channels(expected):
    def check(tables):
        got = sorted((r["line_id"], r["channel"]) for r in rows_of(tables))
        assert got == sorted(expected), got

    return check


def spill_by_job_id(cap):
    def check(tables):
        rows = sorted(rows_of(tables), key=lambda r: r["job_id"])
        days = [(r["send_day"] - FIRST).days for r in rows]
        assert days == sorted(days) and all(days.count(d) <= cap for d in set(days)), days
        for r in rows:
            assert r["encoding"] == "UCS2" and r["text"].startswith("【某某通信】") and len(r["text"]) <= 70
            assert r["segments"] == 1 and r["units"] == len(r["text"]) and abs(r["cost"] - 0.05) < 1e-12
        assert all(r["msisdn_masked"][3:-4].strip("*") == "" for r in rows)

    return check


def announcements(expected):
    def check(tables):
        got = sorted((r["region"], r["count"], r["unreachable"]) for r in rows_of(tables))
        assert got == sorted(expected), got
        assert all(str(r["count"]) in r["text"] and r["region"] in r["text"] for r in rows_of(tables))

    return check


def counts_are(targeted, outcomes, jobs):
    def check(items):
        (counts,) = items
        assert counts["plan"]["targeted"] == targeted
        assert {k: v for k, v in counts["plan"]["outcomes"].items() if v} == outcomes
        assert counts["jobs"] == jobs, counts["jobs"]
        assert counts["segments"] == jobs.get("sms", 0)  # the test template fits one part

    return check


def test_composite_without_history_plans_every_channel():
    campaign = make_campaign(daily_cap={"sms": 5, "call": 5, "announcement": 5})
    p = BeamTestPipeline(runner=RUNNER)
    lines = p | "Lines" >> beam.Create([classified_table(ROWS[:8]), classified_table(ROWS[8:])]).with_output_types(
        pa.Table
    )
    out = {"lines": lines} | "Build" >> BuildNotificationJobs(campaign, 1, FIRST)
    expected_lines = [(f"M{i:02d}", "sms") for i in range(12)] + [("F1", "call"), ("F2", "call")]
    assert_that(out.sms, line_channels([x for x in expected_lines if x[1] == "sms"]), label="assert:sms")
    assert_that(out.sms, spill_by_job_id(5), label="assert:sms_spill")
    assert_that(out.call, line_channels([("F1", "call"), ("F2", "call")]), label="assert:call")
    assert_that(out.announcement, announcements([("110105", 8, 1), ("310115", 7, 0)]), label="assert:announcement")
    assert_that(
        out.counts,
        counts_are(15, {"sms": 12, "call": 2, "invalid_number": 1}, {"sms": 12, "call": 2, "announcement": 2}),
        label="assert:counts",
    )
    result = p.run()
    result.wait_until_finish()

    def counted(name):
        found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE).with_name(name))["counters"]
        return sum(c.committed for c in found)

    assert (counted("jobs_sms"), counted("jobs_call"), counted("jobs_announcement")) == (12, 2, 2)
    assert (counted("lines_sms"), counted("lines_call"), counted("lines_invalid_number")) == (12, 2, 1)


def test_composite_with_history_and_registered_shuffles_by_line():
    campaign = make_campaign(daily_cap={"sms": 4, "call": 4, "announcement": 4})
    history = history_table(
        [
            {
                "job_id": f"h{i}",
                "line_id": f"M{i:02d}",
                "channel": "sms",
                "campaign_id": "rn-test",
                "wave": 1,
                "send_day": FIRST,
            }
            for i in range(3)
        ]  # already sent, and they fill 3 of day 1's 4 SMS
        + [
            {
                "job_id": job_ids("rn-test", 1, "announcement", pa.array(["310115"]))[0][0].as_py(),
                "line_id": None,
                "region": "310115",
                "channel": "announcement",
                "campaign_id": "rn-test",
                "wave": 1,
                "send_day": FIRST,
            }
        ]
    )
    p = BeamTestPipeline(runner=RUNNER)
    inputs = {
        "lines": p | "Lines" >> beam.Create([classified_table(ROWS)]).with_output_types(pa.Table),
        "registered": p
        | "Registered"
        >> beam.Create(
            [pa.table({"line_id": ["M03", "M04", "F1"], "identity_status": ["COMPLETE", "INVALID", "COMPLETE"]})]
        ).with_output_types(pa.Table),
        "history": p | "History" >> beam.Create([history]).with_output_types(pa.Table),
    }
    out = inputs | "Build" >> BuildNotificationJobs(
        campaign, 1, FIRST, n_buckets=3, suppressed=pa.array(["13800138011"])
    )

    def sms_days(tables):
        rows = sorted(rows_of(tables), key=lambda r: r["job_id"])
        days = [(r["send_day"] - FIRST).days for r in rows]
        assert len(rows) == 7 and days == [0, 1, 1, 1, 1, 2, 2], days  # day 1 had room for one more

    assert_that(out.sms, sms_days, label="assert:sms_days")
    assert_that(out.call, line_channels([("F2", "call"), ("M11", "call")]), label="assert:call")
    # 310115 was announced already; 110105: 8 targeted - 2 registered, of which X1 unreachable
    assert_that(out.announcement, announcements([("110105", 6, 1)]), label="assert:announcement")
    assert_that(
        out.counts,
        counts_are(
            15,
            {"registered": 2, "already_sent": 3, "sms": 7, "call": 2, "invalid_number": 1},
            {"sms": 7, "call": 2, "announcement": 1},
        ),
        label="assert:counts",
    )
    p.run().wait_until_finish()


def test_summary_of_jobs_by_channel_region_and_day():
    campaign = make_campaign(daily_cap={"sms": 5, "call": 5, "announcement": 5})
    with BeamTestPipeline(runner=RUNNER) as p:
        lines = p | beam.Create([classified_table(ROWS)]).with_output_types(pa.Table)
        out = {"lines": lines} | "Build" >> BuildNotificationJobs(campaign, 1, FIRST)
        summary = {"sms": out.sms, "call": out.call, "announcement": out.announcement} | SummariseJobs(samples=2)

        def check(items):
            (s,) = items
            sms = {k: v for k, v in s["rows"].items() if k.startswith("sms|")}
            assert sum(v[0] for v in sms.values()) == 12 and sum(v[1] for v in sms.values()) == 12
            assert abs(sum(v[2] for v in sms.values()) - 12 * 0.05) < 1e-9
            assert {k.split("|")[2] for k in sms} == {"2026-12-01", "2026-12-02", "2026-12-03"}
            assert len(s["samples"]["sms"]) == 2 and "****" in s["samples"]["sms"][0]["msisdn_masked"]
            assert s["samples"]["sms"][0]["job_id"] < s["samples"]["sms"][1]["job_id"]

        assert_that(summary, check, label="assert:summary")
