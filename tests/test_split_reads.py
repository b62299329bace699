"""Large CSV and Avro files read in byte ranges by many workers (pipelines/io/ranges.py, csv_lines.py, avro_blocks.py).

The rule every test checks: a file read in ranges gives exactly the rows, row
numbers and bad rows of the same file read whole (every row read once). CSV
ranges find their record boundaries by scanning (quote-aware) from the cut and
meeting the previous range where its records end; where they cannot meet, the
file is read whole. Avro ranges start at the sync marker after the cut.
"""

from __future__ import annotations

import dataclasses
import os
import random

import apache_beam as beam
import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.io import csv_lines
from pipelines.io.base_files import ReadSubscriberBase, read_split
from pipelines.io.planning import InputError
from pipelines.io.ranges import cut_ranges
from schemas import arrow_schema, avro_schema, field_names
from tests.support.rows import AS_OF, CTX, person
from transforms.core.rows import BASE, Contract
from tests.support.split_reads import COUNTER_NAMESPACE, CountingReadFn, planned, ranges_at, read, resolved
from transforms.core.deadletter import SCHEMA as DL_SCHEMA

COLUMNS = field_names("subscriber_base")
SMALL = Contract("test table", ("id", "name", "address"), ("id",), text=True)  # small rows: every cut is tried


def _cell(value) -> str:
    if value is None:
        return ""
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\r\n') else value


def csv_bytes(rows: list, encoding: str = "utf-8", newline: str = "\n", last_newline: bool = True) -> bytes:
    """A CSV file of rows (tuples of SMALL's columns), quoted where needed."""
    lines = [",".join(SMALL.columns)] + [",".join(_cell(v) for v in r) for r in rows]
    return (newline.join(lines) + (newline if last_newline else "")).encode(encoding)


def write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


class File:
    """A file, planned whole and read whole once; ``cut`` reads it in ranges and checks it against that."""

    def __init__(self, path: str, encoding: str = "utf-8", contract=SMALL):
        self.path, self.encoding = path, encoding
        self.whole = planned(path, encoding, contract)
        self.expected = read([self.whole], encoding)
        self.size = self.whole.size

    def cut(self, cuts: list[int], **kw) -> list:
        """The splits read for these cuts, after checking they give the rows, numbers and bad rows of the whole."""
        splits = resolved(self.whole, cuts, self.encoding, **kw)
        assert read(splits, self.encoding) == self.expected, cuts
        return splits


TRICKY = [
    ("L1", "张三", "北京市\n朝阳区"),  # a value with a line break
    ("L2", '张"三', '"引号"开头'),  # quotes inside quoted fields
    ("L3", "李四", "a,b\r\nc"),  # a delimiter and a CRLF inside a value
    ("L4", "王五", "x"),
    ("L5", "", "\n"),
]


def test_every_cut_of_a_file_with_line_breaks_in_quoted_fields_reads_every_row_once(tmp_path):
    """A range that ends inside a quoted field: at every byte of the file, alone and paired with another cut."""
    f = File(write(tmp_path, "base.csv", csv_bytes(TRICKY)))
    for cut in range(1, f.size):
        f.cut([cut])
    rng = random.Random(7)
    for _ in range(100):
        f.cut(rng.sample(range(1, f.size), 2))
    # a cut inside L1's address: the second range starts after the quoted field, where L1 ends, not at its break
    cut = open(f.path, "rb").read().index("朝阳区".encode())
    first, second = f.cut([cut])
    assert (first.rows, second.first_row, second.rows) == (1, 2, 4) and second.byte_range[0] > cut


def test_crlf_files_cut_between_cr_and_lf_and_everywhere_else(tmp_path):
    data = csv_bytes(TRICKY, newline="\r\n")
    f = File(write(tmp_path, "crlf.csv", data))
    between = [i + 1 for i in range(len(data) - 1) if data[i : i + 2] == b"\r\n"]
    assert len(between) >= 6
    for cut in range(1, f.size):
        f.cut([cut])
    assert [s.rows for s in f.cut(between)] == [1] * 5


