"""The streaming merge's core (transforms/merge/stream.py) and its window files, Beam-free.

One window of messages -> delta, vault rows, dead letters, counts; the event-id
rule across windows (a bad copy sent first takes nothing, a different body
under a held id is EVENT_ID_CONFLICT, a redelivered message id is a
duplicate); superseded events; the fold of deltas; the encrypted landing
zone; a window folder and what a restart reads back. Every expectation is
computed from the plan of (message, outcome) a test sends.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.rows import AS_OF, CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, raw_table
from tests.support.stream import CTX, SALT, base_rows, event, fold_two_windows, message, window
from transforms.merge.messages import messages_table
from transforms.merge.stream import LineIndex, SeenKeys, balanced
from transforms.scan.policy import load_policy

CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)


@pytest.fixture(scope="module")
def keyset():
    from transforms.crypto.keyset import Keyset

    return Keyset.generate()


@pytest.fixture(scope="module")
def policy():
    return load_policy(None)


def new_index(policy) -> LineIndex:
    return LineIndex.from_raw(raw_table(base_rows()), policy, AS_OF, CTX, SALT)[0]


def tally(plan: list[tuple[dict, str]]) -> dict:
    """The counts a plan of (message, outcome) must give: outcome applied, superseded, duplicate or a reason."""
    counts = {"messages_in": len(plan), "applied": 0, "superseded": 0, "duplicates": 0, "dead_letters": {}}
    for _, outcome in plan:
        if outcome in ("applied", "superseded"):
            counts[outcome] += 1
        elif outcome == "duplicate":
            counts["duplicates"] += 1
        else:
            counts["dead_letters"][outcome] = counts["dead_letters"].get(outcome, 0) + 1
    counts["dead_letters"] = dict(sorted(counts["dead_letters"].items()))
    return counts


def send(plans: list[list[tuple[dict, str]]], keyset, policy, index=None, seen=None) -> list:
    """Each plan as one window, in order, over one index and one seen state; checks each window's counts."""
    index = index or new_index(policy)
    seen = seen if seen is not None else SeenKeys()
    results = []
    for plan in plans:
        result = window([m for m, _ in plan], index, seen, keyset, policy)
        assert result.counts == tally(plan) and balanced(result.counts)
        seen.add(result.new_keys)
        results.append(result)
    return results


def dead_by_reason(result) -> dict[str, list]:
    got: dict[str, list] = {}
    for row in result.dead_letter.to_pylist():
        got.setdefault(row["reason"], []).append(row["event_id"])
    return got


