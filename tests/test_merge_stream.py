"""The streaming merge's core (transforms/merge/stream.py), its landing zone and its Beam composite.

Beam-free: one window of messages -> delta, vault rows, dead letters, counts;
dedup across windows; superseded events; the fold of deltas. Then the
encrypted landing zone, and MergeStreamWindows on the local runner with
TestPipeline + assert_that (two fixed windows, a duplicate across them).
"""

from __future__ import annotations

import datetime as dt
import json
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that

from tests.support.rows import AS_OF, CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, RUNNER, raw_table
from tests.support.stream import CTX, SALT, base_rows, event, fold_two_windows, message, window
from transforms.merge.stream import LineIndex, SeenKeys, balanced
from transforms.merge.messages import messages_table
from transforms.scan.policy import load_policy


@pytest.fixture(scope="module")
def keyset():
    from transforms.crypto.keyset import Keyset

    return Keyset.generate()


@pytest.fixture(scope="module")
def policy():
    return load_policy(None)


def test_one_window_sorts_every_message_into_exactly_one_outcome(keyset, policy):
    index, base_dead = LineIndex.from_raw(raw_table(base_rows()), policy, AS_OF, CTX, SALT)
    assert index.lines.num_rows == 4 and base_dead.num_rows == 0
    records = [
        message(event("E1", "L1", "2026-11-30T10:00:00")),  # applied
        message(event("E1", "L1", "2026-11-30T10:00:00"), mid="again"),  # redelivered: duplicate
        message(event("E2", "L1", "2026-11-30T09:00:00")),  # older than E1: superseded
        message(event("E3", "L2", "2026-11-30T11:00:00+08:00")),  # applied (03:00 UTC)
        message(event("E4", "LT", "2026-11-30T10:00:00")),  # LINE_TERMINATED
        message(event("E5", "NOPE", "2026-11-30T10:00:00")),  # UNKNOWN_LINE
        message(event("E6", "L3", "2026-11-30T10:00:00", name="未知")),  # the policy: NAME_PLACEHOLDER
        message(event("E7", "L3", "2026-11-30T10:00:00"), data=b"{not json"),  # MESSAGE_MALFORMED
        message(event("E8", "L3", "2026-11-30T10:00:00"), attrs={"line_id": "L3"}),  # ATTRIBUTE_MISSING
        message(event("E9", "L3", "2026-11-30T10:00:00"), attrs={"event_id": "E9", "line_id": "L1"}),  # MISMATCH
        message(event("E10", "L3", "2026-11-30T10:00:00"), data=b"x" * (1 << 20)),  # MESSAGE_TOO_LARGE
        message(event("E11", "L3", "2026-11-30T10:00:00", registered_at="yesterday")),  # BAD_TIMESTAMP
        message(event("E12", "L3", "2026-11-30T10:00:00", channel="PIGEON")),  # BAD_ENUM
    ]
    result = window(records, index, SeenKeys(), keyset, policy)
    expected_dead = {
        "LINE_TERMINATED": ["E4"],
        "UNKNOWN_LINE": ["E5"],
        "NAME_PLACEHOLDER": ["E6"],
        "MESSAGE_MALFORMED": ["E7"],
        "ATTRIBUTE_MISSING": ["E8"],
        "ATTRIBUTE_MISMATCH": ["E9"],
        "MESSAGE_TOO_LARGE": ["E10"],
        "BAD_TIMESTAMP": ["E11"],
        "BAD_ENUM": ["E12"],
    }
    dead = result.dead_letter.to_pylist()
    got = {}
    for row in dead:
        got.setdefault(row["reason"], []).append(row["event_id"])
    expected_dead["ATTRIBUTE_MISSING"] = [None]  # no event_id attribute: the dead letter cannot name it
    assert got == expected_dead
    assert result.counts == {
        "messages_in": 13,
        "applied": 2,
        "superseded": 1,
        "duplicates": 1,
        "dead_letters": {k: len(v) for k, v in sorted(expected_dead.items())},
    }
    assert balanced(result.counts)
    delta = {r["line_id"]: r for r in result.delta.to_pylist()}
    assert sorted(delta) == ["L1", "L2"]
    assert delta["L1"]["registration_event_id"] == "E1" and delta["L2"]["registration_event_id"] == "E3"
    assert delta["L2"]["registered_at"] == dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.timezone.utc)
    assert delta["L1"]["identity_status"] == "COMPLETE" and delta["L1"]["name_mask"] == "金**"
    assert delta["L1"]["registration_agent_id"] == "AG00042" and delta["L1"]["agent_id"] == "AG00001"
    assert result.counters == {
        "registrations": 2,
        "by_region": {"110105": 2},
        "by_channel": {"AGENT": 2},
        "by_agent": {"AG00042": 2},
    }
    # the vault holds the two lines' four values each; nothing else carries them
    assert sorted(set(result.vault_values.column("line_id").to_pylist())) == ["L1", "L2"]
    assert result.vault_values.num_rows == 8
    text = json.dumps(dead, ensure_ascii=False, default=str) + str(result.delta.to_pylist())
    for canary in (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS):
        assert canary not in text
    assert len(result.new_keys) == 12  # every key once; the repeat is not recorded again


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


