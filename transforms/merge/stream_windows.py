"""The Dataflow streaming merge's windows: every message's outcome, windowed by its event time, grouped per
(window, shard), made into one folder's contents.

    outcomes | StreamWindows(window_seconds, allowed_lateness) | ParDo(BuildFolderFn(...))

Fixed windows of ``window_seconds`` on the messages' event time (Pub/Sub publish time). The on-time pane
fires when the watermark passes the window's end; a message that arrives later, within
``allowed_lateness``, fires a late pane of its own (one ``window_seconds`` after it arrives), written as
its own folder -- so nothing is dropped and nothing is counted twice (panes discard what they fired).

A folder is ``w-<window start>-p<pane index>-s<shard>-of-<shards>``: what Beam groups under a (window,
pane, shard) is fixed once the pane fires, so a retried write rewrites the same folder. Its takers go to
``merge_bucket`` over their lines' contexts as a merged base (the batch merge's tokenizer, masks and vault),
its counts balance: messages in = applied + superseded + duplicates + dead letters.
"""

from __future__ import annotations

import datetime as dt
import secrets

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms import trigger
from apache_beam.utils.timestamp import Duration
from apache_beam.utils.windowed_value import PaneInfoTiming

from schemas import arrow_schema
from transforms.core.deadletter import DeadLetterContext
from transforms.core.metrics import counter, value_counts
from transforms.merge.bucket import MERGED_SCHEMA, merge_bucket
from transforms.merge.value_free import value_free
from transforms.merge.stream_records import (
    APPLIED,
    DEAD,
    DUPLICATE,
    E_DIGEST,
    E_ID,
    E_SOURCE,
    E_TS,
    IN,
    SUPERSEDED,
    dead_table,
    events_table,
    folder_name,
    lines_table,
)
from transforms.scan.policy import Policy

__all__ = ["StreamWindows", "BuildFolderFn", "folder_contents", "balanced", "ALLOWED_LATENESS_SECONDS"]

ALLOWED_LATENESS_SECONDS = 7 * 24 * 3600  # Pub/Sub keeps an unacknowledged message at most 7 days