def test_one_window_sorts_every_message_into_exactly_one_outcome(keyset, policy):
    e1 = event("E1", "L1", "2026-11-30T10:00:00")
    plan = [
        (message(e1, mid="a"), "applied"),
        (message(dict(e1), mid="again"), "duplicate"),  # published twice: the same body under a held id
        (message(dict(e1), mid="a"), "duplicate"),  # redelivered: the same Pub/Sub message id
        (message(event("E2", "L1", "2026-11-30T09:00:00")), "superseded"),  # older than E1
        (message(event("E3", "L2", "2026-11-30T11:00:00+08:00")), "applied"),  # 03:00 UTC
        (message(event("E4", "LT", "2026-11-30T10:00:00")), "LINE_TERMINATED"),
        (message(event("E5", "NOPE", "2026-11-30T10:00:00")), "UNKNOWN_LINE"),
        (message(event("E6", "L3", "2026-11-30T10:00:00", name="未知")), "NAME_PLACEHOLDER"),
        (message(event("E7", "L3", "2026-11-30T10:00:00"), data=b"{not json"), "MESSAGE_MALFORMED"),
        (message(event("E8", "L3", "2026-11-30T10:00:00"), attrs={"line_id": "L3"}), "ATTRIBUTE_MISSING"),
        (
            message(event("E9", "L3", "2026-11-30T10:00:00"), attrs={"event_id": "E9", "line_id": "L1"}),
            "ATTRIBUTE_MISMATCH",
        ),
        (message(event("E10", "L3", "2026-11-30T10:00:00"), data=b"x" * (4 << 20)), "MESSAGE_TOO_LARGE"),
        (message(event("E11", "L3", "2026-11-30T10:00:00", registered_at="yesterday")), "BAD_TIMESTAMP"),
        (message(event("E12", "L3", "2026-11-30T10:00:00", channel="PIGEON")), "BAD_ENUM"),
        (message(event("E13", "L3", "2026-11-30T10:00:00", shoe_size="42")), "applied"),  # a field outside the contract
        (message(event("E13", "L3", "2026-11-30T10:00:00")), "duplicate"),  # ignored, as the batch reader ignores it
    ]
    [result] = send([plan], keyset, policy)
    expected_dead: dict[str, list] = {}
    for m, outcome in plan:
        if outcome not in ("applied", "superseded", "duplicate"):
            expected_dead.setdefault(outcome, []).append(m["attributes"].get("event_id"))  # the attribute names it
    assert dead_by_reason(result) == expected_dead
    bodies = [(json.loads(m["data"]), o) for m, o in plan if o == "applied"]
    latest = {}
    for body, _ in sorted(bodies, key=lambda b: b[0]["registered_at"]):
        latest[body["line_id"]] = body["event_id"]
    delta = {r["line_id"]: r for r in result.delta.to_pylist()}
    assert {k: r["registration_event_id"] for k, r in delta.items()} == latest
    assert delta["L2"]["registered_at"] == dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.timezone.utc)
    assert delta["L1"]["identity_status"] == "COMPLETE" and delta["L1"]["name_mask"] == "金**"
    assert delta["L1"]["registration_agent_id"] == "AG00042" and delta["L1"]["agent_id"] == "AG00001"
    assert result.counters["registrations"] == len(latest) and result.counters["by_channel"] == {"AGENT": len(latest)}
    assert sorted(set(result.vault_values.column("line_id").to_pylist())) == sorted(latest)
    text = json.dumps(result.dead_letter.to_pylist(), ensure_ascii=False, default=str) + str(result.delta.to_pylist())
    assert not [c for c in CANARIES if c in text]
    # what a later window must know: every message id once (the redelivery not again), the ids taken
    ids = [m["message_id"] for m, _ in plan]
    assert result.seen.column("message_id").to_pylist() == list(dict.fromkeys(ids)) and len(result.new_keys) == len(
        set(ids)
    )
    takers = {json.loads(m["data"])["event_id"] for m, o in plan if o in ("applied", "superseded")}
    assert sorted(result.taken.column("event_id").to_pylist()) == sorted(takers)
    assert all(d.startswith(keyset.primary_join_version + ":") for d in result.taken.column("digest").to_pylist())


def test_the_vectorised_body_parse_matches_the_line_parser():
    """Flat JSON objects go through pyarrow.json in one pass; everything else (and any batch pyarrow refuses)
    through the batch merge's per-line parser: same raw events, same bad rows, whatever the mix."""
    import numpy as np

    from transforms.core.rows import parse_json_lines
    from transforms.merge.messages import flat_json, parse_bodies

    plain = [json.dumps(event(f"E{i}", f"L{i}", "2026-11-30T10:00:00"), ensure_ascii=False).encode() for i in range(4)]
    escaped = json.dumps(
        event("E8", "L8", "2026-11-30T10:00:00", extra="x")
    ).encode()  # \uXXXX escapes, a key the contract ignores
    tricky = [
        b'{"event_id":"E20","line_id":"L1","x":{"y":1}}',  # nested: not flat, per line (a key the contract ignores)
        b'{"event_id":"E21","line_id":"L1","x":-Inf}',  # RapidJSON reads -Inf, json.loads does not: MALFORMED
        b'{"event_id":"E22",\n"line_id":"L1"}',  # a newline: per line
        b'{"event_id":"E23","line_id":"L1"} null',  # two documents: MALFORMED
        b"{not json",  # MALFORMED
        b'{"event_id":"E24","line_id":"L1","name":"' + b"a" * 5000 + b'"}',  # over the field limit
    ]
    number = b'{"event_id":"E25","line_id":7}'  # a number as contract text: pyarrow refuses the batch
    unsafe = b'{"event_id":"E26","line_id":"L1","x":NaN}'

    assert flat_json(pa.array(plain + [escaped, number, unsafe] + tricky, pa.binary())).tolist() == (
        [True] * 6 + [False] * 7
    )

    def both(bodies):
        rows = np.arange(len(bodies), dtype=np.int64) * 3 + 1
        fast = parse_bodies(rows, pa.array(bodies, pa.binary()), 4096)
        slow = parse_json_lines(list(zip(rows.tolist(), bodies)), "", 4096)
        assert fast[0].to_pydict() == slow[0].to_pydict()
        assert [(b.source_row, b.field, b.detail, b.key) for b in fast[1]] == [
            (b.source_row, b.field, b.detail, b.key) for b in slow[1]
        ]
        return fast

    raw, bad = both(plain + [escaped])  # all flat: the vectorised pass alone
    assert raw.column("event_id").to_pylist() == ["E0", "E1", "E2", "E3", "E8"] and bad == []
    assert raw.column("name").to_pylist() == [CANARY_NAME] * 5
    mixed = [
        plain[0],
        tricky[0],
        plain[1],
        tricky[1],
        tricky[2],
        plain[2],
        tricky[3],
        tricky[4],
        unsafe,
        tricky[5],
        escaped,
    ]
    raw, bad = both(mixed)
    assert raw.column("event_id").to_pylist() == ["E0", "E20", "E1", "E22", "E2", "E26", "E8"]
    assert raw.column("_src_row").to_pylist() == [1, 4, 7, 13, 16, 25, 31]  # in message order
    assert [b.source_row for b in bad] == [10, 19, 22, 28]  # -Inf, two documents, not JSON, over the limit
    raw, bad = both(plain + [number])  # pyarrow refuses the batch: all per line, where a number becomes its text
    assert raw.column("line_id").to_pylist() == ["L0", "L1", "L2", "L3", "7"] and bad == []


