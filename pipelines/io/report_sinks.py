"""The report job's line-by-line output: the past-deadline list, as Parquet shards and one CSV file.

    written = write_past_deadline(past_batches, stage, as_of)   # [Parquet files, CSV parts] (PCollections)
    join_csv_parts(stage, part_paths)                          # in the job's last step: csv/past_deadline.csv

The list grows with the lines, so it is never gathered: each bucket's rows
are written by the worker that made them, as shards of
``parquet/past_deadline/as_of=DATE/`` (the table's hive partition) and as CSV
parts; the last step of the job copies the parts, in order, behind the
header into ``csv/past_deadline.csv`` (a byte copy, a buffer at a time), and
removes them. Rows are sorted by region and line id within each bucket, not
across the list: a query engine or a spreadsheet sorts the whole list.
"""

from __future__ import annotations

import datetime as dt
import io

import apache_beam as beam
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs

from pipelines.io.report_files import csv_ready, filesystem
from transforms.compliance.report_lines import PAST_DEADLINE_SCHEMA
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)

__all__ = ["write_past_deadline", "join_csv_parts", "PARTS"]

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
