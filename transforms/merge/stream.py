"""The streaming merge's per-window work (Beam-free): Pub/Sub messages -> deltas, vault rows, dead letters, counters.

A *window* is a batch of Pub/Sub messages (an Arrow table, :data:`MESSAGE_SCHEMA`).
:func:`process_window` runs, in this order:

1. **dedup** by the ``event_id`` attribute (a message without one: by its
   Pub/Sub message_id, so a redelivered copy of it still counts once): a key
   seen earlier in the window or in an earlier window (``seen``) is a
   duplicate, counted, never a dead letter. This is what Dataflow's
   ``id_label="event_id"`` does, made durable across restarts;
2. **size**: a message over ``max_bytes`` is ``MESSAGE_TOO_LARGE`` (its body
   never reached the window: the lander keeps only its size);
3. **attributes**: ``ATTRIBUTE_MISSING`` (event_id or line_id attribute absent
   or empty), then the body is parsed as the JSON Lines reader of the batch
   merge parses a line (``MESSAGE_MALFORMED``: not JSON, not an object, a
   field that is an object, or over the field size limit), then
   ``ATTRIBUTE_MISMATCH`` (the body's event_id or line_id differs from the
   attribute) (steps 2 and 3: :func:`transforms.merge.intake.parse_messages`);
4. the batch merge's own stages (:mod:`transforms.merge.events`: the checks,
   ``UNKNOWN_LINE``, ``LINE_TERMINATED``, the policy's codes, latest wins) and
   :func:`transforms.merge.bucket.merge_bucket` on the window's lines taken from the
   :class:`LineIndex` as a merged base: the same tokenizer, masks and vault
   as the batch merge;
5. the **delta**: the merged rows (``schemas/merged_line.avsc``) of the lines
   whose registration changed; events older than the line's current
   registration (the base's, or an earlier window's) are superseded.

:func:`fold_deltas` is the compaction: latest ``registered_at`` wins (a tie
goes to the larger event_id) over the base and every delta.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import arrow_schema
from transforms.core.deadletter import DeadLetterContext, dead_letter_table
from transforms.merge.bucket import MERGED_SCHEMA, BucketResult, merge_bucket, value_counts
from transforms.merge.events import check_events, prepare_events
from transforms.merge.intake import parse_messages
from transforms.merge.messages import MAX_MESSAGE_BYTES
from transforms.core.metrics import merge_counts
from transforms.scan.normalize import clean_text
from transforms.scan.policy import Policy

__all__ = [
    "INDEX_SCHEMA",
    "STREAM_REASONS",
    "LineIndex",
    "SeenKeys",
    "WindowResult",
    "dedup_keys",
    "process_window",
    "window_counters",
    "fold_deltas",
    "latest_per_line",
    "balanced",
    "add_counts",
]

INDEX_SCHEMA = pa.schema(list(MERGED_SCHEMA) + [pa.field("_src_file", pa.string()), pa.field("_src_row", pa.int64())])
STREAM_REASONS = ("MESSAGE_TOO_LARGE", "ATTRIBUTE_MISSING", "MESSAGE_MALFORMED", "ATTRIBUTE_MISMATCH")
_TS = pa.timestamp("us", tz="UTC")


def dedup_keys(messages: pa.Table) -> pa.Array:
    """The de-duplication key of each message: its clean event_id attribute, else ``msg:`` + message_id."""
    by_message = pc.binary_join_element_wise("msg:", messages.column("message_id").combine_chunks(), "")
    return pc.coalesce(clean_text(messages.column("attr_event_id").combine_chunks()), by_message)


@dataclasses.dataclass
class WindowResult:
    delta: pa.Table  # merged rows of the lines registered in this window (MERGED_SCHEMA)
    vault_keys: pa.Table
    vault_values: pa.Table
    dead_letter: pa.Table
    counts: dict  # messages_in, applied, superseded, duplicates, dead_letters {reason: n}
    counters: dict  # registrations by region, channel, agent
    new_keys: pa.Array  # dedup keys of the messages processed (not duplicates): the durable seen-state


class LineIndex:
    """The base's lines without identity: what the window needs to validate and build delta rows.

    ``lines``: INDEX_SCHEMA (merged-line columns; identity columns null for a
    raw base), unique line_id. The current registration of each line
    (``registered_at``, ``registration_event_id``) is the base's, overlaid with
    the deltas written so far (:meth:`apply`).
    """

    def __init__(self, lines: pa.Table):
        self.lines = lines
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
        n = lines.num_rows
        columns = [
            lines.column(f.name).cast(f.type)
            if f.name in lines.column_names and not f.name.startswith("_")
            else pa.nulls(n, f.type)
            for f in MERGED_SCHEMA
        ]
        columns += [lines.column("_src_file"), lines.column("_src_row")]
        return cls(pa.Table.from_arrays(columns, schema=INDEX_SCHEMA)), dead

    @classmethod
    def from_merged(cls, rows: pa.Table, ctx: DeadLetterContext) -> tuple["LineIndex", pa.Table]:
        """From a previous merge's base rows (MERGED_ROWS); returns (index, DUPLICATE_LINE_ID dead letters)."""
        from transforms.merge.lines import merged_lines

        lines, dead, _ = merged_lines(rows, ctx)
        return cls(lines.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA)), dead

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


