"""Builders of the Dataflow streaming merge's tests (tests/test_stream_beam.py): a base, a plan of messages
with the outcome the event-id rule gives each, and the pipeline run on the local runner with its messages
created in the pipeline (TimestampedValue: event time = publish time) in place of the Pub/Sub read."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os

import apache_beam as beam
import pyarrow as pa

from tests.support.rows import AS_OF, RUNNER, SALT, person, raw_table
from transforms.core.deadletter import DeadLetterContext
from tests.support.stream import event

CTX = DeadLetterContext("merge", "test-stream-beam", "2026-11-30T00:00:00Z")
SOURCE = "projects/p/subscriptions/s"
WINDOW = 10
START = 1_796_032_800  # 2026-11-30T10:00:00Z, a window boundary for 10-second windows


def base_rows() -> list[dict]:
    rows = [person(line_id=f"L{i}", msisdn=f"1380013800{i}") for i in range(1, 8)]
    rows[1]["name"] = "未知"  # L2: its base identity is incomplete; a registration completes it
    return rows + [person(line_id="LT", status="TERMINATED", msisdn="13800138099")]


@dataclasses.dataclass
class Sent:
    body: dict  # the event the message carries
    outcome: str  # "applied", "superseded", "duplicate", or the dead letter's reason ("OWN": the copy's own)
    data: bytes | None = None  # the body as sent, when not the event's JSON
    attrs: dict | None = None  # the attributes, when not the event's ids
    batch: bool = True  # the same copy is a line of the batch merge's file (a Pub/Sub-only failure is not)


def plan() -> list[list[Sent]]:
    """Two windows of messages, each case of the event-id rule, in arrival order."""
    e1, e2 = event("E1", "L1", "2026-11-20T10:00:00"), event("E2", "L2", "2026-11-20T10:00:00")
    e3 = event("E3", "L3", "2026-11-20T10:00:00")
    e6 = event("E6", "L4", "2026-11-20T10:00:00")
    first = [
        Sent(e1, "MESSAGE_MALFORMED", data=json.dumps(e1).encode()[:40]),  # truncated first ...
        Sent(e1, "applied"),  # ... then valid: the valid copy takes E1
        Sent(e2, "applied"),
        Sent({**e3, "doc_number": "1234"}, "OWN"),  # invalid first: its own dead letter, takes nothing ...
        Sent(event("E4", "NOPE", "2026-11-20T10:00:00"), "UNKNOWN_LINE"),
        Sent(event("E5", "LT", "2026-11-20T10:00:00"), "LINE_TERMINATED"),
        Sent(e6, "applied"),
        Sent(e6, "duplicate"),
        Sent(event("E7", "L5", "2026-11-21T10:00:00"), "applied"),
    ]
    second = [
        Sent(e3, "applied"),  # ... then corrected: applied
        Sent({**e2, "channel": "STORE"}, "EVENT_ID_CONFLICT"),  # another body under a held id
        Sent(event("E8", "L5", "2026-11-20T09:00:00"), "superseded"),  # older than E7 (an earlier window)
        Sent(e6, "duplicate"),  # a copy in a later window
        Sent(event("E10", "L6", "2026-11-20T08:00:00"), "superseded"),  # older, but first in its window
        Sent(event("E9", "L6", "2026-11-20T09:00:00"), "applied"),
        Sent(event("E11", "L7", "2026-11-20T09:00:00"), "ATTRIBUTE_MISSING", attrs={"event_id": "E11"}, batch=False),
    ]
    return [first, second]


def records(windows: list[list[Sent]]) -> list[tuple[dict, float]]:
    """(message record, event time in seconds) of each message: distinct times, in arrival order."""
    out = []
    for w, sent in enumerate(windows):
        for i, s in enumerate(sent):
            at = START + w * WINDOW + 1 + i * 0.5
            attrs = s.attrs if s.attrs is not None else {"event_id": s.body["event_id"], "line_id": s.body["line_id"]}
            data = s.data if s.data is not None else json.dumps(s.body, ensure_ascii=False).encode("utf-8")
            when = dt.datetime.fromtimestamp(at, dt.timezone.utc)
            out.append(({"message_id": f"m{w}-{i:02d}", "publish_time": when, "attributes": attrs, "data": data}, at))
    return out


def batch_lines(windows: list[list[Sent]]) -> list[str]:
    """The batch merge's JSON Lines file of the same copies, in arrival order."""
    lines = []
    for s in (s for sent in windows for s in sent if s.batch):
        lines.append((s.data or json.dumps(s.body, ensure_ascii=False).encode("utf-8")).decode("utf-8", "replace"))
    return lines


