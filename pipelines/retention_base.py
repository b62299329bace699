"""The merged base and the vault as ``backfill retention`` reads them: planned splits, a Beam read of the few
columns the due lines are found by, the vault's shards checked by their footers.

The base is read twice, split by split, never whole: by the purge's first job
(``line_id``, ``status``, ``terminated_on`` and the identity columns:
:class:`ReadBaseColumns`) and by its last (every column:
``pipelines.io.merged_beam.ReadMergedBase``).
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.common import UserError
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)

__all__ = ["plan_base", "vault_tables", "ReadBaseColumns"]


def plan_base(paths: list[str]):
    """``(splits, info)`` of a merged base; a raw base (plaintext identity) is refused."""
    from pipelines.io.merged_base import base_kind, plan_merged_splits

    if base_kind(paths) != "merged":
        raise UserError(f"--base {paths[0]} is not a merged base (backfill merge OUT/base: tokens, no plaintext)")
    return plan_merged_splits(paths)


def vault_tables(vault_dir: str) -> dict[str, list[str]]:
    """The shards of the vault's key and value tables, every footer checked (no rows read)."""
    from pipelines.io.vault_files import check_table
    from transforms.crypto.vault import VaultError

    try:
        keys = check_table(vault_dir, "keys")
        if not keys:
            raise UserError(f"--vault {vault_dir}: no vault there (no complete keys/ table)")
        return {"keys": keys, "values": check_table(vault_dir, "values")}
    except VaultError as exc:
        raise UserError(str(exc)) from None


def read_split_columns(split, columns: tuple[str, ...], batch_size: int):
    """One split of a merged-base file as tables of ``columns`` (schemas/merged_line types; absent ones null)."""
    from schemas import arrow_schema

    schema = arrow_schema("merged_line")
    fields = pa.schema([schema.field(name) for name in columns])
    with FileSystems.open(split.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        pf = pq.ParquetFile(handle)
        present = [n for n in columns if n in pf.schema_arrow.names]
        groups = None if split.row_groups is None else list(split.row_groups)
        for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups, columns=present):
            n = batch.num_rows
            arrays = [batch.column(f.name).cast(f.type) if f.name in present else pa.nulls(n, f.type) for f in fields]
            yield pa.Table.from_arrays(arrays, schema=fields)


@beam.typehints.with_output_types(pa.Table)
class _ReadColumnsFn(beam.DoFn):
    def __init__(self, columns: tuple[str, ...], batch_size: int):
        self._columns, self._batch_size = tuple(columns), batch_size

    def process(self, split):
        from pipelines.io.planning import InputError

        try:
            yield from read_split_columns(split, self._columns, self._batch_size)
        except Exception as exc:  # the type only: a message may quote data
            raise InputError(f"{split.path}: cannot read the merged base ({type(exc).__name__})") from None


class ReadBaseColumns(beam.PTransform):
    """Splits of a merged base -> pa.Table batches of some of its columns."""

    def __init__(self, splits, columns: tuple[str, ...], batch_size: int = 65_536):
        super().__init__()
        self._splits, self._fn = list(splits), _ReadColumnsFn(columns, batch_size)

    def expand(self, pbegin):
        return (
            pbegin
            | "Splits" >> beam.Create(self._splits)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(self._fn)
        )