class SeenKeys:
    """The dedup keys of the windows processed so far (kept as Arrow chunks)."""

    def __init__(self, chunks: Iterable[pa.Array] = ()):
        self._chunks = [c for c in chunks if len(c)]
        self._all: pa.Array | None = None

    def add(self, keys: pa.Array) -> None:
        if len(keys):
            self._chunks.append(keys)
            self._all = None

    def as_array(self) -> pa.Array:
        if self._all is None:
            self._all = pa.concat_arrays(self._chunks) if self._chunks else pa.array([], pa.string())
        return self._all

    def __len__(self) -> int:
        return sum(len(c) for c in self._chunks)


def _dedup(messages: pa.Table, seen: SeenKeys | None) -> tuple[pa.Table, pa.Array, int]:
    """(first copy of each key not in ``seen``, their keys, duplicates)."""
    keys = dedup_keys(messages)
    n = len(keys)
    if n == 0:
        return messages, keys, 0
    _, first = np.unique(keys.to_numpy(zero_copy_only=False).astype(str), return_index=True)
    keep = np.zeros(n, bool)
    keep[first] = True
    if seen is not None and len(seen):
        keep &= ~pc.is_in(keys, value_set=seen.as_array()).to_numpy(zero_copy_only=False)
    mask = pa.array(keep)
    return messages.filter(mask), keys.filter(mask), n - int(keep.sum())


