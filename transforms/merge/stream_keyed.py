"""The Dataflow streaming merge's state, one key at a time: a line's context, an event id's holder, a line's
registration. Beam keeps this state per key on the runner (Dataflow: its state store), so no worker holds
the base, and a restarted worker finds it again.

* :class:`LineContextFn` (key line_id) -- seeds (the base's lines) and events meet here. A seed is kept
  (a second seed of the same line: the batch merge's rule, latest ``updated_at`` wins, the loser a
  ``DUPLICATE_LINE_ID`` base dead letter); an event of a seeded line goes on at once with its context; an
  event of a line not seeded (yet) waits until the watermark passes its time -- the base is a bounded read
  whose watermark stays at the start of time until all of it is read -- then goes on with the context, or
  with none (``UNKNOWN_LINE`` next);
* :class:`EventIdFn` (key event_id) -- the lines of a merged base that carry the id, and the digest of the
  copy that took it, kept ``ttl_seconds`` after that copy's time: each copy waits until the watermark passes
  its time (every carrier is then in), then ``event_ids.take_ids`` on each in ``(time, source)`` order; an
  id a base line carries is held by that line from the start (the batch merge's rule, ``copies``);
* :class:`RegistrationFn` (key line_id) -- the line's current registration (the base's, then the
  stream's): a newer event is applied, an older one superseded.
"""

from __future__ import annotations

import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.coders import FastPrimitivesCoder, StrUtf8Coder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms.core.deadletter import DeadLetterContext, dead_letter_table
from transforms.core.metrics import counter
from transforms.merge.copies import HELD_DETAIL
from transforms.merge.event_ids import CONFLICT, DUPLICATE as TAKEN_BEFORE, TAKE, conflict_letters, take_ids
from transforms.merge.stream_intake import BASE_DEAD, CARRIER, OUTCOMES, SEED
from transforms.merge.stream_records import (
    APPLIED,
    C_AT,
    C_EVENT,
    C_FILE,
    C_ROW,
    DEAD,
    DUPLICATE,
    E_AT,
    E_DIGEST,
    E_ID,
    E_LINE,
    E_OTHER,
    E_SHARD,
    E_SOURCE,
    E_TS,
    SUPERSEDED,
    dead_rows,
    events_table,
    newer,
    outranks,
)

__all__ = ["LineContextFn", "EventIdFn", "RegistrationFn", "ID_TTL_SECONDS"]

ID_TTL_SECONDS = 7 * 24 * 3600  # an event id is held this long after the time of the copy that took it
_ANY = FastPrimitivesCoder()


def _duplicate_line(ctx: DeadLetterContext, loser: tuple) -> pa.Table:
    """The DUPLICATE_LINE_ID dead letter of a base line that another row of its line_id beat."""
    return dead_letter_table(
        ctx,
        ["DUPLICATE_LINE_ID"],
        source_file=[loser[C_FILE]],
        source_row=[loser[C_ROW]],
        line_id=[loser[0]],
        field="line_id",
        detail="a later row of the same line_id was kept (latest updated_at)",
    )


@beam.typehints.with_output_types(typing.Tuple[typing.Any, typing.Any], base_dead_letter=pa.Table)
class LineContextFn(beam.DoFn):
    """``(line_id, ("s", context) | ("e", event))`` -> ``(event, context or None)``; tagged BASE_DEAD."""

    CONTEXT = ReadModifyWriteStateSpec("context", _ANY)
    WAITING = BagStateSpec("waiting", _ANY)
    WAIT_AT = ReadModifyWriteStateSpec("wait_at", VarIntCoder())  # the earliest waiting event's time (us)
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)

    def __init__(self, ctx: DeadLetterContext):
        self._ctx = ctx
        self._waited = counter("stream_events_waited")

    def process(
        self,
        element,
        context=beam.DoFn.StateParam(CONTEXT),
        waiting=beam.DoFn.StateParam(WAITING),
        wait_at=beam.DoFn.StateParam(WAIT_AT),
        release=beam.DoFn.TimerParam(RELEASE),
    ):
        _, (kind, value) = element
        current = context.read()
        if kind == SEED:
            loser = current
            if current is None or outranks(value, current):
                context.write(value)
            else:
                loser = value
            if loser is not None:
                yield beam.pvalue.TaggedOutput(BASE_DEAD, _duplicate_line(self._ctx, loser))
            return
        first_wait = wait_at.read()
        if current is not None and first_wait is None:  # seeded, nothing waiting before it: on at once
            yield value, current
            return
        self._waited.inc()
        waiting.add(value)  # behind earlier waiting events of its line, so arrival order holds
        if first_wait is None or value[E_TS] < first_wait:
            wait_at.write(value[E_TS])
            release.set(Timestamp(micros=value[E_TS]))  # holds the output watermark at the earliest waiting time

    @on_timer(RELEASE)
    def release(
        self,
        context=beam.DoFn.StateParam(CONTEXT),
        waiting=beam.DoFn.StateParam(WAITING),
        wait_at=beam.DoFn.StateParam(WAIT_AT),
    ):
        current = context.read()
        events = sorted(waiting.read(), key=lambda e: (e[E_TS], e[E_SOURCE] or ""))
        waiting.clear()
        wait_at.clear()
        for event in events:  # each at its own time: none is earlier than the hold, so none is late
            yield beam.window.TimestampedValue((event, current), Timestamp(micros=event[E_TS]))


