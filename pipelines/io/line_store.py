"""The local streaming merge's state on disk (stdlib sqlite3): the base's lines, the ids held, the messages seen.

    store = open_store(OUT/state, base paths, encoding, policy, as_of, ctx, salt, newest_seq)
    store.subset(line_ids)              # INDEX_SCHEMA rows, with the lines' current registration
    store.holders(event_ids)            # {event_id: digest} of the ids taken so far
    store.carriers(event_ids)           # (event_id, line_id) of the base's rows that carry these events
    store.seen_messages(message_ids)    # bool mask: Pub/Sub message ids processed so far
    store.apply(delta, seq, taken=..., seen=...)   # once window ``seq`` is committed; idempotent per seq

One SQLite file, ``OUT/state/lines.sqlite`` (0600 in a 0700 folder; WAL; a
page cache of :data:`CACHE_MB`), so the process's memory does not grow with
the base or with the events. Tables: ``lines`` (the base's lines, packed),
``registrations`` (the windows' registrations, kept apart so a window
dirties few pages), ``carriers`` (a merged base's event ids and the lines
that carry them), ``ids``, ``messages`` and ``meta``. It is **built**
(``pipelines/io/line_store_build.py``) from the base by streaming its read
batches: a raw base's batches classified as the batch merge classifies
them (``transforms.merge.lines.raw_lines``), a merged base's rows carried;
a line_id in two batches resolved as the batch merge resolves it (the latest
``updated_at`` -- ``registered_at`` for a merged base -- wins, a tie to the
row later in the input) and counted as ``DUPLICATE_LINE_ID``. It keeps no
identity value: a raw base's identity columns are null (a merged base's
tokens and masks are not identity values). It is built once and **reused**
while the base files (path, size, modification time), the encoding, the
policy (version and digest) and ``as_of`` stay the same; otherwise, or when
it has applied a window that is no longer committed, it is built again
(under a temporary name, then renamed over the old one).

Committed window folders stay the source of truth: the store records the
last window it applied, and a restart applies the committed windows after
it (``pipelines.io.windows.replay``), so a crash between a window's commit
and the store's update changes nothing. Message ids are forgotten
:data:`MESSAGE_TTL_DAYS` days (of publish time) after the newest one seen:
Pub/Sub redelivers nothing older.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import sqlite3

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.io.publish import make_private_dirs
from transforms.core.deadletter import DeadLetterContext
from transforms.merge.window_state import INDEX_SCHEMA, same_message
from transforms.scan.policy import Policy

__all__ = ["LineStore", "open_store", "connect", "STORE_NAME", "CACHE_MB", "MESSAGE_TTL_DAYS", "PACKED"]

STORE_NAME = "lines.sqlite"
STORE_VERSION = 2  # 2: the carriers table (a merged base's event ids and the lines that carry them)
CACHE_MB = 32
MESSAGE_TTL_DAYS = 7
FIELD_SEP, LIST_SEP, NULL_MARK = "\x1f", "\x1e", "\x00"  # no field holds them: the readers refuse control characters
_OWN = ("line_id", "_src_file", "_src_row", "registered_at", "registration_event_id")  # columns of their own
PACKED = [f for f in INDEX_SCHEMA if f.name not in _OWN]  # the rest: one text per line


def _from_text(values: pa.Array, t: pa.DataType) -> pa.Array:
    values = pc.if_else(pc.equal(values, NULL_MARK), pa.scalar(None, pa.string()), values)
    if pa.types.is_list(t):  # null (no code) -> an empty list: the split's offsets without its validity
        split = pc.split_pattern(values, LIST_SEP)
        return pa.ListArray.from_arrays(split.offsets, split.values).cast(t)
    if pa.types.is_date32(t):
        return values.cast(pa.int32()).cast(t)
    if pa.types.is_timestamp(t):
        return values.cast(pa.int64()).cast(t)
    if pa.types.is_boolean(t):
        return values.cast(pa.int8()).cast(t)
    return values.cast(t)


def _unpack(rows: list[tuple]) -> pa.Table:
    """SQLite rows (line_id, _src_file, _src_row, registered_at, registration_event_id, packed) -> INDEX_SCHEMA."""
    if not rows:
        return INDEX_SCHEMA.empty_table()
    own = list(zip(*rows))
    n, k = len(rows), len(PACKED)
    flat = pc.split_pattern(pa.array(own[5], pa.string()), FIELD_SEP).flatten()
    columns = {f.name: _from_text(flat.take(pa.array(np.arange(j, n * k, k))), f.type) for j, f in enumerate(PACKED)}
    types = {name: INDEX_SCHEMA.field(name).type for name in _OWN}
    columns["line_id"] = pa.array(own[0], pa.string())
    columns["_src_file"] = pa.array(own[1], pa.string())
    columns["_src_row"] = pa.array(own[2], pa.int64())
    columns["registered_at"] = pa.array(own[3], pa.int64()).cast(types["registered_at"])
    columns["registration_event_id"] = pa.array(own[4], pa.string())
    return pa.Table.from_arrays([columns[f.name] for f in INDEX_SCHEMA], schema=INDEX_SCHEMA)


def connect(path: str, building: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    pragmas = [f"cache_size=-{CACHE_MB * 1024}", "mmap_size=0", "temp_store=FILE"]
    pragmas += ["journal_mode=OFF", "synchronous=OFF"] if building else ["journal_mode=WAL", "synchronous=NORMAL"]
    for pragma in pragmas:
        db.execute(f"PRAGMA {pragma}")
    return db


class LineStore:
    """An open store (see the module docstring). One process, one thread."""

    def __init__(self, path: str):
        self.path = path
        self._db = connect(path)
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        self.fingerprint = json.loads(meta["fingerprint"])
        self.summary = json.loads(meta["summary"])
        self.last_seq = int(meta["last_seq"])

    def close(self) -> None:
        self._db.close()

    def _lookup(self, sql: str, keys) -> list[tuple]:
        wanted = sorted({k for k in keys if k is not None})
        return self._db.execute(sql, [json.dumps(wanted)]).fetchall() if wanted else []

    def subset(self, line_ids) -> pa.Table:
        """The lines of these ids (INDEX_SCHEMA), with their current registration; unknown ids are absent."""
        ids = line_ids.to_pylist() if hasattr(line_ids, "to_pylist") else line_ids
        return _unpack(self._lookup(_SUBSET, ids))

    def holders(self, event_ids) -> dict[str, str]:
        """{event_id: digest of the copy that took it} of the ids held among these."""
        sql = "SELECT i.event_id, i.digest FROM json_each(?) AS j CROSS JOIN ids AS i ON i.event_id = j.value"
        return dict(self._lookup(sql, event_ids))

    def carriers(self, event_ids) -> pa.Table:
        """``(event_id, line_id)`` of the base's rows that carry these events (HELD_SCHEMA)."""
        from transforms.merge.copies import HELD_SCHEMA

        ids = event_ids.to_pylist() if hasattr(event_ids, "to_pylist") else event_ids
        sql = "SELECT c.event_id, c.line_id FROM json_each(?) AS j CROSS JOIN carriers AS c ON c.event_id = j.value"
        found = self._lookup(sql, ids)
        return pa.table([pa.array([r[i] for r in found], pa.string()) for i in (0, 1)], schema=HELD_SCHEMA)

    def seen_messages(self, message_ids: pa.Array, publish_times: pa.Array | None = None) -> np.ndarray:
        """Per message: processed in an earlier window (and not yet forgotten): its id, and its publish time when
        given (a redelivery repeats both; the emulator reuses ids after a restart)."""
        sql = (
            "SELECT m.message_id, m.publish_time FROM json_each(?) AS j "
            "CROSS JOIN messages AS m ON m.message_id = j.value"
        )
        found = self._lookup(sql, message_ids.to_pylist())
        known = pa.table({"id": pa.array([r[0] for r in found], pa.string()), "at": [r[1] for r in found]})
        return same_message(message_ids, publish_times, known.column("id"), known.column("at"))

    def apply(self, delta: pa.Table, seq: int, *, taken: pa.Table | None = None, seen: pa.Table | None = None) -> bool:
        """Take window ``seq``'s registrations (latest wins), the ids it took and the message ids it processed,
        in one transaction with ``seq`` as the last window applied. False (and nothing done) when a window
        ``seq`` or later was applied already."""
        if seq <= self.last_seq:
            return False
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            _apply_registrations(db, delta, self.summary["kind"])
            if taken is not None and taken.num_rows:
                rows = sorted(zip(taken.column("event_id").to_pylist(), taken.column("digest").to_pylist()))
                db.executemany("INSERT INTO ids VALUES (?, ?) ON CONFLICT DO NOTHING", rows)
            if seen is not None and seen.num_rows:
                _apply_messages(db, seen)
            db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", [str(seq)])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.last_seq = seq
        return True


