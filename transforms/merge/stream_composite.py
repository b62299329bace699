"""MergeStreamWindows: the streaming merge's shared core as a Beam composite (Dataflow; tests on the local runner).

    messages --KeyByEventId--> DedupByEventId (state, global window) --Window (fixed)--> BatchPerWindow
             --ProcessWindow (transforms.merge.stream.process_window)--> one result per batch

Input: message records (dicts: ``message_id``, ``publish_time`` in UTC
microseconds, ``attributes``, ``data`` (bytes, None over the cap), ``size``)
with their Pub/Sub timestamps. ``DedupByEventId`` keeps a flag per dedup key
(the event_id attribute, else the message id) in Beam state, across windows,
and marks later copies as duplicates (they are counted in their window, never
processed); on Dataflow ``ReadFromPubSub(id_label="event_id")`` removes
redeliveries before it as well. The base's line index is loaded in
``ProcessWindow.setup()`` by a picklable loader (Beam issue 21103: no bounded
read beside an unbounded one), and the keyset from its path (keys never travel
in the graph). Each output element is a dict: ``window`` (start, end in UTC
seconds), ``delta``, ``vault_keys``, ``vault_values``, ``dead_letter`` (Arrow
tables), ``counts`` (with ``counters``), ``keys`` and ``publish_times`` (the
dedup keys processed).
"""

from __future__ import annotations

import datetime as dt
import secrets

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import BooleanCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration

from transforms.core.deadletter import DeadLetterContext
from transforms.merge.messages import MAX_MESSAGE_BYTES, messages_table
from transforms.merge.stream import process_window
from transforms.core.metrics import counter
from transforms.scan.normalize import clean_text
from transforms.scan.policy import Policy

__all__ = ["MergeStreamWindows", "dedup_key"]

DEDUP_TTL_SECONDS = 7 * 24 * 3600  # a key is remembered this long after its message's timestamp


def dedup_key(record: dict) -> str:
    """The event_id attribute (cleaned as transforms.merge.stream.dedup_keys does), else msg:message_id."""
    value = (record.get("attributes") or {}).get("event_id")
    cleaned = clean_text(pa.array([value], pa.string()))[0].as_py() if value is not None else None
    return cleaned if cleaned is not None else f"msg:{record.get('message_id')}"


class _DedupFn(beam.DoFn):
    """(key, message) -> message, with ``_duplicate`` set on every copy after the first (state per key)."""

    SEEN = ReadModifyWriteStateSpec("seen", BooleanCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def process(
        self,
        element,
        seen=beam.DoFn.StateParam(SEEN),
        expiry=beam.DoFn.TimerParam(EXPIRY),
        timestamp=beam.DoFn.TimestampParam,
    ):
        _, record = element
        first = not seen.read()
        if first:
            seen.write(True)
            expiry.set(timestamp + Duration(seconds=DEDUP_TTL_SECONDS))
        else:
            counter("stream_duplicates").inc()
        yield {**record, "_duplicate": not first}

    @on_timer(EXPIRY)
    def expire(self, seen=beam.DoFn.StateParam(SEEN)):
        seen.clear()


class _ProcessWindowFn(beam.DoFn):
    """A batch of one window's messages -> one window result (see the module docstring)."""

    def __init__(
        self,
        index_loader,
        keys_path: str,
        policy: Policy,
        as_of: dt.date,
        ctx: DeadLetterContext,
        max_bytes: int,
        source: str,
    ):
        self._loader, self._keys_path, self._policy, self._as_of = index_loader, keys_path, policy, as_of
        self._ctx, self._max_bytes, self._source = ctx, max_bytes, source
        self._applied = counter("stream_events_applied")
        self._dead = counter("stream_dead_letters")

    def setup(self):
        from transforms.crypto.keyset import Keyset
        from transforms.crypto.tokenize import Tokenizer
        from transforms.crypto.vault import Vault

        keyset = Keyset.load(self._keys_path)
        self._tokenizer, self._vault = Tokenizer(keyset), Vault(keyset)
        self._salt = secrets.token_hex(16)  # classify's hash key: never compared, so per worker, not in the graph
        self._index = self._loader()  # the base, read once per worker (not a bounded source in the graph)

    def process(self, batch, window=beam.DoFn.WindowParam):
        fresh = [m for m in batch if not m.get("_duplicate")]
        duplicates = len(batch) - len(fresh)
        table = messages_table(fresh, self._max_bytes)
        result = process_window(
            table,
            self._index,
            None,
            tokenizer=self._tokenizer,
            vault=self._vault,
            policy=self._policy,
            as_of=self._as_of,
            ctx=self._ctx,
            salt=self._salt,
            source=self._source,
            max_bytes=self._max_bytes,
        )
        self._applied.inc(result.counts["applied"])
        self._dead.inc(result.dead_letter.num_rows)
        counts = dict(result.counts)
        counts["messages_in"] += duplicates
        counts["duplicates"] += duplicates
        counts["counters"] = result.counters
        yield {
            "window": (float(window.start), float(window.end)) if hasattr(window, "start") else None,
            "delta": result.delta,
            "vault_keys": result.vault_keys,
            "vault_values": result.vault_values,
            "dead_letter": result.dead_letter,
            "counts": counts,
            "keys": result.new_keys.to_pylist(),
            "publish_times": [m.get("publish_time") for m in fresh],
        }


class MergeStreamWindows(beam.PTransform):
    """Message records in; one result per processed batch of each fixed window out.

    Args:
      index_loader: a picklable callable returning the base's
        :class:`transforms.merge.stream.LineIndex` (called in ``setup()``).
      keys_path: the keyset file, loaded on each worker.
      policy, as_of, ctx: as the batch merge.
      window_seconds: length of the fixed windows (event time = Pub/Sub publish time).
      max_batch: messages per processing batch within a window.
    """

    def __init__(
        self,
        index_loader,
        keys_path: str,
        policy: Policy,
        as_of: dt.date,
        ctx: DeadLetterContext,
        window_seconds: int,
        *,
        max_bytes: int = MAX_MESSAGE_BYTES,
        source: str = "pubsub",
        max_batch: int = 5_000,
    ):
        super().__init__()
        self._fn = _ProcessWindowFn(index_loader, keys_path, policy, as_of, ctx, max_bytes, source)
        self._window, self._max_batch = int(window_seconds), int(max_batch)

    def expand(self, messages):
        return (
            messages
            | "KeyByEventId" >> beam.Map(lambda m: (dedup_key(m), m))
            | "DedupByEventId" >> beam.ParDo(_DedupFn())
            | "Window" >> beam.WindowInto(beam.window.FixedWindows(self._window))
            | "BatchPerWindow" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._max_batch)
            | "ProcessWindow" >> beam.ParDo(self._fn)
        )
