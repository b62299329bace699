"""Output files cut by line bucket: the footer mark the in-process merge writes, and how the next merge trusts it.

The in-process merge writes line bucket B of N (``bucket_of(line_id, N) == B``) as ``base/part-B-of-N``
and as shard B of each vault table. Each such file says so in its Parquet footer (key-value metadata
:data:`MARK`: ``B/N/ROWS``). The next day's merge, given that base and vault, needs no shuffle for
them: with N buckets again, bucket B's task reads file B of each table straight (no read pass, no
spill), which is most of a daily merge's reading (the whole previous vault is carried).

    mark(schema, bucket=3, n=40, rows=49_812)     # the writer's schema, with the mark
    cut = files_by_bucket(paths)                  # (N, {bucket: path}), or None
    check_bucket(table, shard)                    # in the task: every line of the file is of its bucket
    files = BucketFiles({"base": {3: [shard]}}, 65_536)
    files.gather("base", 3)                       # bucket 3's rows of its base file, read and checked
    write_bucket(stage, 3, 40, base, keys, values)  # base/part-00003-of-00040.parquet and vault shards, marked

A mark is trusted only when every file of a table has one, with one N, each bucket once and each
file's row count as marked: a file re-cut or filtered by another tool (with the schema read from a
marked file, say) no longer matches its rows. The task then checks every line's bucket anyway and
fails in one line if one is of another bucket, before anything is published.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.io.merged_base import read_held_ids, read_merged_checked, read_vault_shard
from pipelines.io.paths import join_path, open_read
from pipelines.io.planning import InputError
from pipelines.io.task_files import parquet_file
from schemas import arrow_schema
from transforms.merge.bucket import MERGED_SCHEMA
from transforms.merge.value_free import value_free
from transforms.scan.keyed_hash import bucket_of

__all__ = [
    "MARK",
    "Shard",
    "BucketFiles",
    "mark",
    "file_mark",
    "files_by_bucket",
    "check_bucket",
    "read_shard",
    "bucket_paths",
    "write_bucket",
]

MARK = b"subscriber_backfill.line_bucket"
_VALUE = re.compile(rb"^(\d+)/(\d+)/(\d+)$")
FOOTER_READERS = 16  # footers read at once (thousands of files at 300 million lines)
_VAULT = {"vault_keys": ("keys", "vault_key"), "vault_values": ("values", "vault_value")}  # table: (folder, schema)
# Columns of random or unique values: a dictionary of them is built and dropped (the writer falls back to plain
# once it is too large), and their min/max statistics select nothing. Writing without them costs about a quarter
# less to encode (a vault value shard of 370,000 rows: 42 -> 32 ms), the files the same size.
_NO_DICTIONARY = {
    "base": {
        "line_id",
        "msisdn",
        "doc_token",
        "name_token",
        "address_token",
        "handler_doc_token",
        "handler_name_token",
    },
    "vault_keys": {"line_id", "dek_id", "wrapped_dek"},
    "vault_values": {"nonce", "ciphertext"},
}
_NO_STATISTICS = {
    "base": {"doc_token", "name_token", "address_token", "handler_doc_token", "handler_name_token"},
    "vault_keys": {"dek_id", "wrapped_dek"},
    "vault_values": {"dek_id", "nonce", "ciphertext"},
}


class Shard(NamedTuple):
    """An input file that holds one line bucket, read straight by that bucket's task (in place of spilled
    parts): ``source`` is a vault shard's path or the planned split(s) of a base file."""

    table: str  # "base", "vault_keys" or "vault_values"
    source: object
    path: str
    bucket: int
    n_buckets: int


def mark(schema: pa.Schema, bucket: int, n: int, rows: int) -> pa.Schema:
    """``schema`` with the mark of line bucket ``bucket`` of ``n`` holding ``rows`` rows."""
    return schema.with_metadata({**(schema.metadata or {}), MARK: f"{bucket}/{n}/{rows}".encode()})


def file_mark(path: str) -> tuple[int, int] | None:
    """``(bucket, n)`` of a file whose footer marks it and whose rows are as many as marked, else None."""
    try:
        with open_read(path) as handle:
            meta = pq.read_metadata(handle)
    except (OSError, pa.ArrowException, ValueError):
        return None  # unreadable: the read pass reports it as it always has
    found = _VALUE.match((meta.metadata or {}).get(MARK, b""))
    if not found:
        return None
    bucket, n, rows = (int(x) for x in found.groups())
    return (bucket, n) if bucket < n and rows == meta.num_rows else None


def files_by_bucket(paths: list[str]) -> tuple[int, dict[int, str]] | None:
    """``(N, {bucket: path})`` when ``paths`` are exactly the marked files of buckets 0..N-1, else None."""
    with ThreadPoolExecutor(FOOTER_READERS) as pool:  # footers on an object store: one round trip each
        marks = list(pool.map(file_mark, paths))
    if not marks or None in marks or len({n for _, n in marks}) != 1:
        return None
    n = marks[0][1]
    by_bucket = {bucket: path for (bucket, _), path in zip(marks, paths)}
    return (n, by_bucket) if len(by_bucket) == n == len(paths) else None


