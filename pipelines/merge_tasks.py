"""The in-process merge's five kinds of task, each run by a worker process on one input or one bucket.

    read_task(kind, i, source)      -> base split, event split or vault shard i read (events checked) and
                                       spilled, a part per bucket (line_id; event_id for events and for
                                       ``held``: the event ids a merged base split's lines carry)
    event_task(b, refs, held)       -> event_id bucket b: the first copy of each uncontested id, and every
                                       copy of the contested ids, spilled by line bucket; copies of an id
                                       a line of the previous base carries, on another line, dead letters
    verdict_task(b, copies, base)   -> line bucket b's contested copies judged against their lines, by event bucket
    take_task(b, refs)              -> event_id bucket b: who takes each contested id; takers by line bucket
    merge_task(b, base, events, keys, values)
                                    -> line bucket b merged: its base part, its vault shards, its dead letters

A bucket's base, keys and values come as spilled parts' references or, for a previous merge's files cut by line
bucket (``pipelines/io/line_buckets.py``), as the :class:`Shard` of its file, read here and checked to hold only
lines of the bucket. Each bucket's files are written with that mark, for the next merge.

They are the Beam job's steps (``transforms/merge/composite.py``, ``event_stages.py``) calling the same
functions (:mod:`transforms.merge.event_steps`, :func:`transforms.merge.bucket.merge_bucket`), with sealed
spill files (:mod:`transforms.core.spill_files`) in place of the shuffles. A task returns its counts and the
references of what it spilled, never rows. The keyset is loaded from its path once per worker process
(:func:`start_worker`, as the DoFns' ``setup()``): keys never travel with a task. Dead letters are written
as the tasks find them, one JSON Lines file per task that has any.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from typing import Iterator

import pyarrow as pa

from pipelines.io.base_reads import read_split
from pipelines.io.line_buckets import Shard, read_shard, write_bucket
from pipelines.io.planning import InputError
from pipelines.io.task_files import DeadLetterFile, Ref, SpillFile, gather
from transforms.core.counts import merge_counts, value_counts
from transforms.core.deadletter import DeadLetterContext
from transforms.core.rows import malformed_table
from transforms.core.spill_files import read_part
from transforms.merge.bucket import MERGED_SCHEMA, merge_bucket
from transforms.merge.event_steps import check_batch, contested_base, line_keys, split_bucket, take_bucket, verdicts
from transforms.merge.value_free import value_free
from transforms.scan.crossrecord import bucket_of
from transforms.scan.policy import Policy

__all__ = ["Settings", "start_worker", "read_task", "event_task", "verdict_task", "take_task", "merge_task"]

MAX_FIELD_CHARS = 4096  # as the Beam job's readers
FLUSH_ROWS = 262_144  # rows a read task holds before it spills them, a part per bucket
_VAULT_TABLE = {"vault_keys": "keys", "vault_values": "values"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every task of one run needs; set once in each worker process."""

    policy: Policy
    as_of: dt.date
    ctx: DeadLetterContext
    keys_path: str  # loaded by each worker process, never passed loaded
    base_kind: str
    n_buckets: int
    spill: str  # the run's private spill folder
    stage: str  # the run's staged output folder
    encoding: str
    batch_size: int


_WORKER: dict = {}


def start_worker(settings: Settings) -> None:
    """A worker process's initializer (and the launcher's when it runs the tasks itself): the settings, and the
    keyset loaded from its path with its tokenizer and vault (as the DoFns' ``setup()``)."""
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.tokenize import Tokenizer
    from transforms.crypto.vault import Vault

    keyset = Keyset.load(settings.keys_path)
    # The key of classify's document and name hashes: never compared across buckets, so each worker draws its own.
    _WORKER.update(settings=settings, tokenizer=Tokenizer(keyset), vault=Vault(keyset), salt=secrets.token_hex(16))


def _settings() -> Settings:
    return _WORKER["settings"]


def _spill(kind: str) -> SpillFile:
    return SpillFile(_settings().spill, kind)


