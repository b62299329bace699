"""The batch merge's event side (Beam): event batches in, the copies that reach the line merge out.

    events --CheckEvents--> ShuffleByEvent --SplitCopies--+----------------------------------> firsts (by line)
                                                          '-contested-+
    base --LinesOfContested (side input: the contested line_ids)------+--ShuffleContestedByLine
                                                                               |  LineVerdicts
                                      takers (by line) <--TakeIds-- ShuffleContestedByEvent

``CheckEvents`` runs per read batch, before any de-duplication: a copy that fails the row checks
(EVENT_ID_MISSING, LINE_ID_MISSING, BAD_TIMESTAMP, BAD_ENUM) is a dead letter and takes nothing; the
others get the keyed digest of their fields as received (``body_digests``: no value travels to compare).
Per event_id bucket, a copy of an id that a line of a previous merged base carries (``HeldIds``: that base's
``registration_event_id`` and line, by event_id bucket) is ``EVENT_ID_CONFLICT`` unless it is on that line;
then an id whose copies are all identical sends its first copy in (file, row) order on
and counts the others as duplicates; the copies of an id with two bodies or more (contested, rare) need
their line's checks before the first valid one can be found: they go to a line bucket of their own, with
the base's rows of their lines only (the base filtered against a side input of the contested line_ids,
not shuffled a second time), and back to an event_id bucket where ``take_ids`` decides
(``transforms.merge.copies``). Firsts and takers then meet the whole base in the line merge.
"""

from __future__ import annotations

import datetime as dt
import secrets
import typing

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.deadletter import DeadLetterContext
from transforms.core.metrics import counter
from transforms.core.shuffle import BUCKET, ArrowGroupByBucket, with_bucket
from transforms.core.tags import COUNTS, DEAD_LETTER
from transforms.merge.event_steps import (
    check_batch,
    contested_base,
    contested_rows,
    split_bucket,
    take_bucket,
    verdicts,
)
from transforms.merge.copies import held_pairs
from transforms.scan.policy import Policy

__all__ = ["EventsByLine", "EventSide", "CONTESTED"]

CONTESTED = "contested"


class EventSide(typing.NamedTuple):
    events: beam.PCollection  # checked events bucketed by line_id: one copy per event id
    dead_letter: beam.PCollection
    counts: beam.PCollection  # dicts of counts (not summed)


def _held(inputs: dict, files, n: int) -> beam.PCollection:
    """The event ids a merged base's lines carry, by event_id bucket: from the base's batches, or (its files read
    by line bucket) from each of its splits, read for two columns."""
    if "base" in inputs:
        return inputs["base"] | "HeldIds" >> beam.ParDo(_HeldIdsFn(n))
    return (
        inputs["events"].pipeline
        | "BaseSplits" >> beam.Create(files.splits("base"))
        | "HeldIds" >> beam.ParDo(_HeldIdsFn(n, files))
    )


def _part(tables: dict, tag: str) -> pa.Table | None:
    return tables[tag].drop_columns([BUCKET]) if tag in tables else None


@beam.typehints.with_output_types(pa.Table, dead_letter=pa.Table, counts=dict)
class _CheckEventsFn(beam.DoFn):
    """Read batch -> checked copies with their body digest, bucketed by event_id; their dead letters."""

    def __init__(self, ctx: DeadLetterContext, n_buckets: int, keys_path: str):
        self._ctx, self._n, self._keys_path = ctx, n_buckets, keys_path

    def setup(self):
        from transforms.crypto.keyset import Keyset
        from transforms.crypto.tokenize import Tokenizer

        self._tokenizer = Tokenizer(Keyset.load(self._keys_path))

    def process(self, raw: pa.Table):
        checked, dead, counts = check_batch(raw, self._tokenizer, self._ctx)
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
        if dead.num_rows:
            counter("events_dead_letters_checked").inc(dead.num_rows)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead)
        if checked.num_rows:
            yield with_bucket(checked, checked.column("event_id"), self._n)


