"""`backfill merge --streaming` end to end against the real Pub/Sub emulator, and `backfill compact`.

* bad input of every kind, a duplicate across windows, an event older than
  the line's registration (written in an earlier window), bad copies of an
  event sent before the valid one, a different body under a held event id:
  exact deltas, dead letters and counters, computed here from the plan of
  what was published;
* the canary identity values appear nowhere under OUT (landing zone and line
  store included), nor on stdout or stderr;
* compacting the deltas gives the batch merge's base for the same events;
* SIGKILL mid-stream, publish more, restart: every message has exactly the
  outcome one uninterrupted window gives it, the line store is reused.

The subscriptions have a 10-second ack deadline, so a message pulled by a
killed process comes back quickly. No sleeps decide an outcome: the tests wait
for files or for the process to exit (bounded by generous timeouts).
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.pubsub import PROJECT
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, person, raw_table
from tests.support.stream_cli import (
    as_message,
    event_row,
    PY,
    ROOT,
    assert_same_base,
    batch_merge,
    compact,
    keys_file,
    kill,
    publish,
    run_until_idle,
    start,
    wait_for,
    windows,
)

pytestmark = pytest.mark.e2e  # the Pub/Sub emulator, `python -m pipelines.merge --streaming` in subprocesses

CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)
TAKERS = ("applied", "superseded")
NOT_EVENTS = ("MESSAGE_MALFORMED", "ATTRIBUTE_MISSING", "MESSAGE_TOO_LARGE", "ATTRIBUTE_MISMATCH")


def subscription(emulator) -> tuple[str, str]:
    return emulator.topic_and_subscription("stream", ack_deadline_seconds=10)


def processed(out: str) -> int:
    return sum(w["counts"]["messages_in"] for w in windows(out))


def landed_messages(out: str) -> int:
    """Messages in landed files (a landed file's name ends in -nCOUNT.land)."""
    folder = os.path.join(out, "landing")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sum(int(n[: -len(".land")].rsplit("-n", 1)[1]) for n in names if n.endswith(".land"))


def window_tables(out: str, name: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(glob.glob(os.path.join(out, "deltas", "w-*", name)))])