def run_stream(base: str, keys: str, out: str, windows: list[list[Sent]], shards: int = 4) -> None:
    """The Dataflow streaming merge's pipeline (pipelines.merge_streaming.build_streaming_pipeline) on the
    local runner: the base (a raw file, or a merge's OUT/base) read in splits as the launcher plans them, the
    messages created in the pipeline."""
    from pipelines.io.merged_base import base_kind, plan_merged_splits
    from pipelines.io.planning import plan_splits
    from pipelines.merge_streaming import build_streaming_pipeline
    from transforms.scan.policy import load_policy

    kind = base_kind([base])
    splits = plan_splits([base], encoding="utf-8")[0] if kind == "raw" else plan_merged_splits([base])[0]
    with beam.Pipeline(runner=RUNNER) as p:
        messages = (
            p
            | "Messages" >> beam.Create(records(windows), reshuffle=False)
            | "AtPublishTime" >> beam.MapTuple(lambda r, t: beam.window.TimestampedValue(r, t))
        )
        build_streaming_pipeline(
            p,
            subscription=SOURCE,
            base_kind=kind,
            base_splits=splits,
            encoding="utf-8",
            keys_path=keys,
            policy=load_policy(None),
            as_of=AS_OF,
            ctx=CTX,
            out=out,
            window_seconds=WINDOW,
            shards=shards,
            max_bytes=256 * 1024,
            messages=messages,
        )


class LoadsTheBaseInSetup(beam.DoFn):
    """The design this replaces (control): every worker reads the whole base in setup()."""

    def __init__(self, path: str):
        self._path = path

    def setup(self):
        with open(self._path, "rb") as f:
            self._base = f.read()

    def process(self, element):
        yield element


def dofns(pipeline) -> list[tuple[str, beam.DoFn]]:
    from apache_beam.pipeline import PipelineVisitor

    found = []

    class Visit(PipelineVisitor):
        def visit_transform(self, node):
            fn = getattr(node.transform, "fn", None)
            if isinstance(fn, beam.DoFn):
                found.append((node.full_label, fn))

    pipeline.visit(Visit())
    return found


def base_readers(dofns, base: str) -> list[str]:
    """The DoFns outside the bounded base read that hold the base's path, or whose setup() fails without the
    base file (it is moved away while each one's pickled copy runs setup(), as a fresh worker would)."""
    import base64
    import bz2

    from apache_beam.internal import pickler

    found = []
    os.rename(base, base + ".away")
    try:
        for label, fn in dofns:
            if label.startswith("ReadBase/"):
                continue
            blob = pickler.dumps(fn)
            if base.encode() in bz2.decompress(base64.b64decode(blob)):
                found.append(label)
                continue
            fresh = pickler.loads(blob)
            try:
                fresh.setup()
            except OSError:
                found.append(label)
            else:
                fresh.teardown()
    finally:
        os.rename(base + ".away", base)
    return found


def copies(keys: str, bodies: list[dict], versions: list[str]) -> list[tuple]:
    """Event tuples of these bodies as the intake makes them, with digests under ``versions`` (the first as
    the copy's own digest, the others as its digests under the keyset's other join-key versions)."""
    from tests.support.merge import events_table
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.tokenize import Tokenizer
    from transforms.merge.event_ids import DIGEST, body_digests
    from transforms.merge.events import check_events, prepare_events
    from transforms.merge.stream_records import OTHER_DIGESTS, event_records

    tokenizer = Tokenizer(Keyset.load(keys))
    raw = events_table(bodies)
    digests = [body_digests(raw, tokenizer, v) for v in versions]
    raw = raw.append_column(DIGEST, digests[0])
    others = digests[1] if len(digests) > 1 else pa.nulls(raw.num_rows, pa.string())
    checked = check_events(prepare_events(raw.append_column(OTHER_DIGESTS, others), CTX)[0], CTX)[0]
    n = checked.num_rows
    return event_records(checked, [START * 1_000_000 + i for i in range(n)], [0] * n)


def seed(row: dict, source_row: int) -> tuple:
    """The seed of one raw base row (as SeedFn makes it), named as row ``source_row`` of the base file."""
    from transforms.merge.lines import raw_lines
    from transforms.merge.stream_records import C_ROW, context_records
    from transforms.scan.policy import load_policy

    lines = raw_lines(raw_table([row]), load_policy(None), AS_OF, CTX, SALT)[0]
    context = context_records(lines, "_updated_at")[0]
    return context[:C_ROW] + (source_row,) + context[C_ROW + 1 :]
