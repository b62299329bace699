"""The streaming merge (``backfill merge --streaming`` on the local runner, against the real Pub/Sub emulator)
under attack, as a careless operator and as an attacker would (each case below failed before its fix).

(a) The emulator restarted (stopped, started again on its port) while the stream ran: it numbers its messages
    from 1 again, and every new message whose id a committed window had seen was counted a redelivery
    ("duplicate") and acknowledged: registrations silently lost. A redelivery now repeats the message id *and*
    its publish time.
(b) ``--stop-after-idle nan`` or ``inf`` never stopped (a hang for ever); a subscription holding a document
    number or a name was quoted on stderr (log line and error), and one with a space or a character Pub/Sub
    refuses was a gRPC error. Now one-line refusals, the value shown only when it is plain.
(c) ``--stop-after-idle S`` waited for the end of the window: with ``--window-seconds 600`` it ran ten minutes
    after the last message. Now it stops S seconds after the last message, what landed merged first.
(d) ``--out`` a batch merge's folder: the stream wrote its deltas, landing zone and line store there and replaced
    the batch merge's manifest. ``--out`` the base's folder: the windows' Parquet files became base files (the
    next start refused the base, and so would every batch merge of it). Both are now refused before anything is
    written.
(e) ``OUT/manifest.json`` and ``OUT/runs/RUN.json`` were written in place (a reader or a kill could see half of
    one) with the umask's mode (0644). Now written whole (temporary file, fsync, rename), 0600.

Bad bodies of every kind (not JSON, a list, a number, nested values, huge strings, invalid UTF-8, NUL and
control characters, missing or disagreeing attributes, a 10,000-character event_id, an emoji line_id, odd
timestamps) are each one dead letter with its reason, counts balanced, no canary anywhere (regression guard).
"""

from __future__ import annotations

import glob
import json
import os
import stat
import subprocess
import time

import pyarrow.parquet as pq
import pytest

from tests.support.attacks import CANARIES, no_canary, refused
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, person, raw_table
from tests.support.stream_cli import AS_OF, PY, ROOT, as_message, batch_merge, event_row, keys_file, publish, start
from tests.support.stream_cli import reap, stop, wait_for, windows

pytestmark = pytest.mark.e2e  # the Pub/Sub emulator, `python -m pipelines.merge --streaming` in subprocesses


def _base(tmp: str, n: int = 9) -> str:
    path = os.path.join(tmp, "base.parquet")
    rows = [person(line_id=f"L{i}", name="") for i in range(1, n + 1)]
    pq.write_table(raw_table(rows).drop_columns(["_src_file", "_src_row"]), path)
    return path


def _event(eid, line, at="2026-11-30T10:00:00", **fields) -> dict:
    return event_row(
        eid, line, at, **{"doc_number": CANARY_NUMBER, "name": CANARY_NAME, "address": CANARY_ADDRESS, **fields}
    )


_message = as_message


