"""The local streaming merge's line store (pipelines/io/line_store.py): built from a base batch by batch,
reused, rebuilt, updated once per committed window, caught up from the windows after a crash.

The in-memory index (``LineIndex.from_raw`` / ``from_merged`` over the whole base read at once: the batch
merge's classification and de-duplication) is the oracle a store built from small batches must equal.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.support.rows import AS_OF, CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, person, raw_table
from tests.support.stream import CTX, SALT, base_rows, event, merged_raw_base, message, window
from transforms.merge.stream import INDEX_SCHEMA, LineIndex

CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)


@pytest.fixture(scope="module")
def keyset():
    from transforms.crypto.keyset import Keyset

    return Keyset.generate()


def write_raw(path: str, rows: list[dict]) -> str:
    pq.write_table(raw_table(rows).drop_columns(["_src_file", "_src_row"]), path)
    return path


def open_for(folder, paths, policy, as_of=AS_OF, newest_seq=0, batch_size=2):
    from pipelines.io.line_store import open_store

    return open_store(str(folder), paths, "utf-8", policy, as_of, CTX, SALT, newest_seq, batch_size)


def sorted_rows(table: pa.Table) -> list[dict]:
    return table.sort_by("line_id").to_pylist()


def raw_base(tmp_path) -> list[str]:
    """Two files whose line ids repeat across files and read batches: later updated_at wins, a tie to the row
    later in the input; a row the reader refuses; a row without a line id; canary identity values."""
    a = [
        person(line_id="L1", updated_at="2024-01-01T00:00:00", msisdn="13800000001"),
        person(line_id="L2", updated_at="2024-05-01T00:00:00", msisdn="13800000002", name=CANARY_NAME),
        person(line_id="L3", updated_at="2024-02-01T00:00:00", msisdn="13800000003"),
        person(line_id="L4", updated_at="2024-02-01T00:00:00", msisdn="13800000004", doc_number=CANARY_NUMBER),
        person(line_id="L4", updated_at="2024-01-01T00:00:00", msisdn="13800000005"),
        person(line_id="L5", name="x" * 5000),  # over the field limit: refused by the reader
        person(line_id=None),  # no line id: a dead letter of the classification
        person(line_id="LT", status="TERMINATED", address=CANARY_ADDRESS),
    ]
    b = [
        person(line_id="L1", updated_at="2024-03-01T00:00:00", msisdn="13900000001"),  # later: wins
        person(line_id="L2", updated_at="2024-01-01T00:00:00", msisdn="13900000002"),  # earlier: loses
        person(line_id="L3", updated_at="2024-02-01T00:00:00", msisdn="13900000003"),  # a tie: later in input wins
        person(line_id="L6", updated_at=None, name=""),
    ]
    return [write_raw(str(tmp_path / "a.parquet"), a), write_raw(str(tmp_path / "b.parquet"), b)]


def test_a_store_built_batch_by_batch_equals_the_whole_base_index(tmp_path, policy):
    from pipelines.io.windows import read_base

    paths = raw_base(tmp_path)
    store, built = open_for(tmp_path / "state", paths, policy)
    kind, table, reader_dead, _ = read_base(paths, "utf-8", CTX)
    index, dead = LineIndex.from_raw(table, policy, AS_OF, CTX, SALT)
    assert built and kind == "raw" and store.summary["kind"] == "raw"
    assert store.summary["lines"] == index.lines.num_rows
    assert store.summary["dead_letters"] == reader_dead.num_rows + dead.num_rows
    assert store.summary["duplicates_across_batches"] > 0  # the batches did split the repeats
    everything = index.lines.column("line_id")
    got = store.subset(pa.concat_arrays([everything.combine_chunks(), pa.array(["NOPE", None], pa.string())]))
    assert got.schema.equals(INDEX_SCHEMA) and sorted_rows(got) == sorted_rows(index.lines)
    assert sorted_rows(store.subset(pa.array(["L3", "L1"]))) == sorted_rows(index.subset(pa.array(["L3", "L1"])))
    store.close()
    blobs = b"".join(open(os.path.join(tmp_path / "state", n), "rb").read() for n in os.listdir(tmp_path / "state"))
    assert not [c for c in CANARIES if c.encode() in blobs]  # no identity value, in any file of the store


def test_a_merged_base_is_carried(tmp_path, policy, keyset):
    from pipelines.io.windows import read_base

    merged = merged_raw_base(base_rows(), keyset, policy).base
    l1 = pc.equal(merged.column("line_id"), "L1")
    for name, value in (
        ("registered_at", dt.datetime(2026, 11, 30, 10, tzinfo=dt.timezone.utc)),
        ("registration_event_id", "B1"),
    ):
        column = merged.column(name)
        merged = merged.set_column(
            merged.schema.get_field_index(name), name, pc.if_else(l1, pa.scalar(value, column.type), column)
        )
    again = merged.filter(l1)  # L1 twice: a DUPLICATE_LINE_ID
    path = str(tmp_path / "merged.parquet")
    pq.write_table(pa.concat_tables([merged, again]), path)
    store, built = open_for(tmp_path / "state", [path], policy)
    _, table, _, _ = read_base([path], "utf-8", CTX)
    index, dead = LineIndex.from_merged(table, CTX)
    assert built and store.summary["kind"] == "merged" and dead.num_rows == 1
    assert store.summary == {**store.summary, "lines": index.lines.num_rows, "dead_letters": dead.num_rows}
    ids = index.lines.column("line_id").combine_chunks()
    assert sorted_rows(store.subset(ids)) == sorted_rows(index.lines)
    assert store.subset(ids).column("name_token").null_count < len(ids)  # tokens are carried
    # a window's registration counts only when newer than the base's own (B1 at 10:00)
    assert store.apply(registration("L1", "E0", "2026-11-30T09:00:00+00:00"), 1)
    assert store.subset(pa.array(["L1"])).column("registration_event_id").to_pylist() == ["B1"]
    assert store.apply(registration("L1", "C1", "2026-11-30T10:00:00+00:00"), 2)
    assert store.subset(pa.array(["L1"])).column("registration_event_id").to_pylist() == ["C1"]
    store.close()


def test_reused_while_its_inputs_are_the_same_rebuilt_when_they_change(tmp_path, policy):
    paths = raw_base(tmp_path)
    folder = tmp_path / "state"
    store, built = open_for(folder, paths, policy)
    store.close()
    for changed, kwargs in (
        (False, {}),
        (True, {"as_of": AS_OF + dt.timedelta(days=1)}),
        (True, {"policy": dataclasses.replace(policy, version="test-other", digest="0" * 64)}),
    ):
        store, built = open_for(folder, paths, **{"policy": policy, **kwargs})
        assert built == changed, kwargs
        store.close()
    store, built = open_for(folder, paths, policy)  # back to the first inputs: built again
    assert built
    store.close()
    os.utime(paths[1], ns=(os.stat(paths[1]).st_atime_ns, os.stat(paths[1]).st_mtime_ns + 10**9))  # touched
    store, built = open_for(folder, paths, policy)
    assert built
    store.close()
    store, built = open_for(folder, paths[:1], policy)  # one file fewer
    assert built and store.summary["files"] == [os.path.abspath(paths[0])]
    store.close()
    (folder / "lines.sqlite.tmp-dead").write_bytes(b"a build that was killed")
    (folder / "lines.sqlite").write_bytes(b"not a database")
    store, built = open_for(folder, paths[:1], policy)
    assert built and not (folder / "lines.sqlite.tmp-dead").exists()
    store.close()


def test_files_are_private_whatever_the_umask(tmp_path, policy):
    old = os.umask(0)
    try:
        store, _ = open_for(tmp_path / "state", raw_base(tmp_path), policy)
        store.apply(registration("L1", "E1", "2026-11-30T10:00:00+00:00"), 1)
        names = os.listdir(tmp_path / "state")
        assert {"lines.sqlite", "lines.sqlite-wal"} <= set(names)
        for name in names:
            assert oct(os.stat(tmp_path / "state" / name).st_mode & 0o777) == "0o600", name
        assert oct(os.stat(tmp_path / "state").st_mode & 0o777) == "0o700"
        store.close()
    finally:
        os.umask(old)


def registration(line_id: str, event_id: str, at: str) -> pa.Table:
    when = pa.array([dt.datetime.fromisoformat(at)], pa.timestamp("us", tz="UTC"))
    return pa.table({"line_id": [line_id], "registered_at": when, "registration_event_id": [event_id]})


def test_apply_is_idempotent_per_window_and_latest_wins(tmp_path, policy):
    from transforms.merge.stream import IDS_SCHEMA, SEEN_SCHEMA

    paths = raw_base(tmp_path)
    store, _ = open_for(tmp_path / "state", paths, policy)
    now = dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)
    seen = pa.table(
        [pa.array(["m-old", "m-new"]), pa.array([now - dt.timedelta(days=8), now], SEEN_SCHEMA.field(1).type)],
        schema=SEEN_SCHEMA,
    )
    taken = pa.table([pa.array(["E2"]), pa.array(["j1:digest"])], schema=IDS_SCHEMA)
    assert store.apply(registration("L1", "E2", "2026-11-30T10:00:00+00:00"), 1, taken=taken, seen=seen)
    assert not store.apply(registration("L1", "E9", "2026-11-30T12:00:00+00:00"), 1)  # window 1 again: nothing
    assert store.apply(registration("L1", "E1", "2026-11-30T09:00:00+00:00"), 2)  # older: not taken
    assert store.apply(registration("L1", "E3", "2026-11-30T10:00:00+00:00"), 3)  # same time, larger id: taken
    assert store.last_seq == 3
    assert store.subset(pa.array(["L1"])).column("registration_event_id").to_pylist() == ["E3"]
    assert store.holders(["E2", "E3", "NOPE"]) == {"E2": "j1:digest"}
    assert store.seen_messages(pa.array(["m-old", "m-new", "m-other", None])).tolist() == [False, True, False, False]
    store.close()
    store, built = open_for(tmp_path / "state", paths, policy, newest_seq=3)
    assert not built and store.last_seq == 3 and store.holders(["E2"]) == {"E2": "j1:digest"}
    store.close()
    store, built = open_for(tmp_path / "state", paths, policy, newest_seq=2)  # window 3 is gone
    assert built and store.last_seq == 0 and store.holders(["E2"]) == {}
    store.close()


def test_a_crash_between_the_commit_and_the_store_changes_nothing(tmp_path, policy, keyset):
    """Window 1 committed, the process killed before the store took it: the next start replays it, and window 2
    sees exactly what it would have seen (its redelivery, its duplicate, its older event)."""
    from pipelines.io.windows import committed_windows, replay, write_window

    base = write_raw(str(tmp_path / "base.parquet"), base_rows())
    deltas = str(tmp_path / "deltas")
    e1 = event("E1", "L1", "2026-11-30T10:00:00")
    first = [message(e1, mid="w1-a"), message(event("E2", "L2", "2026-11-30T10:00:00"), mid="w1-b")]
    plan = [
        (message(dict(e1), mid="w1-a"), "duplicates"),  # redelivered
        (message(dict(e1), mid="w2-a"), "duplicates"),  # published again: the same body
        (message({**e1, "channel": "ONLINE"}, mid="w2-b"), "EVENT_ID_CONFLICT"),  # another body
        (message(event("E0", "L1", "2026-11-30T08:00:00"), mid="w2-c"), "superseded"),  # older than window 1's E1
    ]
    second = [m for m, _ in plan]
    results = {}
    for crash in (False, True):
        state = tmp_path / f"state-{crash}"
        store, _ = open_for(state, [base], policy)
        w1 = window([dict(m) for m in first], store, store, keyset, policy)
        folder = f"{deltas}-{crash}"
        write_window(folder, "w-000001", w1, None, {"seq": 1, "counts": w1.counts})
        if not crash:
            store.apply(w1.delta, 1, taken=w1.taken, seen=w1.seen)
        store.close()
        store, built = open_for(state, [base], policy, newest_seq=1)
        assert not built and replay(store, committed_windows(folder)) == int(crash)
        assert replay(store, committed_windows(folder)) == 0  # once only
        results[crash] = window([dict(m) for m in second], store, store, keyset, policy)
        store.close()
    assert results[True].counts == results[False].counts
    outcomes = [o for _, o in plan]
    assert results[True].counts == {
        "messages_in": len(plan),
        "applied": outcomes.count("applied"),
        "superseded": outcomes.count("superseded"),
        "duplicates": outcomes.count("duplicates"),
        "dead_letters": {"EVENT_ID_CONFLICT": outcomes.count("EVENT_ID_CONFLICT")},
    }
    assert json.dumps(results[True].dead_letter.to_pylist(), default=str) == json.dumps(
        results[False].dead_letter.to_pylist(), default=str
    )
