"""The streaming merge's per-window work (Beam-free): Pub/Sub messages -> deltas, vault rows, dead letters, counters.

A *window* is a batch of Pub/Sub messages (an Arrow table, :data:`MESSAGE_SCHEMA`).
:func:`process_window` runs, in this order:

1. **redeliveries**: a message whose Pub/Sub message id was processed before
   (earlier in the window, or in an earlier window: ``seen.seen_messages``)
   is a counted duplicate, never a dead letter. Nothing else is dropped
   before the checks: a second *publish* of an event is judged by its body;
2. **the message checks** (:func:`transforms.merge.intake.parse_messages`):
   ``MESSAGE_TOO_LARGE`` (the lander kept only its size), ``ATTRIBUTE_MISSING``,
   ``MESSAGE_MALFORMED`` (the batch merge's JSON Lines rules; fields outside the
   contract are ignored, as there), ``ATTRIBUTE_MISMATCH``;
3. each parsed body's keyed digest (:func:`transforms.merge.event_ids.body_digests`,
   of the contract fields as received), then the batch merge's row checks
   (``EVENT_ID_MISSING``, ``LINE_ID_MISSING``, ``BAD_TIMESTAMP``, ``BAD_ENUM``);
4. a copy of an id that a line of a merged base carries (``index.carriers``),
   on another line: ``EVENT_ID_CONFLICT``, whatever its order or validity
   (the batch merge's rule);
5. the window's lines (``index.subset``) and **who holds each event id**
   (:func:`transforms.merge.event_ids.resolve_copies`, with the ids held
   before: ``seen.holders``): a copy that fails its line's checks
   (``UNKNOWN_LINE``, ``LINE_TERMINATED``, the policy's codes) is a dead
   letter and takes nothing; the first valid copy takes the id; a later copy
   with the same body is a duplicate, one with another body
   ``EVENT_ID_CONFLICT``;
6. the takers go to :func:`transforms.merge.bucket.merge_bucket` on the
   window's lines as a merged base (the batch merge's tokenizer, masks and
   vault): latest wins; an event older than the line's current registration
   (the base's, or an earlier window's) is superseded;
7. the **delta**: the merged rows (``schemas/merged_line.avsc``) of the lines
   whose registration changed.

Counts balance per window: messages in = applied + superseded + duplicates +
dead letters. What a later window must know of this one is in the result:
``seen`` (the message ids processed and their publish times) and ``taken``
(the ids taken here and their digests). :func:`fold_deltas` is the
compaction: latest ``registered_at`` wins (a tie goes to the larger event_id)
over the base and every delta.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import arrow_schema
from transforms.core.deadletter import DeadLetterContext, dead_letter_table
from transforms.core.metrics import merge_counts
from transforms.crypto.keyset import KeysetError
from transforms.merge.bucket import MERGED_SCHEMA, BucketResult, merge_bucket, value_counts
from transforms.merge.copies import HELD_DETAIL, held_elsewhere
from transforms.merge.event_ids import DIGEST, body_digests, conflict_letters, resolve_copies
from transforms.merge.events import check_events, prepare_events
from transforms.merge.intake import parse_messages
from transforms.merge.messages import MAX_MESSAGE_BYTES
from transforms.merge.window_state import (
    IDS_SCHEMA,
    INDEX_SCHEMA,
    SEEN_SCHEMA,
    LineIndex,
    SeenKeys,
    WindowKeys,
    latest_per_line,
)
from transforms.scan.policy import Policy

__all__ = [
    "INDEX_SCHEMA",
    "SEEN_SCHEMA",
    "IDS_SCHEMA",
    "STREAM_REASONS",
    "LineIndex",
    "SeenKeys",
    "WindowKeys",
    "WindowResult",
    "process_window",
    "window_counters",
    "fold_deltas",
    "latest_per_line",
    "balanced",
    "add_counts",
]

STREAM_REASONS = ("MESSAGE_TOO_LARGE", "ATTRIBUTE_MISSING", "MESSAGE_MALFORMED", "ATTRIBUTE_MISMATCH")
_RAW_AT = "_raw_at"  # a checked event's row among the parsed bodies (its digest under another key version)


@dataclasses.dataclass
class WindowResult:
    delta: pa.Table  # merged rows of the lines registered in this window (MERGED_SCHEMA)
    vault_keys: pa.Table
    vault_values: pa.Table
    dead_letter: pa.Table
    counts: dict  # messages_in, applied, superseded, duplicates, dead_letters {reason: n}
    counters: dict  # registrations by region, channel and agent
    seen: pa.Table  # SEEN_SCHEMA: the message ids processed here (not redeliveries) and their publish times
    taken: pa.Table  # IDS_SCHEMA: the event ids taken here and the digest of the copy that took each

    @property
    def new_keys(self) -> WindowKeys:
        """What ``SeenKeys.add`` records (``len()``: the message ids, in ``seen``'s order)."""
        return WindowKeys(self.seen, self.taken)


def _redeliveries(messages: pa.Table, seen) -> tuple[pa.Table, int]:
    """(the messages not processed before, by Pub/Sub message id and publish time; how many were).

    A redelivery repeats both. A message id alone is not enough: the emulator numbers its messages from 1
    again after a restart (and Pub/Sub's ids are unique per topic only), so a new message under an id seen
    before is judged like any other (by its body), never dropped as a redelivery."""
    n = messages.num_rows
    if n == 0:
        return messages, 0
    ids = messages.column("message_id").combine_chunks()
    times = messages.column("publish_time").combine_chunks()
    before = seen.seen_messages(ids, times) if seen is not None else np.zeros(n, bool)
    keep = np.zeros(n, bool)
    firsts: set[tuple] = set()
    for i, key in enumerate(zip(ids.to_pylist(), times.cast(pa.int64()).to_pylist())):
        if key[0] is None:  # no id to know it by: never taken for a redelivery
            keep[i] = True
        elif not before[i] and key not in firsts:
            firsts.add(key)
            keep[i] = True
    return (messages if keep.all() else messages.filter(pa.array(keep))), n - int(keep.sum())


def _checked(raw: pa.Table, tokenizer, ctx: DeadLetterContext) -> tuple[pa.Table, list[pa.Table]]:
    """Parsed bodies -> (checked events with their body digest and raw row, in arrival order; dead letters)."""
    raw = raw.append_column(DIGEST, body_digests(raw, tokenizer))
    raw = raw.append_column(_RAW_AT, pa.array(np.arange(raw.num_rows, dtype=np.int64)))
    events, missing = prepare_events(raw, ctx)
    checked, bad = check_events(events, ctx)
    return checked, [missing, bad]


def _not_held_elsewhere(checked: pa.Table, index, ctx: DeadLetterContext) -> tuple[pa.Table, pa.Table]:
    """(the copies left; the EVENT_ID_CONFLICT dead letters of the copies of an id a line of the base carries,
    on another line): the batch merge's rule (``transforms.merge.copies``), before any other."""
    held = index.carriers(pc.unique(checked.column("event_id").combine_chunks()))
    elsewhere = held_elsewhere(checked, held)
    letters = conflict_letters(ctx, checked, elsewhere, HELD_DETAIL)
    return (checked.filter(pa.array(~elsewhere)) if elsewhere.any() else checked), letters


def _same_body(raw: pa.Table, checked: pa.Table, tokenizer):
    """``(row, held digest) -> bool`` for a digest kept under another join-key version (after a rotation)."""
    rows = checked.column(_RAW_AT).combine_chunks()

    def same(i: int, held: str) -> bool:
        try:
            again = body_digests(raw.slice(rows[i].as_py(), 1), tokenizer, held.split(":", 1)[0])
        except KeysetError:  # that version is no longer in the keyset: it cannot be compared
            return False
        return again[0].as_py() == held

    return same


def process_window(
    messages: pa.Table,
    index,
    seen,
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

    ``index``: the lines (``subset``: a :class:`LineIndex`, or the local merge's line store); an in-memory
    :class:`LineIndex` takes the delta's registrations here, a store is updated by its caller once the window
    is committed. ``seen``: the ids held and the message ids processed before (``holders``,
    ``seen_messages``: :class:`SeenKeys` or the store; None: nothing before); not changed here.
    """
    counts = {"messages_in": messages.num_rows, "applied": 0, "superseded": 0, "duplicates": 0, "dead_letters": {}}
    fresh, counts["duplicates"] = _redeliveries(messages, seen)
    raw, dead = parse_messages(fresh, ctx, source, max_bytes)
    checked, bad = _checked(raw, tokenizer, ctx)
    dead += bad
    delta = MERGED_SCHEMA.empty_table()
    keys, values = arrow_schema("vault_key").empty_table(), arrow_schema("vault_value").empty_table()
    taken: dict = {}
    if checked.num_rows:
        checked, elsewhere = _not_held_elsewhere(checked, index, ctx)
        dead.append(elsewhere)
    if checked.num_rows:
        lines = index.subset(pc.unique(checked.column("line_id").combine_chunks()))
        ids = pc.unique(checked.column("event_id").combine_chunks()).to_pylist()
        resolved = resolve_copies(
            checked,
            lines,
            seen.holders(ids) if seen is not None else {},
            policy=policy,
            as_of=as_of,
            ctx=ctx,
            salt=salt,
            same_body=_same_body(raw, checked, tokenizer),
        )
        counts["duplicates"] += resolved.duplicates
        dead.append(resolved.dead_letter)
        taken = resolved.taken
        if resolved.takers.num_rows:
            merge = dict(tokenizer=tokenizer, vault=vault, policy=policy, as_of=as_of, ctx=ctx, salt=salt)
            result = merge_bucket(lines, "merged", resolved.takers, None, None, **merge)
            _count_events(counts, result.counts)
            dead.append(result.dead_letter)
            if result.base.num_rows:
                delta, keys, values = _delta(result, lines)
    return _result(ctx, counts, dead, delta, keys, values, fresh, taken, index)


def _result(ctx, counts, dead, delta, keys, values, fresh, taken, index) -> WindowResult:
    """The window's result, its counts checked; an in-memory index takes the delta."""
    dead_letter = pa.concat_tables([d for d in dead if d.num_rows] or [dead_letter_table(ctx, [])])
    counts["dead_letters"] = dict(sorted(value_counts(dead_letter.column("reason")).items()))
    if delta.num_rows != counts["applied"]:
        raise RuntimeError("the window's delta does not match its applied count")
    if not balanced(counts):
        raise RuntimeError("the window's counts do not balance")
    if isinstance(index, LineIndex):
        index.apply(delta)
    seen = pa.table([fresh.column("message_id"), fresh.column("publish_time")], schema=SEEN_SCHEMA)
    ids = pa.table([pa.array(list(taken), pa.string()), pa.array(list(taken.values()), pa.string())], schema=IDS_SCHEMA)
    return WindowResult(delta, keys, values, dead_letter, counts, window_counters(delta), seen, ids)


def _count_events(counts: dict, bucket_counts: dict) -> None:
    """The window's event outcomes, as the merge of its lines counted them."""
    ev = bucket_counts.get("events", {})
    counts["applied"], counts["superseded"] = ev.get("applied", 0), ev.get("superseded", 0)
    counts["duplicates"] += ev.get("duplicates", 0)  # the line already carries this event (resolved before: 0)


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