def _dead_letters(name: str) -> DeadLetterFile:
    return DeadLetterFile(_settings().stage, name)


def _spill_by(spill: SpillFile, table: pa.Table, keys) -> list[tuple[int, Ref]]:
    """``table``'s rows spilled, a part per bucket of each of ``keys``: ``(bucket, reference)`` of each part."""
    if table.num_rows == 0:
        return []
    return spill.add_by(table, bucket_of(keys, _settings().n_buckets))


def _read_vault(path: str, kind: str) -> Iterator[tuple[pa.Table, list]]:
    from pipelines.io.merged_base import read_vault_shard

    for table in read_vault_shard(path, _VAULT_TABLE[kind]):
        yield table, []


def _read_merged(split) -> Iterator[tuple[pa.Table, list]]:
    from pipelines.io.merged_base import read_merged_checked

    for table in read_merged_checked(split, _settings().batch_size):
        yield table, []


def _read_held(split) -> Iterator[tuple[pa.Table, list]]:
    from pipelines.io.merged_base import read_held_ids

    for table in read_held_ids(split, _settings().batch_size):
        yield table, []


def _batches(kind: str, source) -> Iterator[tuple[pa.Table, list]]:
    s = _settings()
    if kind == "held":
        return _read_held(source)
    if kind == "events":
        from pipelines.io.events import read_event_split

        return read_event_split(source, s.encoding, s.batch_size, MAX_FIELD_CHARS)
    if kind == "base":
        if s.base_kind == "raw":
            return read_split(source, s.encoding, s.batch_size, MAX_FIELD_CHARS)
        return _read_merged(source)
    return _read_vault(source, kind)


class _Pending:
    """Tables held until ``FLUSH_ROWS`` rows (or the input's end), then spilled as a part per bucket: fewer,
    larger parts than one per read batch, and a worker holds at most that many rows."""

    def __init__(self, spill: SpillFile, key: str, clean: bool):
        self._spill, self._key, self._clean = spill, key, clean
        self._tables: list[pa.Table] = []
        self._rows, self.parts = 0, []

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self._tables.append(table)
            self._rows += table.num_rows
        if self._rows >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._tables:
            table = pa.concat_tables(self._tables, promote_options="permissive").combine_chunks()
            self._tables, self._rows = [], 0
            keys = line_keys(table, self._clean) if self._key == "line_id" else table.column(self._key)
            self.parts += _spill_by(self._spill, table, keys)


def read_task(kind: str, index: int, source) -> dict:
    """Read one input (``base``, ``events``: a split; ``vault_keys``, ``vault_values``: a shard's path): events
    checked (their dead letters written), every table spilled by bucket; returns counts, the parts' (bucket,
    reference) and the base rows read."""
    s, w = _settings(), _WORKER
    counts: dict = {}
    side = "events" if kind == "events" else "base"
    dead, spill, rows = _dead_letters(f"read-{kind}-{index:05d}.jsonl"), _spill(kind), 0
    key = "event_id" if kind in ("events", "held") else "line_id"
    pending = _Pending(spill, key, kind == "base" and s.base_kind == "raw")
    try:
        for table, bad in _batches(kind, source):
            if bad:
                letters = malformed_table(s.ctx, bad, "event_id" if kind == "events" else None)
                dead.add(letters)
                merge_counts(counts, {side: {"dead_letters": value_counts(letters.column("reason"))}})
            if table.num_rows and kind == "events":
                table, letters, checked = check_batch(table, w["tokenizer"], s.ctx)
                dead.add(letters)
                merge_counts(counts, checked)
            rows += table.num_rows if kind == "base" else 0
            pending.add(table)
        pending.flush()
    finally:
        spill.close()
        dead.close()
    return {"counts": counts, "parts": pending.parts, "rows": rows}


