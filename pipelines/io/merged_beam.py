"""The merged base and the vault in a Beam job: reads spread over workers, writes sharded by Beam.

The plain reads are ``pipelines/io/merged_base.py``'s (Beam-free, shared with the in-process merge).
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from pipelines.io.merged_base import read_merged_checked, read_vault_shard
from pipelines.io.paths import join_path
from pipelines.io.planning import Split
from pipelines.io.vault_files import shard_prefix
from schemas import arrow_schema
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.merge.bucket import MERGED_SCHEMA

__all__ = ["ReadMergedBase", "ReadVaultTable", "read_base_and_vault", "write_vault_table", "write_merged_base"]


@beam.typehints.with_output_types(pa.Table)
class _ReadMergedFn(beam.DoFn):
    def __init__(self, batch_size: int):
        self._batch_size = batch_size

    def process(self, split: Split):
        yield from read_merged_checked(split, self._batch_size)


class ReadMergedBase(beam.PTransform):
    """splits of a merged base -> pa.Table batches (MERGED_ROWS: the contract + _src_file, _src_row)."""

    def __init__(self, splits: list[Split], batch_size: int = 65_536):
        super().__init__()
        self._splits, self._batch_size = list(splits), batch_size

    def expand(self, pbegin):
        return (
            pbegin
            | "Splits" >> beam.Create(self._splits)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(_ReadMergedFn(self._batch_size))
        )


@beam.typehints.with_output_types(pa.Table)
class _ReadVaultFn(beam.DoFn):
    def __init__(self, kind: str):
        self._kind = kind

    def process(self, path: str):
        yield from read_vault_shard(path, self._kind)


class ReadVaultTable(beam.PTransform):
    """Shard paths of a vault's ``keys`` or ``values`` table -> pa.Table batches."""

    def __init__(self, paths: list[str], kind: str):
        super().__init__()
        self._paths, self._kind = list(paths), kind

    def expand(self, pbegin):
        return (
            pbegin
            | "Shards" >> beam.Create(self._paths)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(_ReadVaultFn(self._kind))
        )


def read_base_and_vault(p, kind: str, base_splits, vault, direct: dict, ctx, encoding: str, batch_size: int) -> dict:
    """A merge's or compaction's base and previous vault as PCollections (``base``, and a raw base's reader's
    ``base_dead_letter``; ``vault_keys``, ``vault_values``), but for the tables read by bucket (``direct``):
    each bucket's own step reads its file of those."""
    from pipelines.io.base_files import ReadSubscriberBase

    inputs = {}
    if kind == "raw":
        base = p | "ReadBase" >> ReadSubscriberBase(base_splits, ctx, encoding=encoding, batch_size=batch_size)
        inputs.update(base=base.raw, base_dead_letter=base.dead_letter)
    elif "base" not in direct:
        inputs["base"] = p | "ReadMergedBase" >> ReadMergedBase(base_splits, batch_size)
    for table in ("keys", "values") if vault else ():
        if f"vault_{table}" not in direct:
            inputs[f"vault_{table}"] = p | f"ReadVault{table.title()}" >> ReadVaultTable(vault[table], table)
    return inputs


def write_vault_table(pcoll, vault_dir: str, kind: str, label: str):
    schema = arrow_schema({"keys": "vault_key", "values": "vault_value"}[kind])
    return pcoll | label >> beam.io.WriteToParquetBatched(
        shard_prefix(vault_dir, kind), schema=schema, file_name_suffix=".parquet"
    )


def write_merged_base(pcoll, out_dir: str, label: str = "WriteBase"):
    return pcoll | label >> beam.io.WriteToParquetBatched(
        join_path(out_dir, "part"), schema=MERGED_SCHEMA, file_name_suffix=".parquet"
    )
