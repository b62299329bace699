"""Builders of the streaming merge's tests: a small base, events, Pub/Sub message records, one window."""

from __future__ import annotations

import datetime as dt
import itertools
import json

from tests.support.rows import AS_OF, CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, person
from transforms.core.deadletter import DeadLetterContext
from transforms.merge.messages import messages_table
from transforms.merge.stream import process_window

CTX = DeadLetterContext("merge", "test-run", "2026-11-30T00:00:00Z")
SALT = "0123456789abcdef0123456789abcdef"
T0 = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)
_MESSAGE_IDS = itertools.count()  # a message id is never reused: a reused one is a Pub/Sub redelivery


def base_rows():
    return [
        person(line_id="L1"),
        person(line_id="L2", name="未知"),
        person(line_id="L3", name=""),
        person(line_id="LT", status="TERMINATED"),
    ]


def event(eid, line, at, **fields):
    row = {
        "event_id": eid,
        "line_id": line,
        "doc_type": "RESIDENT_ID",
        "doc_number": CANARY_NUMBER,
        "name": CANARY_NAME,
        "address": CANARY_ADDRESS,
        "channel": "AGENT",
        "agent_id": "AG00042",
        "verified_by": "FACE_MATCH",
        "registered_at": at,
    }
    row.update(fields)
    return row


def message(body, attrs=None, mid=None, data=None):
    attrs = {"event_id": body["event_id"], "line_id": body["line_id"]} if attrs is None else attrs
    payload = data if data is not None else json.dumps(body, ensure_ascii=False).encode("utf-8")
    return {"message_id": mid, "publish_time": T0, "attributes": attrs, "data": payload}


def window(records, index, seen, keyset, policy):
    from transforms.crypto.tokenize import Tokenizer
    from transforms.crypto.vault import Vault

    for r in records:
        r["message_id"] = r["message_id"] or f"m{next(_MESSAGE_IDS)}"
    return process_window(
        messages_table(records),
        index,
        seen,
        tokenizer=Tokenizer(keyset),
        vault=Vault(keyset),
        policy=policy,
        as_of=AS_OF,
        ctx=CTX,
        salt=SALT,
        source="projects/p/subscriptions/s",
    )


def merged_raw_base(base_rows_: list[dict], keyset, policy):
    """A raw base merged with no events (the bucket merge): its BucketResult (base, vault keys and values)."""
    from tests.support.rows import raw_table
    from transforms.crypto.tokenize import Tokenizer
    from transforms.crypto.vault import Vault
    from transforms.merge.bucket import merge_bucket

    return merge_bucket(
        raw_table(base_rows_),
        "raw",
        None,
        None,
        None,
        tokenizer=Tokenizer(keyset),
        vault=Vault(keyset),
        policy=policy,
        as_of=AS_OF,
        ctx=CTX,
        salt=SALT,
    )


def fold_two_windows(base_rows_: list[dict], w1, w2, keyset, policy):
    """The compaction of two windows over a raw base: ``fold_deltas``'s (merged, keys, values, counts)."""
    import pyarrow as pa

    from transforms.merge.stream import fold_deltas

    base = merged_raw_base(base_rows_, keyset, policy)

    def tag(table, i):
        return table.append_column("_window", pa.array([i] * table.num_rows, pa.int64()))

    return fold_deltas(
        base.base,
        base.vault_keys,
        base.vault_values,
        pa.concat_tables([tag(w1.delta, 0), tag(w2.delta, 1)]),
        pa.concat_tables([tag(w1.vault_keys, 0), tag(w2.vault_keys, 1)]),
        pa.concat_tables([tag(w1.vault_values, 0), tag(w2.vault_values, 1)]),
    )
