"""The in-process scan's four kinds of task, each run by a worker process on one split or one bucket.

    read_task(i, split)        -> split i read and classified; its rows and key tables spilled
    dedup_task(b, key_refs)    -> line bucket b: duplicates dropped; document keys spilled by document bucket
    flag_task(d, doc_refs)     -> document bucket d: DOC_NAME_CONFLICT and DOC_LINE_LIMIT flags
    write_task(i, rows, exc)   -> split i's rows, their exceptions applied, written as one Parquet file

They are the Beam job's steps (``transforms/scan/composite.py``), calling the
same functions (:mod:`transforms.scan.batch_steps`, :mod:`transforms.scan.crossrecord`),
with spill files (:mod:`transforms.core.spill_files`: sealed under the run's spill
key) in place of the shuffles. Every task returns its counts and the
references of what it spilled, never rows: the launcher
(``pipelines/scan_local.py``) holds references, the workers one split or one
bucket at a time. Dead letters are written as the tasks find them, one JSON
Lines file per task that has any. A task's settings are set once per worker
process (:func:`start_worker`); the run's salt travels only in memory, to the
worker processes this launcher forks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.io.base_reads import read_split
from pipelines.io.planning import Split
from pipelines.io.task_files import DeadLetterFile, Ref, SpillFile, gather, parquet_file
from schemas import arrow_schema
from transforms.core.deadletter import DeadLetterContext
from transforms.core.counts import merge_counts
from transforms.core.rows import malformed_table
from transforms.core.spill_files import read_part
from transforms.scan.batch_steps import batch_counts, dead_counts, rows_for_finalize
from transforms.scan.classify import classify_batch, finalize
from transforms.scan.crossrecord import apply_exceptions, batch_id, bucket_of, deduplicate, document_flags
from transforms.scan.crossrecord import document_keys, key_table
from transforms.scan.policy import Policy

__all__ = ["Settings", "start_worker", "read_task", "dedup_task", "flag_task", "write_task", "Ref"]

MAX_FIELD_CHARS = 4096  # as the Beam job's reader (ReadSubscriberBase)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every task of one run needs; set once in each worker process."""

    policy: Policy
    as_of: dt.date
    ctx: DeadLetterContext
    salt: str
    n_buckets: int
    spill: str  # the run's private spill folder
    stage: str  # the run's staged output folder
    encoding: str
    batch_size: int


_SETTINGS: list[Settings] = []


def start_worker(settings: Settings) -> None:
    """A worker process's initializer (and the launcher's, when it runs the tasks itself)."""
    _SETTINGS[:] = [settings]


def _settings() -> Settings:
    return _SETTINGS[0]


class _DeadLetters(DeadLetterFile):
    """A task's dead letters, written and counted as summary.json counts them."""

    def __init__(self, name: str):
        super().__init__(_settings().stage, name)
        self.counts: dict = {}

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            super().add(table)
            merge_counts(self.counts, dead_counts(table))


def read_task(index: int, split: Split) -> dict:
    """Read and classify split ``index``: its rows (a part per batch, in order) and its key tables (a part
    per line bucket) spilled; returns counts, the rows' and keys' references and the split's batch ids."""
    s = _settings()
    counts: dict = {}
    dead = _DeadLetters(f"read-{index:05d}.jsonl")
    rows, row_refs, batches, key_tables = SpillFile(s.spill, "rows"), [], [], []
    try:
        for raw, bad in read_split(split, s.encoding, s.batch_size, MAX_FIELD_CHARS):
            if bad:
                dead.add(malformed_table(s.ctx, bad))
            if not raw.num_rows:
                continue
            result = classify_batch(raw, s.policy, s.as_of, s.ctx, s.salt)
            merge_counts(counts, {"rows_in": result.rows_in})
            dead.add(result.dead_letter)
            table = result.classified
            if table.num_rows:
                batch = batch_id(table.column("_src_file")[0].as_py(), table.column("_src_row")[0].as_py())
                row_refs.append(rows.add(len(batches), rows_for_finalize(table, batch))[1])
                batches.append(batch)
                key_tables.append(key_table(table, batch))
    finally:
        rows.close()
        dead.close()
    return {
        "counts": merge_counts(counts, dead.counts),
        "rows": row_refs,
        "keys": _spill_by(key_tables, "line_id", "keys"),
        "batches": batches,
    }


def _spill_by(tables: list[pa.Table], column: str, kind: str) -> list[tuple[int, Ref]]:
    """``tables`` spilled as one file, a part per bucket of ``column``; the parts' (bucket, reference)."""
    if not tables:
        return []
    table = pa.concat_tables(tables).combine_chunks()
    if table.num_rows == 0:
        return []
    spill = SpillFile(_settings().spill, kind)
    try:
        return spill.add_by(table, bucket_of(table.column(column), _settings().n_buckets))
    finally:
        spill.close()


def _spill_by_split(exceptions: pa.Table, batches: np.ndarray, splits: np.ndarray, kind: str) -> list[tuple[int, Ref]]:
    """Exceptions spilled as one file, a part per split that holds their batches (``batches`` sorted, with
    the split of each in ``splits``); the parts' (split, reference)."""
    if exceptions.num_rows == 0:
        return []
    where = np.searchsorted(batches, exceptions.column("_batch").to_numpy())
    owner = splits[np.clip(where, 0, len(splits) - 1)]
    spill = SpillFile(_settings().spill, kind)
    try:
        return spill.add_by(exceptions, owner)
    finally:
        spill.close()


def dedup_task(bucket: int, refs: list[Ref], batches: np.ndarray, splits: np.ndarray) -> dict:
    """Line bucket ``bucket``: the latest row of each line_id kept, the others dead letters and drop
    exceptions (spilled by split); the kept lines' document keys spilled by document bucket."""
    s = _settings()
    dead = _DeadLetters(f"dedup-{bucket:05d}.jsonl")
    try:
        keys = gather(refs)
        if keys is None:
            return {"counts": {}, "drops": [], "docs": []}
        kept, drops, dead_rows = deduplicate(keys, s.ctx)
        dead.add(dead_rows)
        docs = document_keys(kept)
    finally:
        dead.close()
    return {
        "counts": dead.counts,
        "drops": _spill_by_split(drops, batches, splits, "drops"),
        "docs": _spill_by([docs], "_doc_key", "docs"),
    }


def flag_task(refs: list[Ref], batches: np.ndarray, splits: np.ndarray) -> list[tuple[int, Ref]]:
    """Document bucket: the flag exceptions of its lines, spilled by split."""
    keys = gather(refs)
    if keys is None:
        return []
    return _spill_by_split(document_flags(keys, _settings().policy.doc_line_limit), batches, splits, "flags")


def write_task(index: int, n_splits: int, rows: list[Ref], exceptions: list[Ref]) -> dict:
    """Split ``index``'s rows, batch by batch, with their drops and flags applied and finalised, written as
    ``classified/part-INDEX-of-N.parquet`` in the staged folder; returns the batches' counts."""
    s = _settings()
    found = gather(exceptions)
    counts: dict = {}
    path = posixpath.join(s.stage, "classified", f"part-{index:05d}-of-{n_splits:05d}.parquet")
    with parquet_file(path, arrow_schema("classified_line")) as writer:
        for ref in rows:
            table = read_part(*ref)
            mine = None
            if found is not None:
                mine = found.filter(pc.equal(found.column("_batch"), table.column("_batch")[0]))
            table = finalize(apply_exceptions(table, mine))
            merge_counts(counts, batch_counts(table))
            if table.num_rows:
                writer.write_table(table)
    return counts
