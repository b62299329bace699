"""The Dataflow streaming merge's per-element records (Beam-free): events, line contexts and outcomes as tuples.

The stateful steps of :mod:`transforms.merge.stream_composite` hold one line
or one event id per key, so what they keep and pass on is a plain tuple
(Beam's deterministic primitive coder, no pickling), turned back into Arrow
for every batch step:

* an **event** (:data:`EVENT_FIELDS`): a checked event's contract strings,
  its source (``subscription/message_id``), ``_registered_at`` and the
  message's event time (UTC microseconds), its body digest
  (:func:`transforms.merge.event_ids.body_digests`; also under the keyset's
  other join-key versions, so a copy held since before a rotation is still
  known for the same body) and its shard;
* a **context** (:data:`CONTEXT_FIELDS`): what the merge needs of a base
  line, without identity (no document, name, address, token or mask): the
  line's fields, its registration and source, dates as days and times as
  microseconds, then its rank (the batch merge's de-duplication: latest
  ``updated_at`` of a raw base, ``registered_at`` of a merged one, then file
  and row);
* an **outcome** ``(kind, payload)`` of one message for its window's folder.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import arrow_schema
from transforms.core.rows import EVENTS
from transforms.merge.bucket import LINE_FIELDS, MERGED_SCHEMA
from transforms.merge.event_ids import DIGEST
from transforms.scan.crossrecord import bucket_of

__all__ = [
    "EVENT_FIELDS",
    "OTHER_DIGESTS",
    "CONTEXT_FIELDS",
    "LINES_SCHEMA",
    "IN",
    "APPLIED",
    "SUPERSEDED",
    "DUPLICATE",
    "DEAD",
    "event_records",
    "events_table",
    "context_records",
    "lines_table",
    "outranks",
    "newer",
    "dead_rows",
    "dead_table",
    "shards_of",
    "folder_name",
]

_TS = pa.timestamp("us", tz="UTC")
OTHER_DIGESTS = "_other_digests"  # the body's digests under the keyset's other join-key versions, space-separated
EVENT_FIELDS = (*EVENTS.columns, "_src_file", "_registered_at", DIGEST, OTHER_DIGESTS, "_ts", "_shard")
E_ID, E_LINE = EVENT_FIELDS.index("event_id"), EVENT_FIELDS.index("line_id")
E_AT, E_DIGEST, E_OTHER = (
    EVENT_FIELDS.index("_registered_at"),
    EVENT_FIELDS.index(DIGEST),
    EVENT_FIELDS.index(OTHER_DIGESTS),
)
E_SOURCE, E_TS, E_SHARD = EVENT_FIELDS.index("_src_file"), EVENT_FIELDS.index("_ts"), EVENT_FIELDS.index("_shard")
CONTEXT_FIELDS = (*LINE_FIELDS, "registered_at", "registration_event_id", "_src_file", "_src_row")
C_AT, C_EVENT = CONTEXT_FIELDS.index("registered_at"), CONTEXT_FIELDS.index("registration_event_id")
C_FILE, C_ROW, C_RANK = CONTEXT_FIELDS.index("_src_file"), CONTEXT_FIELDS.index("_src_row"), len(CONTEXT_FIELDS)
LINES_SCHEMA = pa.schema(list(MERGED_SCHEMA) + [pa.field("_src_file", pa.string()), pa.field("_src_row", pa.int64())])
DEAD_SCHEMA = arrow_schema("dead_letter")
IN, APPLIED, SUPERSEDED, DUPLICATE, DEAD = "in", "applied", "superseded", "duplicate", "dead"
_INT = {pa.date32(): pa.int32(), _TS: pa.int64()}


def _values(column) -> list:
    """A column's values as Python primitives: dates as days, times as microseconds."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    for typ, raw in _INT.items():
        if column.type == typ:
            return column.cast(raw).to_pylist()
    return column.to_pylist()


def event_records(checked: pa.Table, times_us: np.ndarray, shards: np.ndarray) -> list[tuple]:
    """Checked events (with their digest) -> event tuples; ``times_us``, ``shards``: one per row."""
    columns = [_values(checked.column(name)) for name in EVENT_FIELDS[:-2]]
    return list(zip(*columns, [int(t) for t in times_us], [int(s) for s in shards]))


