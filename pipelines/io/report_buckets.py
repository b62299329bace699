"""The in-process report's joins: Arrow tables gathered by bucket of a key, kept in memory or spilled to files.

    with spill_folder("report") as folder:                 # private (0700), removed at the end
        store = BucketStore(n_buckets, folder)             # folder None: every bucket kept in memory
        store.add("needed", table, "line_id")              # rows split by the stable bucket of their key
        store.flush()                                      # (small batches wait for more: flush before handing over)
        for bucket in range(n_buckets):
            tables = store.tables(bucket)                  # {tag: every row of the bucket}, then forgotten

The same buckets as the Beam job's shuffle (``transforms.core.shuffle``,
:func:`transforms.scan.keyed_hash.bucket_of`), without
Beam: with a folder, each batch added (small ones gathered first, up to
:data:`GATHER_ROWS`: the notify history comes in many small files) is written
once as one Arrow IPC file, a record
batch per bucket, and a bucket is read back by memory-mapping its batches,
so memory holds one bucket at a time, whatever the base's size. A single
bucket needs no hashing and no file. Spilled buckets travel between processes
as references (tag, file, batch): a worker fills a store of its own in the
same folder and hands it back (only the references travel) for the
launcher's store to adopt; a worker reads a bucket from its references
(:meth:`~BucketStore.refs`, :func:`read_refs`). What is spilled are the report's
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
from transforms.scan.keyed_hash import bucket_of

__all__ = ["BucketStore", "spill_folder", "read_refs", "write_parts", "Ref", "GATHER_ROWS"]

Ref = tuple[str, str, int]  # a spilled part: (tag, Arrow IPC file, record batch index)

_PREFIX = "backfill-report-spill-"
GATHER_ROWS = 262_144  # small batches of a tag are gathered up to this many rows before they are split and spilled


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
        self._pending: dict[tuple[str, str], list[pa.Table]] = {}  # (tag, key) -> small batches not split yet

    def add(self, tag: str, table: pa.Table, key: str) -> None:
        """Add ``table``'s rows under ``tag``, each to the bucket of its ``key``. Batches smaller than
        :data:`GATHER_ROWS` wait for more of the same tag (one split and one file for many small files read);
        a bucket's rows keep the order they were added in."""
        if table.num_rows == 0:
            return
        pending = self._pending.setdefault((tag, key), [])
        pending.append(table)
        if sum(t.num_rows for t in pending) >= GATHER_ROWS:
            self._add_now(tag, key)

    def flush(self) -> None:
        """Split and store the batches still waiting (before the buckets are read, or the store handed over)."""
        for tag, key in list(self._pending):
            self._add_now(tag, key)

    def _add_now(self, tag: str, key: str) -> None:
        tables = self._pending.pop((tag, key), [])
        if not tables:
            return
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
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
        for waiting, key in [k for k in self._pending if k[0] == tag]:  # rows added earlier stay first
            self._add_now(waiting, key)
        if self._folder is not None:
            self._spill(tag, [(bucket, table)])
            return
        self._kept.setdefault(bucket, {}).setdefault(tag, []).append(table)

    def _split(self, table: pa.Table, key: str) -> Iterator[tuple[int, pa.Table]]:
        if self.n == 1:
            yield 0, table
            return
        buckets = bucket_of(table[key], self.n)
        order = np.argsort(buckets, kind="stable")
        table, buckets = table.take(pa.array(order)), buckets[order]
        starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
        ends = np.r_[starts[1:], len(buckets)]
        for start, end in zip(starts, ends):
            yield int(buckets[start]), table.slice(start, end - start)

    def _spill(self, tag: str, parts: list[tuple[int, pa.Table]]) -> None:
        path = self.file_name()
        write_parts(path, [part for _, part in parts])
        for index, (bucket, _) in enumerate(parts):
            self._spilled.setdefault(bucket, []).append((tag, path, index))

    def file_name(self, what: str = "") -> str:
        """A new file of this store in its folder."""
        self._files += 1
        return os.path.join(self._folder, f"{self._prefix}-{self._files - 1:06d}{what}.arrow")

    @property
    def folder(self) -> str | None:
        """The folder its buckets are spilled to (None: they are kept in memory)."""
        return self._folder

    @property
    def spills(self) -> bool:
        """Its buckets go to files (several buckets and a folder), not memory."""
        return self._folder is not None

    def adopt(self, other: "BucketStore") -> None:
        """Take the parts of another store of as many buckets in the same folder (a worker's: only references
        of spilled parts travel), after this one's own."""
        self.flush()
        other.flush()
        for bucket, refs in other._spilled.items():
            self._spilled.setdefault(bucket, []).extend(refs)
        for bucket, tags in other._kept.items():
            for tag, parts in tags.items():
                self._kept.setdefault(bucket, {}).setdefault(tag, []).extend(parts)

    def adopt_ref(self, bucket: int, ref: Ref) -> None:
        """Take one spilled part (a file a worker wrote) into ``bucket``."""
        self._spilled.setdefault(bucket, []).append(ref)

    def refs(self, bucket: int) -> list[Ref]:
        """The references of ``bucket``'s spilled parts, then forgotten here (a worker reads them)."""
        self.flush()
        return self._spilled.pop(bucket, [])

    def tables(self, bucket: int) -> dict[str, pa.Table]:
        """Every row of ``bucket``, by tag (a tag with no row in it is absent)."""
        self.flush()
        if self._folder is None:
            return {tag: pa.concat_tables(parts) for tag, parts in self._kept.pop(bucket, {}).items()}
        return read_refs(self.refs(bucket))


def write_parts(path: str, parts: list[pa.Table]) -> None:
    """Tables of one schema into one Arrow IPC file, a record batch each (batch ``i``: ``parts[i]``)."""
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, parts[0].schema) as writer:
        for part in parts:
            writer.write_table(part.combine_chunks(), max_chunksize=part.num_rows or None)


def read_refs(refs: list[Ref]) -> dict[str, pa.Table]:
    """The tables of spilled parts, by tag (the parts of a tag concatenated in order; memory-mapped)."""
    found: dict[str, list[pa.Table]] = {}
    readers: dict[str, pa.ipc.RecordBatchFileReader] = {}  # each file opened once
    for tag, path, index in refs:
        if path not in readers:
            readers[path] = pa.ipc.open_file(pa.memory_map(path))
        found.setdefault(tag, []).append(pa.Table.from_batches([readers[path].get_batch(index)]))
    return {tag: pa.concat_tables(parts) for tag, parts in found.items()}
