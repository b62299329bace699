"""What a task of an in-process step writes: its spill file, its dead letters, a file of the staged output.

    spill = SpillFile(folder, "keys")           # one sealed spill file (transforms/core/spill_files.py)
    refs = spill.add_by(table, buckets)         # a part per bucket: [(bucket, (path, index, offset, length))]
    table = gather([ref, ...])                  # the parts read back, opened, as one table
    dead = DeadLetterFile(stage, "read-00003.jsonl"); dead.add(table); dead.close()

Shared by the in-process scan and merge (``pipelines/scan_tasks.py``,
``pipelines/merge_tasks.py``). Tasks return references, never rows: the
launcher holds references, a worker one split or one bucket at a time.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from typing import Iterator

import numpy as np
import pyarrow as pa

from transforms.core.deadletter import json_lines
from transforms.core.spill_files import SpillWriter, read_part

__all__ = ["Ref", "create", "SpillFile", "DeadLetterFile", "gather", "parts_by", "empty_dead_letters", "parquet_file"]

Ref = tuple[str, int, int, int]  # a spilled part: (file, index, offset, length)


def create(path: str):
    """A new file for binary writing: local (its folder made) or through Beam's FileSystems (gs://, s3://)."""
    if "://" not in path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return open(path, "wb")
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.create(path)


@contextlib.contextmanager
def parquet_file(path: str, schema: pa.Schema, **options) -> Iterator:
    """A Parquet writer of a new output file, as Beam's WriteToParquetBatched writes (no compression, legacy
    nested types, a row group per table written), so both engines' files read alike; ``options``: more of
    ``ParquetWriter``'s (which columns get dictionaries and statistics)."""
    import pyarrow.parquet as pq

    with (
        create(path) as handle,
        pq.ParquetWriter(handle, schema, compression="none", use_compliant_nested_type=False, **options) as writer,
    ):
        yield writer


def parts_by(table: pa.Table, buckets: np.ndarray) -> Iterator[tuple[int, pa.Table]]:
    """``(bucket, rows)`` per bucket present in ``buckets`` (one per row), in bucket order, rows in order."""
    order = np.argsort(buckets, kind="stable")
    table, buckets = table.take(pa.array(order)), buckets[order]
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(buckets)]):
        yield int(buckets[start]), table.slice(start, end - start)


class SpillFile:
    """One spill file of a task in the run's private ``folder``: parts appended, references returned."""

    def __init__(self, folder: str, kind: str):
        self.name = f"{kind}-{uuid.uuid4().hex}.spill"
        self.path = os.path.join(folder, self.name)
        self._handle = open(self.path, "wb")
        self._writer = SpillWriter(self._handle, self.name)

    def add(self, bucket: int, table: pa.Table) -> tuple[int, Ref]:
        bucket, index, offset, length = self._writer.add(bucket, table)
        return bucket, (self.path, index, offset, length)

    def add_by(self, table: pa.Table, buckets: np.ndarray) -> list[tuple[int, Ref]]:
        """``table``'s rows, a part per bucket of ``buckets`` (one per row)."""
        if table.num_rows == 0:
            return []
        return [self.add(bucket, part) for bucket, part in parts_by(table, buckets)]

    def close(self) -> None:
        self._handle.close()


def gather(refs: list[Ref]) -> pa.Table | None:
    """The spilled parts, opened and concatenated (None for no part)."""
    parts = [read_part(*ref) for ref in refs]
    return pa.concat_tables(parts, promote_options="permissive").combine_chunks() if parts else None


class DeadLetterFile:
    """A task's dead letters: one JSON Lines file in the staged ``dead_letter/``, opened at the first one."""

    def __init__(self, stage: str, name: str):
        self._path, self._handle = posixpath.join(stage, "dead_letter", name), None

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._handle is None:
            self._handle = create(self._path)
        self._handle.write("".join(text + "\n" for text in json_lines(table)).encode("utf-8"))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def empty_dead_letters(stage: str) -> None:
    """The dead-letter folder holds a file even when there is none (as the Beam job's)."""
    folder = posixpath.join(stage, "dead_letter")
    if "://" in stage:
        from apache_beam.io.filesystems import FileSystems

        if not FileSystems.match([posixpath.join(folder, "*")])[0].metadata_list:
            FileSystems.create(posixpath.join(folder, "part-00000-of-00001.jsonl")).close()
        return
    os.makedirs(folder, exist_ok=True)
    if not os.listdir(folder):
        open(os.path.join(folder, "part-00000-of-00001.jsonl"), "wb").close()