def _apply_registrations(db: sqlite3.Connection, delta: pa.Table, kind: str) -> None:
    """Each line's registration from a delta, where it is newer than the line's current one (latest wins; a
    raw base's lines have none of their own)."""
    if not delta.num_rows:
        return
    rows = zip(
        delta.column("line_id").to_pylist(),
        delta.column("registered_at").cast(pa.int64()).to_pylist(),
        delta.column("registration_event_id").to_pylist(),
    )
    db.executemany(_REGISTER[kind == "raw"], sorted(rows))


def _apply_messages(db: sqlite3.Connection, seen: pa.Table) -> None:
    times = seen.column("publish_time").cast(pa.int64())
    rows = sorted(r for r in zip(seen.column("message_id").to_pylist(), times.to_pylist()) if r[0] is not None)
    # an id seen again with a later publish time is another message (the emulator restarted): it is remembered
    db.executemany(_MESSAGE, rows)
    newest = pc.max(times).as_py()
    if newest is not None:
        cutoff = newest - MESSAGE_TTL_DAYS * 86_400 * 1_000_000
        db.execute("DELETE FROM messages WHERE publish_time < ?", [cutoff])


_MESSAGE = (
    "INSERT INTO messages VALUES (?1, ?2) ON CONFLICT (message_id) DO UPDATE SET publish_time = ?2 "
    "WHERE ?2 > messages.publish_time"
)
_SUBSET = (
    'SELECT l.line_id, l."_src_file", l."_src_row", coalesce(r.registered_at, l.registered_at), '
    "iif(r.line_id IS NULL, l.registration_event_id, r.registration_event_id), l.packed "
    "FROM json_each(?) AS j CROSS JOIN lines AS l ON l.line_id = j.value "
    "LEFT JOIN registrations AS r ON r.line_id = l.line_id"
)