def event_task(bucket: int, refs: list[Ref], held: list[Ref]) -> dict:
    """Event_id bucket ``bucket``: firsts and contested copies spilled by line bucket; the duplicates counted;
    the copies of an id a line of the previous base carries (``held``: the bucket's parts), on another line,
    written as dead letters."""
    firsts, contested, dead, counts = split_bucket(gather(refs), gather(held) if held else None, _settings().ctx)
    letters = _dead_letters(f"split-{bucket:05d}.jsonl")
    spill = _spill("firsts")
    try:
        letters.add(dead)
        out = {"firsts": _spill_by(spill, firsts, firsts.column("line_id"))}
        out["contested"] = _spill_by(spill, contested, contested.column("line_id"))
    finally:
        spill.close()
        letters.close()
    return {"counts": counts, **out}


def verdict_task(bucket: int, copy_refs: list[Ref], base_refs: list[Ref]) -> list[tuple[int, Ref]]:
    """Line bucket ``bucket``: its contested copies judged against the base rows of their lines (read part by
    part, only those rows kept), spilled by event bucket."""
    s = _settings()
    copies = gather(copy_refs)
    base = contested_base(_tables(base_refs), copies, s.base_kind == "raw")
    judged = verdicts(copies, base, s.base_kind, s.policy, s.as_of, s.ctx, _WORKER["salt"])
    spill = _spill("verdicts")
    try:
        return _spill_by(spill, judged, judged.column("event_id"))
    finally:
        spill.close()


def take_task(bucket: int, refs: list[Ref]) -> dict:
    """Event_id bucket ``bucket`` of contested copies: takers spilled by line bucket; dead letters written."""
    takers, dead, counts = take_bucket(gather(refs), _settings().ctx)
    letters = _dead_letters(f"take-{bucket:05d}.jsonl")
    spill = _spill("takers")
    try:
        letters.add(dead)
        return {"counts": counts, "takers": _spill_by(spill, takers, takers.column("line_id"))}
    finally:
        spill.close()
        letters.close()


def _tables(items: list) -> Iterator[pa.Table]:
    """A bucket's rows of one input, table by table: spilled parts, or a file of the bucket read and checked."""
    for item in items:
        if isinstance(item, Shard):
            yield from read_shard(item, _settings().batch_size)
        else:
            yield read_part(*item)


def _gather(items: list) -> pa.Table | None:
    """A bucket's rows of one input in one table (None for none), as :func:`gather` of spilled parts."""
    parts = [t for t in _tables(items) if t.num_rows]
    return pa.concat_tables(parts, promote_options="permissive").combine_chunks() if parts else None


def merge_task(bucket: int, base: list[Ref], events: list[Ref], keys: list[Ref], values: list[Ref]) -> dict:
    """Line bucket ``bucket`` merged (:func:`merge_bucket`): ``base/part-B-of-N.parquet``, the vault's shard B
    of each table and the bucket's dead letters written in the staged folder; returns the counts and lines."""
    s, w = _settings(), _WORKER
    with value_free("ReadBucket", passing=(InputError,)):  # InputError: a file of the bucket, named, no value
        base_rows, keys_rows, values_rows, events_rows = _gather(base), _gather(keys), _gather(values), gather(events)
    read = base_rows.num_rows if base_rows is not None and isinstance(base[0], Shard) else 0
    if base_rows is None and keys_rows is None and values_rows is None and events_rows is None:
        # nothing in this bucket (the Beam job has no element for it)
        write_bucket(s.stage, bucket, s.n_buckets, MERGED_SCHEMA.empty_table(), None, None)
        return {"counts": {}, "lines": 0, "read": 0}
    with value_free("TokenizeAndSeal"):
        result = merge_bucket(
            base_rows,
            s.base_kind,
            events_rows,
            keys_rows,
            values_rows,
            tokenizer=w["tokenizer"],
            vault=w["vault"],
            policy=s.policy,
            as_of=s.as_of,
            ctx=s.ctx,
            salt=w["salt"],
        )
    write_bucket(s.stage, bucket, s.n_buckets, result.base, result.vault_keys, result.vault_values)
    dead = _dead_letters(f"merge-{bucket:05d}.jsonl")
    try:
        dead.add(result.dead_letter)
    finally:
        dead.close()
    return {"counts": result.counts, "lines": result.base.num_rows, "read": read}
