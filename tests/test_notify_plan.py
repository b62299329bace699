"""The planner (no Beam): channels, number checks, suppression, history, receipts, job ids, no identity."""

from __future__ import annotations

import datetime as dt
import hashlib

import pyarrow as pa

from schemas import field_names
from tests.support.notify import IDENTITY_FIELDS, classified_table, history_table, line, receipts_table
from transforms.notify.planner import OUTCOMES, PlanContext, latest_status, normalise_numbers, plan_lines
from transforms.notify.jobs import JOB_SCHEMAS, job_ids

FIRST = dt.date(2026, 12, 1)
CTX = PlanContext("rn-test", 1, ("sms", "call", "announcement"), FIRST, 7)


def outcomes(plan) -> dict:
    return {k: v for k, v in plan.counts["outcomes"].items() if v}


def jobs_by_line(plan) -> dict:
    return {r["line_id"]: (r["channel"], r["route"]) for r in plan.jobs.to_pylist()}


def test_channel_per_line_type_and_number_checks():
    rows = [
        line("M1", "13800138000", "MOBILE"),
        line("M2", "1380013800", "MOBILE"),
        line("M3", None, "MOBILE"),
        line("M4", "14912345678", "MOBILE"),
        line("D1", "14912345678", "DATA_CARD"),
        line("D2", "14612345678", "DATA_CARD"),
        line("D3", "1440075331530", "DATA_CARD"),
        line("D4", "1064812345678", "DATA_CARD"),
        line("D5", "1234567890123", "DATA_CARD"),
        line("F1", "01065529988", "FIXED"),
        line("F2", "075512345678", "FIXED"),
        line("F3", "1065529988", "FIXED"),
        line("F4", "0351123456", "FIXED"),
        line("F5", "13800138000", "FIXED"),
        line("N1", "13900139000", "MOBILE", needs=False, status="COMPLETE"),
    ]
    plan = plan_lines(classified_table(rows), CTX)
    got = jobs_by_line(plan)
    assert got == {
        "M1": ("sms", "PRIMARY"),
        "M4": ("sms", "PRIMARY"),
        "D1": ("sms", "PRIMARY"),
        "D2": ("sms", "PRIMARY"),
        "D3": ("sms", "PRIMARY"),
        "D4": ("sms", "PRIMARY"),
        "F1": ("call", "PRIMARY"),
        "F2": ("call", "PRIMARY"),
        "F3": ("call", "PRIMARY"),
    }
    # F3 arrived as +86 10 6552 9988: the trunk 0 is back for the call.
    assert {r["line_id"]: r["msisdn"] for r in plan.jobs.to_pylist()}["F3"] == "01065529988"
    assert outcomes(plan) == {"sms": 6, "call": 3, "invalid_number": 5}
    assert plan.counts["targeted"] == 14 and plan.counts["to_announcement"] == 5
    region = plan.regions.to_pylist()
    assert region == [{"region": "110105", "lines": 14, "unreachable": 5, "sms": 6, "call": 3}]


def test_numbers_phonenumbers_rejects_are_still_data_cards():
    import phonenumbers

    for number in ("14912345678", "14612345678"):  # 149 and 146 data-card ranges
        assert not phonenumbers.is_valid_number(phonenumbers.parse("+86" + number))
    plan = plan_lines(classified_table([line("D", "14912345678", "DATA_CARD")]), CTX)
    assert jobs_by_line(plan) == {"D": ("sms", "PRIMARY")}


def test_trunk_zero_is_only_restored_for_fixed_lines():
    numbers = pa.array(["1065529988", "1065529988", "13800138000", "0755123456"])
    types = pa.array(["FIXED", "MOBILE", "FIXED", "FIXED"])
    assert normalise_numbers(numbers, types).to_pylist() == ["01065529988", "1065529988", "13800138000", "0755123456"]


