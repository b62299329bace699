"""Building the local streaming merge's line store from the base (see ``pipelines/io/line_store.py``).

The base is read split by split, batch by batch (the batch merge's readers);
each batch's lines are classified (raw base) or carried (merged base) and
upserted: a line_id already stored is replaced only by a row that the batch
merge's de-duplication would keep (the later ``updated_at``, or
``registered_at`` for a merged base; a tie to the row later in the input).
Everything but the columns SQLite compares is packed into one text per line
with Arrow kernels, so a batch costs a handful of Python values per line.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import gc
import json
import os
import sqlite3
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.common import UserError
from pipelines.io.landing import fsync_dir
from pipelines.io.line_store import LIST_SEP, NULL_MARK, PACKED, FIELD_SEP, STORE_VERSION, connect
from transforms.merge.window_state import index_rows
from transforms.scan.policy import Policy

__all__ = ["store_fingerprint", "build_store"]

_MIN_TS = -(2**63)  # a null updated_at sorts first, as the batch merge's de-duplication sorts it


def _as_text(column, t: pa.DataType):
    if pa.types.is_list(t):  # a list of codes; an empty one as null (list columns are never null)
        joined = pc.binary_join(column, LIST_SEP)
        return pc.if_else(pc.equal(joined, ""), pa.scalar(None, pa.string()), joined)
    if pa.types.is_date32(t):
        column = column.cast(pa.int32())
    elif pa.types.is_timestamp(t):
        column = column.cast(pa.int64())
    elif pa.types.is_boolean(t):
        column = column.cast(pa.int8())
    return column.cast(pa.string())


def _pack(rows: pa.Table) -> pa.Array:
    """The INDEX_SCHEMA columns without a column of their own, joined into one text per line (vectorised)."""
    parts = [_as_text(rows.column(f.name), f.type) for f in PACKED]
    packed = pc.binary_join_element_wise(*parts, FIELD_SEP, null_handling="replace", null_replacement=NULL_MARK)
    packed = packed.combine_chunks() if isinstance(packed, pa.ChunkedArray) else packed
    fields = pc.add(pc.count_substring(packed, FIELD_SEP), 1)
    if len(packed) and not pc.all(pc.equal(fields, len(PACKED))).as_py():
        raise UserError("--base: a field holds a control character; the base cannot be indexed")
    return packed


def _file_stamp(path: str) -> list:
    if "://" in path:
        from apache_beam.io.filesystems import FileSystems

        meta = FileSystems.match([path])[0].metadata_list[0]
        return [path, meta.size_in_bytes, meta.last_updated_in_seconds]
    info = os.stat(path)
    return [os.path.abspath(path), info.st_size, info.st_mtime_ns]


def store_fingerprint(paths: list[str], encoding: str, policy: Policy, as_of: dt.date) -> tuple[dict, list]:
    """(what the store is built from, the base's read splits)."""
    from pipelines.io.merged_base import base_kind, plan_merged_splits
    from pipelines.io.planning import plan_splits

    kind = base_kind(paths)
    splits, info = plan_splits(paths, encoding=encoding) if kind == "raw" else plan_merged_splits(paths)
    fingerprint = {
        "store": STORE_VERSION,
        "kind": kind,
        "files": [_file_stamp(f) for f in info.files],
        "encoding": encoding if kind == "raw" else None,
        "policy": {"version": policy.version, "sha256": policy.digest},
        "as_of": as_of.isoformat(),
    }
    return fingerprint, splits


def _base_batches(splits: list, kind: str, encoding: str, batch_size: int) -> Iterator[tuple[pa.Table, int]]:
    """(a read batch, rows the reader refused in it) of every split, in order."""
    from pipelines.io.base_files import read_split
    from pipelines.io.merged_base import read_merged_split

    for split in splits:
        if kind == "raw":
            for raw, bad in read_split(split, encoding, batch_size):
                yield raw, len(bad)
        else:
            for rows in read_merged_split(split, batch_size):
                yield rows, 0


def _kept(batch: pa.Table, kind: str, policy, as_of, ctx, salt) -> tuple[pa.Table, pa.Array, int]:
    """(INDEX_SCHEMA rows of a batch's kept lines, their de-duplication times, the batch's dead letters)."""
    from transforms.merge.lines import merged_lines, raw_lines

    if kind == "raw":
        lines, dead, _ = raw_lines(batch, policy, as_of, ctx, salt)
        times = lines.column("_updated_at")
    else:
        lines, dead, _ = merged_lines(batch, ctx)
        times = lines.column("registered_at")
    times = pc.fill_null(times.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()), _MIN_TS)
    return index_rows(lines, kind), times, dead.num_rows


