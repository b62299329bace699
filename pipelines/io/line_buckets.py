"""Output files cut by line bucket: the footer mark the in-process merge writes, and how the next merge trusts it.

The in-process merge writes line bucket B of N (``bucket_of(line_id, N) == B``) as ``base/part-B-of-N``
and as shard B of each vault table. Each such file says so in its Parquet footer (key-value metadata
:data:`MARK`: ``B/N/ROWS``). The next day's merge, given that base and vault, needs no shuffle for
them: with N buckets again, bucket B's task reads file B of each table straight (no read pass, no
spill), which is most of a daily merge's reading (the whole previous vault is carried).

    mark(schema, bucket=3, n=40, rows=49_812)     # the writer's schema, with the mark
    cut = files_by_bucket(paths)                  # (N, {bucket: path}), or None
    check_bucket(table, shard)                    # in the task: every line of the file is of its bucket

A mark is trusted only when every file of a table has one, with one N, each bucket once and each
file's row count as marked: a file re-cut or filtered by another tool (with the schema read from a
marked file, say) no longer matches its rows. The task then checks every line's bucket anyway and
fails in one line if one is of another bucket, before anything is published.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.io.paths import open_read
from pipelines.io.planning import InputError
from transforms.scan.keyed_hash import bucket_of

__all__ = ["MARK", "Shard", "mark", "file_mark", "files_by_bucket", "check_bucket"]

MARK = b"subscriber_backfill.line_bucket"
_VALUE = re.compile(rb"^(\d+)/(\d+)/(\d+)$")
FOOTER_READERS = 16  # footers read at once (thousands of files at 300 million lines)


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
