"""Raw subscriber-base rows and batches, and the constants the tests share: the local runner, canary values."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from schemas import field_names
from transforms.core.deadletter import DeadLetterContext

AS_OF = dt.date(2026, 11, 30)
CTX = DeadLetterContext("scan", "test-run", "2026-11-30T00:00:00Z")
SALT = "0123456789abcdef0123456789abcdef"
RUNNER = "FnApiRunner"  # explicit: the DirectRunner would try to download Prism

# Canary identity values: must never appear outside the vault.
CANARY_NAME = "金丝雀测试甲"
CANARY_NUMBER = "11010519491231002X"
CANARY_ADDRESS = "北京市海淀区金丝雀路99号"


def raw_table(rows: list[dict], source: str = "base.csv") -> pa.Table:
    """A raw batch as the readers make it, from partial row dicts."""
    names = field_names("subscriber_base")
    columns = {n: pa.array([r.get(n) for r in rows], pa.string()) for n in names}
    columns["_src_file"] = pa.array([source] * len(rows), pa.string())
    columns["_src_row"] = pa.array(range(1, len(rows) + 1), pa.int64())
    return pa.Table.from_pydict(columns)


def person(**fields) -> dict:
    """A complete, valid individual line; override any field."""
    row = {
        "line_id": "L1",
        "msisdn": "13800138000",
        "line_type": "MOBILE",
        "subscriber_kind": "INDIVIDUAL",
        "status": "ACTIVE",
        "activated_on": "2020-01-01",
        "region": "110105",
        "agent_id": "AG00001",
        "doc_type": "RESIDENT_ID",
        "doc_number": "11010519491231002X",
        "name": "张三",
        "address": "北京市朝阳区建国路88号",
        "updated_at": "2024-01-01T00:00:00",
    }
    row.update(fields)
    return row


def organisation(**fields) -> dict:
    row = person(
        subscriber_kind="ORGANIZATION",
        doc_type="USCC",
        doc_number="91110000600037341L",
        name="北京星辰科技有限公司",
        handler_doc_type="RESIDENT_ID",
        handler_doc_number="110105194912310021"[:-1] + "X",
        handler_name="王五",
    )
    row.update(fields)
    return row
