"""The vectorised Avro and JSON encoders agree with fastavro and json on every job schema."""

from __future__ import annotations

import datetime as dt
import io
import json

import fastavro
import numpy as np
import pyarrow as pa
import pytest

from schemas import avro_schema
from transforms.notify.encode import BLOCK_RECORDS, avro_file, json_messages, varints
from transforms.notify.jobs import JOB_SCHEMAS

UTC = dt.timezone.utc


def sample_rows(channel: str, n: int) -> pa.Table:
    schema = JOB_SCHEMAS[channel]
    rng = np.random.default_rng(3)
    cols = {}
    for field in schema:
        t = field.type
        if pa.types.is_string(t):
            values = [f'{field.name}-{i}-中文"\\\n' if i % 3 else "" for i in range(n)]
            if field.nullable:
                values = [None if i % 4 == 0 else v for i, v in enumerate(values)]
            cols[field.name] = pa.array(values, t)
        elif pa.types.is_integer(t):
            cols[field.name] = pa.array(rng.integers(-(2**31) if t == pa.int32() else -(2**62), 2**30, n), t)
        elif pa.types.is_floating(t):
            cols[field.name] = pa.array(rng.normal(size=n) * 1e6, t)
        elif pa.types.is_date(t):
            cols[field.name] = pa.array(
                [dt.date(2026, 12, 1) + dt.timedelta(days=int(d)) for d in rng.integers(-9000, 9000, n)], t
            )
        else:
            cols[field.name] = pa.array(
                [
                    dt.datetime(2026, 12, 1, tzinfo=UTC) + dt.timedelta(microseconds=int(u))
                    for u in rng.integers(-(10**15), 10**15, n)
                ],
                t,
            )
    return pa.table(cols, schema=schema)


def test_varints_match_fastavro():
    from fastavro.io.binary_encoder import BinaryEncoder

    values = np.array([0, -1, 1, 63, -64, 64, 8191, -8192, 2**31, -(2**40), 2**62, -(2**63), 2**63 - 1])
    for value, encoded in zip(values, varints(values).to_pylist()):
        buffer = io.BytesIO()
        BinaryEncoder(buffer).write_long(int(value))
        assert encoded == buffer.getvalue()


@pytest.mark.parametrize("channel", ["sms", "call", "announcement"])
def test_avro_files_read_back_with_fastavro(channel):
    table = sample_rows(channel, 2 * BLOCK_RECORDS // 1000 + 7)
    data = avro_file(table, avro_schema(f"notify_{channel}_job"), "x.avro")
    reader = fastavro.reader(io.BytesIO(data))
    assert reader.writer_schema["name"].endswith(avro_schema(f"notify_{channel}_job")["name"])
    assert list(reader) == table.to_pylist()
    assert avro_file(table, avro_schema(f"notify_{channel}_job"), "x.avro") == data  # same rows, same bytes


def test_avro_blocks_split_large_tables():
    table = sample_rows("announcement", BLOCK_RECORDS + 5)
    blocks = list(fastavro.block_reader(io.BytesIO(avro_file(table, avro_schema("notify_announcement_job")))))
    assert [b.num_records for b in blocks] == [BLOCK_RECORDS, 5]


@pytest.mark.parametrize("channel", ["sms", "call", "announcement"])
def test_a_single_job_is_a_valid_file(channel):
    """One row: every column is constant, the case a wave with one region or one line produces."""
    for start in range(4):  # rows with and without nulls and empty strings
        table = sample_rows(channel, start + 1).slice(start, 1)
        data = avro_file(table, avro_schema(f"notify_{channel}_job"), "one.avro")
        assert list(fastavro.reader(io.BytesIO(data))) == table.to_pylist()


def test_empty_table_is_a_valid_file():
    table = sample_rows("sms", 0)
    assert list(fastavro.reader(io.BytesIO(avro_file(table, avro_schema("notify_sms_job"))))) == []


def test_json_times_are_whole_seconds_when_they_can_be():
    times = pa.array([dt.datetime(2026, 12, 1, 8, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))
    assert json.loads(json_messages(pa.table({"t": times})).to_pylist()[0]) == {"t": "2026-12-01T08:00:00Z"}


def test_json_messages_match_json():
    table = sample_rows("call", 50)
    for raw, row in zip(json_messages(table).to_pylist(), table.to_pylist()):
        got = json.loads(raw.decode("utf-8"))
        assert list(got) == table.column_names
        for key, value in row.items():
            if isinstance(value, dt.datetime):
                assert got[key].endswith("Z") and dt.datetime.fromisoformat(got[key][:-1] + "+00:00") == value
            elif isinstance(value, dt.date):
                assert got[key] == value.isoformat()
            else:
                assert got[key] == value, key


@pytest.mark.parametrize("channel", ["sms", "call", "announcement"])
def test_repeated_values_are_encoded_exactly(channel):
    """Columns of few values (the usual jobs: one campaign, a few days, windows, variants, regions) take the
    once-per-distinct-value path; rows read back equal, and 0.0 and -0.0 keep their sign."""
    wide = sample_rows(channel, 600)
    few = wide.take(pa.array(np.arange(600) % 5))  # every column: 5 distinct values (nulls included)
    cols = {name: few.column(name) for name in few.column_names}
    cols["job_id"] = wide.column("job_id")  # one column of distinct values among them
    if "cost" in cols:
        cols["cost"] = pa.array(np.where(np.arange(600) % 2, 0.0, -0.0))
    table = pa.table(cols, schema=few.schema)
    rows = list(fastavro.reader(io.BytesIO(avro_file(table, avro_schema(f"notify_{channel}_job")))))
    assert rows == table.to_pylist()
    if "cost" in cols:
        assert [np.signbit(r["cost"]) for r in rows] == [i % 2 == 0 for i in range(600)]
