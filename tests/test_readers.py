"""Tests of the subscriber-base readers (pipelines/io/base_files.py) on small fixture files."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

from pipelines.io import base_files as readers
from pipelines.io import csv_stream
from pipelines.io.base_files import read_split
from pipelines.io.planning import InputError, Split, plan_splits
from transforms.core.rows import RAW_SCHEMA, BadRow
from schemas import avro_schema, field_names
from transforms.core.deadletter import SCHEMA as DL_SCHEMA, DeadLetterContext

CONTRACT = field_names("subscriber_base")
CANARY_NAME = "金丝雀测试甲"
CANARY_DOC = "110105194912310021"
CANARIES = (CANARY_NAME, CANARY_DOC, "01065529988")


def row(i: int, **kw) -> dict:
    base = {
        "line_id": f"L{i:04d}",
        "msisdn": "01065529988" if i % 2 else f"1380013{i:04d}",
        "line_type": "FIXED" if i % 2 else "MOBILE",
        "subscriber_kind": "INDIVIDUAL",
        "status": "ACTIVE",
        "activated_on": "2012-03-04",
        "terminated_on": None,
        "region": "110105",
        "agent_id": None,
        "doc_type": "RESIDENT_ID",
        "doc_number": CANARY_DOC if i == 1 else f"0{i:017d}",
        "name": CANARY_NAME if i == 1 else "张三",
        "address": "北京市朝阳区建国路1号",
        "handler_doc_type": None,
        "handler_doc_number": None,
        "handler_name": None,
        "updated_at": "2013-09-01T10:00:00Z",
    }
    base.update(kw)
    return base


ROWS = [row(i) for i in range(1, 7)]


def csv_line(values: list, encoding: str = "utf-8") -> bytes:
    def cell(v):
        if v is None:
            return ""
        v = str(v)
        return '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n') else v

    return (",".join(cell(v) for v in values) + "\n").encode(encoding)


def write_csv(path, rows, columns=CONTRACT, encoding="utf-8", header=None) -> str:
    with open(path, "wb") as f:
        f.write(header if header is not None else csv_line(columns, encoding))
        for r in rows:
            f.write(r if isinstance(r, bytes) else csv_line([r.get(c) for c in columns], encoding))
    return str(path)


def write_parquet(path, rows, **kw) -> str:
    pq.write_table(pa.Table.from_pylist(rows, pa.schema([(c, pa.string()) for c in CONTRACT])), path, **kw)
    return str(path)


def write_avro(path, rows, schema=None) -> str:
    with open(path, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(schema or avro_schema("subscriber_base")), rows)
    return str(path)


def read_all(paths, **kw) -> tuple[pa.Table, list[BadRow]]:
    splits, _ = plan_splits(paths if isinstance(paths, list) else [paths], encoding=kw.get("encoding", "utf-8"))
    tables, bad = [], []
    for s in splits:
        for raw, b in read_split(s, **kw):
            assert raw.schema == RAW_SCHEMA
            tables.append(raw)
            bad.extend(b)
    return pa.concat_tables(tables) if tables else RAW_SCHEMA.empty_table(), bad


def no_canary(text: str) -> None:
    assert not any(c in text for c in CANARIES), "identity value leaked"


def check_bad(bad: list[BadRow]) -> None:
    for b in bad:
        no_canary(b.detail)
        assert b.source_row is not None


def test_three_formats_give_identical_raw_tables(tmp_path):
    tables = []
    for ext, write in (("csv", write_csv), ("parquet", write_parquet), ("avro", write_avro)):
        raw, bad = read_all(write(tmp_path / f"base.{ext}", ROWS))
        assert bad == []
        tables.append(raw.drop_columns(["_src_file"]))
    assert tables[0].equals(tables[1]) and tables[0].equals(tables[2])
    assert tables[0].column("_src_row").to_pylist() == list(range(1, 7))
    assert tables[0].column("msisdn")[0].as_py() == "01065529988"
    assert tables[0].column("doc_number")[1].as_py() == "000000000000000002"
    assert tables[0].column("terminated_on").null_count == 6  # CSV empty field == null


def test_typed_parquet_and_avro_columns_become_strings(tmp_path):
    # An operator who stored msisdn as int64 has already lost the leading 0: we
    # cannot recover it, and say so in the module docstring.
    t = pa.table(
        {
            "line_id": ["L1", "L2"],
            "line_type": ["FIXED", "MOBILE"],
            "subscriber_kind": ["INDIVIDUAL"] * 2,
            "status": ["ACTIVE"] * 2,
            "msisdn": pa.array([1065529988, 13800138000], pa.int64()),
            "activated_on": pa.array([dt.date(2012, 3, 4), None], pa.date32()),
            "updated_at": pa.array(
                [dt.datetime(2013, 9, 1, 10, 0, 0), dt.datetime(2013, 9, 1, 10, 0, 0, 500)],
                pa.timestamp("us", "Asia/Shanghai"),
            ),
            "doc_number": pa.array([b"0110", None], pa.binary()),
        }
    )
    pq.write_table(t, tmp_path / "t.parquet")
    raw, bad = read_all(str(tmp_path / "t.parquet"))
    assert bad == []
    assert raw.column("msisdn").to_pylist() == ["1065529988", "13800138000"]
    assert raw.column("activated_on").to_pylist() == ["2012-03-04", None]
    assert raw.column("updated_at").to_pylist() == ["2013-09-01T10:00:00Z", "2013-09-01T10:00:00.000500Z"]
    assert raw.column("doc_number").to_pylist() == ["0110", None]
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": n, "type": "string"} for n in ("line_id", "line_type", "subscriber_kind", "status")]
        + [
            {"name": "msisdn", "type": ["null", "long"]},
            {"name": "activated_on", "type": ["null", {"type": "int", "logicalType": "date"}]},
            {"name": "updated_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        ],
    }
    rec = {
        "line_id": "L1",
        "line_type": "MOBILE",
        "subscriber_kind": "INDIVIDUAL",
        "status": "ACTIVE",
        "msisdn": 13800138000,
        "activated_on": dt.date(2012, 3, 4),
        "updated_at": dt.datetime(2013, 9, 1, 2, 0, tzinfo=dt.timezone.utc),
    }
    raw, _ = read_all(write_avro(tmp_path / "t.avro", [rec], schema))
    assert raw.select(["msisdn", "activated_on", "updated_at"]).to_pylist() == [
        {"msisdn": "13800138000", "activated_on": "2012-03-04", "updated_at": "2013-09-01T02:00:00Z"}
    ]


def test_gb18030_needs_the_encoding_option(tmp_path):
    path = write_csv(tmp_path / "base.csv", ROWS, encoding="gb18030")
    raw, bad = read_all(path, encoding="gb18030")
    assert bad == [] and raw.column("name").to_pylist()[:2] == [CANARY_NAME, "张三"]
    assert raw.column("address")[0].as_py() == "北京市朝阳区建国路1号"
    with pytest.raises(InputError, match="--encoding gb18030") as e:
        plan_splits([path])
    no_canary(str(e.value))
    assert "\n" not in str(e.value) and "base.csv" in str(e.value)
    with pytest.raises(InputError, match="--encoding gb18030") as e:  # read_split without a plan
        list(read_split(Split(path, 0, "csv")))
    no_canary(str(e.value))
    utf8 = write_csv(tmp_path / "u.csv", ROWS)
    with pytest.raises(InputError, match="--encoding utf-8"):
        plan_splits([utf8], encoding="gbk")


def test_isolated_bad_bytes_become_one_bad_row(tmp_path):
    lines = [row(i) for i in range(1, 6)]
    bad_line = csv_line([row(9).get(c) for c in CONTRACT]).replace("张三".encode(), b"\xff\xfe" + CANARY_DOC.encode())
    path = write_csv(tmp_path / "base.csv", lines[:3] + [bad_line] + lines[3:])
    raw, bad = read_all(path)
    assert raw.num_rows == 5 and raw.column("_src_row").to_pylist() == [1, 2, 3, 5, 6]
    assert bad == [BadRow(path, 4, "name", "bytes not valid utf-8")]
    t = pa.table({c: [r[c] for r in lines] for c in CONTRACT})
    t = t.set_column(
        CONTRACT.index("name"), "name", pa.array([b"\xff" if i == 2 else b"ok" for i in range(5)]).view(pa.string())
    )  # a Parquet writer that stored invalid UTF-8 as a string
    pq.write_table(t, tmp_path / "p.parquet")
    raw, bad = read_all(str(tmp_path / "p.parquet"))
    assert raw.num_rows == 4 and [(b.source_row, b.detail) for b in bad] == [(3, "bytes not valid utf-8")]
    gb = [csv_line([r.get(c) for c in CONTRACT], "gb18030") for r in lines]
    gb[2] = gb[2].replace("张三".encode("gb18030"), b"\x81,\x81")  # broken sequence, and a stray comma
    gb[3] = gb[3].replace("张三".encode("gb18030"), b"\x81\x20")
    raw, bad = read_all(write_csv(tmp_path / "gb.csv", gb), encoding="gb18030")
    assert raw.num_rows == 3 and [(b.source_row, b.field, b.detail) for b in bad] == [
        (3, None, "expected 17 fields, found 18"),
        (4, "name", "bytes not valid gb18030"),
    ]


def test_wrong_field_count_and_multiline_values_keep_row_numbers(tmp_path):
    lines = [
        row(1, address="北京市\n朝阳区"),
        b"L2,MOBILE,only three\n",
        row(3),
        b"\n",
        row(4),
        csv_line([row(5).get(c) for c in CONTRACT] + ["extra", CANARY_NAME]),
    ]
    path = write_csv(tmp_path / "base.csv", lines)
    raw, bad = read_all(path)
    assert raw.column("_src_row").to_pylist() == [1, 3, 4]
    assert raw.column("address")[0].as_py() == "北京市\n朝阳区"
    assert [(b.source_row, b.detail) for b in bad] == [
        (2, "expected 17 fields, found 3"),
        (5, "expected 17 fields, found 19"),
    ]
    check_bad(bad)


@pytest.mark.parametrize("block", [16 << 20, 1 << 20])
def test_megabyte_field_is_a_bad_row(tmp_path, monkeypatch, block):
    monkeypatch.setattr(csv_stream, "CSV_BLOCK_BYTES", block)  # 1 MiB: the row straddles, reader restarts
    huge = CANARY_NAME * (5 * 1024 * 1024 // len(CANARY_NAME))
    rows = [row(i) for i in range(1, 2001)]
    rows[1500] = row(1501, address=huge)
    raw, bad = read_all(write_csv(tmp_path / "base.csv", rows))
    assert raw.num_rows == 1999 and sorted(set(raw.column("_src_row").to_pylist())) == [
        i for i in range(1, 2001) if i != 1501
    ]
    assert [(b.source_row, b.field, b.detail) for b in bad] == [
        (1501, "address", f"field address is {len(huge)} characters, limit 4096")
    ]
    check_bad(bad)


def test_nul_and_control_characters(tmp_path):
    rows = [row(1, name=CANARY_NAME + "\x00"), row(2, address="x\x07y"), row(3, name="a\tb")]
    for path in (write_csv(tmp_path / "b.csv", rows), write_parquet(tmp_path / "b.parquet", rows)):
        raw, bad = read_all(path)
        assert raw.column("_src_row").to_pylist() == [3]
        assert [(b.source_row, b.field, b.detail) for b in bad] == [
            (1, "name", "NUL byte in field name"),
            (2, "address", "control character in field address"),
        ]


def test_header_rules(tmp_path):
    cols = [c for c in CONTRACT if c not in ("line_type", "status")]
    with pytest.raises(InputError, match=r"base.csv: missing required column\(s\): line_type, status$") as e:
        plan_splits([write_csv(tmp_path / "base.csv", ROWS, cols)])
    no_canary(str(e.value))
    cols = [c for c in CONTRACT if c != "handler_name"] + ["remark"]
    header = ("\ufeff" + ",".join(f" {c.upper()} " if c == "line_id" else c for c in cols) + "\r\n").encode()
    path = write_csv(tmp_path / "h.csv", [dict(r, remark=CANARY_NAME) for r in ROWS], cols, header=header)
    splits, info = plan_splits([path])
    assert info.ignored_columns == ["remark"] and info.missing_identity_columns == ["handler_name"]
    assert info.files == [path] and info.estimated_rows > 0
    raw, bad = read_all(path)
    assert raw.column_names == RAW_SCHEMA.names and bad == []
    assert raw.column("line_id").to_pylist()[0] == "L0001" and raw.column("handler_name").null_count == 6
    dup = write_csv(tmp_path / "d.csv", ROWS, CONTRACT + ["Line_ID"])
    with pytest.raises(InputError, match="duplicate column") as e:
        plan_splits([dup])
    no_canary(str(e.value))


def test_unreadable_inputs(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "empty.parquet").write_bytes(b"")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "base.txt").write_text("line_id\n")
    for name, message in (
        ("empty.csv", "empty file"),
        ("empty.parquet", "empty file"),
        ("junk.parquet", "not a readable parquet file"),
        ("nope.csv", "no such file"),
        ("base.txt", "not a .parquet, .avro or .csv file"),
    ):
        with pytest.raises(InputError, match=message) as e:
            plan_splits([str(tmp_path / name)])
        assert str(e.value).startswith(str(tmp_path / name)) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="--encoding"):
        plan_splits([str(tmp_path / "base.txt")], encoding="latin-1")


def test_header_only_is_zero_rows(tmp_path):
    for path in (
        write_csv(tmp_path / "h.csv", []),
        write_parquet(tmp_path / "h.parquet", []),
        write_avro(tmp_path / "h.avro", []),
    ):
        raw, bad = read_all(path)
        assert raw.num_rows == 0 and bad == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # pyarrow's decode
@pytest.mark.parametrize("block", [16 << 20, 4096])
def test_conservation_on_a_mixed_file(tmp_path, monkeypatch, block):
    # 4096-byte blocks: many batches, and the reader restarts transcoded mid-file
    # when it meets row 280 (bad bytes and a wrong field count, which pyarrow cannot report).
    monkeypatch.setattr(csv_stream, "CSV_BLOCK_BYTES", block)
    rows, expected_bad = [], 0
    for i in range(1, 301):
        if i == 280:
            rows.append(b"L\xff\xfe,too,few\n")
            expected_bad += 1
        elif i % 7 == 0:
            rows.append(b"L,too,few\n")
            expected_bad += 1
        elif i % 11 == 0:
            rows.append(csv_line([row(i).get(c) for c in CONTRACT]).replace(b"L0", b"\xc3(", 1))
            expected_bad += 1
        elif i % 13 == 0:
            rows.append(row(i, name="a\x00"))
            expected_bad += 1
        else:
            rows.append(row(i, address="多行\n地址") if i % 5 == 0 else row(i))
    raw, bad = read_all(write_csv(tmp_path / "mix.csv", rows), batch_size=40)
    assert len(bad) == expected_bad and raw.num_rows + len(bad) == 300
    assert sorted(raw.column("_src_row").to_pylist() + [b.source_row for b in bad]) == list(range(1, 301))
    check_bad(bad)


def test_parquet_row_group_splits(tmp_path):
    path = write_parquet(tmp_path / "b.parquet", [row(i) for i in range(1, 1001)], row_group_size=100)
    splits, info = plan_splits([path], rows_per_split=250)
    assert info.estimated_rows == 1000
    assert [(s.row_groups, s.first_row) for s in splits] == [
        ((0, 1, 2), 1),
        ((3, 4, 5), 301),
        ((6, 7, 8), 601),
        ((9,), 901),
    ]
    raw = pa.concat_tables(t for s in splits for t, _ in read_split(s, batch_size=64))
    assert raw.column("_src_row").to_pylist() == list(range(1, 1001))
    assert raw.column("line_id").to_pylist() == [f"L{i:04d}" for i in range(1, 1001)]


def test_glob_and_directory_expansion(tmp_path, monkeypatch):
    d = tmp_path / "in"
    d.mkdir()
    write_csv(d / "b.csv", ROWS)
    write_parquet(d / "a.parquet", ROWS)
    write_avro(d / "c.avro", ROWS)
    (d / "_SUCCESS").write_text("")
    (d / "sub").mkdir()
    expected = [str(d / n) for n in ("a.parquet", "b.csv", "c.avro")]
    assert plan_splits([str(d)])[1].files == expected
    assert plan_splits([str(d) + "/"])[1].files == expected
    assert plan_splits([str(d / "*.csv"), str(d / "b.csv")])[1].files == [str(d / "b.csv")]
    splits, _ = plan_splits([str(d / "*")])
    assert [(s.file_index, s.fmt) for s in splits] == [(0, "parquet"), (1, "csv"), (2, "avro")]
    with pytest.raises(InputError, match="nor a directory of them"):  # an empty directory
        plan_splits([str(d / "sub")])
    monkeypatch.chdir(d)  # relative paths stay relative (Beam alone lists nothing for "*.csv")
    assert plan_splits(["*.csv"])[1].files == ["b.csv"]
    assert plan_splits(["b.csv", "."])[1].files == ["a.parquet", "b.csv", "c.avro"]


@pytest.mark.e2e
def test_csv_read_ahead_is_bounded_and_an_abandoned_reader_exits_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_stream, "CSV_BLOCK_BYTES", 16 << 10)
    path = write_csv(tmp_path / "big.csv", [row(i) for i in range(1, 20001)])  # ~250 blocks
    reads = []
    read = csv_stream.BlockStream.read
    monkeypatch.setattr(csv_stream.BlockStream, "read", lambda self, n=-1: reads.append(n) or read(self, n))
    batches = read_split(Split(path, 0, "csv"), batch_size=100)
    raw, _ = next(batches)
    time.sleep(0.3)  # pyarrow's I/O thread alone would now be ~32 blocks ahead
    assert raw.num_rows == 100 and len(reads) <= csv_stream.READ_AHEAD_BLOCKS + 4
    batches.close()
    # a reader left open until the interpreter exits must not abort it (pyarrow's
    # read-ahead thread entering Python during shutdown would)
    code = (
        "from pipelines.io import base_files as readers, csv_stream, planning; csv_stream.CSV_BLOCK_BYTES = 16 << 10; "
        f"it = readers.read_split(planning.Split({path!r}, 0, 'csv'), batch_size=100); next(it); print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(readers.__file__).parents[2], capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "ok", "")


def test_csv_batches_follow_batch_size(tmp_path):
    raw_sizes = [
        raw.num_rows
        for raw, _ in read_split(
            Split(write_csv(tmp_path / "b.csv", [row(i) for i in range(1, 1001)]), 0, "csv"), batch_size=300
        )
    ]
    assert raw_sizes == [300, 300, 300, 100]


def _expect_raw(expected_rows: list[int]):
    def check(tables):
        rows = sorted(r for t in tables for r in t.column("_src_row").to_pylist())
        assert rows == expected_rows, rows
        assert all(t.schema == RAW_SCHEMA for t in tables)

    return check


def _expect_dead(expected: list[tuple]):
    def check(tables):
        got = sorted((r["source_row"], r["reason"], r["field"], r["step"]) for t in tables for r in t.to_pylist())
        assert got == expected, got
        assert all(t.schema == DL_SCHEMA for t in tables)
        assert not any(c in str(t.to_pylist()) for t in tables for c in CANARIES)

    return check


def test_read_subscriber_base_ptransform(tmp_path):
    lines = [row(1), row(2, name=CANARY_NAME + "\x00"), b"x,y\n", row(4)]
    splits, _ = plan_splits([write_csv(tmp_path / "a.csv", lines), write_parquet(tmp_path / "b.parquet", ROWS)])
    ctx = DeadLetterContext(step="scan", run_id="r1", time="2026-01-01T00:00:00Z")
    with BeamTestPipeline(runner="FnApiRunner") as p:
        out = p | readers.ReadSubscriberBase(splits, ctx, batch_size=2)
        assert_that(out.raw, _expect_raw(sorted([1, 4] + list(range(1, 7)))), label="raw")
        assert_that(
            out.dead_letter,
            _expect_dead([(2, "ROW_MALFORMED", "name", "scan"), (3, "ROW_MALFORMED", None, "scan")]),
            label="dead",
        )
    counters = {c.key.metric.name: c.committed for c in p.result.metrics().query()["counters"]}
    assert counters == {"rows_read": 10, "rows_malformed": 2}


def test_read_subscriber_base_reads_large_csv_and_avro_files_in_byte_ranges(tmp_path):
    """Under the pipeline a file is cut, its ranges scanned, numbered and read by many bundles: the rows and dead
    letters are those of one read of the whole file (pipelines/io/ranges.py; tests/test_split_reads.py in depth)."""
    rows = [row(i, address="多行\n地址" if i % 3 else "一行") for i in range(1, 301)]
    rows[40] = b"x,y\n"  # a malformed row: row 41, in some range
    csv_path = write_csv(tmp_path / "a.csv", rows)
    avro_path = write_avro(tmp_path / "b.avro", [row(i) for i in range(1, 301)])
    splits, _ = plan_splits([csv_path, avro_path])
    smallest = min(s.size for s in splits)
    ctx = DeadLetterContext(step="scan", run_id="r1", time="2026-01-01T00:00:00Z")
    with BeamTestPipeline(runner="FnApiRunner") as p:
        out = p | readers.ReadSubscriberBase(splits, ctx, batch_size=16, bytes_per_split=smallest // 6)
        expected = sorted([r for r in range(1, 301) if r != 41] + list(range(1, 301)))
        assert_that(out.raw, _expect_raw(expected), label="raw")
        assert_that(out.dead_letter, _expect_dead([(41, "ROW_MALFORMED", None, "scan")]), label="dead")
    counters = {c.key.metric.name: c.committed for c in p.result.metrics().query()["counters"]}
    assert counters == {"rows_read": 600, "rows_malformed": 1}


def test_registration_events_in_csv_are_read_in_byte_ranges_too(tmp_path):
    from pipelines.io.base_files import ReadRegistrationEvents
    from pipelines.io.events import plan_event_splits

    names = field_names("registration_event")
    lines = [{"event_id": f"E{i}", "line_id": f"L{i}", "name": "多行\n名字"} for i in range(1, 201)]
    path = write_csv(tmp_path / "events.csv", lines, columns=names)
    splits, _ = plan_event_splits([path])
    ctx = DeadLetterContext(step="merge", run_id="r1", time="2026-01-01T00:00:00Z")
    with BeamTestPipeline(runner="FnApiRunner") as p:
        out = p | ReadRegistrationEvents(splits, ctx, batch_size=16, bytes_per_split=splits[0].size // 5)
        assert_that(
            out.raw | beam.Map(lambda t: t.select(["event_id", "_src_row"]).to_pylist()) | beam.FlatMap(list),
            lambda got: _equal(
                sorted((r["_src_row"], r["event_id"]) for r in got), [(i, f"E{i}") for i in range(1, 201)]
            ),
        )


def _equal(got, expected):
    assert got == expected