@beam.typehints.with_output_types(typing.Tuple[str, typing.Any], outcomes=typing.Tuple[int, typing.Any])
class EventIdFn(beam.DoFn):
    """``(event_id, ("c", line_id))`` of each merged base line that carries the id (SeedFn's carriers), and
    ``(event_id, (event, context, valid, carried, own letter))`` of each copy -> the copies that take their
    id, ``(line_id, (event, context))``; tagged OUTCOMES: duplicates, EVENT_ID_CONFLICT and own dead letters.

    A copy waits until the watermark passes its time (the base, a bounded read, holds it at the start of
    time until it is all read: every carrier of the id is then in), then the waiting copies are decided in
    ``(time, source)`` order, each at its own time. An id a base line carries is held by it from the start
    (the batch merge's ``copies.held_elsewhere``): a copy on another line is EVENT_ID_CONFLICT
    (``copies.HELD_DETAIL``) whatever its validity or order, and takes nothing."""

    HELD = ReadModifyWriteStateSpec("held", StrUtf8Coder())
    CARRIERS = BagStateSpec("carriers", StrUtf8Coder())  # the base lines that carry this event id
    WAITING = BagStateSpec("waiting", _ANY)
    WAIT_AT = ReadModifyWriteStateSpec("wait_at", VarIntCoder())  # the earliest waiting copy's time (us)
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, ctx: DeadLetterContext, ttl_seconds: int = ID_TTL_SECONDS):
        self._ctx, self._ttl = ctx, int(ttl_seconds)
        self._duplicates, self._conflicts = counter("stream_duplicates"), counter("stream_event_id_conflicts")

    def process(
        self,
        element,
        carriers=beam.DoFn.StateParam(CARRIERS),
        waiting=beam.DoFn.StateParam(WAITING),
        wait_at=beam.DoFn.StateParam(WAIT_AT),
        release=beam.DoFn.TimerParam(RELEASE),
    ):
        _, value = element
        if value[0] == CARRIER:
            carriers.add(value[1])
            return
        at, first_wait = value[0][E_TS], wait_at.read()
        waiting.add(value)
        if first_wait is None or at < first_wait:
            wait_at.write(at)
            release.set(Timestamp(micros=at))  # holds the output watermark at the earliest waiting time

    @on_timer(RELEASE)
    def release(
        self,
        held=beam.DoFn.StateParam(HELD),
        carriers=beam.DoFn.StateParam(CARRIERS),
        waiting=beam.DoFn.StateParam(WAITING),
        wait_at=beam.DoFn.StateParam(WAIT_AT),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ):
        lines = set(carriers.read())
        copies = sorted(waiting.read(), key=lambda c: (c[0][E_TS], c[0][E_SOURCE] or ""))
        waiting.clear()
        wait_at.clear()
        for copy in copies:  # each at its own time: none is earlier than the hold, so none is late
            at = Timestamp(micros=copy[0][E_TS])
            tag, out = self._decide(copy, lines, held, expiry)
            out = beam.window.TimestampedValue(out, at)
            yield out if tag is None else beam.pvalue.TaggedOutput(tag, out)

    def _decide(self, copy: tuple, lines: set, held, expiry) -> tuple[str | None, tuple]:
        """One copy in its turn -> ``(None, taker)`` or ``(OUTCOMES, outcome)``."""
        event, context, valid, carried, own = copy
        event_id, shard = event[E_ID], event[E_SHARD]
        if lines and event[E_LINE] not in lines:  # a line of the previous merge holds the id
            self._conflicts.inc()
            return OUTCOMES, (shard, (DEAD, self._conflict(event, HELD_DETAIL)))
        holder = held.read()
        before = {event_id: holder} if holder is not None else ({event_id: None} if carried else {})
        others = (event[E_OTHER] or "").split()  # held since before a join-key rotation: the same body?
        digests = pa.array([event[E_DIGEST]])
        codes, _ = take_ids(pa.array([event_id]), digests, np.array([valid]), before, lambda _, held: held in others)
        if codes[0] == TAKE:
            held.write(event[E_DIGEST])
            expiry.set(Timestamp(micros=event[E_TS]) + Duration(seconds=self._ttl))  # from the copy's own time
            return None, (event[E_LINE], (event, context))
        if codes[0] == TAKEN_BEFORE:
            self._duplicates.inc()
            return OUTCOMES, (shard, (DUPLICATE, 1))
        if codes[0] == CONFLICT:
            self._conflicts.inc()
            return OUTCOMES, (shard, (DEAD, self._conflict(event)))
        return OUTCOMES, (shard, (DEAD, own))  # invalid, and the id is not held: the copy's own dead letter

    def _conflict(self, event: tuple, *detail: str) -> tuple:
        return dead_rows(conflict_letters(self._ctx, events_table([event]), np.array([True]), *detail))[0]

    @on_timer(EXPIRY)
    def expire(self, held=beam.DoFn.StateParam(HELD)):
        held.clear()


@beam.typehints.with_output_types(typing.Tuple[int, typing.Any])
class RegistrationFn(beam.DoFn):
    """``(line_id, (event, context))`` -> ``(shard, ("applied", (event, context)))`` when the event is newer
    than the line's current registration, else ``(shard, ("superseded", (event_id, time, digest)))``."""

    CURRENT = ReadModifyWriteStateSpec("current", _ANY)  # (registered_at us, event_id) of the line

    def __init__(self):
        self._applied, self._superseded = counter("stream_events_applied"), counter("stream_events_superseded")

    def process(self, element, current=beam.DoFn.StateParam(CURRENT)):
        _, (event, context) = element
        held = current.read()
        if held is None:
            held = (context[C_AT], context[C_EVENT])
        if newer(event[E_AT], event[E_ID], held[0], held[1]):
            current.write((event[E_AT], event[E_ID]))
            self._applied.inc()
            yield event[E_SHARD], (APPLIED, (event, context))
        else:
            self._superseded.inc()
            yield event[E_SHARD], (SUPERSEDED, (event[E_ID], event[E_TS], event[E_DIGEST]))
