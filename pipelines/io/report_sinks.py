"""The report job's line-by-line output: the past-deadline list, as Parquet shards and one CSV file.

    written = write_past_deadline(past_batches, stage, as_of)   # [Parquet files, CSV parts] (PCollections)
    join_csv_parts(stage, part_paths)                          # in the job's last step: csv/past_deadline.csv

    with PastDeadlineFiles(stage, as_of) as files:             # the in-process run (pipelines/report_local.py)
        files.write(bucket_rows)                               # one Parquet file and the CSV, a bucket at a time

The list grows with the lines, so it is never gathered: each bucket's rows
are written by the worker that made them, as shards of
``parquet/past_deadline/as_of=DATE/`` (the table's hive partition) and as CSV
parts; the last step of the job copies the parts, in order, behind the
header into ``csv/past_deadline.csv`` (a byte copy, a buffer at a time), and
removes them. Rows are sorted by region and line id within each bucket, not
across the list: a query engine or a spreadsheet sorts the whole list. The
in-process run writes the same rows, a bucket at a time, straight into one
Parquet file of the partition and into the CSV file.
"""

from __future__ import annotations

import datetime as dt
import io

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.io.report_files import csv_ready, filesystem
from transforms.compliance.report_lines import PAST_DEADLINE_SCHEMA

__all__ = ["write_past_deadline", "join_csv_parts", "PastDeadlineFiles", "PARTS"]

PARTS = "_past_deadline_parts"  # under csv/, removed once joined
_COPY = 1 << 20


def _csv_text(table: pa.Table, header: bool = False) -> str:
    buffer = io.BytesIO()
    pacsv.write_csv(csv_ready(table), buffer, write_options=pacsv.WriteOptions(include_header=header))
    return buffer.getvalue().decode("utf-8")


def _csv_block(table: pa.Table) -> str:
    """A batch's CSV rows, without the header (WriteToText ends each element with a newline)."""
    text = _csv_text(table.cast(PAST_DEADLINE_SCHEMA))
    return text[:-1] if text.endswith("\n") else text


def write_past_deadline(past, stage: str, as_of: dt.date) -> list:
    """Write the past-deadline rows; returns the two writes' results (their file names), to wait on."""
    import apache_beam as beam

    from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)

    parquet = past | "WritePastDeadline" >> beam.io.WriteToParquetBatched(
        f"{stage.rstrip('/')}/parquet/past_deadline/as_of={as_of.isoformat()}/part",
        schema=PAST_DEADLINE_SCHEMA,
        file_name_suffix=".parquet",
    )
    parts = (
        past
        | "PastDeadlineCsv" >> beam.Map(_csv_block).with_output_types(str)
        | "WritePastDeadlineCsv"
        >> beam.io.WriteToText(f"{stage.rstrip('/')}/csv/{PARTS}/part", file_name_suffix=".csv")
    )
    return [parquet, parts]


def join_csv_parts(stage: str, parts: list[str]) -> str:
    """``csv/past_deadline.csv``: the header, then every part (empty parts add nothing); the parts are removed."""
    fs, root = filesystem(stage)
    target = f"{root}/csv/past_deadline.csv"
    with fs.open_output_stream(target) as out:
        out.write(_csv_text(PAST_DEADLINE_SCHEMA.empty_table(), header=True).encode("utf-8"))
        for part in sorted(parts):
            part_fs, where = filesystem(part)
            with part_fs.open_input_stream(where) as handle:
                while chunk := handle.read(_COPY):
                    out.write(chunk)
    if fs.get_file_info(f"{root}/csv/{PARTS}").type != pafs.FileType.NotFound:
        fs.delete_dir(f"{root}/csv/{PARTS}")
    return target


class PastDeadlineFiles:
    """The in-process run's past-deadline list: ``parquet/past_deadline/as_of=DATE/part-00000-of-00001.parquet`` (a row
    group per bucket) and ``csv/past_deadline.csv``, written a bucket at a time."""

    def __init__(self, stage: str, as_of: dt.date):
        self._stage, self._as_of = stage, as_of

    def __enter__(self) -> "PastDeadlineFiles":
        fs, root = filesystem(self._stage)
        part = f"{root}/parquet/past_deadline/as_of={self._as_of.isoformat()}"
        fs.create_dir(part, recursive=True)
        fs.create_dir(f"{root}/csv", recursive=True)
        self._parquet = pq.ParquetWriter(f"{part}/part-00000-of-00001.parquet", PAST_DEADLINE_SCHEMA, filesystem=fs)
        self._csv = fs.open_output_stream(f"{root}/csv/past_deadline.csv")
        self._csv.write(_csv_text(PAST_DEADLINE_SCHEMA.empty_table(), header=True).encode("utf-8"))
        return self

    def write(self, rows: pa.Table) -> None:
        if rows.num_rows:
            rows = rows.cast(PAST_DEADLINE_SCHEMA)
            self._parquet.write_table(rows)
            self._csv.write(_csv_text(rows).encode("utf-8"))

    def __exit__(self, *exc) -> None:
        self._parquet.close()
        self._csv.close()