def events_table(records: list[tuple]) -> pa.Table:
    """Event tuples -> the checked events' table (as ``transforms.merge.events.check_events`` makes it)."""
    columns = list(zip(*records)) if records else [()] * len(EVENT_FIELDS)
    arrays = {name: pa.array(columns[i], pa.string()) for i, name in enumerate(EVENTS.columns)}
    arrays["_src_file"] = pa.array(columns[E_SOURCE], pa.string())
    arrays["_src_row"] = pa.nulls(len(records), pa.int64())  # a message is named by its id, not a row
    arrays[DIGEST] = pa.array(columns[E_DIGEST], pa.string())
    arrays["_registered_at"] = pa.array(columns[E_AT], pa.int64()).cast(_TS)
    return pa.table(arrays)


def context_records(lines: pa.Table, rank_column: str) -> list[tuple]:
    """Kept base lines (``transforms.merge.lines`` raw or merged) -> context tuples, ranked by ``rank_column``."""
    columns = [_values(lines.column(name)) for name in CONTEXT_FIELDS]
    return list(zip(*columns, _values(lines.column(rank_column))))


def lines_table(contexts: list[tuple]) -> pa.Table:
    """Context tuples (unique lines) -> base lines as ``merge_bucket`` takes a merged base (no identity)."""
    n = len(contexts)
    columns = list(zip(*contexts)) if contexts else [()] * (len(CONTEXT_FIELDS) + 1)
    arrays = []
    for field in LINES_SCHEMA:
        if field.name not in CONTEXT_FIELDS:
            arrays.append(pa.nulls(n, field.type))
            continue
        values = columns[CONTEXT_FIELDS.index(field.name)]
        raw = _INT.get(field.type)
        arrays.append(pa.array(values, raw).cast(field.type) if raw else pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=LINES_SCHEMA)


def outranks(a: tuple, b: tuple) -> bool:
    """Whether base line ``a`` beats ``b`` of the same line_id: the batch merge's rule (latest wins, then the
    later file and row; ``transforms.scan.crossrecord.deduplicate``)."""

    def key(ctx):
        rank = ctx[C_RANK]
        return (rank if rank is not None else -(2**63), ctx[C_FILE] or "", ctx[C_ROW] if ctx[C_ROW] is not None else -1)

    return key(a) > key(b)


def newer(at: int | None, event_id: str, current_at: int | None, current_id: str | None) -> bool:
    """An event beats a line's registration: later ``registered_at``, a tie to the larger event_id
    (``transforms.merge.events.pick_winners``); a line without one takes any."""
    if current_at is None:
        return True
    if at is None:
        return False
    return at > current_at or (at == current_at and current_id is not None and event_id > current_id)


def dead_rows(table: pa.Table) -> list[tuple]:
    """Dead letters -> tuples in the dead-letter schema's order."""
    if table.num_rows == 0:
        return []
    return list(zip(*[table.column(name).to_pylist() for name in DEAD_SCHEMA.names]))


def dead_table(rows: list[tuple]) -> pa.Table:
    if not rows:
        return DEAD_SCHEMA.empty_table()
    columns = list(zip(*rows))
    return pa.Table.from_arrays([pa.array(columns[i], f.type) for i, f in enumerate(DEAD_SCHEMA)], schema=DEAD_SCHEMA)


def shards_of(keys: pa.Array, shards: int) -> np.ndarray:
    """The shard of each key (a line id; a message without one: its source): the merge's stable line bucket."""
    if len(keys) == 0:
        return np.zeros(0, np.int32)
    return bucket_of(pc.cast(keys, pa.string()), shards)


def folder_name(start_seconds: float, pane: int, shard: int, shards: int) -> str:
    """``w-20261205T101000-p0-s003-of-008``: window start (UTC), pane index, shard: the same on every retry."""
    start = dt.datetime.fromtimestamp(start_seconds, dt.timezone.utc)
    return f"w-{start:%Y%m%dT%H%M%S}-p{pane}-s{shard:03d}-of-{shards:03d}"
