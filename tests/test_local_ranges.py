"""Large CSV and Avro files read in byte ranges by the in-process scan and merge (pipelines/io/ranges.py
split_large_files, pipelines/scan_local.py, pipelines/merge_local.py), as the Beam job's SplitLargeFiles reads them.

The rule: a file cut into ranges gives the outputs of the same file read whole, every record once, rows keeping
their numbers from the top of the file; only the number of classified part files changes. The ranges are made
small by running the command in a fresh interpreter with ``pipelines.io.ranges.BYTES_PER_SPLIT`` lowered.
Run: .venv/bin/python -m pytest -q tests/test_local_ranges.py
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import fastavro
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from bench.events import make_events
from dev.generate import generate_table
from pipelines.io.planning import InputError
from pipelines.io.ranges import range_count, split_large_files
from schemas import field_names
from tests.support.merge_local import differences, merge_outputs
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER
from tests.support.scan_local import outputs, write_mixed_base
from tests.support.split_reads import planned, read
from transforms.scan.policy import load_policy

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AS_OF = "2026-11-30"
# the command in a fresh interpreter, its ranges made ``argv[1]`` bytes long
RUN_CUT = (
    "import sys; import pipelines.io.ranges as r; r.BYTES_PER_SPLIT = int(sys.argv[1]); "
    "from pipelines.cli import main; sys.exit(main(sys.argv[2:]))"
)


def serial(fn, calls):
    """A TaskPool's ``run`` in this process."""
    return [fn(*args) for args in calls]


def backfill(args: list[str], cut: int | None = None) -> subprocess.CompletedProcess:
    argv = [BACKFILL, *args] if cut is None else [sys.executable, "-c", RUN_CUT, str(cut), *args]
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _awkward_rows(n: int) -> pa.Table:
    """A generated base whose addresses hold line breaks, quotes and commas on every 7th line."""
    table = generate_table(n, 21)
    addresses = table.column("address").to_pylist()
    for i in range(0, n, 7):
        addresses[i] = f'北京市\n"海淀区",\r\n某某路{i}号'
    return table.set_column(table.schema.get_field_index("address"), "address", pa.array(addresses, pa.string()))


