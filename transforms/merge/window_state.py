"""What a streaming window reads besides its messages, kept in memory (Beam-free): the lines, the held ids.

:func:`transforms.merge.stream.process_window` reads two things:

* ``index.subset(line_ids) -> INDEX_SCHEMA table``: the lines of the window's
  events, with their current registration;
* ``index.carriers(event_ids) -> (event_id, line_id) table``: the base's
  rows that carry these events (a merged base's ``registration_event_id``);
* ``seen.holders(event_ids) -> {event_id: digest}`` (the ids held before this
  window and the body digest of the copy that holds each) and
  ``seen.seen_messages(message_ids) -> bool mask`` (Pub/Sub message ids
  processed before: a redelivery).

:class:`LineIndex` and :class:`SeenKeys` keep them in memory (tests, one-shot
tools); the local streaming merge keeps them on disk
(``pipelines/io/line_store.py``), so its memory does not grow with the base
or with the events.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.deadletter import DeadLetterContext
from transforms.merge.bucket import MERGED_SCHEMA
from transforms.merge.copies import HELD_SCHEMA, held_pairs
from transforms.scan.policy import Policy

__all__ = [
    "INDEX_SCHEMA",
    "SEEN_SCHEMA",
    "IDS_SCHEMA",
    "LineIndex",
    "SeenKeys",
    "WindowKeys",
    "index_rows",
    "latest_per_line",
    "same_message",
]

INDEX_SCHEMA = pa.schema(list(MERGED_SCHEMA) + [pa.field("_src_file", pa.string()), pa.field("_src_row", pa.int64())])
_TS = pa.timestamp("us", tz="UTC")
SEEN_SCHEMA = pa.schema([pa.field("message_id", pa.string()), pa.field("publish_time", _TS)])
IDS_SCHEMA = pa.schema([pa.field("event_id", pa.string()), pa.field("digest", pa.string())])


def index_rows(lines: pa.Table, kind: str) -> pa.Table:
    """Kept base lines (``transforms.merge.lines.raw_lines`` or ``merged_lines``) -> INDEX_SCHEMA rows.

    A raw base's lines keep no identity: the merged-line columns they do not have (tokens, masks,
    registration) are null."""
    if kind != "raw":
        return lines.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA)
    n = lines.num_rows
    columns = [
        lines.column(f.name).cast(f.type)
        if f.name in lines.column_names and not f.name.startswith("_")
        else pa.nulls(n, f.type)
        for f in MERGED_SCHEMA
    ]
    columns += [lines.column("_src_file"), lines.column("_src_row")]
    return pa.Table.from_arrays(columns, schema=INDEX_SCHEMA)


class LineIndex:
    """The base's lines without identity, in memory: what a window needs to validate and build delta rows.

    ``lines``: INDEX_SCHEMA (merged-line columns; identity columns null for a
    raw base), unique line_id. The current registration of each line
    (``registered_at``, ``registration_event_id``) is the base's, overlaid with
    the deltas applied so far (:meth:`apply`; ``process_window`` applies its
    delta to an in-memory index itself).
    """

    def __init__(self, lines: pa.Table, held: pa.Table | None = None):
        self.lines = lines
        self._held = HELD_SCHEMA.empty_table() if held is None else held
        self._overlay = pa.table(
            {
                "line_id": pa.array([], pa.string()),
                "registered_at": pa.array([], _TS),
                "registration_event_id": pa.array([], pa.string()),
            }
        )

    @classmethod
    def from_raw(
        cls, raw: pa.Table, policy: Policy, as_of: dt.date, ctx: DeadLetterContext, salt: str
    ) -> tuple["LineIndex", pa.Table]:
        """From a raw base (the readers' batches concatenated): classified and de-duplicated as the
        batch merge does (``transforms.merge.lines.raw_lines``); returns (index, base dead letters)."""
        from transforms.merge.lines import raw_lines

        lines, dead, _ = raw_lines(raw, policy, as_of, ctx, salt)
        return cls(index_rows(lines, "raw")), dead

    @classmethod
    def from_merged(cls, rows: pa.Table, ctx: DeadLetterContext) -> tuple["LineIndex", pa.Table]:
        """From a previous merge's base rows (MERGED_ROWS); returns (index, DUPLICATE_LINE_ID dead letters)."""
        from transforms.merge.lines import merged_lines

        lines, dead, _ = merged_lines(rows, ctx)
        return cls(index_rows(lines, "merged"), held_pairs(rows)), dead

    def carriers(self, event_ids: pa.Array) -> pa.Table:
        """``(event_id, line_id)`` of the base's rows that carry these events (HELD_SCHEMA; the batch merge's
        ``held_pairs``): a copy of such an id on another line is EVENT_ID_CONFLICT."""
        return self._held.filter(pc.is_in(self._held.column("event_id"), value_set=event_ids))

    def subset(self, line_ids: pa.Array) -> pa.Table:
        """The index rows of these lines, with their current registration."""
        rows = self.lines.filter(pc.is_in(self.lines.column("line_id"), value_set=line_ids))
        if self._overlay.num_rows and rows.num_rows:
            at = pc.index_in(rows.column("line_id"), value_set=self._overlay.column("line_id"))
            for name in ("registered_at", "registration_event_id"):
                newer = self._overlay.column(name).combine_chunks().take(at)
                rows = rows.set_column(
                    rows.schema.get_field_index(name),
                    name,
                    pc.if_else(at.is_valid(), newer, rows.column(name).combine_chunks()),
                )
        return rows

    def apply(self, delta: pa.Table) -> None:
        """Take a delta's registrations as the lines' current ones (latest wins)."""
        if delta.num_rows:
            both = pa.concat_tables(
                [self._overlay, delta.select(self._overlay.column_names).cast(self._overlay.schema)]
            )
            self._overlay = latest_per_line(both)

    @property
    def registrations(self) -> int:
        return self._overlay.num_rows


def latest_per_line(table: pa.Table) -> pa.Table:
    """One row per line_id: the latest registered_at, a tie to the larger registration_event_id (nulls last)."""
    if table.num_rows < 2:
        return table
    order = pc.sort_indices(
        table, [("line_id", "ascending"), ("registered_at", "descending"), ("registration_event_id", "descending")]
    )  # nulls sort last
    ids = table.column("line_id").combine_chunks().take(order)
    first = np.ones(len(ids), bool)
    first[1:] = ~pc.fill_null(pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)), False).to_numpy(zero_copy_only=False)
    return table.take(pa.array(order.to_numpy()[first]))