@pytest.mark.parametrize("windows", [1, 2])
def test_a_bad_copy_sent_first_does_not_take_the_id(keyset, policy, windows):
    """The bug: a truncated body and an attribute/body mismatch under P1 used to eat the valid P1 (4 in -> 0
    applied + 2 duplicates + 2 dead letters). Now they are dead letters, and the valid P1 is applied."""
    p1 = event("P1", "L1", "2026-11-30T10:00:00")
    body = json.dumps(p1, ensure_ascii=False).encode("utf-8")
    bad = [
        (message(p1, data=body[: len(body) // 2]), "MESSAGE_MALFORMED"),
        (message({**p1, "line_id": "L2"}, attrs={"event_id": "P1", "line_id": "L1"}), "ATTRIBUTE_MISMATCH"),
    ]
    good = [(message(dict(p1)), "applied"), (message(dict(p1)), "duplicate")]
    plans = [bad + good] if windows == 1 else [bad, good]
    results = send(plans, keyset, policy)
    total = {k: sum(r.counts[k] for r in results) for k in ("messages_in", "applied", "duplicates")}
    assert total == {"messages_in": 4, "applied": 1, "duplicates": 1}
    assert sorted(d for r in results for d in dead_by_reason(r)) == ["ATTRIBUTE_MISMATCH", "MESSAGE_MALFORMED"]
    assert results[-1].delta.column("registration_event_id").to_pylist() == ["P1"]


@pytest.mark.parametrize("windows", [1, 2])
def test_a_policy_invalid_copy_then_the_corrected_one(keyset, policy, windows):
    p1 = event("P1", "L1", "2026-11-30T10:00:00")
    plans = [
        [(message({**p1, "name": "未知"}), "NAME_PLACEHOLDER"), (message({**p1, "line_id": "LT"}), "LINE_TERMINATED")],
        [(message(dict(p1)), "applied")],
    ]
    results = send([plans[0] + plans[1]] if windows == 1 else plans, keyset, policy)
    assert [r["registration_event_id"] for r in results[-1].delta.to_pylist()] == ["P1"]


def test_another_body_under_a_held_id_is_a_conflict(keyset, policy):
    p1, p2 = event("P1", "L1", "2026-11-30T10:00:00"), event("P2", "L2", "2026-11-30T10:00:00", channel="STORE")
    first = [
        (message(p1), "applied"),
        (message(p2), "applied"),
        (message({**p2, "channel": "ONLINE"}), "EVENT_ID_CONFLICT"),  # same window, another body
    ]
    second = [
        (message(dict(p1)), "duplicate"),
        (message({**p1, "registered_at": "2026-11-30T11:00:00"}), "EVENT_ID_CONFLICT"),  # valid, another body
        (message({**p1, "name": "未知"}), "EVENT_ID_CONFLICT"),  # invalid for its line, another body
        (message({**p1, "registered_at": "yesterday"}), "BAD_TIMESTAMP"),  # fails the row checks: its own reason
    ]
    w1, w2 = send([first, second], keyset, policy)
    assert [r["registration_channel"] for r in w1.delta.to_pylist() if r["line_id"] == "L2"] == ["STORE"]
    assert w2.delta.num_rows == 0 and w2.taken.num_rows == 0
    letters = [r for r in w1.dead_letter.to_pylist() + w2.dead_letter.to_pylist() if r["reason"] == "EVENT_ID_CONFLICT"]
    assert sorted(r["event_id"] for r in letters) == ["P1", "P1", "P2"]
    assert all(r["source_file"].startswith("projects/p/subscriptions/s/") for r in letters)


def test_a_held_digest_still_matches_after_a_join_key_rotation(policy):
    from transforms.crypto.keyset import Keyset

    keyset = Keyset.generate()
    p1 = event("P1", "L1", "2026-11-30T10:00:00")
    index, seen = new_index(policy), SeenKeys()
    [w1] = send([[(message(p1), "applied")]], keyset, policy, index, seen)
    before = keyset.primary_join_version
    keyset.rotate_join()
    assert keyset.primary_join_version != before
    later = [(message(dict(p1)), "duplicate"), (message({**p1, "channel": "ONLINE"}), "EVENT_ID_CONFLICT")]
    send([later], keyset, policy, index, seen)
    assert w1.taken.column("digest")[0].as_py().startswith(before + ":")


def test_redelivered_message_ids_count_once_across_windows(keyset, policy):
    """A redelivery (the same Pub/Sub message id) is a duplicate whatever the message was, a dead letter too."""
    e1 = event("E1", "L1", "2026-11-30T10:00:00")
    first = [(message(e1, mid="x"), "applied"), (message(e1, mid="y", data=b"{oops"), "MESSAGE_MALFORMED")]
    second = [(message(dict(e1), mid="x"), "duplicate"), (message(dict(e1), mid="y", data=b"{oops"), "duplicate")]
    w1, w2 = send([first, second], keyset, policy)
    assert w2.seen.num_rows == 0 and w2.dead_letter.num_rows == 0


def test_duplicates_and_older_events_across_windows(keyset, policy):
    from transforms.crypto.vault import Vault

    e1 = event("E1", "L1", "2026-11-30T10:00:00")
    first = [(message(e1), "applied")]
    second = [
        (message(dict(e1), mid="redelivered"), "duplicate"),  # another publish of the same body
        (message(event("E0", "L1", "2026-11-30T08:00:00")), "superseded"),  # older than window 1's E1
        (message(event("E9", "L1", "2026-11-30T10:00:00")), "applied"),  # same time, larger id
        (message(event("E1b", "L2", "2026-11-30T10:00:00")), "applied"),
    ]
    _, w2 = send([first, second], keyset, policy)
    assert sorted((r["line_id"], r["registration_event_id"]) for r in w2.delta.to_pylist()) == [
        ("L1", "E9"),
        ("L2", "E1b"),
    ]
    opened = Vault(keyset).open(w2.vault_keys, w2.vault_values, "L1")
    assert opened["name"] == CANARY_NAME and opened["doc_number"] == CANARY_NUMBER


def test_fold_takes_the_latest_registration_per_line(keyset, policy):
    from transforms.crypto.vault import Vault

    w1, w2 = send(
        [
            [(message(event("E1", "L1", "2026-11-30T10:00:00")), "applied")]
            + [(message(event("E2", "L2", "2026-11-30T10:00:00")), "applied")],
            [(message(event("E3", "L1", "2026-11-30T11:00:00", name="王五")), "applied")],
        ],
        keyset,
        policy,
    )
    merged, keys, values, counts = fold_two_windows(base_rows(), w1, w2, keyset, policy)
    rows = {r["line_id"]: r for r in merged.to_pylist()}
    assert [rows[k]["registration_event_id"] for k in ("L1", "L2", "L3", "LT")] == ["E3", "E2", None, None]
    assert counts == {"delta_rows": 3, "lines_registered": 2, "superseded_or_unknown": 1, "lines_out": 4}
    assert keys.num_rows == 4 and sorted(keys.column("line_id").to_pylist()) == ["L1", "L2", "L3", "LT"]
    assert Vault(keyset).open(keys, values, "L1")["name"] == "王五"
    kept = Vault(keyset).open(keys, values, "L3")  # the base's own values, sealed by the fold's base step
    assert "name" not in kept and kept["address"] == "北京市朝阳区建国路88号"


def test_landing_zone_is_encrypted_and_bound_to_its_name(tmp_path, keyset):
    from pipelines.io.landing import LandingError, LandingZone

    zone = LandingZone(str(tmp_path / "landing"), keyset)
    table = messages_table(
        [
            message(event("E1", "L1", "2026-11-30T10:00:00"), mid="m1"),
            message(event("E2", "L1", "2026-11-30T10:00:00"), mid="m2", data=b"y" * 300_000),
        ]
    )
    name = zone.land(table)
    assert zone.pending() == [name]
    back = zone.read(name)
    assert back.equals(table) and back.column("data")[1].as_py() is None and back.column("size")[1].as_py() == 300_000
    blob = (tmp_path / "landing" / name).read_bytes()
    for canary in (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS):
        assert canary.encode() not in blob
    assert oct(os.stat(tmp_path / "landing" / name).st_mode & 0o777) == "0o600"
    moved = name.replace("-", "-9", 1)
    os.rename(tmp_path / "landing" / name, tmp_path / "landing" / moved)
    with pytest.raises(LandingError, match="cannot be opened"):
        zone.read(moved)
    (tmp_path / "landing" / ".tmp-crashed").write_bytes(b"partial")
    assert zone.pending() == [moved] and LandingZone.count(moved) == 2
    zone.clean()
    assert not (tmp_path / "landing" / ".tmp-crashed").exists()


def test_window_folder_round_trip(tmp_path, keyset, policy):
    """write_window commits one folder (message ids, ids taken, delta); recover() names it and cleans up."""
    from pipelines.io.landing import LandingZone
    from pipelines.io.windows import IDS_SCHEMA, SEEN_SCHEMA, committed_windows, recover, write_window

    records = [message(event("E1", "L1", "2026-11-30T10:00:00")), message(event("E2", "NOPE", "2026-11-30T10:00:00"))]
    [result] = send([[(records[0], "applied"), (records[1], "UNKNOWN_LINE")]], keyset, policy)
    zone = LandingZone(str(tmp_path / "landing"), keyset)
    landed = zone.land(messages_table([message(event("E1", "L1", "2026-11-30T10:00:00"), mid="m0")]))
    info = {"seq": 1, "landed_files": [landed], "counts": result.counts}
    write_window(str(tmp_path / "deltas"), "w-000001", result, None, info)
    os.makedirs(tmp_path / "deltas" / ".tmp-w-000002-dead")
    state = recover(str(tmp_path), zone)
    folder = str(tmp_path / "deltas" / "w-000001")
    assert state["next_seq"] == 2 and state["windows"] == [folder] and state["removed_landed"] == 1
    assert state["totals"]["messages_in"] == len(records)
    assert zone.pending() == [] and not (tmp_path / "deltas" / ".tmp-w-000002-dead").exists()
    assert committed_windows(str(tmp_path / "deltas")) == [folder]
    seen = pq.read_table(os.path.join(folder, "seen.parquet"))
    assert seen.schema.equals(SEEN_SCHEMA) and seen.column("message_id").to_pylist() == [
        r["message_id"] for r in records
    ]
    ids = pq.read_table(os.path.join(folder, "ids.parquet"))
    assert ids.schema.equals(IDS_SCHEMA) and ids.to_pylist() == result.taken.to_pylist()
    delta = pq.read_table(os.path.join(folder, "delta.parquet"))
    assert delta.column("registration_event_id").to_pylist() == ["E1"]
    for name in os.listdir(folder):
        if os.path.isfile(os.path.join(folder, name)):
            assert oct(os.stat(os.path.join(folder, name)).st_mode & 0o777) == "0o600", name


def test_compact_takes_the_streams_as_of_date_by_default(tmp_path):
    import datetime as dt
    import json

    from pipelines.compact_plan import deltas_dir as _deltas_dir, stream_as_of as _stream_as_of

    stream = tmp_path / "stream"
    (stream / "deltas").mkdir(parents=True)
    assert _stream_as_of(_deltas_dir(str(stream))) is None  # no manifest yet: the caller falls back to today
    (stream / "manifest.json").write_text(json.dumps({"step": "merge", "as_of": "2026-12-03"}), encoding="utf-8")
    assert _stream_as_of(_deltas_dir(str(stream))) == dt.date(2026, 12, 3)
    assert _stream_as_of(_deltas_dir(str(stream / "deltas"))) == dt.date(2026, 12, 3)