def test_duplicates_and_older_events_across_windows(keyset, policy):
    from transforms.crypto.vault import Vault

    index, _ = LineIndex.from_raw(raw_table(base_rows()), policy, AS_OF, CTX, SALT)
    seen = SeenKeys()
    first = window([message(event("E1", "L1", "2026-11-30T10:00:00"))], index, seen, keyset, policy)
    seen.add(first.new_keys)
    second = window(
        [
            message(event("E1", "L1", "2026-11-30T10:00:00"), mid="redelivered"),  # duplicate
            message(event("E0", "L1", "2026-11-30T08:00:00")),  # older than window 1
            message(event("E9", "L1", "2026-11-30T10:00:00")),  # same time, larger id
            message(event("E1b", "L2", "2026-11-30T10:00:00")),
        ],
        index,
        seen,
        keyset,
        policy,
    )
    assert first.counts["applied"] == 1
    assert second.counts == {"messages_in": 4, "applied": 2, "superseded": 1, "duplicates": 1, "dead_letters": {}}
    assert sorted((r["line_id"], r["registration_event_id"]) for r in second.delta.to_pylist()) == [
        ("L1", "E9"),
        ("L2", "E1b"),
    ]
    opened = Vault(keyset).open(second.vault_keys, second.vault_values, "L1")
    assert opened["name"] == CANARY_NAME and opened["doc_number"] == CANARY_NUMBER


def test_fold_takes_the_latest_registration_per_line(keyset, policy):
    index, _ = LineIndex.from_raw(raw_table(base_rows()), policy, AS_OF, CTX, SALT)
    seen = SeenKeys()
    w1 = window(
        [message(event("E1", "L1", "2026-11-30T10:00:00")), message(event("E2", "L2", "2026-11-30T10:00:00"))],
        index,
        seen,
        keyset,
        policy,
    )
    seen.add(w1.new_keys)
    w2 = window([message(event("E3", "L1", "2026-11-30T11:00:00", name="王五"))], index, seen, keyset, policy)
    from transforms.crypto.vault import Vault

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


def _loader():
    return LineIndex.from_raw(raw_table(base_rows()), load_policy(None), AS_OF, CTX, SALT)[0]


def test_merge_stream_windows_on_the_local_runner(tmp_path, keyset):
    """TestPipeline + assert_that: two fixed windows, a duplicate across them, per-window results."""
    from transforms.merge.stream_composite import MergeStreamWindows

    keys_path = str(tmp_path / "keys.json")
    keyset.save(keys_path)
    start = 1_700_000_000  # a window boundary for 10-second windows
    records = [
        (message(event("E1", "L1", "2026-11-30T10:00:00"), mid="a"), start + 1),
        (message(event("E2", "NOPE", "2026-11-30T10:00:00"), mid="b"), start + 2),
        (message(event("E1", "L1", "2026-11-30T10:00:00"), mid="c"), start + 12),  # window 2: duplicate
        (message(event("E3", "L2", "2026-11-30T10:00:00"), mid="d"), start + 13),
        (message(event("E4", "L3", "2026-11-30T10:00:00"), data=b"[1, 2]", mid="e"), start + 14),
    ]
    for r, _ in records:
        r["publish_time"] = None

    def check(results):
        by_window = {}
        for r in results:
            counts = dict(r["counts"])
            counts.pop("counters")
            acc = by_window.setdefault(r["window"][0] - start, {"counts": [], "lines": []})
            acc["counts"].append(counts)
            acc["lines"] += [(x["line_id"], x["registration_event_id"]) for x in r["delta"].to_pylist()]
        assert sorted(by_window) == [0, 10], by_window

        def total(w, k):
            return sum(c[k] if k != "dead" else sum(c["dead_letters"].values()) for c in by_window[w]["counts"])

        assert [total(0, k) for k in ("messages_in", "applied", "duplicates", "dead")] == [2, 1, 0, 1]
        assert [total(10, k) for k in ("messages_in", "applied", "duplicates", "dead")] == [3, 1, 1, 1]
        assert by_window[0]["lines"] == [("L1", "E1")] and by_window[10]["lines"] == [("L2", "E3")]

    with BeamTestPipeline(runner=RUNNER) as p:
        out = (
            p
            | beam.Create(records)
            | beam.MapTuple(lambda r, t: beam.window.TimestampedValue(r, t))
            | MergeStreamWindows(_loader, keys_path, load_policy(None), AS_OF, CTX, 10)
        )
        assert_that(out, check)


def test_window_folder_round_trip(tmp_path, keyset, policy):
    """write_window commits one folder; recover() reads the dedup keys and registrations back."""
    from pipelines.io.landing import LandingZone
    from pipelines.io.windows import committed_windows, recover, write_window

    index, _ = LineIndex.from_raw(raw_table(base_rows()), policy, AS_OF, CTX, SALT)
    result = window([message(event("E1", "L1", "2026-11-30T10:00:00"))], index, SeenKeys(), keyset, policy)
    zone = LandingZone(str(tmp_path / "landing"), keyset)
    landed = zone.land(messages_table([message(event("E1", "L1", "2026-11-30T10:00:00"), mid="m0")]))
    times = pa.array([None], pa.timestamp("us", tz="UTC"))
    write_window(
        str(tmp_path / "deltas"),
        "w-000001",
        result,
        times,
        {"seq": 1, "landed_files": [landed], "counts": result.counts},
    )
    os.makedirs(tmp_path / "deltas" / ".tmp-w-000002-dead")
    state = recover(str(tmp_path), zone)
    assert state["next_seq"] == 2 and state["windows"] == 1 and state["removed_landed"] == 1
    assert zone.pending() == [] and not (tmp_path / "deltas" / ".tmp-w-000002-dead").exists()
    assert state["seen"].as_array().to_pylist() == ["E1"]
    assert len(committed_windows(str(tmp_path / "deltas"))) == 1
    delta = pq.read_table(tmp_path / "deltas" / "w-000001" / "delta.parquet")
    assert delta.column("registration_event_id").to_pylist() == ["E1"]


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
