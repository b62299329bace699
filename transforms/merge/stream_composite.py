"""MergeStreamWindows: the Dataflow streaming merge as one composite, memory per worker flat in the base's size.

    messages --Stamp--> BatchMessages --Intake-------------------(line_id, event)--+
    base batches --Seed-------------------------------------------(line_id, seed)---+--> LineContext (state)
      --> BatchForValidation --Validate--> (event_id, copy) --------+
    base batches --Seed (merged base)--> (event_id, carrier line) --+--TakeEventIds (state)--> (line_id, taker)
      --> ApplyOrSupersede (state) --+
    every stage's outcomes ----------+--> FixedWindows --GroupByShard--> BuildFolders --> one folder per
                                                                         (window, pane, shard)

* **Intake** (batches, :mod:`transforms.merge.stream_intake`): the batch merge's message and row checks and
  each body's keyed digest; a dead letter here is final (it takes no id).
* **The base** is a bounded read beside the Pub/Sub read, seeded by line into keyed state
  (:mod:`transforms.merge.stream_keyed`): no worker loads it, and the runner keeps each line's context
  (no identity values) with its key.
* **Who holds an event id** (:mod:`transforms.merge.event_ids`, one rule for every merge): a copy that
  fails its line's checks is a dead letter and takes nothing; the first valid copy (in ``(time, source)``
  order) takes the id; later copies are duplicates (same body) or ``EVENT_ID_CONFLICT``; an id is held 7
  days after its taker's time. An id a line of a merged base carries is held by that line from the start:
  a copy on another line is ``EVENT_ID_CONFLICT`` (the batch merge's rule, :mod:`transforms.merge.copies`).
* **Latest wins** per line against its current registration (the base's, then the stream's).
* **Folders** (:mod:`transforms.merge.stream_windows`): per (window, pane, shard), the takers merged
  (``merge_bucket``), every message of it counted once.

Input: ``{"messages": message records (dicts: message_id, publish_time, attributes, data, size; stamped
with their event time), "base": base batches (raw or merged rows), "base_dead_letter": optional reader
dead letters}``. Output: :class:`StreamOutputs`. The keyset is loaded from its path in the DoFns'
``setup()``; no key, salt or base row travels in the graph.
"""

from __future__ import annotations

import datetime as dt
import typing

import apache_beam as beam
import pyarrow as pa

from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.deadletter import DeadLetterContext
from transforms.merge.messages import MAX_MESSAGE_BYTES
from transforms.merge.stream_intake import BASE_DEAD, CARRIERS, OUTCOMES, IntakeFn, SeedFn, ValidateFn
from transforms.merge.stream_keyed import ID_TTL_SECONDS, EventIdFn, LineContextFn, RegistrationFn
from transforms.merge.stream_windows import ALLOWED_LATENESS_SECONDS, BuildFolderFn, StreamWindows
from transforms.scan.policy import Policy

__all__ = ["MergeStreamWindows", "StreamOutputs", "DEFAULT_SHARDS"]

DEFAULT_SHARDS = 4  # folders per window: each holds one shard's lines


class StreamOutputs(typing.NamedTuple):
    folders: beam.PCollection  # one dict per (window, pane, shard): name, delta, vault rows, dead letters, counts
    base_dead_letter: beam.PCollection  # dead-letter tables of the base (reader, classify, duplicate line ids)


@beam.typehints.with_output_types(dict)
class _StampFn(beam.DoFn):
    """A message record -> the same record with ``_ts``, its event time in UTC microseconds."""

    def process(self, record, timestamp=beam.DoFn.TimestampParam):
        yield {**record, "_ts": int(timestamp.micros)}


class MergeStreamWindows(beam.PTransform):
    """Messages and the base in; window folders' contents and the base's dead letters out (module docstring).

    Args:
      keys_path: the keyset's path or URI, loaded on each worker.
      policy, as_of, ctx: as the batch merge.
      window_seconds: length of the fixed windows (event time = Pub/Sub publish time).
      base_kind: ``raw`` or ``merged``.
      shards: folders per window (by line bucket).
      max_bytes: a body over it is MESSAGE_TOO_LARGE. source: the subscription (dead letters' source_file).
      max_batch: messages per intake or validation batch.
    """

    def __init__(
        self,
        keys_path: str,
        policy: Policy,
        as_of: dt.date,
        ctx: DeadLetterContext,
        window_seconds: int,
        *,
        base_kind: str,
        shards: int = DEFAULT_SHARDS,
        max_bytes: int = MAX_MESSAGE_BYTES,
        source: str = "pubsub",
        max_batch: int = 1000,
        id_ttl_seconds: int = ID_TTL_SECONDS,
        allowed_lateness: int = ALLOWED_LATENESS_SECONDS,
    ):
        super().__init__()
        if base_kind not in ("raw", "merged"):
            raise ValueError(f"base_kind must be raw or merged, not {base_kind!r}")
        self._keys, self._policy, self._as_of, self._ctx = keys_path, policy, as_of, ctx
        self._window, self._kind, self._shards = int(window_seconds), base_kind, max(1, int(shards))
        self._max_bytes, self._source, self._max_batch = max_bytes, source, int(max_batch)
        self._ttl, self._lateness = int(id_ttl_seconds), int(allowed_lateness)

    def expand(self, inputs: dict) -> StreamOutputs:
        intake = (
            inputs["messages"]
            | "Stamp" >> beam.ParDo(_StampFn())
            | "BatchMessages" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._max_batch)
            | "Intake"
            >> beam.ParDo(
                IntakeFn(self._keys, self._ctx, self._source, self._max_bytes, self._shards, self._window)
            ).with_outputs(OUTCOMES, main="events")
        )
        seeds = inputs["base"] | "Seed" >> beam.ParDo(
            SeedFn(self._policy, self._as_of, self._ctx, self._kind)
        ).with_outputs(BASE_DEAD, CARRIERS, main="seeds")
        lines = (
            (intake.events, seeds.seeds)
            | "EventsAndSeeds" >> beam.Flatten().with_output_types(typing.Tuple[str, typing.Any])
            | "LineContext" >> beam.ParDo(LineContextFn(self._ctx)).with_outputs(BASE_DEAD, main="events")
        )
        validated = (
            lines.events
            | "BatchForValidation" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._max_batch)
            | "Validate" >> beam.ParDo(ValidateFn(self._policy, self._as_of, self._ctx))
        )
        ids = (
            (validated, seeds[CARRIERS])
            | "CopiesAndCarriers" >> beam.Flatten().with_output_types(typing.Tuple[str, typing.Any])
            | "TakeEventIds" >> beam.ParDo(EventIdFn(self._ctx, self._ttl)).with_outputs(OUTCOMES, main="takers")
        )
        registered = ids.takers | "ApplyOrSupersede" >> beam.ParDo(RegistrationFn())
        folders = (
            (intake.outcomes, ids.outcomes, registered)
            | "Outcomes" >> beam.Flatten().with_output_types(typing.Tuple[int, typing.Any])
            | "Windows" >> StreamWindows(self._window, self._lateness)
            | "BuildFolders"
            >> beam.ParDo(BuildFolderFn(self._keys, self._policy, self._as_of, self._ctx, self._shards))
        )
        dead = [seeds.base_dead_letter, lines.base_dead_letter]
        if inputs.get("base_dead_letter") is not None:
            dead.append(inputs["base_dead_letter"])
        base_dead = tuple(dead) | "BaseDeadLetters" >> beam.Flatten().with_output_types(pa.Table)
        return StreamOutputs(folders, base_dead)