def test_registered_already_sent_and_recently_notified_are_left_out():
    rows = [line(f"L{i}", f"1380013800{i}") for i in range(6)]
    history = history_table(
        [
            {"job_id": "a", "line_id": "L1", "channel": "sms", "campaign_id": "rn-test", "wave": 1, "send_day": FIRST},
            {
                "job_id": "b",
                "line_id": "L2",
                "channel": "call",
                "campaign_id": "other",
                "wave": 3,
                "send_day": FIRST - dt.timedelta(days=6),
            },  # within 7 days
            {
                "job_id": "c",
                "line_id": "L3",
                "channel": "sms",
                "campaign_id": "other",
                "wave": 1,
                "send_day": FIRST - dt.timedelta(days=7),
            },  # 7 days ago: allowed again
            {
                "job_id": "d",
                "line_id": None,
                "channel": "announcement",
                "campaign_id": "rn-test",
                "wave": 1,
                "send_day": FIRST,
            },
        ]
    )
    plan = plan_lines(classified_table(rows), CTX, registered=pa.array(["L0", "nobody"]), history=history)
    assert outcomes(plan) == {"registered": 1, "already_sent": 1, "recently_notified": 1, "sms": 3}
    assert set(jobs_by_line(plan)) == {"L3", "L4", "L5"}
    # the registered line no longer counts in the announcement; the others still need registering
    assert plan.regions.to_pylist()[0]["lines"] == 5


def test_min_days_between_zero_and_failed_jobs_do_not_count_as_notified():
    rows = [line("L1"), line("L2", "13900139000")]
    history = history_table(
        [
            {"job_id": "x", "line_id": "L1", "channel": "sms", "campaign_id": "other", "wave": 1, "send_day": FIRST},
            {"job_id": "y", "line_id": "L2", "channel": "sms", "campaign_id": "other", "wave": 1, "send_day": FIRST},
        ]
    )
    receipts = receipts_table(
        [
            {
                "job_id": "y",
                "line_id": "L2",
                "channel": "sms",
                "campaign_id": "other",
                "wave": 1,
                "status": "FAILED",
                "at": dt.datetime(2026, 12, 1, 3, tzinfo=dt.timezone.utc),
            }
        ]
    )
    plan = plan_lines(classified_table(rows), CTX, history=history, receipts=receipts)
    assert outcomes(plan) == {"recently_notified": 1, "sms": 1} and set(jobs_by_line(plan)) == {"L2"}
    relaxed = PlanContext("rn-test", 1, CTX.channels, FIRST, 0)
    assert outcomes(plan_lines(classified_table(rows), relaxed, history=history)) == {"sms": 2}


def test_do_not_sms_lines_fall_to_a_call_or_the_announcement():
    rows = [
        line("M1", "13800138000"),
        line("D1", "14512345678", "DATA_CARD"),
        line("F1", "01065529988", "FIXED"),
        line("M2", "13900139000"),
    ]
    suppressed = pa.array(["13800138000", "14512345678", "01065529988"])
    plan = plan_lines(classified_table(rows), CTX, suppressed=suppressed)
    assert jobs_by_line(plan) == {"M1": ("call", "SMS_SUPPRESSED"), "F1": ("call", "PRIMARY"), "M2": ("sms", "PRIMARY")}
    assert outcomes(plan) == {"sms": 1, "call": 2, "suppressed": 1} and plan.counts["suppressed_lines"] == 2
    sms_only = PlanContext("rn-test", 1, ("sms", "announcement"), FIRST, 7)
    plan = plan_lines(classified_table(rows), sms_only, suppressed=suppressed)
    assert outcomes(plan) == {"sms": 1, "suppressed": 2, "not_in_wave": 1}