@beam.typehints.with_output_types(pa.Table)
class _HeldIdsFn(beam.DoFn):
    """A merged base batch, or a split of a base read by line bucket (``files``, a
    ``pipelines.io.line_buckets.BucketFiles``: it reads two columns) -> the event ids its lines carry with their
    line, bucketed by event_id."""

    def __init__(self, n_buckets: int, files=None):
        self._n, self._files = n_buckets, files

    def process(self, element):
        tables = [held_pairs(element)] if isinstance(element, pa.Table) else self._files.held_ids(element)
        for pairs in tables:
            if pairs.num_rows:
                yield with_bucket(pairs, pairs.column("event_id"), self._n)


@beam.typehints.with_output_types(pa.Table, contested=pa.Table, dead_letter=pa.Table, counts=dict)
class _SplitCopiesFn(beam.DoFn):
    """One event_id bucket -> the first copy of each id with one body; every copy of the contested ids; the
    copies of an id a line of the previous base carries, on another line, as dead letters."""

    def __init__(self, n_buckets: int, ctx: DeadLetterContext):
        self._n, self._ctx = n_buckets, ctx

    def process(self, element):
        _, tables = element
        if "events" not in tables:  # only held ids: no copy of them in this run
            return
        firsts, contested, dead, counts = split_bucket(_part(tables, "events"), _part(tables, "held"), self._ctx)
        counter("events_duplicates").inc(counts["events"]["duplicates"])
        counter("events_contested").inc(contested.num_rows)
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
        if dead.num_rows:
            counter("events_held_elsewhere").inc(dead.num_rows)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead)
        if contested.num_rows:
            yield beam.pvalue.TaggedOutput(CONTESTED, with_bucket(contested, contested.column("line_id"), self._n))
        if firsts.num_rows:
            yield with_bucket(firsts, firsts.column("line_id"), self._n)


def _line_ids(table: pa.Table) -> list[str]:
    return pc.unique(table.column("line_id")).drop_null().to_pylist()


def _distinct(ids: list[str]) -> list[str]:
    return sorted(set(ids))


@beam.typehints.with_output_types(pa.Table)
class _LinesOfFn(beam.DoFn):
    """A base batch -> its rows of the contested lines (the side input), bucketed by line_id."""

    def __init__(self, n_buckets: int, clean: bool):
        self._n, self._clean = n_buckets, clean
        self._seen, self._set = None, None

    def process(self, table: pa.Table, line_ids: list[str]):
        if not line_ids or table.num_rows == 0:
            return
        if line_ids is not self._seen:  # one side input per run: made an Arrow set once per worker
            self._seen, self._set = line_ids, pa.array(line_ids, pa.string())
        found = contested_rows(table, self._set, self._clean)
        if found is not None:
            yield with_bucket(*found, self._n)


@beam.typehints.with_output_types(pa.Table)
class _LineVerdictsFn(beam.DoFn):
    """One line bucket of contested copies and their lines -> the copies with their verdicts, by event_id."""

    def __init__(self, policy: Policy, as_of: dt.date, ctx: DeadLetterContext, n_buckets: int, base_kind: str, files):
        self._policy, self._as_of, self._ctx, self._n, self._kind = policy, as_of, ctx, n_buckets, base_kind
        self._files = files

    def setup(self):
        self._salt = secrets.token_hex(16)  # classify's hash key, never compared across buckets (as TokenizeAndSeal)

    def process(self, element):
        bucket, tables = element
        if "copies" not in tables:
            return
        copies = _part(tables, "copies")
        if self._files is not None and "base" in self._files:  # the bucket's base file, read here
            base = contested_base(self._files.tables("base", bucket), copies, self._kind == "raw")
        else:
            base = _part(tables, "base")
        copies = verdicts(copies, base, self._kind, self._policy, self._as_of, self._ctx, self._salt)
        yield with_bucket(copies, copies.column("event_id"), self._n)