def dead_letters(out: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "deltas", "w-*", "dead_letter.jsonl"))):
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def merge_command(sub: str, base: str, keys: str, out: str, *extra: str) -> subprocess.CompletedProcess:
    """`backfill merge --streaming` run to its end (for the runs that must fail at once)."""
    cmd = [PY, "-m", "pipelines.merge", "--streaming", "--subscription", sub, "--base", base, "--keys", keys]
    return subprocess.run([*cmd, "--out", out, *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)


def manifest_of(out: str) -> dict:
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def assert_no_canary(folder: str, *texts: str) -> None:
    for dirpath, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                blob = f.read()
            for canary in CANARIES:
                assert canary.encode() not in blob, (canary, os.path.join(dirpath, name))
    for text in texts:
        for canary in CANARIES:
            assert canary not in text


event = event_row


def plan_phases() -> tuple[list, list]:
    """(phase 1, phase 2): (message, outcome) pairs; phase 2 is published once phase 1 is committed."""
    canary = dict(doc_number=CANARY_NUMBER, name=CANARY_NAME, address=CANARY_ADDRESS)
    e1 = event("E1", "L1", "2026-11-30T10:00:00", channel="AGENT", agent_id="AG00007", **canary)
    p1 = event("P1", "L5", "2026-11-30T10:30:00", channel="ONLINE")
    p2 = event("P2", "L4", "2026-11-30T10:40:00")
    e13 = event("E13", "L7", "2026-11-30T10:00:00")
    truncated = as_message(p1, data=json.dumps(p1).encode("utf-8")[:40])
    phase1 = [
        (as_message(e1), "applied"),
        (as_message(event("E2", "L2", "2026-11-30T10:00:00", channel="ONLINE")), "applied"),
        (as_message(event("E3", "L3", "2026-11-30T11:00:00")), "applied"),
        (as_message(event("E4", "L4", "2026-11-30T10:00:00"), data=b'{"event_id": "E4", "line_id": '), NOT_EVENTS[0]),
        (as_message(event("E4b", "L4", "2026-11-30T10:00:00"), attrs={"line_id": "L4"}), "ATTRIBUTE_MISSING"),
        (as_message(event("E5", "NO-SUCH-LINE", "2026-11-30T10:00:00", **canary)), "UNKNOWN_LINE"),
        (
            as_message(event("E6", "L4", "2026-11-30T10:00:00"), data=b"{" + b" " * (3 << 20) + b"}"),
            "MESSAGE_TOO_LARGE",
        ),
        (as_message(event("E7", "LT", "2026-11-30T10:00:00", **canary)), "LINE_TERMINATED"),
        (as_message(event("E8", "L5", "2026-11-30T10:00:00", name="未知")), "NAME_PLACEHOLDER"),
        (
            as_message(event("E9", "L5", "2026-11-30T10:00:00"), attrs={"event_id": "E9", "line_id": "L6"}),
            NOT_EVENTS[3],
        ),
        (truncated, "MESSAGE_MALFORMED"),  # bad copies of P1 first: they take nothing
        (as_message({**p1, "line_id": "L6"}, attrs={"event_id": "P1", "line_id": "L5"}), "ATTRIBUTE_MISMATCH"),
        (as_message({**p2, "name": "未知"}), "NAME_PLACEHOLDER"),  # P2 invalid, corrected below
        (as_message({**e13, "shoe_size": "42"}), "applied"),  # a field outside the contract: ignored
    ]
    phase2 = [
        (as_message(e1), "duplicate"),  # across windows
        (as_message(event("E2", "L2", "2026-11-30T10:00:00", channel="ONLINE")), "duplicate"),
        (as_message(event("E10", "L1", "2026-11-30T09:00:00")), "superseded"),  # older than window 1's E1
        (as_message(event("E11", "L2", "2026-11-30T12:00:00", channel="SELF_SERVICE")), "applied"),
        (as_message(event("E12", "L6", "2026-11-30T10:00:00", channel="AGENT", agent_id="AG00009")), "applied"),
        (as_message(event("E3", "L3", "2026-11-30T11:00:00", channel="ONLINE")), "EVENT_ID_CONFLICT"),
        (as_message(p1), "applied"),  # the valid P1, after its bad copies
        (as_message(p1), "duplicate"),
        (as_message(p2), "applied"),
        (as_message(e13), "duplicate"),  # the same contract fields as the copy that took E13
    ]
    return phase1, phase2


def assert_outcomes(out: str, plan: list, manifest: dict) -> None:
    """Deltas, dead letters, counts and counters as the plan says."""
    outcomes = [o for _, o in plan]
    applied = [json.loads(m[0]) for m, o in plan if o == "applied"]
    latest = {}
    for e in applied:
        if e["line_id"] not in latest or e["registered_at"] > latest[e["line_id"]]["registered_at"]:
            latest[e["line_id"]] = e
    deltas = window_tables(out, "delta.parquet")
    final = {
        r["line_id"]: r["registration_event_id"] for r in sorted(deltas.to_pylist(), key=lambda r: r["registered_at"])
    }
    assert final == {line: e["event_id"] for line, e in latest.items()} and deltas.num_rows == len(applied)
    # a dead letter names the event by its event_id attribute (None when that is what is missing); no values
    expected_dead = [(o, attrs.get("event_id")) for (_, attrs), o in plan if o not in TAKERS + ("duplicate",)]
    assert sorted((d["reason"], d["event_id"]) for d in dead_letters(out)) == sorted(expected_dead)
    counts = manifest["counts"]
    assert counts["balanced"] and manifest["all_windows"]["balanced"] and all(w["balanced"] for w in windows(out))
    assert counts["messages_in"] == len(plan) and counts["duplicates"] == outcomes.count("duplicate")
    assert [counts["applied"], counts["superseded"]] == [outcomes.count(k) for k in TAKERS]
    assert sum(counts["dead_letters"].values()) == len(expected_dead)
    by = {"by_channel": {}, "by_agent": {}, "by_region": {}}
    for w in windows(out):
        for key, acc in by.items():
            for k, v in w["counters"][key].items():
                acc[k] = acc.get(k, 0) + v
    want_channel, want_agent = {}, {}
    for e in applied:
        want_channel[e["channel"]] = want_channel.get(e["channel"], 0) + 1
        if e["agent_id"]:
            want_agent[e["agent_id"]] = want_agent.get(e["agent_id"], 0) + 1
    assert by == {"by_channel": want_channel, "by_agent": want_agent, "by_region": {"110105": len(applied)}}
    taken = window_tables(out, "ids.parquet").column("event_id").to_pylist()
    assert sorted(taken) == sorted({json.loads(m[0])["event_id"] for m, o in plan if o in TAKERS})


def test_streaming_merge_end_to_end(pubsub_emulator, tmp_path):
    tmp = str(tmp_path)
    base = os.path.join(tmp, "base.parquet")
    rows = [person(line_id=f"L{i}", name="") for i in range(1, 8)] + [person(line_id="LT", status="TERMINATED")]
    pq.write_table(raw_table(rows).drop_columns(["_src_file", "_src_row"]), base)
    keys = keys_file(tmp)
    topic, sub = subscription(pubsub_emulator)
    phase1, phase2 = plan_phases()
    out = os.path.join(tmp, "stream")
    proc = start(sub, base, keys, out, "--stop-after-idle", "10")
    try:
        publish(topic, [m for m, _ in phase1])
        wait_for(lambda: processed(out) >= len(phase1), 120, "phase 1 in committed windows")
        publish(topic, [m for m, _ in phase2])
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    plan = phase1 + phase2
    manifest = manifest_of(out)
    assert_outcomes(out, plan, manifest)
    assert len(windows(out)) >= 2 and manifest["state"]["built"]  # phase 2 came after phase 1 was committed
    assert_no_canary(out, stdout, stderr)
    # compaction = the batch merge of the same events (those that reach the event stage), in the same order
    events = [json.loads(m[0]) for m, o in plan if o not in NOT_EVENTS]
    batch_merge(base, events, keys, os.path.join(tmp, "batch"))
    manifest = compact(base, out, keys, os.path.join(tmp, "compact"))
    assert manifest["counts"]["base"]["balanced"]
    assert_same_base(os.path.join(tmp, "batch"), os.path.join(tmp, "compact"))
    from pipelines.io.vault_files import read_vault
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.vault import Vault

    vault = Vault(Keyset.load(keys))
    for folder in (os.path.join(tmp, "compact", "vault"), os.path.join(tmp, "batch", "vault")):
        opened = vault.open(*read_vault(folder, ["L1"]), "L1")
        assert (opened["name"], opened["doc_number"], opened["address"]) == CANARIES
    reveal = subprocess.run(  # reveal works on a window's own vault
        [PY, "-m", "pipelines.reveal", "--keys", keys, "--vault", os.path.join(out, "deltas", "w-000001", "vault")]
        + ["--line-id", "L1", "--purpose", "test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reveal.returncode == 0 and CANARY_NAME in reveal.stdout, reveal.stderr


def one_window_oracle(base: str, messages: list[tuple[bytes, dict]], keys: str) -> dict:
    """The counts of every message processed as one uninterrupted window, in this process."""
    import datetime as dt

    from pipelines.io.windows import load_index
    from tests.support.stream import CTX
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.tokenize import Tokenizer
    from transforms.crypto.vault import Vault
    from transforms.merge.messages import messages_table
    from transforms.merge.stream import SeenKeys, process_window
    from transforms.scan.policy import load_policy

    as_of, policy, keyset = dt.date(2026, 11, 30), load_policy(None), Keyset.load(keys)
    index, _ = load_index([base], "utf-8", policy, as_of, CTX, "0" * 32)
    records = [{"message_id": f"o{i}", "attributes": a, "data": d} for i, (d, a) in enumerate(messages)]
    kwargs = dict(tokenizer=Tokenizer(keyset), vault=Vault(keyset), policy=policy, as_of=as_of, ctx=CTX, salt="0" * 32)
    return process_window(messages_table(records), index, SeenKeys(), **kwargs).counts


def test_kill_and_restart_loses_nothing_and_doubles_nothing(pubsub_emulator, tmp_path):
    from bench.bench_merge import make_events
    from dev.generate import write_base

    tmp = str(tmp_path)
    base = os.path.join(tmp, "base.parquet")
    write_base(base, 3000, 5)
    events_path = os.path.join(tmp, "events.parquet")
    make_events(base, events_path, n=2500, seed=3)
    events = pq.read_table(events_path).to_pylist()
    keys = keys_file(tmp)
    topic, sub = subscription(pubsub_emulator)
    messages = [
        (json.dumps(e, ensure_ascii=False).encode("utf-8"), {"event_id": e["event_id"], "line_id": e["line_id"]})
        for e in events
    ]
    third = len(messages) // 3
    out = os.path.join(tmp, "stream")
    # 1. killed after its first committed window, with more messages on the way
    first = start(sub, base, keys, out, "--max-messages", "50")
    try:
        publish(topic, messages[:third])
        wait_for(lambda: windows(out), 120, "the first committed window")
    finally:
        kill(first)
    # 2. killed with messages landed and acknowledged but not processed (its window never comes; what run 1
    # left landed is processed before it pulls, so a new landed file is one of its own)
    before = set(os.listdir(os.path.join(out, "landing")))
    second = start(sub, base, keys, out, "--max-messages", "50", "--window-seconds", "600")
    try:
        publish(topic, messages[third : 2 * third])
        wait_for(
            lambda: [n for n in os.listdir(os.path.join(out, "landing")) if n.endswith(".land") and n not in before],
            120,
            "a landed file of run 2",
        )
    finally:
        kill(second)
    assert [n for n in os.listdir(os.path.join(out, "landing")) if n.endswith(".land")]
    assert_no_canary(out)  # the landing zone and the line store as the kill left them hold no value in clear
    # 3. the rest, and a restart that finishes the landed files first
    publish(topic, messages[2 * third :])
    third_run = start(sub, base, keys, out, "--max-messages", "500", "--stop-after-idle", "15")
    stdout, stderr = third_run.communicate(timeout=300)
    assert third_run.returncode == 0, stderr[-3000:]
    assert os.listdir(os.path.join(out, "landing")) == []
    manifest = manifest_of(out)
    total = manifest["all_windows"]
    assert total["balanced"] and manifest["counts"]["balanced"]
    assert manifest["landing"]["recovered_landed_files"] >= 1 and not manifest["state"]["built"]  # store reused
    # every message once: the redelivered copies (total messages in - published) are duplicates on top of what
    # one uninterrupted window of the published messages gives
    oracle = one_window_oracle(base, messages, keys)
    redelivered = total["messages_in"] - len(messages)
    assert redelivered >= 0 and total["duplicates"] - redelivered == oracle["duplicates"]
    assert total["applied"] + total["superseded"] == oracle["applied"] + oracle["superseded"]
    assert total["dead_letters"] == oracle["dead_letters"]
    seen = window_tables(out, "seen.parquet").column("message_id").to_pylist()
    assert len(seen) == len(set(seen)) == len(messages)  # each Pub/Sub message processed once
    taken = window_tables(out, "ids.parquet").column("event_id").to_pylist()
    assert len(taken) == len(set(taken)) == total["applied"] + total["superseded"]
    batch_merge(base, events, keys, os.path.join(tmp, "batch"))
    compact(base, out, keys, os.path.join(tmp, "compact"))
    assert_same_base(os.path.join(tmp, "batch"), os.path.join(tmp, "compact"))


def test_bad_arguments_are_one_line_errors(pubsub_emulator, tmp_path):
    tmp = str(tmp_path)
    base = os.path.join(tmp, "base.parquet")
    pq.write_table(raw_table([person()]).drop_columns(["_src_file", "_src_row"]), base)
    keys = keys_file(tmp)
    real = f"projects/{PROJECT}/subscriptions/nope-{uuid.uuid4().hex[:6]}"
    for sub, message, extra, code in (
        (real, "does not exist", [], 1),
        ("not-a-subscription", "is not projects/PROJECT/subscriptions/NAME", [], 1),
        (real, "unknown flag --stop-after-idel; did you mean --stop-after-idle?", ["--stop-after-idel", "3"], 2),
    ):
        proc = merge_command(sub, base, keys, os.path.join(tmp, "out"), *extra)
        assert proc.returncode == code, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("backfill merge: error: ") and message in lines[-1], proc.stderr
        assert "Traceback" not in proc.stderr


def test_sigterm_finishes_the_landed_messages_and_exits_0(pubsub_emulator, tmp_path):
    tmp = str(tmp_path)
    base = os.path.join(tmp, "base.parquet")
    pq.write_table(
        raw_table([person(line_id=f"L{i}", name="") for i in range(20)]).drop_columns(["_src_file", "_src_row"]), base
    )
    keys = keys_file(tmp)
    topic, sub = subscription(pubsub_emulator)
    out = os.path.join(tmp, "stream")
    # a window far away: what has landed when SIGTERM comes is processed on the way out
    proc = start(sub, base, keys, out, "--window-seconds", "600")
    try:
        publish(topic, [as_message(event(f"E{i}", f"L{i}", "2026-11-30T10:00:00")) for i in range(20)])
        wait_for(lambda: landed_messages(out) == 20, 120, "20 landed messages")
        second = merge_command(sub, base, keys, out)
        assert second.returncode == 1 and "another streaming merge is running" in second.stderr.strip().splitlines()[-1]
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-2000:]
    manifest = manifest_of(out)
    assert manifest["stopped_by"] == "signal SIGTERM"
    assert manifest["counts"]["messages_in"] == 20 and manifest["counts"]["applied"] == 20
    assert window_tables(out, "delta.parquet").num_rows == 20 and os.listdir(os.path.join(out, "landing")) == []


def test_an_id_a_merged_base_line_carries_is_a_conflict_on_another_line(pubsub_emulator, tmp_path):
    """The stream on a merge's base: a copy of an event id that a line of that base carries, on another line,
    is EVENT_ID_CONFLICT whatever its body or order (the batch merge's rule); on its own line a duplicate.
    Compacting the stream equals the daily batch merge of the same messages onto the same base and vault.
    (Before, the stream held such an id only against copies on the carrying line: the id was applied twice.)"""
    from tests.support.compact import assert_same_base as same_base
    from tests.support.compact import batch_merge as merge_with, compact as compact_with
    from transforms.merge.copies import HELD_DETAIL

    tmp = str(tmp_path)
    raw = os.path.join(tmp, "base.parquet")
    pq.write_table(
        raw_table([person(line_id=f"L{i}", name="") for i in range(1, 6)]).drop_columns(["_src_file", "_src_row"]), raw
    )
    keys = keys_file(tmp)
    day1 = os.path.join(tmp, "day1")
    merge_with(
        [raw], [event_row("E1", "L1", "2026-11-20T10:00:00"), event_row("E7", "L5", "2026-11-21T10:00:00")], keys, day1
    )
    base, vault = os.path.join(day1, "base"), ("--vault", os.path.join(day1, "vault"))
    sent = [
        event_row("E1", "L2", "2026-11-29T10:00:00"),  # first in the stream, valid on its own: L1 carries E1
        event_row("E1", "L1", "2026-11-20T10:00:00"),  # the carrying line: a duplicate
        event_row("E7", "L4", "2026-11-29T11:00:00", channel="ONLINE"),  # another body, another line
        event_row("E2", "L3", "2026-11-29T12:00:00"),
    ]
    topic, sub = subscription(pubsub_emulator)
    publish(topic, [as_message(e) for e in sent])
    out = os.path.join(tmp, "stream")
    run_until_idle(sub, base, keys, out, idle=8)
    totals: dict = {}
    for window in windows(out):
        for k, v in window["counts"].items():
            if k != "dead_letters":
                totals[k] = totals.get(k, 0) + v
    assert totals == {"messages_in": 4, "applied": 1, "superseded": 0, "duplicates": 1}, totals
    letters = []
    for path in sorted(glob.glob(os.path.join(out, "deltas", "w-*", "dead_letter.jsonl"))):
        with open(path, encoding="utf-8") as f:
            letters += [json.loads(line) for line in f if line.strip()]
    assert sorted((r["reason"], r["event_id"], r["line_id"], r["detail"]) for r in letters) == [
        ("EVENT_ID_CONFLICT", "E1", "L2", HELD_DETAIL),
        ("EVENT_ID_CONFLICT", "E7", "L4", HELD_DETAIL),
    ]
    delta = pa.concat_tables(
        [pq.read_table(p) for p in sorted(glob.glob(os.path.join(out, "deltas", "w-*", "delta.parquet")))]
    )
    assert delta.column("line_id").to_pylist() == ["L3"]  # L2 and L4 did not move
    merge_with([base], sent, keys, os.path.join(tmp, "day2"), *vault)
    compact_with([base], out, keys, os.path.join(tmp, "compact"), *vault)
    same_base(os.path.join(tmp, "day2"), os.path.join(tmp, "compact"))