def test_gb18030_multibyte_characters_at_the_cut(tmp_path):
    rows = [(f"L{i}", "𠀀张三" if i % 2 else "欧阳娜娜", "广州市天河区𠀀路1号") for i in range(6)]
    assert len("𠀀".encode("gb18030")) == 4  # four-byte characters: cuts fall inside them too
    f = File(write(tmp_path, "gb.csv", csv_bytes(rows, encoding="gb18030")), "gb18030")
    for cut in range(1, f.size):
        f.cut([cut])
    raw, bad = f.expected
    assert raw.num_rows == 6 and not bad and raw.column("name").to_pylist()[1] == "𠀀张三"


def test_a_file_without_trailing_newline_and_one_with_blank_lines(tmp_path):
    no_newline = File(write(tmp_path, "a.csv", csv_bytes(TRICKY, last_newline=False)))
    blank = File(write(tmp_path, "b.csv", csv_bytes(TRICKY).replace(b"L4", b"\n\r\n\nL4")))
    for f in (no_newline, blank):
        for cut in range(1, f.size):
            f.cut([cut])
    assert blank.expected[0].column("_src_row").to_pylist() == [1, 2, 3, 4, 5]  # blank lines are no rows


def test_empty_ranges_hold_no_rows(tmp_path):
    """Ranges of one byte each: most hold no record start (inside a row, inside the header) and are dropped."""
    f = File(write(tmp_path, "base.csv", csv_bytes(TRICKY)))
    splits = f.cut(list(range(1, f.size)))
    assert [s.rows for s in splits] == [1] * 5 and [s.first_row for s in splits] == [1, 2, 3, 4, 5]
    assert all(a.byte_range[1] == b.byte_range[0] for a, b in zip(splits, splits[1:]))
    header = open(f.path, "rb").read().index(b"\n") + 1
    assert splits[0].byte_range[0] == header and splits[-1].byte_range[1] == f.size


def test_malformed_rows_keep_their_numbers_and_an_unbalanced_quote_is_read_whole(tmp_path):
    lines = csv_bytes([(f"L{i}", "张三", "x") for i in range(6)]).split(b"\n")
    lines[2] = b"x,y"  # too few fields
    lines[4] = lines[4].replace(b"x", b'x"y')  # a quote inside an unquoted field: a plain character
    data = b"\n".join(lines)
    f = File(write(tmp_path, "bad.csv", data))
    for cut in range(1, f.size):
        f.cut([cut])
    assert [b[0] for b in f.expected[1]] == [2] and f.expected[0].num_rows == 5
    # an opening quote never closed: the records after it are one value. With a scan limit shorter than that
    # value the ranges cannot meet, and the file is read as one split; with room, the first range holds it.
    opened = csv_bytes([(f"L{i}", "张三", "x") for i in range(6)]).replace(b"L2,", b'"L2,')
    unbalanced = File(write(tmp_path, "open.csv", opened))
    cut = unbalanced.size // 2
    (whole,) = unbalanced.cut([cut], limit=8)
    assert whole.byte_range is None and whole.first_row == 1
    (first,) = unbalanced.cut([cut])
    assert first.byte_range[1] == unbalanced.size and first.rows == 3


def _well_formed(rng: random.Random, rows: int) -> bytes:
    values = ["a", "", "张三", 'say "hi"', "x,y", "line\nbreak", "cr\r\nlf", '"', "\r", ",", "𠀀"]
    lines = [",".join(_cell(rng.choice(values)) for _ in range(3)) for _ in range(rows)]
    return ("id,name,address\n" + "\n".join(lines) + ("\n" if rng.random() < 0.5 else "")).encode("utf-8")