@beam.typehints.with_output_types(pa.Table, dead_letter=pa.Table, counts=dict)
class _TakeIdsFn(beam.DoFn):
    """One event_id bucket of contested copies -> the takers (by line_id), dead letters, duplicates."""

    def __init__(self, ctx: DeadLetterContext, n_buckets: int):
        self._ctx, self._n = ctx, n_buckets

    def process(self, element):
        _, tables = element
        takers, dead, counts = take_bucket(_part(tables, "copies"), self._ctx)
        counter("events_duplicates").inc(counts["events"]["duplicates"])
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
        if dead.num_rows:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead)
        if takers.num_rows:
            yield with_bucket(takers, takers.column("line_id"), self._n)


class EventsByLine(beam.PTransform):
    """``{"events": raw event batches, "base": base batches}`` -> :class:`EventSide` (see the module docstring).

    ``base_kind``: ``raw`` (line ids cleaned as the scan cleans them) or ``merged``. ``files``: the inputs
    already cut by line bucket (``pipelines.io.line_buckets.BucketFiles``); with the base among them, ``base``
    is not given and each line bucket of contested copies reads its own base file."""

    def __init__(
        self, policy, as_of, ctx, keys_path: str, n_buckets: int, base_kind: str, spill_dir: str | None, files=None
    ):
        super().__init__()
        self._policy, self._as_of, self._ctx, self._keys = policy, as_of, ctx, keys_path
        self._n, self._kind, self._spill, self._files = n_buckets, base_kind, spill_dir, files

    def expand(self, inputs: dict) -> EventSide:
        n, ctx = self._n, self._ctx
        checked = inputs["events"] | "CheckEvents" >> beam.ParDo(_CheckEventsFn(ctx, n, self._keys)).with_outputs(
            DEAD_LETTER, COUNTS, main="events"
        )
        by_event = {"events": checked.events}
        if self._kind == "merged":
            by_event["held"] = _held(inputs, self._files, n)
        split = (
            by_event
            | "ShuffleByEvent" >> ArrowGroupByBucket(self._spill, label="ShuffleByEvent")
            | "SplitCopies"
            >> beam.ParDo(_SplitCopiesFn(n, ctx)).with_outputs(CONTESTED, DEAD_LETTER, COUNTS, main="firsts")
        )
        line_ids = (
            split.contested
            | "ContestedLineIds" >> beam.FlatMap(_line_ids)
            | "AllContestedLineIds" >> beam.combiners.ToList()
            | "Distinct" >> beam.Map(_distinct)
        )
        contested = {"copies": split.contested}
        if "base" in inputs:  # else each line bucket reads its own base file (``files``)
            contested["base"] = inputs["base"] | "LinesOfContested" >> beam.ParDo(
                _LinesOfFn(n, self._kind == "raw"), beam.pvalue.AsSingleton(line_ids)
            )
        judge = _LineVerdictsFn(self._policy, self._as_of, ctx, n, self._kind, self._files)
        verdicts = (
            contested
            | "ShuffleContestedByLine" >> ArrowGroupByBucket(self._spill, label="ShuffleContestedByLine")
            | "LineVerdicts" >> beam.ParDo(judge).with_output_types(pa.Table)
        )
        taken = (
            {"copies": verdicts}
            | "ShuffleContestedByEvent" >> ArrowGroupByBucket(self._spill, label="ShuffleContestedByEvent")
            | "TakeIds" >> beam.ParDo(_TakeIdsFn(ctx, n)).with_outputs(DEAD_LETTER, COUNTS, main="takers")
        )
        events = (split.firsts, taken.takers) | "FirstsAndTakers" >> beam.Flatten().with_output_types(pa.Table)
        dead = (
            checked.dead_letter,
            split.dead_letter,
            taken.dead_letter,
        ) | "EventDeadLetters" >> beam.Flatten().with_output_types(pa.Table)
        counts = (checked.counts, split.counts, taken.counts) | "EventCounts" >> beam.Flatten()
        return EventSide(events, dead, counts)
