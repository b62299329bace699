"""The merge's inputs: registration-event files (pipelines/io/events.py) and base kinds (pipelines/io/merged_base.py).

Run: .venv/bin/python -m pytest tests/test_merge_inputs.py -q
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.io.events import EVENT_SCHEMA, plan_event_splits, read_event_split
from pipelines.io.merged_base import base_kind
from pipelines.io.planning import InputError
from schemas import arrow_schema, field_names
from tests.support.rows import CANARY_NAME

NAMES = field_names("registration_event")


def read(path: str, **kw) -> tuple[pa.Table, list]:
    splits, _ = plan_event_splits([path])
    tables, bad = [], []
    for split in splits:
        for raw, b in read_event_split(split, **kw):
            assert raw.schema == EVENT_SCHEMA
            tables.append(raw)
            bad += b
    return pa.concat_tables(tables) if tables else EVENT_SCHEMA.empty_table(), bad


def test_json_lines_rows_are_numbered_by_line_and_bad_lines_named(tmp_path):
    path = tmp_path / "events.jsonl"
    lines = [
        json.dumps({"event_id": "E1", "line_id": "L1", "name": CANARY_NAME, "extra": {"ignored": True}}),
        "",
        json.dumps({"event_id": 42, "line_id": "L2", "registered_at": 1.5}),  # numbers: their text
        json.dumps({"event_id": "E3", "line_id": "L3", "name": True}),  # not text: malformed, event_id kept
        json.dumps(["E4"]),  # not an object
        '{"event_id": "E5", "name": "\\ud800"}',  # a lone surrogate is not UTF-8
        '{"event_id": "E6", ',  # cut short
        json.dumps({"event_id": "E7", "line_id": "L7", "address": "x" * 5000}),  # over the field limit
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8") + b'{"event_id": "E8", "name": "\xff"}\n')
    raw, bad = read(str(path), batch_size=3)
    assert raw.column("event_id").to_pylist() == ["E1", "42"] and raw.column("_src_row").to_pylist() == [1, 3]
    assert raw.column("registered_at").to_pylist() == [None, "1.5"] and raw.column("name")[0].as_py() == CANARY_NAME
    got = sorted((b.source_row, b.key, b.field, b.detail) for b in bad)
    assert got == [
        (4, "E3", "name", "field name is a JSON bool, not text"),
        (5, None, None, "not a JSON object"),
        (6, "E5", "name", "bytes not valid utf-8"),
        (7, None, None, "not valid JSON"),
        (8, "E7", "address", "field address is 5000 characters, limit 4096"),
        (9, None, None, "bytes not valid utf-8"),
    ]
    assert not any(CANARY_NAME in str(b) for b in bad)


def test_an_empty_json_lines_file_is_a_day_without_events(tmp_path):
    (tmp_path / "none.jsonl").write_bytes(b"")
    raw, bad = read(str(tmp_path / "none.jsonl"))
    assert raw.num_rows == 0 and bad == []


def test_csv_events_name_their_event_id_in_a_malformed_row(tmp_path):
    path = tmp_path / "events.csv"
    rows = [",".join(NAMES), "E1,L1" + "," * (len(NAMES) - 2), "E2,L2,," + "x" * 5000 + "," * (len(NAMES) - 4), "E3,L3"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    raw, bad = read(str(path))
    assert raw.column("event_id").to_pylist() == ["E1"]
    assert sorted((b.source_row, b.key, b.field) for b in bad) == [(2, "E2", "doc_number"), (3, None, None)]


def test_an_events_file_without_event_id_or_line_id_is_refused(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("line_id,name\nL1,x\n", encoding="utf-8")
    with pytest.raises(InputError, match="missing required column.*event_id"):
        plan_event_splits([str(path)])
    with pytest.raises(InputError, match="no .parquet, .avro, .csv, .jsonl, .ndjson or .json file"):
        plan_event_splits([str(tmp_path / "*.txt")])


def test_base_kind_tells_a_merged_base_from_a_raw_one(tmp_path):
    raw = tmp_path / "raw.parquet"
    pq.write_table(pa.table({n: pa.array(["x"], pa.string()) for n in field_names("subscriber_base")}), raw)
    merged = tmp_path / "merged"
    merged.mkdir()
    pq.write_table(arrow_schema("merged_line").empty_table(), merged / "part-00000-of-00001.parquet")
    csv_base = tmp_path / "base.csv"
    csv_base.write_text("line_id,line_type,subscriber_kind,status\n", encoding="utf-8")
    assert base_kind([str(raw)]) == "raw" and base_kind([str(csv_base)]) == "raw"
    assert base_kind([str(merged)]) == "merged"
    with pytest.raises(Exception, match="mixes raw files"):
        base_kind([str(raw), str(merged)])