def test_random_files_and_cuts_read_as_whole_and_the_fast_path_matches_the_exact_one(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_lines, "PIECE_BYTES", 64)  # pieces end everywhere: inside quotes, in "" and \r\n
    rng = random.Random(11)
    fast_used = 0
    for n in range(60):
        data = _well_formed(rng, rng.randint(1, 40))
        if n % 3 == 0:  # and some damage: a stray quote, a lost one
            at = rng.randrange(16, len(data))
            data = data[:at] + rng.choice([b'"', b"", b'a"']) + data[at + 1 :]
        f = File(write(tmp_path, f"r{n}.csv", data))
        f.cut(rng.sample(range(1, f.size), min(5, f.size - 1)))
        b = np.frombuffer(data, np.uint8)
        fast = csv_lines._fast(b, False, csv_lines.LF, True)
        exact, state = csv_lines._exact(data, csv_lines.LINE_START)
        if fast is not None:
            fast_used += 1
            assert fast[0].tolist() == exact and fast[1] == (state == csv_lines.IN_QUOTED)
    assert fast_used >= 30


def _avro(path: str, rows: list[dict], codec: str) -> str:
    with open(path, "wb") as f:  # small blocks: many of them in a small file
        fastavro.writer(f, fastavro.parse_schema(avro_schema("subscriber_base")), rows, codec=codec, sync_interval=300)
    return path


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_avro_ranges_start_at_the_sync_marker_after_the_cut(tmp_path, codec):
    rows = [{c: person(line_id=f"L{i:03d}").get(c) for c in COLUMNS} for i in range(200)]
    f = File(_avro(str(tmp_path / "b.avro"), rows, codec), contract=BASE)
    rng = random.Random(3)
    for _ in range(12):
        f.cut(rng.sample(range(1, f.size), rng.randint(1, 6)))
    splits = f.cut(list(range(1, f.size, 97)))  # cuts inside the header and inside blocks
    assert len(splits) > 5 and sum(s.rows for s in splits) == 200
    assert [s.first_row for s in splits] == [1] + list(np.cumsum([s.rows for s in splits])[:-1] + 1)