def same_message(message_ids: pa.Array, publish_times: pa.Array | None, known_ids: pa.Array, known_times) -> np.ndarray:
    """Per message: its id is among ``known_ids`` (unique) and, when ``publish_times`` are given, with the same
    publish time (microseconds; a null matches a null): a redelivery repeats both."""
    at = pc.index_in(message_ids, value_set=known_ids)
    found = at.is_valid()
    if publish_times is not None:
        held = pa.array(known_times, pa.int64()).take(at)
        times = publish_times.cast(pa.int64())
        same = pc.or_kleene(pc.equal(held, times), pc.and_(pc.is_null(held), pc.is_null(times)))
        found = pc.and_(found, pc.fill_null(same, False))
    return pc.fill_null(found, False).to_numpy(zero_copy_only=False)


@dataclasses.dataclass
class WindowKeys:
    """What a window adds to the seen state: its message ids (SEEN_SCHEMA) and the ids it took (IDS_SCHEMA).

    ``len()`` is the number of message ids (one publish time each)."""

    messages: pa.Table
    taken: pa.Table

    def __len__(self) -> int:
        return self.messages.num_rows


class SeenKeys:
    """The held ids (event_id -> digest of the copy that took it) and the message ids processed, in memory."""

    def __init__(self):
        self._held: dict[str, str] = {}
        self._messages: dict[str, int | None] = {}  # message id -> its publish time (microseconds)

    def add(self, keys: WindowKeys) -> None:
        """Record a window's keys (``WindowResult.new_keys``) once the window is kept."""
        times = keys.messages.column("publish_time").cast(pa.int64()).to_pylist()
        for message_id, at in zip(keys.messages.column("message_id").to_pylist(), times):
            if message_id is not None:
                self._messages[message_id] = at
        taken = keys.taken
        for event_id, digest in zip(taken.column("event_id").to_pylist(), taken.column("digest").to_pylist()):
            self._held.setdefault(event_id, digest)

    def holders(self, event_ids) -> dict[str, str]:
        return {e: self._held[e] for e in event_ids if e in self._held}

    def seen_messages(self, message_ids: pa.Array, publish_times: pa.Array | None = None) -> np.ndarray:
        """Per message: processed before (its id, and its publish time when given: a redelivery repeats both)."""
        known = self._messages
        return same_message(message_ids, publish_times, pa.array(list(known), pa.string()), list(known.values()))

    def __len__(self) -> int:
        return len(self._messages)