def _newer(at: str, event: str) -> str:
    """SQL: registration (?2, ?3) is newer than (at, event): later, or as late with a larger event id."""
    return f"({at} IS NULL OR ?2 > {at} OR (?2 = {at} AND ({event} IS NULL OR ?3 > {event})))"


_UPDATE_NEWER = " ON CONFLICT (line_id) DO UPDATE SET registered_at = ?2, registration_event_id = ?3 WHERE " + _newer(
    "registrations.registered_at", "registrations.registration_event_id"
)
_REGISTER = (  # [merged base, raw base]
    "INSERT INTO registrations SELECT ?1, ?2, ?3 FROM lines AS l WHERE l.line_id = ?1 AND "
    + _newer("l.registered_at", "l.registration_event_id")
    + _UPDATE_NEWER,
    "INSERT INTO registrations VALUES (?1, ?2, ?3)" + _UPDATE_NEWER,
)


def _reusable(path: str, fingerprint: dict, newest_seq: int) -> LineStore | None:
    if not os.path.exists(path):
        return None
    try:
        store = LineStore(path)
    except (sqlite3.DatabaseError, KeyError, ValueError):  # unreadable or unfinished: built again
        return None
    if store.fingerprint == fingerprint and store.last_seq <= newest_seq:
        return store
    store.close()
    return None


def open_store(
    folder: str,
    paths: list[str],
    encoding: str,
    policy: Policy,
    as_of: dt.date,
    ctx: DeadLetterContext,
    salt: str,
    newest_seq: int = 0,
    batch_size: int = 32_768,
) -> tuple[LineStore, bool]:
    """(the store of this base in ``folder``, whether it was built now). ``newest_seq``: the newest committed
    window (a store that applied a later one is built again)."""
    from pipelines.io.line_store_build import build_store, store_fingerprint

    make_private_dirs(folder)
    for stale in glob.glob(os.path.join(glob.escape(folder), f"{STORE_NAME}.tmp-*")):
        os.remove(stale)  # a build that was killed
    path = os.path.join(folder, STORE_NAME)
    fingerprint, splits = store_fingerprint(list(paths), encoding, policy, as_of)
    store = _reusable(path, fingerprint, newest_seq)
    if store is not None:
        return store, False
    build_store(path, fingerprint, splits, policy, as_of, ctx, salt, batch_size)
    return LineStore(path), True