class StreamWindows(beam.PTransform):
    """``(shard, outcome)`` stamped with event time -> ``(shard, [outcomes])`` per (window, pane, shard)."""

    def __init__(self, window_seconds: int, allowed_lateness: int = ALLOWED_LATENESS_SECONDS):
        super().__init__()
        self._window, self._lateness = int(window_seconds), int(allowed_lateness)

    def expand(self, outcomes):
        return (
            outcomes
            | "FixedWindows"
            >> beam.WindowInto(
                beam.window.FixedWindows(self._window),
                trigger=trigger.AfterWatermark(late=trigger.AfterProcessingTime(self._window)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
                allowed_lateness=Duration(seconds=self._lateness),
            )
            | "GroupByShard" >> beam.GroupByKey()
        )


def balanced(counts: dict) -> bool:
    return counts["messages_in"] == (
        counts["applied"] + counts["superseded"] + counts["duplicates"] + sum(counts["dead_letters"].values())
    )


def _registered(applied: list, merge: dict) -> tuple[pa.Table, pa.Table, pa.Table, dict, pa.Table | None]:
    """The takers found newer than their line's registration -> (delta, vault keys, vault values, event counts,
    dead letters of the merge itself: none expected)."""
    keys, values = arrow_schema("vault_key").empty_table(), arrow_schema("vault_value").empty_table()
    if not applied:
        return MERGED_SCHEMA.empty_table(), keys, values, {}, None
    applied = sorted(applied, key=lambda p: (p[0][E_TS], p[0][E_SOURCE] or "", p[0][E_ID]))
    contexts = {}
    for _, context in applied:
        contexts.setdefault(context[0], context)
    lines = lines_table([contexts[k] for k in sorted(contexts)])
    result = merge_bucket(lines, "merged", events_table([e for e, _ in applied]), None, None, **merge)
    merged = result.base
    before = lines.column("registration_event_id").take(
        pc.index_in(merged.column("line_id"), value_set=lines.column("line_id"))
    )
    changed = pc.fill_null(
        pc.not_equal(merged.column("registration_event_id"), before),
        pc.is_valid(merged.column("registration_event_id")),
    )
    delta = merged.filter(changed).sort_by("line_id")
    ids = delta.column("line_id")
    keys = result.vault_keys.filter(pc.is_in(result.vault_keys.column("line_id"), value_set=ids))
    values = result.vault_values.filter(pc.is_in(result.vault_values.column("line_id"), value_set=ids))
    dead = result.dead_letter if result.dead_letter.num_rows else None
    return delta, keys, values, result.counts.get("events", {}), dead


def folder_contents(outcomes, merge: dict) -> dict:
    """One (window, pane, shard)'s outcomes -> delta, vault rows, dead letters, counts, the ids taken here.

    ``merge``: ``merge_bucket``'s keyword arguments (tokenizer, vault, policy, as_of, ctx, salt)."""
    counts = {"messages_in": 0, "applied": 0, "superseded": 0, "duplicates": 0}
    applied, letters, taken = [], [], []
    for kind, payload in outcomes:
        if kind == IN:
            counts["messages_in"] += payload
        elif kind == APPLIED:
            applied.append(payload)
            taken.append((payload[0][E_ID], payload[0][E_TS], payload[0][E_DIGEST]))
        elif kind == SUPERSEDED:
            counts["superseded"] += 1
            taken.append(tuple(payload))
        elif kind == DUPLICATE:
            counts["duplicates"] += payload
        elif kind == DEAD:
            letters.append(payload)
    delta, keys, values, events, more = _registered(applied, merge)
    counts["applied"] = events.get("applied", 0)
    counts["superseded"] += events.get("superseded", 0)  # two of one line in one folder: the later wins
    counts["duplicates"] += events.get("duplicates", 0)
    dead = dead_table(sorted(letters, key=lambda r: tuple("" if v is None else str(v) for v in r)))
    if more is not None:
        dead = pa.concat_tables([dead, more.cast(dead.schema)])
    counts["dead_letters"] = dict(sorted(value_counts(dead.column("reason")).items()))
    if delta.num_rows != counts["applied"]:
        raise RuntimeError("the folder's delta does not match its applied count")
    taken.sort()
    ids, times, digests = (list(column) for column in zip(*taken)) if taken else ([], [], [])
    return {
        "delta": delta,
        "vault_keys": keys,
        "vault_values": values,
        "dead_letter": dead,
        "counts": counts,
        "keys": ids,
        "times": times,
        "digests": digests,
    }


@beam.typehints.with_output_types(dict)
class BuildFolderFn(beam.DoFn):
    """``(shard, outcomes)`` of one (window, pane) -> one folder's contents and its name (see the module
    docstring). The keyset is loaded from its path in ``setup()``."""

    def __init__(self, keys_path: str, policy: Policy, as_of: dt.date, ctx: DeadLetterContext, shards: int):
        self._keys_path, self._policy, self._as_of, self._ctx, self._shards = keys_path, policy, as_of, ctx, shards
        self._folders, self._unbalanced = counter("stream_folders"), counter("stream_folders_unbalanced")

    def setup(self):
        from transforms.crypto.keyset import Keyset
        from transforms.crypto.tokenize import Tokenizer
        from transforms.crypto.vault import Vault

        keyset = Keyset.load(self._keys_path)
        self._tokenizer, self._vault = Tokenizer(keyset), Vault(keyset)
        self._salt = secrets.token_hex(16)  # classify's hash key: never compared, so per worker

    def process(self, element, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        shard, outcomes = element
        merge = dict(tokenizer=self._tokenizer, vault=self._vault, policy=self._policy, as_of=self._as_of)
        with value_free("StreamFolder"):
            folder = folder_contents(outcomes, {**merge, "ctx": self._ctx, "salt": self._salt})
        start, end = float(window.start), float(window.end)
        self._folders.inc()
        if not balanced(folder["counts"]):  # a late pane may hold a message whose count went with the on-time one
            self._unbalanced.inc()
        yield {
            **folder,
            "name": folder_name(start, pane.index, shard, self._shards),
            "window": (start, end),
            "pane": {"index": pane.index, "timing": PaneInfoTiming.to_string(pane.timing), "is_last": pane.is_last},
            "shard": shard,
            "shards": self._shards,
        }