def _stream(sub: str, base: str, keys: str, out: str, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`backfill merge --streaming` run to its end, bounded (a run that hangs fails the test)."""
    cmd = [PY, "-m", "pipelines.merge", "--streaming", "--subscription", sub, "--base", base, "--keys", keys]
    cmd += ["--out", out, "--as-of", AS_OF, *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _dead_letters(out: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "deltas", "w-*", "dead_letter.jsonl"))):
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def _applied(out: str) -> list[str]:
    paths = sorted(glob.glob(os.path.join(out, "deltas", "w-*", "delta.parquet")))
    return sorted(e for p in paths for e in pq.read_table(p).column("registration_event_id").to_pylist())


def _manifest(out: str) -> dict:
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def test_a_restarted_emulator_reusing_message_ids_loses_nothing(tmp_path):
    """(a) The emulator goes away mid-run and comes back on the same port: its new messages reuse the message
    ids of messages a committed window already processed; they are merged, not taken for redeliveries."""
    from dev.pubsub_emulator import running_emulator
    from pipelines.emulator_process import create_topic_and_subscription, free_port

    tmp = str(tmp_path)
    base, keys, out = _base(tmp), keys_file(tmp), os.path.join(tmp, "stream")
    port = free_port()
    topic, sub = "projects/demo-project/topics/restart", "projects/demo-project/subscriptions/restart-sub"
    proc = None
    try:
        with running_emulator(port):
            create_topic_and_subscription(topic, sub, 10)
            publish(topic, [_message(_event(f"A{i}", f"L{i}")) for i in (1, 2)])
            proc = start(sub, base, keys, out)  # PUBSUB_EMULATOR_HOST: this emulator's, for the life of the run
            wait_for(lambda: sum(w["counts"]["messages_in"] for w in windows(out)) == 2, 120, "2 messages merged")
        with running_emulator(port):  # the same host again: message ids start from 1 again
            create_topic_and_subscription(topic, sub, 10)
            publish(topic, [_message(_event(f"B{i}", f"L{i}")) for i in (3, 4)])
            wait_for(lambda: sum(w["counts"]["messages_in"] for w in windows(out)) == 4, 120, "4 messages merged")
            stdout, stderr = stop(proc)
    finally:
        reap(proc)
    assert proc.returncode == 0, stderr[-2000:]
    assert _applied(out) == ["A1", "A2", "B3", "B4"]
    counts = _manifest(out)["all_windows"]
    assert (counts["messages_in"], counts["applied"], counts["duplicates"], counts["balanced"]) == (4, 4, 0, True)


def test_bad_flags_are_one_line_errors_that_never_hang_nor_quote_identity(pubsub_emulator, tmp_path):
    """(b) Refused at once, in one line, with no traceback and no canary, whatever the emulator holds."""
    tmp = str(tmp_path)
    base, keys = _base(tmp), keys_file(tmp)
    _, sub = pubsub_emulator.topic_and_subscription("flags", ack_deadline_seconds=10)
    project = "projects/demo-project/subscriptions/"
    for extra, expected in (
        (["--subscription", sub, "--stop-after-idle", "nan"], "--stop-after-idle must be a positive number"),
        (["--subscription", sub, "--stop-after-idle", "inf"], "--stop-after-idle must be a positive number"),
        (["--subscription", sub, "--window-seconds", str(10**20)], "--window-seconds must be between 1 and 3600"),
        (["--subscription", sub, "--window-seconds", "3601"], "--window-seconds must be between 1 and 3600"),
        (["--subscription", project + "sub-" + CANARY_NUMBER], "(a value not shown)"),
        (["--subscription", project + CANARY_NAME], "(a value not shown)"),
        (["--subscription", project + "two words"], "'projects/demo-project/subscriptions/two words'"),
    ):
        out = os.path.join(tmp, f"out-{len(os.listdir(tmp))}")
        proc = _stream(extra[1], base, keys, out, *extra[2:], timeout=60)
        refused(proc, "backfill merge", 1, expected)
        assert not os.path.exists(out)


def test_stop_after_idle_does_not_wait_for_the_end_of_a_long_window(pubsub_emulator, tmp_path):
    """(c) One message, a 600-second window, --stop-after-idle 3: merged and stopped within a minute."""
    tmp = str(tmp_path)
    base, keys, out = _base(tmp), keys_file(tmp), os.path.join(tmp, "stream")
    topic, sub = pubsub_emulator.topic_and_subscription("idle", ack_deadline_seconds=10)
    publish(topic, [_message(_event("I1", "L1"))])
    started = time.monotonic()
    proc = _stream(sub, base, keys, out, "--window-seconds", "600", "--stop-after-idle", "3", timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.monotonic() - started < 60
    assert _applied(out) == ["I1"] and _manifest(out)["stopped_by"] == "--stop-after-idle 3"


def _snapshot(folder: str) -> dict:
    """Every path under ``folder`` (hidden ones too) with its bytes (None for a folder)."""
    found = {}
    for dirpath, dirs, files in os.walk(folder):
        found.update({os.path.join(dirpath, d): None for d in dirs})
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                found[os.path.join(dirpath, name)] = f.read()
    return found


def test_out_that_is_a_batch_merge_or_the_base_is_refused(pubsub_emulator, tmp_path):
    """(d) Refused before anything is written: the batch merge's folder and the base's folder are unchanged."""
    tmp = str(tmp_path)
    base, keys = _base(tmp), keys_file(tmp)
    topic, sub = pubsub_emulator.topic_and_subscription("outs", ack_deadline_seconds=10)
    publish(topic, [_message(_event("O1", "L1"))])
    batch = os.path.join(tmp, "batch")
    batch_merge(base, [_event("B1", "L2")], keys, batch)
    before = _snapshot(batch)
    proc = _stream(sub, base, keys, batch, "--window-seconds", "1", "--stop-after-idle", "3")
    refused(proc, "backfill merge", 1, "is the output of backfill merge")
    assert _snapshot(batch) == before
    folder = os.path.join(tmp, "basefolder")
    os.mkdir(folder)
    os.rename(base, os.path.join(folder, "base.parquet"))
    for out in (folder, os.path.join(folder, "stream")):
        proc = _stream(sub, folder, keys, out, "--window-seconds", "1", "--stop-after-idle", "3")
        refused(proc, "backfill merge", 1, "the input base")
        assert os.listdir(folder) == ["base.parquet"]
    # a streaming merge's own folder, even one whose first run was killed before its manifest, is taken
    proc = _stream(sub, folder, keys, os.path.join(tmp, "stream"), "--window-seconds", "1", "--stop-after-idle", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _applied(os.path.join(tmp, "stream")) == ["O1"]


def test_manifests_are_written_whole_and_private(pubsub_emulator, tmp_path):
    """(e) Under umask 022, the manifest and the run record are 0600; no temporary file is left beside them."""
    tmp = str(tmp_path)
    base, keys, out = _base(tmp), keys_file(tmp), os.path.join(tmp, "stream")
    topic, sub = pubsub_emulator.topic_and_subscription("manifest", ack_deadline_seconds=10)
    publish(topic, [_message(_event("M1", "L1"))])
    old = os.umask(0o022)
    try:
        proc = _stream(sub, base, keys, out, "--window-seconds", "1", "--stop-after-idle", "3")
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = [os.path.join(out, "manifest.json"), *glob.glob(os.path.join(out, "runs", "*.json"))]
    assert len(written) == 2
    for path in written:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert not [n for n in os.listdir(out) + os.listdir(os.path.join(out, "runs")) if n.startswith(".tmp-")]
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700


def _bad_messages() -> list[tuple[tuple[bytes, dict], str]]:
    """(message, the reason of its one dead letter); every body carries the canaries."""
    ok = json.dumps(_event("G1", "L1"), ensure_ascii=False)
    nested = _event("N1", "L2", name={"given": CANARY_NAME})
    return [
        (_message(_event("G1", "L1")), "applied"),
        (_message(_event("J1", "L2"), data=b"not json " + CANARY_NAME.encode()), "MESSAGE_MALFORMED"),
        (
            _message(_event("J2", "L2"), data=json.dumps([_event("J2", "L2")], ensure_ascii=False).encode()),
            "MESSAGE_MALFORMED",
        ),
        (_message(_event("J3", "L2"), data=b"42"), "MESSAGE_MALFORMED"),
        (_message(_event("J4", "L2"), data=json.dumps(CANARY_NAME).encode()), "MESSAGE_MALFORMED"),
        (_message(_event("J5", "L2"), data=b""), "MESSAGE_MALFORMED"),
        (_message(nested), "MESSAGE_MALFORMED"),
        (_message(_event("J6", "L2", address=CANARY_ADDRESS * 5000)), "MESSAGE_MALFORMED"),
        (_message(_event("J7", "L2"), data=ok.encode().replace(b'"STORE"', b'"ST\xffORE"')), "MESSAGE_MALFORMED"),
        (_message(_event("J8", "L2", name=CANARY_NAME + "\u0000")), "MESSAGE_MALFORMED"),
        (_message(_event("J9", "L2", address=CANARY_ADDRESS + "\u0007")), "MESSAGE_MALFORMED"),
        (_message(_event("J10", "L2"), data=ok.encode().replace(b"STORE", b"ST\x00ORE")), "MESSAGE_MALFORMED"),
        (_message(_event("E" * 10_000, "L2"), attrs={"event_id": "E" * 1000, "line_id": "L2"}), "MESSAGE_MALFORMED"),
        (
            _message(_event("J11", "L2"), data=b'{"event_id":"J11","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
            "MESSAGE_MALFORMED",
        ),
        (_message(_event("A1", "L2"), attrs={"line_id": "L2"}), "ATTRIBUTE_MISSING"),
        (_message(_event("A2", "L2"), attrs={"event_id": CANARY_NUMBER, "line_id": CANARY_NAME}), "ATTRIBUTE_MISMATCH"),
        (_message(_event("A3", "L2"), attrs={"event_id": "A3", "line_id": "L3"}), "ATTRIBUTE_MISMATCH"),
        (_message(_event("U1", "L😀")), "UNKNOWN_LINE"),
        (_message(_event("T1", "L4", at="2016-12-31T23:59:60Z")), "BAD_TIMESTAMP"),
        (_message(_event("T2", "L4", at="0000-01-01T00:00:00")), "BAD_TIMESTAMP"),
        (_message(_event("T3", "L4", at="2026-11-30T10:00:00+25:00")), "BAD_TIMESTAMP"),
        (_message(_event("T4", "L4", at="9999-12-31T23:59:59")), "TIMESTAMP_IN_FUTURE"),
        (_message(_event("T5", "L5", at="0001-01-01T00:00:00")), "applied"),
        (_message(_event("T6", "L6", at="2026-11-30T10:00:00+14:00")), "applied"),
    ]


def test_bad_bodies_are_each_one_dead_letter_and_no_canary_anywhere(pubsub_emulator, tmp_path):
    """Every bad message is one dead letter with its reason; the good ones are merged; counts balance; no name,
    number or address in OUT (landing zone, line store, windows, manifests), stdout or stderr."""
    tmp = str(tmp_path)
    base, keys, out = _base(tmp), keys_file(tmp), os.path.join(tmp, "stream")
    topic, sub = pubsub_emulator.topic_and_subscription("bad", ack_deadline_seconds=10)
    plan = _bad_messages()
    publish(topic, [m for m, _ in plan])
    proc = _stream(sub, base, keys, out, "--window-seconds", "1", "--stop-after-idle", "4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = sorted(reason for _, reason in plan if reason != "applied")
    assert sorted(d["reason"] for d in _dead_letters(out)) == expected
    assert _applied(out) == ["G1", "T5", "T6"]
    counts = _manifest(out)["all_windows"]
    assert counts["balanced"] and counts["messages_in"] == len(plan) and counts["duplicates"] == 0
    assert not any(c in proc.stdout + proc.stderr for c in CANARIES)
    no_canary(out)


def test_a_restart_after_the_millionth_window_replays_every_window(pubsub_emulator, tmp_path):
    """(f) Window folders are ``w-NNNNNN``: the millionth is ``w-1000000``, which sorts before ``w-100001``. A
    line store built again (a new --as-of, a changed base) replayed the windows in name order, took window
    1,000,000 first and then skipped every window numbered below it as already applied: their ids held, lines'
    registrations and message ids were forgotten, and a second publish of an event they applied was applied
    again. Now replayed in window order."""
    tmp = str(tmp_path)
    base, keys, out = _base(tmp), keys_file(tmp), os.path.join(tmp, "stream")
    topic, sub = pubsub_emulator.topic_and_subscription("million", ack_deadline_seconds=10)
    flags = ("--window-seconds", "1", "--stop-after-idle", "3")
    first = _event("E1", "L1")
    publish(topic, [_message(first)])
    assert _stream(sub, base, keys, out, *flags).returncode == 0
    # a long campaign: the stream's 999,999th window (its folder and number; its store as it was)
    deltas = os.path.join(out, "deltas")
    os.rename(os.path.join(deltas, "w-000001"), os.path.join(deltas, "w-999999"))
    info_path = os.path.join(deltas, "w-999999", "window.json")
    with open(info_path, encoding="utf-8") as f:
        info = json.load(f)
    with open(info_path, "w", encoding="utf-8") as f:
        json.dump({**info, "seq": 999_999}, f)
    publish(topic, [_message(_event("E2", "L2"))])
    assert _stream(sub, base, keys, out, *flags).returncode == 0
    assert sorted(os.listdir(deltas)) == ["w-1000000", "w-999999"]
    # the next day (another --as-of: the store is built again), the first event is published again
    publish(topic, [_message(first)])
    cmd = [PY, "-m", "pipelines.merge", "--streaming", "--subscription", sub, "--base", base, "--keys", keys]
    proc = subprocess.run(
        [*cmd, "--out", out, "--as-of", "2026-12-01", *flags], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = _manifest(out)
    assert manifest["state"]["built"] and manifest["state"]["replayed_windows"] == 2
    assert (manifest["counts"]["messages_in"], manifest["counts"]["duplicates"]) == (1, 1)
    assert _applied(out) == ["E1", "E2"]


def test_sigterm_while_pubsub_is_unreachable_stops_cleanly(tmp_path):
    """(g) The emulator went away, then the operator stopped the stream: the lander sat in the library's own
    60-second pull retry, deaf to the stop, was killed, and the run failed ("the lander process exited with
    -9") without its manifest. Now it stops within seconds, exit 0, what it merged recorded."""
    from dev.pubsub_emulator import running_emulator
    from pipelines.emulator_process import create_topic_and_subscription

    tmp = str(tmp_path)
    base, keys, out = _base(tmp), keys_file(tmp), os.path.join(tmp, "stream")
    topic, sub = "projects/demo-project/topics/away", "projects/demo-project/subscriptions/away-sub"
    proc = None
    try:
        with running_emulator():
            create_topic_and_subscription(topic, sub, 10)
            publish(topic, [_message(_event("W1", "L1"))])
            proc = start(sub, base, keys, out)
            wait_for(lambda: windows(out), 120, "a committed window")
        time.sleep(3)  # the emulator is gone: the lander's pulls fail and are retried
        stopped = time.monotonic()
        stdout, stderr = stop(proc)
    finally:
        reap(proc)
    assert proc.returncode == 0, stderr[-2000:]
    assert time.monotonic() - stopped < 25
    manifest = _manifest(out)
    assert manifest["stopped_by"] == "signal SIGTERM" and manifest["all_windows"]["applied"] == 1
    assert _applied(out) == ["W1"]


def test_committed_windows_come_in_window_order_for_compact_too(tmp_path):
    """compact reads the windows in ``committed_windows``' order (its tie-break between identical registrations is
    the earlier window): by name, ``w-1000000`` came before ``w-100001`` and pane ``p10`` before ``p9``."""
    from pipelines.io.windows import committed_windows

    names = ["w-1000000", "w-100001", "w-999999", "w-000007", "w-20261205T101000-p10-s001-of-004"]
    names += ["w-20261205T101000-p9-s001-of-004", "w-20261205T101000-p0-s003-of-004"]
    for name in names:
        os.makedirs(tmp_path / name)
        (tmp_path / name / "window.json").write_text("{}", encoding="utf-8")
    got = [os.path.basename(p) for p in committed_windows(str(tmp_path))]
    assert got == ["w-000007", "w-100001", "w-999999", "w-1000000"] + [
        "w-20261205T101000-p0-s003-of-004", "w-20261205T101000-p9-s001-of-004", "w-20261205T101000-p10-s001-of-004"
    ]  # fmt: skip