def test_a_range_that_reads_other_than_it_counted_is_refused(tmp_path):
    f = File(write(tmp_path, "base.csv", csv_bytes(TRICKY)))
    first, _ = f.cut([f.size // 2])
    with pytest.raises(InputError, match=rf"bytes \d+-\d+ held {first.rows} rows, not the {first.rows + 1} counted"):
        read([dataclasses.replace(first, rows=first.rows + 1)])
    with pytest.raises(ValueError, match="SplitLargeFiles"):  # a cut range is never read unscanned
        list(read_split(ranges_at(f.whole, [40])[1]))


def test_only_large_csv_and_avro_files_are_cut_and_parquet_keeps_its_row_groups(tmp_path):
    csv = planned(write(tmp_path, "a.csv", csv_bytes([(f"L{i}", "张三", "x") for i in range(50)])), contract=SMALL)
    assert cut_ranges(csv, csv.size) == [csv]  # under twice the range size: whole
    cut = cut_ranges(csv, csv.size // 4)
    assert len(cut) == 4 and cut[0].byte_range[0] == 0 and cut[-1].byte_range[1] == csv.size
    table = pa.Table.from_pylist(
        [person(line_id=f"L{i}") for i in range(100)], pa.schema([(c, pa.string()) for c in COLUMNS])
    )
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=10)
    from pipelines.io.planning import plan_splits

    splits, _ = plan_splits([str(tmp_path / "b.parquet")], rows_per_split=30)
    assert len(splits) == 4 and all(cut_ranges(s, 1) == [s] for s in splits)  # row groups, as planned


def test_the_scan_plans_a_parquet_base_in_splits_of_rows_per_split_rows(tmp_path):
    """Row groups of ROWS_PER_SPLIT rows: one split each (two local workers get even shares), whether the
    launcher plans the base or the pipeline does (--estimated-rows)."""
    import argparse

    from pipelines.io.base_files import ROWS_PER_SPLIT
    from pipelines.scan import _plan_base

    groups = 3
    n = groups * ROWS_PER_SPLIT + ROWS_PER_SPLIT // 2  # and a last, smaller group
    one = person(line_id="L0")
    table = pa.table(
        {c: pa.array([one[c]] * n, pa.string()) for c in ("line_id", "line_type", "subscriber_kind", "status")}
    )
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=ROWS_PER_SPLIT)
    args = argparse.Namespace(base=[str(tmp_path / "b.parquet")], encoding="utf-8", estimated_rows=None)
    splits, info = _plan_base(args)
    assert info.estimated_rows == n
    assert [s.row_groups for s in splits] == [(g,) for g in range(groups + 1)]
    assert [s.first_row for s in splits] == [1 + g * ROWS_PER_SPLIT for g in range(groups + 1)]
    in_pipeline, _ = _plan_base(argparse.Namespace(**{**vars(args), "estimated_rows": n}))
    assert in_pipeline.splits() == splits


# -- the pipeline: two worker processes ------------------------------------------------------------------------------


def _run_scan(base: str, out: str, bytes_per_split: int, options: list[str]) -> object:
    """The scan's read and classification (pipelines/scan.py build_pipeline), outputs to Parquet."""
    from pipelines.io.planning import plan_splits
    from transforms.scan.composite import ClassifyRegistrationCompleteness
    from transforms.scan.policy import load_policy

    splits, _ = plan_splits([base])
    fn = CountingReadFn(CTX, "utf-8", 20_000, 4096)
    p = beam.Pipeline(options=PipelineOptions(["--runner", "FnApiRunner", *options]))
    read = p | "ReadBase" >> ReadSubscriberBase(
        splits, CTX, batch_size=20_000, bytes_per_split=bytes_per_split, read_fn=fn
    )
    out_ = read.raw | ClassifyRegistrationCompleteness(
        load_policy(), AS_OF, CTX, None, 4, reader_dead_letter=read.dead_letter
    )
    out_.classified | "WriteClassified" >> beam.io.WriteToParquetBatched(
        os.path.join(out, "classified", "part"), schema=arrow_schema("classified_line")
    )
    out_.dead_letter | "WriteDead" >> beam.io.WriteToParquetBatched(os.path.join(out, "dead", "part"), schema=DL_SCHEMA)
    result = p.run()
    result.wait_until_finish()
    return result


def _table(folder: str, keys: list[str]) -> pa.Table:
    table = pq.read_table(folder)
    return table.sort_by([(k, "ascending") for k in keys])


@pytest.mark.e2e  # worker processes
def test_two_workers_read_one_large_csv_and_classify_it_as_one_split_does(tmp_path, monkeypatch):
    from dev import generate

    monkeypatch.setenv("PYTHONPATH", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    base = str(tmp_path / "base.csv")
    lines = generate.write_base(base, 200_000, 7)
    size = os.path.getsize(base)
    multi = _run_scan(
        base,
        str(tmp_path / "multi"),
        size // 8,
        ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
    )
    single = _run_scan(base, str(tmp_path / "single"), 2 * size, [])
    per_pid = {
        c.key.metric.name: c.committed
        for c in multi.metrics().query(MetricsFilter().with_namespace(COUNTER_NAMESPACE))["counters"]
    }
    assert len(per_pid) == 2 and sum(per_pid.values()) >= 8, per_pid  # both workers read ranges of the one file
    single_pids = single.metrics().query(MetricsFilter().with_namespace(COUNTER_NAMESPACE))["counters"]
    assert [c.committed for c in single_pids] == [1]
    for name, keys in (("classified", ["line_id"]), ("dead", ["source_row", "reason", "line_id"])):
        a, b = _table(str(tmp_path / "multi" / name), keys), _table(str(tmp_path / "single" / name), keys)
        assert a.equals(b), name
    classified = pq.read_table(str(tmp_path / "multi" / "classified")).num_rows
    dead = pq.read_table(str(tmp_path / "multi" / "dead")).num_rows
    assert classified + dead == lines and classified > 0.9 * lines