def test_every_record_of_a_cut_csv_and_avro_file_is_read_once_with_its_row_number(tmp_path):
    table = _awkward_rows(3_000)
    csv_path, avro_path = str(tmp_path / "base.csv"), str(tmp_path / "base.avro")
    pacsv.write_csv(table, csv_path)
    with open(avro_path, "wb") as handle:
        schema = {
            "type": "record",
            "name": "r",
            "fields": [{"name": c, "type": ["null", "string"]} for c in table.column_names],
        }
        fastavro.writer(handle, schema, table.to_pylist(), sync_interval=2_000)
    for path in (csv_path, avro_path):
        whole = planned(path)
        rows, bad = read([whole])
        assert rows.num_rows == table.num_rows and not bad
        for size in (whole.size // 9, whole.size // 4, whole.size // 2):
            splits = split_large_files([whole], "utf-8", serial, size)
            assert len(splits) == range_count([whole], size) == whole.size // size, (path, size)
            assert [s.first_row for s in splits] == [1] + [
                1 + sum(s.rows for s in splits[:i]) for i in range(1, len(splits))
            ]
            cut_rows, cut_bad = read(splits)
            assert cut_rows.equals(rows) and cut_bad == bad, (path, size)
        assert split_large_files([whole], "utf-8", serial, whole.size) == [whole]  # under twice the size: whole


def test_a_file_gone_before_its_ranges_are_scanned_is_one_line(tmp_path):
    path = str(tmp_path / "base.csv")
    pacsv.write_csv(_awkward_rows(500), path)
    whole = planned(path)
    os.remove(path)
    with pytest.raises(InputError) as err:
        split_large_files([whole], "utf-8", serial, whole.size // 4)
    assert str(err.value) == f"{path}: cannot read (FileNotFoundError)"


@pytest.mark.e2e
def test_the_in_process_scan_reads_a_large_csv_in_ranges_and_classifies_it_as_read_whole(tmp_path):
    mixed = write_mixed_base(str(tmp_path), lines=12_000, seed=5, limit=load_policy().doc_line_limit)
    paths = mixed["paths"]
    csv_path = next(p for p in paths if p.endswith(".csv"))
    size = os.path.getsize(csv_path)
    flags = [arg for path in paths for arg in ("--base", path)] + ["--as-of", AS_OF, "--workers", "2"]
    backfill(["scan", *flags, "--out", str(tmp_path / "whole")])
    backfill(["scan", *flags, "--out", str(tmp_path / "cut")], cut=size // 5)
    whole, cut = outputs(str(tmp_path / "whole")), outputs(str(tmp_path / "cut"))
    assert cut["table"].equals(whole["table"]) and cut["dead"] == whole["dead"] and cut["summary"] == whole["summary"]
    assert cut["manifest"]["counts"] == whole["manifest"]["counts"]
    assert cut["manifest"]["counts"]["rows_in"] == mixed["rows_in"]
    ranges = split_large_files([planned(csv_path)], "utf-8", serial, size // 5)  # those holding records
    assert len(ranges) > 1 and len(cut["parts"]) == len(whole["parts"]) + len(ranges) - 1  # the CSV: a part per range
    assert cut["manifest"]["workers"] == 2


def _csv_inputs(folder: str, lines: int) -> tuple[str, str, int]:
    """A CSV base (canary identity on every third line, awkward addresses), CSV registration events (faults and
    repeats among them) and how many events."""
    table = _awkward_rows(lines)
    for i, (column, value) in enumerate(
        (("name", CANARY_NAME), ("doc_number", CANARY_NUMBER), ("address", CANARY_ADDRESS))
    ):
        values = table.column(column).to_pylist()
        values[i::3] = [value] * len(values[i::3])
        table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.string()))
    base_parquet, base = os.path.join(folder, "base.parquet"), os.path.join(folder, "base.csv")
    pq.write_table(table.select(field_names("subscriber_base")), base_parquet)
    pacsv.write_csv(pq.read_table(base_parquet), base)
    events_parquet, events = os.path.join(folder, "events.parquet"), os.path.join(folder, "events.csv")
    make_events(base_parquet, events_parquet, n=lines // 3, seed=9)
    pacsv.write_csv(pq.read_table(events_parquet), events)
    return base, events, pq.read_metadata(events_parquet).num_rows


@pytest.mark.e2e
def test_the_in_process_merge_reads_a_large_csv_base_and_events_in_ranges_as_read_whole(tmp_path):
    base, events, n_events = _csv_inputs(str(tmp_path), 9_000)
    keys = str(tmp_path / "secure" / "keys.json")
    backfill(["keys", "init", "--keys", keys])
    flags = ["merge", "--base", base, "--registrations", events, "--keys", keys, "--as-of", AS_OF, "--workers", "2"]
    backfill([*flags, "--out", str(tmp_path / "whole")])
    smallest = min(os.path.getsize(base), os.path.getsize(events))
    backfill([*flags, "--out", str(tmp_path / "cut")], cut=smallest // 4)
    whole, cut = merge_outputs(str(tmp_path / "whole"), keys), merge_outputs(str(tmp_path / "cut"), keys)
    assert differences(whole, cut) == []
    assert cut["counts"]["base"]["rows_in"] == 9_000 and cut["counts"]["events"]["rows_in"] == n_events
    letters = [os.path.basename(p) for p in glob.glob(str(tmp_path / "*" / "dead_letter" / "read-events-*"))]
    assert sorted(letters) == ["read-events-00000.jsonl"] * 2 + [f"read-events-0000{i}.jsonl" for i in (1, 2, 3)]
    published = b"".join(
        open(p, "rb").read() for p in glob.glob(str(tmp_path / "cut" / "**" / "*"), recursive=True) if os.path.isfile(p)
    )
    for canary in (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS):
        assert canary.encode("utf-8") not in published
