"""A registration export as operators write it: Chinese column names (schemas/column_aliases.yaml) and the
channel and verification written in words (营业厅, 人脸识别; transforms/merge/events.py CHANNEL_NAMES, VERIFIER_NAMES)
are applied as the contract's codes; they were every one a BAD_ENUM dead letter, or their columns left out.
Run: .venv/bin/python -m pytest -q tests/test_registration_exports.py
"""

from __future__ import annotations

import csv
import glob
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.merge_local import PLANTED, _event, write_merge_inputs
from tests.test_merge_line_buckets import assert_no_canaries, backfill, manifest
from transforms.merge.events import CHANNEL_NAMES, VERIFIER_NAMES

HEADERS = {  # contract column -> the export's name
    "event_id": "登记流水号", "line_id": "用户编号", "doc_type": "证件类型", "doc_number": "证件号码", "name": "姓名",
    "address": "证件地址", "channel": "登记渠道", "agent_id": "受理工号", "verified_by": "核验方式",
    "registered_at": "登记时间",
}  # fmt: skip


@pytest.mark.e2e
def test_a_registration_export_in_chinese_is_applied_as_the_codes(tmp_path):
    keys = str(tmp_path / "secure" / "keys.json")
    backfill("keys", "init", "--keys", keys)
    inputs = write_merge_inputs(str(tmp_path), lines=300)
    channels = [(code, name) for code, names in CHANNEL_NAMES.items() for name in names[:1]]
    verifiers = [(code, name) for code, names in VERIFIER_NAMES.items() for name in names[:1]]
    rows, expected = [], {}
    for i, line in enumerate(PLANTED):
        (channel, channel_name), (verifier, verifier_name) = channels[i % 4], verifiers[i % 3]
        event = _event(f"R{i}", line, channel=channel_name, verified_by=verifier_name,
                       registered_at=f"2026年11月2{i}日 10:00:00")  # fmt: skip
        rows.append(event)
        expected[line] = (f"R{i}", channel, verifier)
    rows.append(_event("R9", PLANTED[0], channel="渠道", registered_at="2026-11-29T10:00:00"))  # no one channel
    path = str(tmp_path / "登记.csv")
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([HEADERS[c] for c in HEADERS])
        writer.writerows([[row[c] for c in HEADERS] for row in rows])
    base = [a for p in inputs["base"] for a in ("--base", p)]
    out = str(tmp_path / "merge")
    backfill("merge", *base, "--registrations", path, "--keys", keys, "--out", out, "--as-of", "2026-11-30")
    events = manifest(out)["counts"]["events"]
    assert (events["rows_in"], events["applied"], events["dead_letter_reasons"]) == (
        len(rows),
        len(PLANTED),
        {"BAD_ENUM": 1},
    )
    merged = pa.concat_tables([pq.read_table(p) for p in glob.glob(os.path.join(out, "base", "*.parquet"))])
    got = {r["line_id"]: (r["registration_event_id"], r["registration_channel"], r["verified_by"]) for r in merged.to_pylist()
           if r["line_id"] in expected}  # fmt: skip
    assert got == expected
    letters = [
        json.loads(x) for p in glob.glob(os.path.join(out, "dead_letter", "*.jsonl")) for x in open(p, encoding="utf-8")
    ]
    assert [(d["event_id"], d["reason"], d["field"]) for d in letters if d["event_id"] == "R9"] == [
        ("R9", "BAD_ENUM", "channel")
    ]
    assert_no_canaries(out)