def test_failed_sms_gets_a_call_next_wave_or_falls_to_the_announcement():
    rows = [
        line("M1", "13800138000"),
        line("D1", "14512345678", "DATA_CARD"),
        line("M2", "13900139000"),
        line("F1", "01065529988", "FIXED"),
    ]
    history = history_table(
        [
            {"job_id": j, "line_id": lid, "channel": ch, "campaign_id": "rn-test", "wave": 1, "send_day": FIRST}
            for j, lid, ch in (("j1", "M1", "sms"), ("j2", "D1", "sms"), ("j3", "M2", "sms"), ("j4", "F1", "call"))
        ]
    )
    at = dt.datetime(2026, 12, 1, 3, tzinfo=dt.timezone.utc)
    receipts = receipts_table(
        [
            {"job_id": j, "line_id": lid, "channel": ch, "campaign_id": "rn-test", "wave": 1, "status": s, "at": at}
            for j, lid, ch, s in (
                ("j1", "M1", "sms", "FAILED"),
                ("j2", "D1", "sms", "FAILED"),
                ("j3", "M2", "sms", "DELIVERED"),
                ("j4", "F1", "call", "FAILED"),
            )
        ]
    )
    wave2 = PlanContext("rn-test", 2, ("sms", "call"), dt.date(2026, 12, 15), 7)
    plan = plan_lines(classified_table(rows), wave2, history=history, receipts=receipts)
    assert jobs_by_line(plan) == {"M1": ("call", "SMS_FAILED"), "M2": ("sms", "PRIMARY")}
    assert outcomes(plan) == {"sms": 1, "call": 1, "sms_failed": 1, "call_failed": 1}
    assert plan.counts["call_fallback"] == {"SMS_FAILED": 1, "SMS_SUPPRESSED": 0}


def test_latest_receipt_wins_and_delivered_wins_a_tie():
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    rows = [
        {
            "job_id": j,
            "line_id": "L",
            "channel": "sms",
            "campaign_id": "c",
            "wave": 1,
            "status": s,
            "at": t0 + dt.timedelta(hours=h),
        }
        for j, s, h in (
            ("a", "FAILED", 1),
            ("a", "DELIVERED", 2),
            ("b", "DELIVERED", 1),
            ("b", "FAILED", 3),
            ("c", "FAILED", 1),
            ("c", "DELIVERED", 1),
        )
    ]
    status = {r["job_id"]: r["status"] for r in latest_status(receipts_table(rows)).to_pylist()}
    assert status == {"a": "DELIVERED", "b": "FAILED", "c": "DELIVERED"}


def test_every_line_has_exactly_one_outcome():
    rows = [
        line(
            f"L{i}",
            f"13{i % 10}0013{i:04d}",
            ["MOBILE", "FIXED", "DATA_CARD", "OTHER"][i % 4],
            region=None if i % 7 == 0 else f"1101{i % 3:02d}",
        )
        for i in range(200)
    ]
    plan = plan_lines(
        classified_table(rows), CTX, registered=pa.array(["L1", "L2"]), suppressed=pa.array(["13000130000"])
    )
    assert sum(plan.counts["outcomes"].values()) == plan.counts["targeted"] == 200
    assert len(OUTCOMES) == len(plan.counts["outcomes"]) + 1
    assert sum(r["lines"] for r in plan.regions.to_pylist()) == 198


def test_job_ids_are_a_stable_sha256_of_campaign_wave_channel_and_line():
    ids, keys = job_ids("rn-test", 1, "sms", pa.array(["L1", "L2"]))
    expected = hashlib.sha256("rn-test\x1f1\x1fsms\x1fL1".encode()).hexdigest()[:32]
    assert ids.to_pylist()[0] == expected and len(set(ids.to_pylist())) == 2
    assert keys.to_pylist()[0] == bytes.fromhex(expected)
    again, _ = job_ids("rn-test", 1, "sms", pa.array(["L2", "L1"]))
    assert again.to_pylist() == ids.to_pylist()[::-1]
    for other in (
        job_ids("rn-test", 2, "sms", pa.array(["L1"])),
        job_ids("rn-test", 1, "call", pa.array(["L1"])),
        job_ids("rn-other", 1, "sms", pa.array(["L1"])),
    ):
        assert other[0].to_pylist()[0] != expected


def test_job_schemas_carry_no_identity_values():
    for channel, schema in JOB_SCHEMAS.items():
        assert not IDENTITY_FIELDS & set(schema.names), channel
        assert not IDENTITY_FIELDS & set(field_names(f"notify_{channel}_job"))
    for name in ("notify_history", "notify_receipt"):
        assert not IDENTITY_FIELDS & set(field_names(name))
    assert {"msisdn", "msisdn_masked"} <= set(JOB_SCHEMAS["sms"].names)
    assert {"msisdn", "msisdn_masked"} <= set(JOB_SCHEMAS["call"].names)
