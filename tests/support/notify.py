"""Builders shared by the notify tests: campaigns, classified lines, history and receipt rows."""

from __future__ import annotations

import copy
import datetime as dt
import os

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from schemas import arrow_schema
from transforms.notify.campaign import parse_campaign

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "campaign.yaml")
SMS_ZH = "尊敬的用户：您的号码{msisdn_masked}尚未完成实名登记，请于{deadline}前到营业厅办理，免费。"
IDENTITY_FIELDS = {
    "doc_type",
    "doc_number",
    "name",
    "address",
    "handler_doc_type",
    "handler_doc_number",
    "handler_name",
}

BASE_CAMPAIGN = {
    "campaign_id": "rn-test",
    "signature": "某某通信",
    "timezone": "Asia/Shanghai",
    "quiet_hours": {"start": "21:00", "end": "08:00"},
    "daily_cap": 1000,
    "price_per_segment": 0.05,
    "deadline": "2027-01-31",
    "min_days_between": 7,
    "waves": [
        {"wave": 1, "start": "2026-12-01", "channels": ["sms", "call", "announcement"]},
        {"wave": 2, "start": "2026-12-15", "channels": ["sms", "call"]},
    ],
    "templates": {
        "sms": {"zh-CN": SMS_ZH},
        "call": {"zh-CN": "您好，您的号码{msisdn_masked}尚未完成实名登记，请于{deadline}前免费办理。"},
        "announcement": {"zh-CN": "本地区（{region}）尚有{count}个号码未完成实名登记，请于{deadline}前免费办理。"},
    },
}


def campaign_dict(**overrides) -> dict:
    data = copy.deepcopy(BASE_CAMPAIGN)
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def campaign_text(**overrides) -> str:
    return yaml.safe_dump(campaign_dict(**overrides), allow_unicode=True, sort_keys=False)


def make_campaign(**overrides):
    return parse_campaign(campaign_text(**overrides), "test.yaml")


def write_campaign(path, **overrides) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(campaign_text(**overrides))
    return str(path)


def line(
    line_id: str,
    msisdn: str | None = "13800138000",
    line_type: str = "MOBILE",
    region: str | None = "110105",
    needs: bool = True,
    status: str = "MISSING",
) -> dict:
    return {
        "line_id": line_id,
        "msisdn": msisdn,
        "line_type": line_type,
        "region": region,
        "needs_registration": needs,
        "identity_status": status,
    }


def classified_table(rows: list[dict]) -> pa.Table:
    """A classified batch with every column of the contract (identity-free, as the scan writes it)."""
    schema = arrow_schema("classified_line")
    n = len(rows)
    cols = {
        "line_id": [r["line_id"] for r in rows],
        "msisdn": [r.get("msisdn") for r in rows],
        "line_type": [r.get("line_type", "MOBILE") for r in rows],
        "subscriber_kind": ["INDIVIDUAL"] * n,
        "status": ["ACTIVE"] * n,
        "region": [r.get("region") for r in rows],
        "agent_id": ["AG1"] * n,
        "activated_on": [dt.date(2020, 1, 1)] * n,
        "terminated_on": [None] * n,
        "identity_status": [r.get("identity_status", "MISSING") for r in rows],
        "reasons": [["DOC_TYPE_MISSING"]] * n,
        "flags": [[]] * n,
        "needs_registration": [r.get("needs_registration", True) for r in rows],
        "needs_review": [False] * n,
        "policy_version": ["decree25-2013.1"] * n,
        "as_of": [dt.date(2026, 11, 30)] * n,
    }
    return pa.table(cols, schema=schema)


def write_classified(folder, rows: list[dict]) -> str:
    """A scan output folder holding ``rows``; returns the folder."""
    os.makedirs(os.path.join(folder, "classified"), exist_ok=True)
    pq.write_table(classified_table(rows), os.path.join(folder, "classified", "part-00000-of-00001.parquet"))
    return str(folder)


def history_table(rows: list[dict]) -> pa.Table:
    """History rows: dicts with job_id, line_id, channel, campaign_id, wave, send_day (date)."""
    n = len(rows)
    return pa.table(
        {
            "job_id": [r["job_id"] for r in rows],
            "line_id": [r.get("line_id") for r in rows],
            "region": [r.get("region", "110105") for r in rows],
            "channel": [r["channel"] for r in rows],
            "campaign_id": [r["campaign_id"] for r in rows],
            "wave": [r["wave"] for r in rows],
            "send_day": [r["send_day"] for r in rows],
            "sent_at": [dt.datetime.combine(r["send_day"], dt.time(0), dt.timezone.utc) for r in rows],
            "run_id": ["earlier"] * n,
            "variant": [r.get("variant") for r in rows],
        },
        schema=arrow_schema("notify_history"),
    )


def receipts_table(rows: list[dict]) -> pa.Table:
    """Receipt rows: job_id, line_id, channel, campaign_id, wave, status, at (aware datetime)."""
    return pa.table(
        {
            "job_id": [r["job_id"] for r in rows],
            "line_id": [r.get("line_id") for r in rows],
            "channel": [r["channel"] for r in rows],
            "campaign_id": [r["campaign_id"] for r in rows],
            "wave": [r["wave"] for r in rows],
            "status": [r["status"] for r in rows],
            "at": [r["at"] for r in rows],
            "run_id": ["earlier"] * len(rows),
        },
        schema=arrow_schema("notify_receipt"),
    )
