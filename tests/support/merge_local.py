"""Inputs for tests/test_merge_local.py, and what a merge wrote in a form two runs can be compared by.

    inputs = write_merge_inputs(folder, lines=6_000)   # base files (Parquet + CSV), event files, planted cases

    seen = merge_outputs("out/merge", "keys.json")
    assert merge_outputs(a, keys) == merge_outputs(b, keys)

A run's merged base rows sorted by line_id, its vault as decrypted values (line_id, field, value) and
key rows without their random parts (data key ids, wrapped keys, times), its dead letters without
run_id and time, its summary without the run id and its manifest's counts. Random nonces, data keys,
run ids, times and the files' split into shards may differ between runs; nothing else.

    python -m tests.support.merge_local OUT_A OUT_B KEYS     # prints "same" or the first difference
"""

from __future__ import annotations

import csv
import glob
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from bench.events import make_events
from pipelines.io.vault_files import read_vault
from schemas import field_names
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, person
from tests.support.scan_local import write_canary_base
from transforms.crypto.keyset import Keyset
from transforms.crypto.vault import Vault

__all__ = ["write_merge_inputs", "merge_outputs", "differences", "PLANTED"]

_KEY_RANDOM = ("dek_id", "wrapped_dek", "created_at", "wrapped_at")


PLANTED = ("ZM-CONF-1", "ZM-CONF-2", "ZM-CANARY")  # base lines of the planted events (a CSV file of their own)


def _event(event_id: str, line_id: str, **fields) -> dict:
    row = {
        "event_id": event_id,
        "line_id": line_id,
        "doc_type": "身份证",
        "doc_number": "110101199003070011",
        "name": "王小明",
        "address": "北京市朝阳区建国路88号",
        "channel": "STORE",
        "agent_id": "AG00042",
        "verified_by": "ID_CARD_READER",
        "registered_at": "2026-11-20T10:00:00",
    }
    return {**row, **fields}


def _planted_events() -> list[dict]:
    """Copies of one event id with two bodies (the first valid: EVENT_ID_CONFLICT), an invalid copy before a
    valid one of another body (the valid one takes the id), a redelivery, a canary registration."""
    return [
        _event("E-CONF-1", "ZM-CONF-1"),
        _event("E-CONF-1", "ZM-CONF-1", name="王大明"),
        _event("E-CONF-2", "ZM-NOWHERE"),
        _event("E-CONF-2", "ZM-CONF-2", name="李小红"),
        _event("E-CANARY", "ZM-CANARY", name=CANARY_NAME, doc_number=CANARY_NUMBER, address=CANARY_ADDRESS),
        _event("E-CANARY", "ZM-CANARY", name=CANARY_NAME, doc_number=CANARY_NUMBER, address=CANARY_ADDRESS),
    ]


def _write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.write('{"event_id": "E-CUT", "line_id": \n')  # cut short: ROW_MALFORMED


def write_merge_inputs(folder: str, lines: int) -> dict:
    """A generated base (three Parquet files, canary identity on every third line, bad rows, duplicates) and a
    CSV file of planted lines; events for the first merge (generated: faults and repeats, plus the planted
    ones) and for a second merge over the first one's output. Returns their paths."""
    base = write_canary_base(folder, lines=lines, files=3)
    names = field_names("subscriber_base")
    planted = os.path.join(folder, "planted.csv")
    with open(planted, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for line_id in PLANTED:
            writer.writerow(
                ["" if v is None else v for v in (person(line_id=line_id, msisdn="13900000001").get(n) for n in names)]
            )
    first = [os.path.join(folder, "events-1.parquet"), os.path.join(folder, "events-1.jsonl")]
    make_events(base[0], first[0], n=max(100, lines // 8), seed=11)
    _write_jsonl(first[1], _planted_events())
    second = [os.path.join(folder, "events-2.parquet"), os.path.join(folder, "events-2.jsonl")]
    make_events(base[1], second[0], n=max(100, lines // 8), seed=12)
    _write_jsonl(
        second[1], _planted_events()[:2] + [_event("E-LATER", "ZM-CONF-2", registered_at="2026-11-28T09:00:00")]
    )
    return {"base": base + [planted], "events": first, "events_2": second}


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys]).combine_chunks()


def _base(out: str) -> pa.Table:
    files = sorted(glob.glob(os.path.join(out, "base", "*.parquet")))
    return _sorted(pa.concat_tables([pq.read_table(f) for f in files]), ["line_id"])


def _vault(out: str, keys_path: str) -> tuple[pa.Table, pa.Table]:
    keys, values = read_vault(os.path.join(out, "vault"))
    plain = Vault(Keyset.load(keys_path)).open_many(keys, values)
    return _sorted(keys.drop_columns(list(_KEY_RANDOM)), ["line_id"]), _sorted(plain, ["line_id", "field"])


def _dead_letters(out: str) -> list[str]:
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "dead_letter", "*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                row.pop("run_id"), row.pop("time")
                rows.append(json.dumps(row, sort_keys=True, ensure_ascii=False))
    return sorted(rows)


def _json(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def merge_outputs(out: str, keys_path: str) -> dict:
    """Everything of a merge's output that two runs of the same merge must have equal (module docstring)."""
    keys, values = _vault(out, keys_path)
    summary = _json(os.path.join(out, "summary.json"))
    summary.pop("run_id")
    return {
        "base": _base(out),
        "vault_keys": keys,
        "vault_values": values,
        "dead_letters": _dead_letters(out),
        "summary": summary,
        "counts": _json(os.path.join(out, "manifest.json"))["counts"],
    }


def differences(a: dict, b: dict) -> list[str]:
    """The names of the parts that differ (tables compared with ``equals``)."""
    out = []
    for name in a:
        same = a[name].equals(b[name]) if isinstance(a[name], pa.Table) else a[name] == b[name]
        if not same:
            out.append(name)
    return out


if __name__ == "__main__":
    first, second, keyset = sys.argv[1:4]
    found = differences(merge_outputs(first, keyset), merge_outputs(second, keyset))
    print("same" if not found else "differ: " + ", ".join(found))
