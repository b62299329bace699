"""An incident's affected lines on disk: ``OUT/affected_lines/affected_lines-SSSSS-of-NNNNN.csv``.

Written by Beam's ``WriteToText`` bundle by bundle (no shard count is fixed:
that would gather every line on one worker), each file with its header and
at most :data:`ROWS_PER_FILE` rows, so a spreadsheet (1,048,576 rows at most)
opens every one of them. Columns: ``line_id, region, fields,
join_key_version, vault_key_version, vault_fields, shreddable, shredded``;
lists are joined with ``;``; every text cell a spreadsheet would evaluate is
escaped (``pipelines/io/spreadsheet.py``). Field *names* only: never a token,
mask or value.

With ``--shred`` the job also writes the shreddable lines' ids as they are
(not spreadsheet-escaped: a line_id such as ``+8613...`` must reach the shred
unchanged) as Parquet files under ``STAGE/.shred_ids/``, which the shred reads
(:func:`shred_ids`: ``pipelines.shred_job.LineFiles``, never a list in memory)
and the launcher removes before the output is published.
"""

from __future__ import annotations

import io
import typing

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from apache_beam.io.filesystems import FileSystems

from pipelines.io.spreadsheet import spreadsheet_safe
from transforms.compliance.incident import AFFECTED
from transforms.core.tags import COUNTS

__all__ = [
    "COLUMNS",
    "ROWS_PER_FILE",
    "SHRED_IDS",
    "WriteAffectedLines",
    "affected_files",
    "remove_shred_ids",
    "shred_ids",
]

COLUMNS = [*AFFECTED.names, "shredded"]
_CHUNK = 50_000  # rows of one element of the write
_CHUNKS_PER_FILE = 20
ROWS_PER_FILE = _CHUNK * _CHUNKS_PER_FILE
SHRED_IDS = ".shred_ids"
_IDS = pa.schema([pa.field("line_id", pa.string(), nullable=False)])
_EMPTY = pa.scalar([], pa.list_(pa.string()))


def _header() -> str:
    sink = io.BytesIO()
    pacsv.write_csv(pa.schema([(c, pa.string()) for c in COLUMNS]).empty_table(), sink)
    return sink.getvalue().decode("utf-8").rstrip("\n")


def csv_rows(lines: pa.Table, shred: bool) -> str:
    """Affected lines as CSV rows (no header, no final newline), spreadsheet-safe."""

    def joined(column):
        return pc.binary_join(pc.fill_null(column, _EMPTY), ";")

    shreddable = lines.column("shreddable")
    vault_fields = lines.column("vault_fields")
    table = pa.table(
        {
            "line_id": lines.column("line_id"),
            "region": lines.column("region"),
            "fields": joined(lines.column("fields")),
            "join_key_version": lines.column("join_key_version"),
            "vault_key_version": lines.column("vault_key_version"),
            "vault_fields": pc.if_else(pc.is_null(vault_fields), pa.scalar(None, pa.string()), joined(vault_fields)),
            "shreddable": shreddable,
            "shredded": pc.and_(pc.fill_null(shreddable, False), pa.scalar(shred)),
        }
    )
    sink = io.BytesIO()
    pacsv.write_csv(spreadsheet_safe(table), sink, pacsv.WriteOptions(include_header=False))
    return sink.getvalue().decode("utf-8").rstrip("\n")


@beam.typehints.with_output_types(str, counts=dict)
class _CsvChunksFn(beam.DoFn):
    def __init__(self, shred: bool):
        self._shred = shred

    def process(self, lines: pa.Table):
        shredded = 0
        for start in range(0, lines.num_rows, _CHUNK):
            part = lines.slice(start, _CHUNK)
            yield csv_rows(part, self._shred)
        if self._shred:
            shredded = pc.sum(pc.fill_null(lines.column("shreddable"), False).cast(pa.int64())).as_py() or 0
        yield beam.pvalue.TaggedOutput(COUNTS, {"written": {"rows": lines.num_rows, "shredded": shredded}})


def _shred_ids(lines: pa.Table):
    shreddable = lines.filter(pc.fill_null(lines.column("shreddable"), False))
    if shreddable.num_rows:
        yield shreddable.select(["line_id"]).cast(_IDS)


class WriteAffectedLines(beam.PTransform):
    """Affected-line batches -> ``(written file names, counts)``; see the module docstring.

    Args:
      stage: the run's staged output folder.
      shred: the run shreds (``shredded`` is true for every shreddable line; their ids are written apart).
    """

    def __init__(self, stage: str, shred: bool):
        super().__init__()
        self._stage, self._shred = stage, shred

    def expand(self, lines) -> tuple[beam.PCollection, beam.PCollection]:
        rows = lines | "ToCsvRows" >> beam.ParDo(_CsvChunksFn(self._shred)).with_outputs(COUNTS, main="rows")
        written = rows.rows | "WriteCsv" >> beam.io.WriteToText(
            FileSystems.join(self._stage, "affected_lines", "affected_lines"),
            file_name_suffix=".csv",
            header=_header(),
            max_records_per_shard=_CHUNKS_PER_FILE,
        )
        if self._shred:
            ids = (
                lines
                | "ShreddableIds" >> beam.FlatMap(_shred_ids).with_output_types(pa.Table)
                | "WriteShredIds"
                >> beam.io.WriteToParquetBatched(
                    FileSystems.join(self._stage, SHRED_IDS, "ids"), schema=_IDS, file_name_suffix=".parquet"
                )
            )
            written = (written, ids) | "Written" >> beam.Flatten().with_output_types(typing.Any)
        return written, rows.counts


def affected_files(folder: str) -> list[str]:
    """The affected-lines files of an incident folder (OUT or its staged copy), sorted."""
    found = FileSystems.match([FileSystems.join(folder, "affected_lines", "affected_lines-*.csv")])[0]
    return sorted(m.path for m in found.metadata_list)


def shred_ids(stage: str, count: int):
    """The shreddable lines' ids the job wrote, as ``pipelines.keys_shred.shred_lines`` takes files of them."""
    from pipelines.shred_job import LineFiles

    return LineFiles(FileSystems.join(stage, SHRED_IDS, "ids-*.parquet"), count)


def remove_shred_ids(stage: str) -> None:
    """Delete the shred's id files and their folder (an object store has no folder to delete: its files)."""
    folder = FileSystems.join(stage, SHRED_IDS)
    files = [m.path for m in FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list]
    if files:
        FileSystems.delete(files)
    if FileSystems.exists(folder):
        FileSystems.delete([folder])
