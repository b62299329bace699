"""Reads and writes of ``backfill merge`` and ``backfill keys retokenize``.

* The base is either a raw base (plaintext identity columns: read by
  ``pipelines.io.base_files``) or a previous merge's ``OUT/base/`` (tokens, no
  plaintext: read here, typed as ``schemas/merged_line.avsc``). :func:`base_kind`
  tells them apart by their columns.
* A previous vault (``--vault``) is read shard by shard from the newest
  complete generation that ``pipelines.io.vault_files`` documents.
* The Beam transforms that read and write them are ``pipelines/io/merged_beam.py``'s; this module
  imports no Beam (the in-process merge reads with it).
* Outputs: ``OUT/base/part-SSSSS-of-TTTTT.parquet``,
  ``OUT/vault/{keys,values}/{keys,values}-g000001-SSSSS-of-TTTTT.parquet``
  (a vault ``backfill reveal --vault OUT/vault`` reads), ``OUT/dead_letter/``.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.common import UserError
from pipelines.io.paths import open_read
from pipelines.io.planning import InputError, Split, expand_paths, plan_splits
from transforms.core.rows import Contract
from schemas import arrow_schema
from transforms.merge.bucket import MERGED_SCHEMA
from transforms.merge.copies import held_pairs
from pipelines.io.vault_files import table_files

__all__ = [
    "MERGED",
    "MERGED_ROWS",
    "base_kind",
    "inside",
    "plan_merged_splits",
    "vault_shards",
    "column_values",
    "read_merged_checked",
    "read_held_ids",
    "read_vault_shard",
]

MERGED = Contract(
    "merged base",
    tuple(MERGED_SCHEMA.names),
    required=("line_id", "line_type", "subscriber_kind", "status", "identity_status", "doc_token"),
    formats=((".parquet", "parquet"),),
)
MERGED_ROWS = pa.schema(list(MERGED_SCHEMA) + [pa.field("_src_file", pa.string()), pa.field("_src_row", pa.int64())])
_PLAINTEXT = ("doc_number", "name", "address")


def inside(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or lies under it (local paths compared absolute)."""

    def norm(x):
        return os.path.abspath(x.rstrip("/")) if "://" not in x else x.rstrip("/")

    return norm(path) == norm(folder) or norm(path).startswith(norm(folder) + "/")


def _names(path: str) -> list[str]:
    with open_read(path) as handle:
        return [n.strip().lower() for n in pq.ParquetFile(handle).schema_arrow.names]


def base_kind(paths: list[str]) -> str:
    """``merged`` when every base file is a merged base (tokens, no plaintext), ``raw`` when none is."""
    kinds = set()
    for path in sorted(expand_paths(list(paths))):
        if not path.lower().endswith(".parquet"):
            kinds.add("raw")
            continue
        try:
            names = set(_names(path))
        except Exception as exc:  # the type only: a message may quote data
            raise InputError(f"{path}: not a readable parquet file ({type(exc).__name__})") from None
        merged = "doc_token" in names and not names & set(_PLAINTEXT)
        kinds.add("merged" if merged else "raw")
    if len(kinds) > 1:
        raise UserError("--base mixes raw files (plaintext identity) and merged files (tokens): give one kind")
    return kinds.pop()


def plan_merged_splits(paths: list[str], rows_per_split: int = 500_000) -> tuple[list[Split], object]:
    return plan_splits(paths, rows_per_split=rows_per_split, contract=MERGED)


def _row_group_batches(pf: pq.ParquetFile, batch_size: int, groups, columns: list[str]):
    """``pf.iter_batches`` one row group at a time: one reader over many row groups holds memory that grows
    with the row groups it has read (pyarrow 25), so a split of many would not stay flat."""
    for group in range(pf.num_row_groups) if groups is None else groups:
        yield from pf.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns)


def read_merged_checked(split: Split, batch_size: int) -> Iterator[pa.Table]:
    """:func:`read_merged_split`, failing in one line that names the file and the error's type only (its
    message may quote data)."""
    try:
        yield from read_merged_split(split, batch_size)
    except Exception as exc:
        raise InputError(f"{split.path}: cannot read the merged base ({type(exc).__name__})") from None


def read_held_ids(split: Split, batch_size: int) -> Iterator[pa.Table]:
    """The ``(event_id, line_id)`` pairs of a merged base split's lines that carry a registration
    (``transforms.merge.copies.held_pairs``): two columns read, failing in one line as
    :func:`read_merged_checked`."""
    try:
        with open_read(split.path) as handle:
            pf = pq.ParquetFile(handle)
            if "registration_event_id" not in pf.schema_arrow.names:
                return
            groups = None if split.row_groups is None else list(split.row_groups)
            for batch in _row_group_batches(pf, batch_size, groups, ["registration_event_id", "line_id"]):
                pairs = held_pairs(pa.Table.from_batches([batch]))
                if pairs.num_rows:
                    yield pairs
    except Exception as exc:
        raise InputError(f"{split.path}: cannot read the merged base ({type(exc).__name__})") from None


def read_merged_split(split: Split, batch_size: int) -> Iterator[pa.Table]:
    with open_read(split.path) as handle:
        pf = pq.ParquetFile(handle)
        present = [n for n in MERGED_SCHEMA.names if n in pf.schema_arrow.names]
        groups = None if split.row_groups is None else list(split.row_groups)
        row = split.first_row
        for batch in _row_group_batches(pf, batch_size, groups, present):
            n = batch.num_rows
            columns = [
                batch.column(f.name).cast(f.type) if f.name in present else pa.nulls(n, f.type) for f in MERGED_SCHEMA
            ]
            columns += [pa.array([split.path] * n, pa.string()), pa.array(np.arange(row, row + n), pa.int64())]
            row += n
            yield pa.Table.from_arrays(columns, schema=MERGED_ROWS)


def vault_shards(vault_dir: str) -> dict[str, list[str]]:
    """The shard files of a vault's newest complete keys and values generations."""
    keys = table_files(vault_dir, "keys")
    if not keys:
        raise UserError(f"--vault {vault_dir}: no vault there (no complete keys/ table)")
    return {"keys": keys, "values": table_files(vault_dir, "values")}


def column_values(files: list[str], column: str) -> set:
    """The distinct values of one column over Parquet files (a cheap pre-flight check)."""
    found: set = set()
    for path in files:
        with open_read(path) as handle:
            table = pq.ParquetFile(handle).read(columns=[column])  # no dataset scanner: see receipts.py
        found.update(pc.unique(table.column(column)).to_pylist())
    return found


def read_vault_shard(path: str, kind: str) -> Iterator[pa.Table]:
    """One shard of a vault's ``keys`` or ``values`` table, in batches typed as its schema."""
    schema = arrow_schema({"keys": "vault_key", "values": "vault_value"}[kind])
    with open_read(path) as handle:
        pf = pq.ParquetFile(handle)
        for batch in _row_group_batches(pf, 262_144, None, schema.names):
            yield pa.Table.from_batches([batch]).cast(schema)
