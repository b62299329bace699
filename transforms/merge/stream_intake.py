"""The Dataflow streaming merge's batch steps (stateless, Arrow): message intake, base seeds, validation.

* :class:`IntakeFn` -- a batch of message records -> the batch merge's message and row checks
  (``messages_table``, ``parse_messages``, ``prepare_events``, ``check_events``) and each event's body digest
  (``event_ids.body_digests``, the keyset loaded from its path in ``setup()``): checked events keyed by
  line_id, and per message one outcome for its window's folder (its dead letter), plus a count of the
  messages in of each (window, shard);
* :class:`SeedFn` -- a base batch -> its lines as the batch merge keeps them (``raw_lines`` /
  ``merged_lines``), as ``(line_id, context)`` seeds; the base's own dead letters; of a merged base, the
  event ids its rows carry, as ``(event_id, ("c", line_id))`` (the batch merge's ``copies.held_pairs``);
* :class:`ValidateFn` -- a batch of (event, context) -> each copy's line checks (``event_ids.valid_rows``)
  and, when it fails them, its own dead letter, keyed by event_id.

BatchElements hands these DoFns their batches stamped at the end of the global window; every element they
emit is stamped back with its message's own event time (``_ts``), so nothing is late downstream.
"""

from __future__ import annotations

import datetime as dt
import secrets
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.utils.timestamp import Timestamp

from transforms.core.deadletter import DeadLetterContext
from transforms.core.metrics import counter
from transforms.merge.copies import held_pairs
from transforms.merge.value_free import value_free
from transforms.merge.event_ids import DIGEST, body_digests, valid_rows
from transforms.merge.events import check_events, prepare_events, validate_events
from transforms.merge.intake import parse_messages
from transforms.merge.lines import merged_lines, raw_lines
from transforms.merge.messages import messages_table
from transforms.merge.stream_records import (
    DEAD,
    DEAD_SCHEMA,
    E_ID,
    E_LINE,
    E_TS,
    IN,
    OTHER_DIGESTS,
    context_records,
    dead_rows,
    event_records,
    events_table,
    lines_table,
    shards_of,
)
from transforms.scan.normalize import clean_text
from transforms.scan.policy import Policy

__all__ = ["IntakeFn", "SeedFn", "ValidateFn", "OUTCOMES", "BASE_DEAD", "CARRIERS", "SEED", "EVENT", "CARRIER"]

OUTCOMES = "outcomes"  # (shard, (kind, payload)) of a message, for its window's folder
BASE_DEAD = "base_dead_letter"  # dead-letter tables of the base
CARRIERS = "carriers"  # (event_id, ("c", line_id)) of each merged base row that carries a registration
SEED, EVENT = "s", "e"  # what a line-keyed element carries
CARRIER = "c"  # what an event_id-keyed element of the base carries (a copy is a 5-tuple)
_SOURCE_ROW = DEAD_SCHEMA.names.index("source_row")


def _at(micros: int) -> Timestamp:
    return Timestamp(micros=int(micros))


@beam.typehints.with_output_types(typing.Tuple[str, typing.Any], outcomes=typing.Tuple[int, typing.Any])
class IntakeFn(beam.DoFn):
    """A batch of message records (each with ``_ts``, its event time in UTC microseconds) -> checked events
    ``(line_id, ("e", event))``; tagged :data:`OUTCOMES`: ``(shard, ("dead", row))`` per dead letter and
    ``(shard, ("in", n))`` per (window, shard) of the batch."""

    def __init__(
        self, keys_path: str, ctx: DeadLetterContext, source: str, max_bytes: int, shards: int, window_seconds: int
    ):
        self._keys_path, self._ctx, self._source, self._max_bytes = keys_path, ctx, source, max_bytes
        self._shards, self._window_us = shards, int(window_seconds) * 1_000_000
        self._in, self._dead = counter("stream_messages_in"), counter("stream_dead_letters")

    def setup(self):
        from transforms.crypto.keyset import Keyset
        from transforms.crypto.tokenize import Tokenizer

        keyset = Keyset.load(self._keys_path)
        self._tokenizer = Tokenizer(keyset)
        self._versions = [v for v in keyset.versions("join") if v != keyset.primary_join_version]

    def process(self, batch):
        messages = messages_table(batch, self._max_bytes)
        times = np.array([int(r["_ts"]) for r in batch], np.int64)
        sources = pc.binary_join_element_wise(self._source + "/", messages.column("message_id").combine_chunks(), "")
        keys = pc.coalesce(clean_text(messages.column("attr_line_id").combine_chunks()), sources)
        shards = shards_of(keys, self._shards)
        where = dict(zip(sources.to_pylist(), zip(times.tolist(), shards.tolist())))
        with value_free("StreamIntake"):
            raw, dead = parse_messages(messages, self._ctx, self._source, self._max_bytes)
            raw = raw.append_column(DIGEST, body_digests(raw, self._tokenizer))
            raw = raw.append_column(OTHER_DIGESTS, self._other_digests(raw))
            events, missing = prepare_events(raw, self._ctx)
            checked, bad = check_events(events, self._ctx)
        self._in.inc(messages.num_rows)
        for row in (r for table in [*dead, missing, bad] for r in dead_rows(table)):
            self._dead.inc()
            at, shard = where[row[DEAD_SCHEMA.names.index("source_file")]]
            yield beam.pvalue.TaggedOutput(OUTCOMES, beam.window.TimestampedValue((shard, (DEAD, row)), _at(at)))
        located = [where[s] for s in checked.column("_src_file").to_pylist()]
        event_times = np.array([t for t, _ in located], np.int64)
        for event in event_records(checked, event_times, np.array([s for _, s in located], np.int32)):
            yield beam.window.TimestampedValue((event[E_LINE], (EVENT, event)), _at(event[E_TS]))
        yield from self._counted_in(times, shards)

    def _other_digests(self, raw: pa.Table) -> pa.Array:
        """Each body's digests under the other enabled join-key versions (none: null)."""
        others = [body_digests(raw, self._tokenizer, v) for v in self._versions]
        if not others or raw.num_rows == 0:
            return pa.nulls(raw.num_rows, pa.string())
        return pc.binary_join_element_wise(*others, " ")

    def _counted_in(self, times: np.ndarray, shards: np.ndarray):
        """One ``(shard, ("in", n))`` per (window, shard), stamped with its earliest message's time."""
        starts = times - times % self._window_us
        for start, shard in sorted(set(zip(starts.tolist(), shards.tolist()))):
            mine = (starts == start) & (shards == shard)
            first = int(times[mine].min())
            yield beam.pvalue.TaggedOutput(
                OUTCOMES, beam.window.TimestampedValue((shard, (IN, int(mine.sum()))), _at(first))
            )