_CREATE = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    'CREATE TABLE lines (line_id TEXT PRIMARY KEY, _ts INTEGER NOT NULL, "_src_file" TEXT, "_src_row" INTEGER, '
    "registered_at INTEGER, registration_event_id TEXT, packed TEXT NOT NULL) WITHOUT ROWID",
    # the windows' registrations, apart from the base's lines: a window dirties few pages
    "CREATE TABLE registrations (line_id TEXT PRIMARY KEY, registered_at INTEGER NOT NULL, "
    "registration_event_id TEXT) WITHOUT ROWID",
    "CREATE TABLE ids (event_id TEXT PRIMARY KEY, digest TEXT NOT NULL) WITHOUT ROWID",
    # a merged base's rows that carry a registration (every row, as the batch merge's held_pairs reads them)
    "CREATE TABLE carriers (event_id TEXT NOT NULL, line_id TEXT NOT NULL, PRIMARY KEY (event_id, line_id)) "
    "WITHOUT ROWID",
    "CREATE TABLE messages (message_id TEXT PRIMARY KEY, publish_time INTEGER) WITHOUT ROWID",
    "CREATE INDEX messages_by_time ON messages (publish_time)",
]
_UPSERT = (
    "INSERT INTO lines VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (line_id) DO UPDATE SET _ts = excluded._ts, "
    '"_src_file" = excluded."_src_file", "_src_row" = excluded."_src_row", registered_at = excluded.registered_at, '
    "registration_event_id = excluded.registration_event_id, packed = excluded.packed "
    'WHERE (excluded._ts, excluded."_src_file", excluded."_src_row") > (lines._ts, lines."_src_file", lines."_src_row")'
)
_CHUNK = 16_384  # lines turned into Python values at a time


def _upsert(db: sqlite3.Connection, rows: pa.Table, times: pa.Array) -> None:
    for start in range(0, rows.num_rows, _CHUNK):
        part = rows.slice(start, _CHUNK)
        columns = [
            part.column("line_id").to_pylist(),
            times.slice(start, _CHUNK).to_pylist(),
            part.column("_src_file").to_pylist(),
            part.column("_src_row").to_pylist(),
            part.column("registered_at").cast(pa.int64()).to_pylist(),
            part.column("registration_event_id").to_pylist(),
            _pack(part).to_pylist(),
        ]
        db.executemany(_UPSERT, zip(*columns))


def _carry(db: sqlite3.Connection, batch: pa.Table) -> None:
    """The batch's ``(event_id, line_id)`` carriers (``transforms.merge.copies.held_pairs``)."""
    from transforms.merge.copies import held_pairs

    held = held_pairs(batch)
    for start in range(0, held.num_rows, _CHUNK):
        part = held.slice(start, _CHUNK)
        rows = zip(part.column("event_id").to_pylist(), part.column("line_id").to_pylist())
        db.executemany("INSERT INTO carriers VALUES (?, ?) ON CONFLICT DO NOTHING", rows)


def _fill(db: sqlite3.Connection, batches, kind: str, policy, as_of, ctx, salt) -> dict:
    """Upsert every batch's kept lines; returns the base's summary counts."""
    offered = dead = 0
    db.execute("BEGIN")
    for batch, refused in batches:
        if kind != "raw":
            _carry(db, batch)
        rows, times, more = _kept(batch, kind, policy, as_of, ctx, salt)
        dead += refused + more
        offered += rows.num_rows
        _upsert(db, rows, times)
    db.execute("COMMIT")
    lines = db.execute("SELECT count(*) FROM lines").fetchone()[0]
    return {"lines": lines, "dead_letters": dead + offered - lines, "duplicates_across_batches": offered - lines}


def build_store(path: str, fingerprint: dict, splits: list, policy, as_of, ctx, salt, batch_size: int) -> None:
    """Build the store under a temporary name, then put it in place of any old one."""
    tmp = f"{path}.tmp-{os.urandom(4).hex()}"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    db = connect(tmp, building=True)
    try:
        for statement in _CREATE:
            db.execute(statement)
        kind = fingerprint["kind"]
        counts = _fill(
            db, _base_batches(splits, kind, fingerprint["encoding"], batch_size), kind, policy, as_of, ctx, salt
        )
        if counts["lines"] == 0:
            raise UserError("--base: no lines (every row was a dead letter, or there were none)")
        summary = {"kind": kind, "files": [f[0] for f in fingerprint["files"]], **counts}
        meta = {"fingerprint": json.dumps(fingerprint), "summary": json.dumps(summary), "last_seq": "0"}
        db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        db.execute("PRAGMA journal_mode=WAL")
    except BaseException:
        db.close()
        os.remove(tmp)
        raise
    db.close()
    fd = os.open(tmp, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    for old in (f"{path}-wal", f"{path}-shm", path):  # an old log must never be replayed onto the new file
        if os.path.exists(old):
            os.remove(old)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))
    _give_back_memory()


def _give_back_memory() -> None:
    """Return what the build freed to the system: the windows that follow then start from the same memory,
    whatever the base's size (Arrow's pool and the C heap keep freed pages otherwise)."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass
