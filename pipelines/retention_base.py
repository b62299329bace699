"""The merged base as ``backfill retention`` reads and rewrites it: its files, its batches, the due lines found,
every file rewritten with the due lines blanked.

Used by :mod:`pipelines.retention` (which re-exports these names) and ``backfill incident``.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.common import UserError

__all__ = ["merged_base_files", "merged_batches"]

_BATCH = 65_536
_SCAN_COLUMNS = ["line_id", "status", "terminated_on"]


def merged_base_files(paths: list[str]) -> list[str]:
    """The Parquet files of a merged base; a raw base (plaintext identity) is refused."""
    from pipelines.io.merged_base import base_kind, plan_merged_splits

    if base_kind(paths) != "merged":
        raise UserError(f"--base {paths[0]} is not a merged base (backfill merge OUT/base: tokens, no plaintext)")
    return plan_merged_splits(paths)[1].files


def merged_batches(path: str, columns: list[str] | None = None):
    """A merged-base file as tables of ``columns`` (default: all) of schemas/merged_line, batch by batch."""
    from schemas import arrow_schema

    schema = arrow_schema("merged_line")
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        pf = pq.ParquetFile(handle)
        names = columns or schema.names
        for batch in pf.iter_batches(batch_size=_BATCH, columns=[n for n in names if n in pf.schema_arrow.names]):
            n = batch.num_rows
            yield pa.table(
                [
                    batch.column(name).cast(schema.field(name).type)
                    if name in batch.schema.names
                    else pa.nulls(n, schema.field(name).type)
                    for name in names
                ],
                schema=pa.schema([schema.field(name) for name in names]),
            )


def _find_due(files: list[str], cutoff) -> tuple[pa.Array, dict]:
    """First pass: the due lines' ids and the line counts."""
    from transforms.compliance.retention import IDENTITY_COLUMNS, due_mask, has_identity

    counts = {"lines_in": 0, "terminated": 0, "terminated_without_date": 0, "due": 0, "due_with_identity": 0}
    due_ids, with_identity = [], []
    for path in files:
        for table in merged_batches(path, [*_SCAN_COLUMNS, *IDENTITY_COLUMNS]):
            due, terminated, no_date = due_mask(table, cutoff)
            present = pc.and_(due, has_identity(table))
            counts["lines_in"] += table.num_rows
            for name, mask in (
                ("terminated", terminated),
                ("terminated_without_date", no_date),
                ("due", due),
                ("due_with_identity", present),
            ):
                counts[name] += pc.sum(mask.cast(pa.int64())).as_py() or 0
            due_ids.append(table.column("line_id").filter(due))
            with_identity.append(table.column("line_id").filter(present))
    ids = pa.chunked_array(due_ids, pa.string()).combine_chunks() if due_ids else pa.array([], pa.string())
    tokens = (
        pa.chunked_array(with_identity, pa.string()).combine_chunks() if with_identity else pa.array([], pa.string())
    )
    return ids, {**counts, "_with_identity": tokens}


def _rewrite_base(files: list[str], out_base: str, cutoff, keys: pa.Table) -> tuple[int, dict[str, int]]:
    """Second pass: every file rewritten, the due lines blanked."""
    from transforms.compliance.retention import blank_identity, due_mask

    lines_out, blanked = 0, {}
    key_ids, key_versions = keys.column("line_id"), keys.column("vault_key_version").combine_chunks()
    for i, path in enumerate(files):
        target = FileSystems.join(out_base, f"part-{i:05d}-of-{len(files):05d}.parquet")
        tmp = FileSystems.join(out_base, f"_tmp-{os.urandom(6).hex()}.parquet")
        writer = None
        with FileSystems.create(tmp) as handle:
            for table in merged_batches(path):
                due = due_mask(table, cutoff)[0]
                versions = key_versions.take(pc.index_in(table.column("line_id"), value_set=key_ids))
                table, counts = blank_identity(table, due, versions)
                for name, n in counts.items():
                    blanked[name] = blanked.get(name, 0) + n
                if writer is None:
                    writer = pq.ParquetWriter(handle, table.schema)
                writer.write_table(table, row_group_size=_BATCH)
                lines_out += table.num_rows
            if writer is None:
                from schemas import arrow_schema

                writer = pq.ParquetWriter(handle, arrow_schema("merged_line"))
            writer.close()
        FileSystems.rename([tmp], [target])  # a file appears whole, or not at all
    return lines_out, blanked