def check_bucket(table: pa.Table, shard: Shard) -> None:
    """Raise a one-line InputError when a line of ``table`` (read from ``shard``) is of another bucket."""
    if table.num_rows and (bucket_of(table.column("line_id"), shard.n_buckets) != shard.bucket).any():
        raise InputError(
            f"{shard.path}: holds lines of another bucket than its footer says ({shard.bucket} of "
            f"{shard.n_buckets}); re-run with --shuffle-buckets to read it through the shuffle"
        )


def read_shard(shard: Shard, batch_size: int) -> Iterator[pa.Table]:
    """The rows of a file of one line bucket, batch by batch, each checked to be of that bucket."""
    if shard.table == "base":
        reads = read_merged_checked(shard.source, batch_size)
    else:
        reads = read_vault_shard(shard.source, _VAULT[shard.table][0])
    for table in reads:
        check_bucket(table, shard)
        yield table


class BucketFiles(NamedTuple):
    """The inputs of a merge already cut by line bucket (``{table: {bucket: [Shard]}}``, from the plan), read by
    each bucket's own step in place of a shuffle. Paths and splits only: picklable into a Beam job."""

    shards: dict
    batch_size: int

    def __contains__(self, table: str) -> bool:
        return table in self.shards

    def tables(self, table: str, bucket: int) -> Iterator[pa.Table]:
        for shard in self.shards.get(table, {}).get(bucket, []):
            yield from read_shard(shard, self.batch_size)

    def splits(self, table: str) -> list:
        """Every planned split of ``table``'s files, in bucket order."""
        return [shard.source for b in sorted(self.shards.get(table, {})) for shard in self.shards[table][b]]

    def held_ids(self, split) -> Iterator[pa.Table]:
        """The ``(event_id, line_id)`` pairs of a base split's lines that carry a registration (two columns)."""
        return read_held_ids(split, self.batch_size)

    def gather(self, table: str, bucket: int) -> pa.Table | None:
        """Bucket ``bucket``'s rows of ``table`` in one table (None for none). An error loses its text (Arrow's
        may quote a value), but for the one-line InputError of a file not of its bucket (a path, no value)."""
        with value_free("ReadBucket", passing=(InputError,)):
            parts = [t for t in self.tables(table, bucket) if t.num_rows]
            return pa.concat_tables(parts, promote_options="permissive").combine_chunks() if parts else None


def bucket_paths(folder: str, bucket: int, n: int) -> dict[str, str]:
    """Where line bucket ``bucket`` of ``n`` is written under an output ``folder``: its base file and its shard
    of each vault table (the names Beam's sharded writes give: a reader globs them alike)."""
    shard = f"{bucket:05d}-of-{n:05d}.parquet"
    paths = {"base": join_path(folder, "base", f"part-{shard}")}
    for table, (name, _) in _VAULT.items():
        paths[table] = join_path(folder, "vault", name, f"{name}-g000001-{shard}")
    return paths


def write_bucket(folder: str, bucket: int, n: int, base: pa.Table, keys: pa.Table | None, values: pa.Table | None):
    """Line bucket ``bucket`` of ``n`` written under ``folder`` (:func:`bucket_paths`), each file marked as the
    bucket's with its rows. Every file is written, empty or not: a reader takes a vault generation only when all
    its shards are there, and the next merge reads by bucket only when every bucket has its file."""
    schemas = {"base": MERGED_SCHEMA, **{t: arrow_schema(s) for t, (_, s) in _VAULT.items()}}
    tables = {"base": base, "vault_keys": keys, "vault_values": values}
    for table, path in bucket_paths(folder, bucket, n).items():
        schema, rows = schemas[table], tables[table]
        rows = schema.empty_table() if rows is None else rows
        with parquet_file(path, mark(schema, bucket, n, len(rows)), **_encoding(table, schema)) as writer:
            if rows.num_rows:  # one write per table, as Beam's WriteToParquetBatched
                writer.write_table(rows if rows.schema == schema else rows.cast(schema))


def _encoding(table: str, schema: pa.Schema) -> dict:
    """``ParquetWriter`` options: dictionaries and statistics for every column but ``table``'s random ones
    (by leaf path: a list column's values are ``NAME.list.item``, else it would lose its dictionary)."""

    def leaf(field: pa.Field) -> str:
        return f"{field.name}.list.item" if pa.types.is_list(field.type) else field.name

    return {
        "use_dictionary": [leaf(f) for f in schema if f.name not in _NO_DICTIONARY[table]],
        "write_statistics": [leaf(f) for f in schema if f.name not in _NO_STATISTICS[table]],
    }
