"""The in-process report's joins: Arrow tables gathered by bucket of a key, kept in memory or spilled to files.

    with spill_folder("report") as folder:                 # private (0700), removed at the end
        store = BucketStore(n_buckets, folder)             # folder None: every bucket kept in memory
        store.add("needed", table, "line_id")              # rows split by the stable bucket of their key
        for bucket in range(n_buckets):
            tables = store.tables(bucket)                  # {tag: every row of the bucket}, then forgotten

The same buckets as the Beam job's shuffle (``transforms.core.shuffle``,
:func:`transforms.scan.crossrecord.bucket_of`), without Beam: with a
folder, each batch added is written once as one Arrow IPC file, a record
batch per bucket, and a bucket is read back by memory-mapping its batches,
so memory holds one bucket at a time, whatever the base's size. A single
bucket needs no hashing and no file. What is spilled are the report's
columns (line and event ids, codes, times, regions): never an identity value.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from typing import Iterator

import numpy as np
import pyarrow as pa

from pipelines.io.run_folders import pid_folder

__all__ = ["BucketStore", "spill_folder"]

_PREFIX = "backfill-report-spill-"


@contextlib.contextmanager
def spill_folder(step: str) -> Iterator[str]:
    """A private folder for one run's spill (mode 0700), removed when the run ends, however it ends."""
    folder = pid_folder(_PREFIX, step)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class BucketStore:
    """Tables by bucket of a key column (see the module docstring)."""

    def __init__(self, n_buckets: int, folder: str | None):
        self.n = max(1, int(n_buckets))
        self._folder = folder if self.n > 1 else None
        self._kept: dict[int, dict[str, list[pa.Table]]] = {}
        self._spilled: dict[int, list[tuple[str, str, int]]] = {}  # bucket -> (tag, file, batch index)
        self._files, self._prefix = 0, uuid.uuid4().hex[:12]  # stores may share a folder: names apart

    def add(self, tag: str, table: pa.Table, key: str) -> None:
        """Add ``table``'s rows under ``tag``, each to the bucket of its ``key``."""
        if table.num_rows == 0:
            return
        parts = list(self._split(table, key))
        if self._folder is not None:
            self._spill(tag, parts)
            return
        for bucket, part in parts:
            self._kept.setdefault(bucket, {}).setdefault(tag, []).append(part)

    def add_to(self, bucket: int, tag: str, table: pa.Table) -> None:
        """Add ``table``'s rows under ``tag`` to ``bucket`` (rows a bucket's work made for a later pass)."""
        if table.num_rows == 0:
            return
        if self._folder is not None:
            self._spill(tag, [(bucket, table)])
            return
        self._kept.setdefault(bucket, {}).setdefault(tag, []).append(table)

    def _split(self, table: pa.Table, key: str) -> Iterator[tuple[int, pa.Table]]:
        if self.n == 1:
            yield 0, table
            return
        from transforms.scan.crossrecord import bucket_of

        buckets = bucket_of(table[key], self.n)
        order = np.argsort(buckets, kind="stable")
        table, buckets = table.take(pa.array(order)), buckets[order]
        starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
        ends = np.r_[starts[1:], len(buckets)]
        for start, end in zip(starts, ends):
            yield int(buckets[start]), table.slice(start, end - start)

    def _spill(self, tag: str, parts: list[tuple[int, pa.Table]]) -> None:
        path = os.path.join(self._folder, f"{self._prefix}-{self._files:06d}.arrow")
        self._files += 1
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, parts[0][1].schema) as writer:
            for index, (bucket, part) in enumerate(parts):
                writer.write_table(part.combine_chunks(), max_chunksize=part.num_rows or None)
                self._spilled.setdefault(bucket, []).append((tag, path, index))

    def tables(self, bucket: int) -> dict[str, pa.Table]:
        """Every row of ``bucket``, by tag (a tag with no row in it is absent)."""
        if self._folder is None:
            return {tag: pa.concat_tables(parts) for tag, parts in self._kept.pop(bucket, {}).items()}
        found: dict[str, list[pa.Table]] = {}
        for tag, path, index in self._spilled.pop(bucket, []):
            reader = pa.ipc.open_file(pa.memory_map(path))
            found.setdefault(tag, []).append(pa.Table.from_batches([reader.get_batch(index)]))
        return {tag: pa.concat_tables(parts) for tag, parts in found.items()}
