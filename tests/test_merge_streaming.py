"""`backfill merge --streaming` end to end against the real Pub/Sub emulator, and `backfill compact`.

* bad input of every kind, a duplicate across windows, an event older than
  the line's registration (written in an earlier window): exact deltas, dead
  letters and counters, computed here from the plan of what was published;
* the canary identity values appear nowhere under OUT (landing zone
  included), nor on stdout or stderr;
* compacting the deltas gives the batch merge's base for the same events;
* SIGKILL mid-stream, publish more, restart: every event applied exactly once.

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
import sys
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.pubsub import PROJECT
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, person, raw_table

pytestmark = pytest.mark.e2e  # the Pub/Sub emulator, `python -m pipelines.merge --streaming` in subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
AS_OF = "2026-11-30"
CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)


def subscription(emulator) -> tuple[str, str]:
    return emulator.topic_and_subscription("stream", ack_deadline_seconds=10)


def publish(topic: str, messages: list[tuple[bytes, dict]]) -> None:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    try:
        for future in [publisher.publish(topic, data, **attrs) for data, attrs in messages]:
            future.result(timeout=120)
    finally:
        publisher.stop()


def start(sub: str, base: str, keys: str, out: str, *extra: str) -> subprocess.Popen:
    cmd = [
        PY,
        "-m",
        "pipelines.merge",
        "--streaming",
        "--subscription",
        sub,
        "--base",
        base,
        "--keys",
        keys,
        "--out",
        out,
        "--as-of",
        AS_OF,
        "--window-seconds",
        "1",
        *extra,
    ]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def windows(out: str) -> list[dict]:
    found = []
    for path in sorted(glob.glob(os.path.join(out, "deltas", "w-*", "window.json"))):
        with open(path, encoding="utf-8") as f:
            found.append(json.load(f))
    return found


def processed(out: str) -> int:
    return sum(w["counts"]["messages_in"] for w in windows(out))


def landed_messages(out: str) -> int:
    """Messages in landed files (a landed file's name ends in -nCOUNT.land)."""
    folder = os.path.join(out, "landing")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sum(int(n[: -len(".land")].rsplit("-n", 1)[1]) for n in names if n.endswith(".land"))


def read_deltas(out: str) -> pa.Table:
    parts = [pq.read_table(p) for p in sorted(glob.glob(os.path.join(out, "deltas", "w-*", "delta.parquet")))]
    return pa.concat_tables(parts)


def dead_letters(out: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "deltas", "w-*", "dead_letter.jsonl"))):
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


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


def keys_file(tmp) -> str:
    keys = os.path.join(tmp, "secure", "keys.json")
    subprocess.run([PY, "-m", "pipelines.keys", "init", "--keys", keys], check=True, capture_output=True, cwd=ROOT)
    return keys


