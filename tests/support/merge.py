"""Builders of the batch merge's tests: events, the merge of one bucket as the pipeline runs it, a merged base."""

from __future__ import annotations

import collections

import pyarrow as pa

from pipelines.io.events import EVENT_SCHEMA
from pipelines.io.merged_base import MERGED_ROWS
from tests.support.rows import AS_OF, CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, SALT, raw_table
from transforms.core.deadletter import DeadLetterContext
from transforms.core.metrics import merge_counts
from transforms.crypto.tokenize import Tokenizer
from transforms.crypto.vault import Vault
from transforms.merge.bucket import merge_bucket
from transforms.merge.copies import line_verdicts, resolve_contested, split_copies, without_marks
from transforms.merge.event_ids import DIGEST, body_digests
from transforms.merge.events import check_events, prepare_events
from transforms.merge.lines import base_lines

CTX = DeadLetterContext("merge", "test-merge", "2026-11-30T00:00:00Z")


def event(**fields) -> dict:
    """A valid registration of an individual line L1 carrying the canaries; override any field."""
    row = {
        "event_id": "E1",
        "line_id": "L1",
        "doc_type": "身份证",
        "doc_number": CANARY_NUMBER,
        "name": CANARY_NAME,
        "address": CANARY_ADDRESS,
        "channel": "store",
        "agent_id": " AG00777 ",
        "verified_by": "FACE_MATCH",
        "registered_at": "2026-11-20T10:00:00",
    }
    row.update(fields)
    return row


def events_table(rows: list[dict], source: str = "events.jsonl") -> pa.Table:
    columns = {n: pa.array([r.get(n) for r in rows], pa.string()) for n in EVENT_SCHEMA.names[:-2]}
    columns["_src_file"] = pa.array([source] * len(rows), pa.string())
    columns["_src_row"] = pa.array(range(1, len(rows) + 1), pa.int64())
    return pa.table(columns, schema=EVENT_SCHEMA)


def run(base_rows, event_rows, keyset, policy, *, kind="raw", base=None, vault_keys=None, vault_values=None):
    """The merge of one bucket as the pipeline runs it: (result, counts, every dead letter).

    Every copy is checked, identical copies collapse to the first, contested ids are resolved against the
    base's lines (transforms/merge/event_stages.py), and the firsts and takers meet the base."""
    counts = {"events": {"rows_in": len(event_rows)}}
    tokenizer = Tokenizer(keyset)
    raw = events_table(event_rows)
    events, dead_missing = prepare_events(raw.append_column(DIGEST, body_digests(raw, tokenizer)), CTX)
    events, dead_checked = check_events(events, CTX)
    firsts, contested, duplicates = split_copies(events)
    table = base if base is not None else raw_table(base_rows)
    lines = base_lines(table, kind, policy, AS_OF, CTX, SALT)[0]
    takers, dead_contested, held = resolve_contested(line_verdicts(contested, lines, policy, AS_OF, CTX, SALT), CTX)
    early = pa.concat_tables([dead_missing, dead_checked, dead_contested])
    reasons = collections.Counter(early.column("reason").to_pylist())
    merge_counts(counts, {"events": {"duplicates": duplicates + held, "dead_letters": dict(reasons)}})
    result = merge_bucket(
        table,
        kind,
        pa.concat_tables([without_marks(firsts), takers]),
        vault_keys,
        vault_values,
        tokenizer=tokenizer,
        vault=Vault(keyset),
        policy=policy,
        as_of=AS_OF,
        ctx=CTX,
        salt=SALT,
    )
    merge_counts(counts, result.counts)
    return result, counts, pa.concat_tables([early, result.dead_letter])


def merged_base(table: pa.Table) -> pa.Table:
    """A merge's output as the next merge reads it (with _src_file and _src_row)."""
    n = table.num_rows
    return pa.table(
        list(table.columns) + [pa.array(["base/part-0.parquet"] * n), pa.array(range(1, n + 1), pa.int64())],
        schema=MERGED_ROWS,
    )