@beam.typehints.with_output_types(
    typing.Tuple[str, typing.Any], base_dead_letter=pa.Table, carriers=typing.Tuple[str, typing.Any]
)
class SeedFn(beam.DoFn):
    """A base batch -> ``(line_id, ("s", context))`` per kept line; tagged :data:`BASE_DEAD`: its dead letters;
    tagged :data:`CARRIERS` (a merged base; a raw one carries no ids): ``(event_id, ("c", line_id))`` of every
    row of the batch that carries a registration, as the batch merge reads them (``held_pairs``: all rows,
    a duplicated line_id's loser too), so the two merges hold the same ids."""

    def __init__(self, policy: Policy, as_of: dt.date, ctx: DeadLetterContext, base_kind: str):
        self._policy, self._as_of, self._ctx, self._kind = policy, as_of, ctx, base_kind
        self._lines = counter("stream_base_lines")

    def setup(self):
        self._salt = secrets.token_hex(16)  # classify's hash key: never compared, so per worker, not in the graph

    def process(self, table: pa.Table):
        with value_free("StreamSeed"):
            if self._kind == "raw":
                lines, dead, _ = raw_lines(table, self._policy, self._as_of, self._ctx, self._salt)
                contexts, carriers = context_records(lines, "_updated_at"), []
            else:
                lines, dead, _ = merged_lines(table, self._ctx)
                contexts = context_records(lines, "registered_at")
                held = held_pairs(table)
                carriers = zip(held.column("event_id").to_pylist(), held.column("line_id").to_pylist())
        self._lines.inc(len(contexts))
        if dead.num_rows:
            yield beam.pvalue.TaggedOutput(BASE_DEAD, dead)
        for context in contexts:
            yield context[0], (SEED, context)
        for event_id, line_id in carriers:
            yield beam.pvalue.TaggedOutput(CARRIERS, (event_id, (CARRIER, line_id)))


@beam.typehints.with_output_types(typing.Tuple[str, typing.Any])
class ValidateFn(beam.DoFn):
    """A batch of ``(event, context or None)`` -> ``(event_id, (event, context, valid, carried, own letter))``,
    each stamped with its message's time. ``carried``: the line already carries this event; ``own letter``:
    the copy's own dead letter when it fails its line's checks (``UNKNOWN_LINE``, ``LINE_TERMINATED``, the
    policy's codes), else None."""

    def __init__(self, policy: Policy, as_of: dt.date, ctx: DeadLetterContext):
        self._policy, self._as_of, self._ctx = policy, as_of, ctx

    def setup(self):
        self._salt = secrets.token_hex(16)

    def process(self, batch):
        events = events_table([event for event, _ in batch])
        contexts = {c[0]: c for _, c in batch if c is not None}
        lines = lines_table([contexts[k] for k in sorted(contexts)])
        with value_free("StreamValidate"):
            valid, carried = valid_rows(events, lines, self._policy, self._as_of, self._ctx, self._salt)
            own = self._own_letters(events, lines, ~valid & ~carried)
        for i, (event, context) in enumerate(batch):
            value = (event, context, bool(valid[i]), bool(carried[i]), own.get(i))
            yield beam.window.TimestampedValue((event[E_ID], value), _at(event[E_TS]))

    def _own_letters(self, events: pa.Table, lines: pa.Table, invalid: np.ndarray) -> dict[int, tuple]:
        """Position in the batch -> the dead letter of each invalid copy (as the line checks give it)."""
        if not invalid.any():
            return {}
        at = np.flatnonzero(invalid)
        rows = events.take(pa.array(at)).set_column(
            events.schema.get_field_index("_src_row"), "_src_row", pa.array(at, pa.int64())
        )
        _, dead, _ = validate_events(rows, lines, self._policy, self._as_of, self._ctx, self._salt)
        letters = {}
        for row in dead_rows(dead):
            letters[row[_SOURCE_ROW]] = row[:_SOURCE_ROW] + (None,) + row[_SOURCE_ROW + 1 :]
        return letters