def process_window(
    messages: pa.Table,
    index: LineIndex,
    seen: SeenKeys | None,
    *,
    tokenizer,
    vault,
    policy: Policy,
    as_of: dt.date,
    ctx: DeadLetterContext,
    salt: str,
    source: str = "pubsub",
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> WindowResult:
    """One window of messages -> its delta, vault rows, dead letters and counts (see the module docstring).

    ``seen``: the dedup keys of earlier windows; not changed here: the caller records ``new_keys`` with the
    window's outputs. ``index`` is updated with the delta's registrations.
    """
    counts = {"messages_in": messages.num_rows, "applied": 0, "superseded": 0, "duplicates": 0, "dead_letters": {}}
    messages, new_keys, duplicates = _dedup(messages, seen)
    counts["duplicates"] = duplicates
    raw, dead = parse_messages(messages, ctx, source, max_bytes)
    events, missing = prepare_events(raw, ctx)
    checked, bad = check_events(events, ctx)
    dead += [missing, bad]
    delta = MERGED_SCHEMA.empty_table()
    keys, values = arrow_schema("vault_key").empty_table(), arrow_schema("vault_value").empty_table()
    if checked.num_rows:
        lines = index.subset(pc.unique(checked.column("line_id").combine_chunks()))
        result = merge_bucket(
            lines if lines.num_rows else None,
            "merged",
            checked,
            None,
            None,
            tokenizer=tokenizer,
            vault=vault,
            policy=policy,
            as_of=as_of,
            ctx=ctx,
            salt=salt,
        )
        _count_events(counts, result.counts)
        dead.append(result.dead_letter)
        if result.base.num_rows:
            delta, keys, values = _delta(result, lines)
    dead_letter = pa.concat_tables([d for d in dead if d.num_rows] or [dead_letter_table(ctx, [])])
    counts["dead_letters"] = dict(sorted(value_counts(dead_letter.column("reason")).items()))
    if delta.num_rows != counts["applied"]:
        raise RuntimeError("the window's delta does not match its applied count")
    index.apply(delta)
    return WindowResult(delta, keys, values, dead_letter, counts, window_counters(delta), new_keys)


def _count_events(counts: dict, bucket_counts: dict) -> None:
    """The window's event outcomes, as the merge of its lines counted them."""
    ev = bucket_counts.get("events", {})
    counts["applied"], counts["superseded"] = ev.get("applied", 0), ev.get("superseded", 0)
    counts["duplicates"] += ev.get("duplicates", 0)  # the line already carries this event (a merged base)


def _delta(result: BucketResult, lines: pa.Table) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(the merged rows of the lines whose registration changed, their vault keys, their vault values)."""
    merged = result.base
    before = (
        lines.column("registration_event_id")
        .combine_chunks()
        .take(pc.index_in(merged.column("line_id"), value_set=lines.column("line_id")))
    )
    changed = pc.fill_null(
        pc.not_equal(merged.column("registration_event_id"), before),
        pc.is_valid(merged.column("registration_event_id")),
    )
    delta = merged.filter(changed)
    keys, values = result.vault_keys, result.vault_values
    ids = delta.column("line_id")
    keys = keys.filter(pc.is_in(keys.column("line_id"), value_set=ids))
    values = values.filter(pc.is_in(values.column("line_id"), value_set=ids))
    return delta, keys, values


def window_counters(delta: pa.Table) -> dict:
    """Registrations of a window by region, channel and agent (who took them)."""

    def by(name):
        return dict(sorted(value_counts(delta.column(name)).items())) if delta.num_rows else {}

    return {
        "registrations": delta.num_rows,
        "by_region": by("region"),
        "by_channel": by("registration_channel"),
        "by_agent": by("registration_agent_id"),
    }


def balanced(counts: dict) -> bool:
    return counts["messages_in"] == (
        counts["applied"] + counts["superseded"] + counts["duplicates"] + sum(counts["dead_letters"].values())
    )


def add_counts(total: dict, counts: dict) -> dict:
    merge_counts(total, counts)
    return total


def fold_deltas(
    base: pa.Table,
    base_keys: pa.Table,
    base_values: pa.Table,
    deltas: pa.Table,
    delta_keys: pa.Table,
    delta_values: pa.Table,
) -> tuple[pa.Table, pa.Table, pa.Table, dict]:
    """Fold deltas into a merged base: per line the latest registration wins (base or delta).

    ``deltas``, ``delta_keys`` and ``delta_values`` carry a ``_window``
    column (int64) naming the window each row came from; a winning delta row
    brings its window's vault rows for its line, replacing the base's.
    Returns (base, vault keys, vault values, counts).
    """
    win = latest_per_line(deltas) if deltas.num_rows else deltas
    at = pc.index_in(win.column("line_id"), value_set=base.column("line_id"))
    known = at.is_valid()
    base_at = base.column("registered_at").combine_chunks().take(at)
    base_id = base.column("registration_event_id").combine_chunks().take(at)
    newer = pc.or_(
        pc.greater(win.column("registered_at"), base_at),
        pc.and_(
            pc.equal(win.column("registered_at"), base_at), pc.greater(win.column("registration_event_id"), base_id)
        ),
    )
    takes = pc.and_(known, pc.or_kleene(pc.is_null(base_at), newer))
    takes = pc.fill_null(takes, False)
    win = win.filter(takes)
    replaced = win.column("line_id")
    kept = base.filter(pc.invert(pc.is_in(base.column("line_id"), value_set=replaced)))
    merged = pa.concat_tables(
        [kept.select(MERGED_SCHEMA.names).cast(MERGED_SCHEMA), win.select(MERGED_SCHEMA.names).cast(MERGED_SCHEMA)]
    )
    merged = merged.take(pc.sort_indices(merged, [("line_id", "ascending")]))

    def tag(table):
        return pc.binary_join_element_wise(table.column("line_id"), table.column("_window").cast(pa.string()), "\x1f")

    chosen = tag(win)

    def vault_rows(base_rows: pa.Table, delta_rows: pa.Table) -> pa.Table:
        schema = base_rows.schema
        old = base_rows.filter(pc.invert(pc.is_in(base_rows.column("line_id"), value_set=replaced)))
        new = delta_rows.filter(pc.is_in(tag(delta_rows), value_set=chosen)) if delta_rows.num_rows else delta_rows
        return pa.concat_tables([old, new.select(schema.names).cast(schema)])

    keys = vault_rows(base_keys, delta_keys)
    values = vault_rows(base_values, delta_values)
    counts = {
        "delta_rows": deltas.num_rows,
        "lines_registered": win.num_rows,
        "superseded_or_unknown": deltas.num_rows - win.num_rows,
        "lines_out": merged.num_rows,
    }
    return merged, keys, values, counts