def batch_merge(base: str, events: list[dict], keys: str, out: str) -> None:
    path = out + "-events.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in events)
    proc = subprocess.run(
        [
            PY,
            "-m",
            "pipelines.merge",
            "--base",
            base,
            "--registrations",
            path,
            "--keys",
            keys,
            "--out",
            out,
            "--as-of",
            AS_OF,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def compact(base: str, stream_out: str, keys: str, out: str) -> dict:
    proc = subprocess.run(
        [
            PY,
            "-m",
            "pipelines.compact",
            "--base",
            base,
            "--deltas",
            stream_out,
            "--keys",
            keys,
            "--out",
            out,
            "--as-of",
            AS_OF,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def assert_same_base(batch_out: str, compact_out: str) -> None:
    a = pq.read_table(os.path.join(batch_out, "base"))
    b = pq.read_table(os.path.join(compact_out, "base"))
    a = a.sort_by("line_id")
    b = b.sort_by("line_id").select(a.column_names).cast(a.schema)
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        assert a.column(name).equals(b.column(name)), name


def event(eid, line, at, **fields) -> dict:
    row = {
        "event_id": eid,
        "line_id": line,
        "doc_type": "RESIDENT_ID",
        "doc_number": "11010519491231002X",
        "name": "李四",
        "address": "北京市朝阳区建国路88号",
        "channel": "STORE",
        "agent_id": None,
        "verified_by": "ID_CARD_READER",
        "registered_at": at,
    }
    row.update(fields)
    return row


def as_message(body: dict, attrs: dict | None = None, data: bytes | None = None) -> tuple[bytes, dict]:
    attrs = {"event_id": body["event_id"], "line_id": body["line_id"]} if attrs is None else attrs
    return (data if data is not None else json.dumps(body, ensure_ascii=False).encode("utf-8")), attrs


def test_streaming_merge_end_to_end(pubsub_emulator, tmp_path):
    tmp = str(tmp_path)
    base = os.path.join(tmp, "base.parquet")
    rows = [person(line_id=f"L{i}", name="") for i in range(1, 7)] + [person(line_id="LT", status="TERMINATED")]
    pq.write_table(raw_table(rows).drop_columns(["_src_file", "_src_row"]), base)
    keys = keys_file(tmp)
    topic, sub = subscription(pubsub_emulator)
    canary = dict(doc_number=CANARY_NUMBER, name=CANARY_NAME, address=CANARY_ADDRESS)
    # (message, outcome): the plan the expectations are computed from
    phase1 = [
        (
            as_message(event("E1", "L1", "2026-11-30T10:00:00", channel="AGENT", agent_id="AG00007", **canary)),
            "applied",
        ),
        (as_message(event("E2", "L2", "2026-11-30T10:00:00", channel="ONLINE")), "applied"),
        (as_message(event("E3", "L3", "2026-11-30T11:00:00")), "applied"),
        (
            as_message(event("E4", "L4", "2026-11-30T10:00:00"), data=b'{"event_id": "E4", "line_id": '),
            "MESSAGE_MALFORMED",
        ),
        (as_message(event("E4b", "L4", "2026-11-30T10:00:00"), attrs={"line_id": "L4"}), "ATTRIBUTE_MISSING"),
        (as_message(event("E5", "NO-SUCH-LINE", "2026-11-30T10:00:00", **canary)), "UNKNOWN_LINE"),
        (
            as_message(event("E6", "L4", "2026-11-30T10:00:00"), data=b"{" + b" " * (1 << 20) + b"}"),
            "MESSAGE_TOO_LARGE",
        ),
        (as_message(event("E7", "LT", "2026-11-30T10:00:00", **canary)), "LINE_TERMINATED"),
        (as_message(event("E8", "L5", "2026-11-30T10:00:00", name="未知")), "NAME_PLACEHOLDER"),
        (
            as_message(event("E9", "L5", "2026-11-30T10:00:00"), attrs={"event_id": "E9", "line_id": "L6"}),
            "ATTRIBUTE_MISMATCH",
        ),
    ]
    phase2 = [
        (
            as_message(event("E1", "L1", "2026-11-30T10:00:00", channel="AGENT", agent_id="AG00007", **canary)),
            "duplicate",
        ),  # across windows
        (as_message(event("E2", "L2", "2026-11-30T10:00:00", channel="ONLINE")), "duplicate"),
        (as_message(event("E10", "L1", "2026-11-30T09:00:00")), "superseded"),  # older than window 1's E1
        (as_message(event("E11", "L2", "2026-11-30T12:00:00", channel="SELF_SERVICE")), "applied"),
        (as_message(event("E12", "L6", "2026-11-30T10:00:00", channel="AGENT", agent_id="AG00009")), "applied"),
    ]
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
    outcomes = [o for _, o in plan]
    # the deltas: the latest applied registration per line, as planned
    applied = [json.loads(m[0]) for m, o in plan if o == "applied"]
    latest = {}
    for e in applied:
        if e["line_id"] not in latest or e["registered_at"] > latest[e["line_id"]]["registered_at"]:
            latest[e["line_id"]] = e
    deltas = read_deltas(out)
    final = {}
    for r in sorted(deltas.to_pylist(), key=lambda r: r["registered_at"]):
        final[r["line_id"]] = r["registration_event_id"]
    assert final == {line: e["event_id"] for line, e in latest.items()}
    assert deltas.num_rows == len(applied)
    # dead letters: reason and event of each, no values
    # a dead letter names the event by its event_id attribute (None when that is what is missing)
    expected_dead = [
        (o, attrs.get("event_id")) for (_, attrs), o in plan if o not in ("applied", "duplicate", "superseded")
    ]
    got_dead = sorted((d["reason"], d["event_id"]) for d in dead_letters(out))
    assert got_dead == sorted(expected_dead)
    # counts: every window balances, and so does the run
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    counts = manifest["counts"]
    assert counts["balanced"] and manifest["all_windows"]["balanced"]
    assert counts["messages_in"] == len(plan)
    assert counts["applied"] == outcomes.count("applied")
    assert counts["superseded"] == outcomes.count("superseded")
    assert counts["duplicates"] == outcomes.count("duplicate")
    assert sum(counts["dead_letters"].values()) == len(plan) - outcomes.count("applied") - outcomes.count(
        "superseded"
    ) - outcomes.count("duplicate")
    assert all(w["balanced"] for w in windows(out))
    # counters: registrations by region, channel and agent, summed over the windows
    by_channel, by_agent, by_region = {}, {}, {}
    for w in windows(out):
        for src, dst in (
            (w["counters"]["by_channel"], by_channel),
            (w["counters"]["by_agent"], by_agent),
            (w["counters"]["by_region"], by_region),
        ):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v
    want_channel, want_agent = {}, {}
    for e in applied:
        want_channel[e["channel"]] = want_channel.get(e["channel"], 0) + 1
        if e["agent_id"]:
            want_agent[e["agent_id"]] = want_agent.get(e["agent_id"], 0) + 1
    assert by_channel == want_channel and by_agent == want_agent and by_region == {"110105": len(applied)}
    assert len(windows(out)) >= 2  # phase 2 came after phase 1 was committed
    assert_no_canary(out, stdout, stderr)
    # compaction = the batch merge of the same events (those that reach the event stage)
    events = [
        json.loads(m[0])
        for m, o in plan
        if o not in ("MESSAGE_MALFORMED", "ATTRIBUTE_MISSING", "MESSAGE_TOO_LARGE", "ATTRIBUTE_MISMATCH")
    ]
    batch_merge(base, events, keys, os.path.join(tmp, "batch"))
    manifest = compact(base, out, keys, os.path.join(tmp, "compact"))
    assert manifest["counts"]["base"]["balanced"] and manifest["counts"]["deltas"]["lines_registered"] == len(latest)
    assert_same_base(os.path.join(tmp, "batch"), os.path.join(tmp, "compact"))
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.vault import Vault
    from pipelines.io.vault_files import read_vault

    vault = Vault(Keyset.load(keys))
    for folder in (os.path.join(tmp, "compact", "vault"), os.path.join(tmp, "batch", "vault")):
        opened = vault.open(*read_vault(folder, ["L1"]), "L1")
        assert (opened["name"], opened["doc_number"], opened["address"]) == (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)
    # reveal works on a window's own vault
    reveal = subprocess.run(
        [
            PY,
            "-m",
            "pipelines.reveal",
            "--keys",
            keys,
            "--vault",
            os.path.join(out, "deltas", "w-000001", "vault"),
            "--line-id",
            "L1",
            "--purpose",
            "test",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reveal.returncode == 0 and CANARY_NAME in reveal.stdout, reveal.stderr


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

    def kill(proc):
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.communicate()

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
    landed_then = [n for n in os.listdir(os.path.join(out, "landing")) if n.endswith(".land")]
    assert landed_then
    assert_no_canary(out)  # the landing zone as the kill left it is encrypted too
    # 3. the rest, and a restart that finishes the landed files first
    publish(topic, messages[2 * third :])
    third_run = start(sub, base, keys, out, "--max-messages", "500", "--stop-after-idle", "15")
    stdout, stderr = third_run.communicate(timeout=300)
    assert third_run.returncode == 0, stderr[-3000:]
    assert os.listdir(os.path.join(out, "landing")) == []
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    total = manifest["all_windows"]
    assert total["balanced"] and manifest["counts"]["balanced"]
    assert manifest["landing"]["recovered_landed_files"] >= 1
    # every distinct event exactly once: applied + superseded + dead letters = distinct event ids published
    distinct = len({e["event_id"] for e in events})
    assert total["applied"] + total["superseded"] + sum(total["dead_letters"].values()) == distinct
    assert total["messages_in"] == total["applied"] + total["superseded"] + total["duplicates"] + sum(
        total["dead_letters"].values()
    )
    assert total["messages_in"] >= len(events)  # redelivered copies are counted as duplicates, never lost
    seen = pa.concat_tables([pq.read_table(p) for p in glob.glob(os.path.join(out, "deltas", "w-*", "seen.parquet"))])
    assert seen.num_rows == distinct and len(set(seen.column("key").to_pylist())) == distinct
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
        proc = subprocess.run(
            [
                PY,
                "-m",
                "pipelines.merge",
                "--streaming",
                "--subscription",
                sub,
                "--base",
                base,
                "--keys",
                keys,
                "--out",
                os.path.join(tmp, "out"),
                *extra,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
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
        second = subprocess.run(
            [
                PY,
                "-m",
                "pipelines.merge",
                "--streaming",
                "--subscription",
                sub,
                "--base",
                base,
                "--keys",
                keys,
                "--out",
                out,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1 and "another streaming merge is running" in second.stderr.strip().splitlines()[-1]
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-2000:]
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    assert manifest["stopped_by"] == "signal SIGTERM"
    assert manifest["counts"]["messages_in"] == 20 and manifest["counts"]["applied"] == 20
    assert read_deltas(out).num_rows == 20 and os.listdir(os.path.join(out, "landing")) == []
