"""The streaming merge driven as a user drives it: publish to the emulator, run `backfill merge --streaming`,
kill it, compact its windows, and the batch merge of the same events to compare with.

Every helper runs the real commands in child processes (``python -m pipelines.merge`` ...).
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable
AS_OF = "2026-11-30"


def publish(topic: str, messages: list[tuple[bytes, dict]]) -> None:
    """Publish (body, attributes) pairs in order and wait for every one to be accepted."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    try:
        for future in [publisher.publish(topic, data, **attrs) for data, attrs in messages]:
            future.result(timeout=120)
    finally:
        publisher.stop()


def start(sub: str, base: str, keys: str, out: str, *extra: str) -> subprocess.Popen:
    """`backfill merge --streaming` in a child process (1-second windows unless ``extra`` says otherwise)."""
    cmd = [PY, "-m", "pipelines.merge", "--streaming", "--subscription", sub, "--base", base, "--keys", keys]
    window = [] if "--window-seconds" in extra else ["--window-seconds", "1"]  # a flag is given once
    cmd += ["--out", out, "--as-of", AS_OF, *window, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_until_idle(sub: str, base: str, keys: str, out: str, idle: float = 12.0) -> tuple[str, str]:
    """One run that stops once nothing has arrived for ``idle`` seconds (longer than the ack deadline, so a
    message a killed run pulled comes back to it); asserts exit 0; returns (stdout, stderr)."""
    proc = start(sub, base, keys, out, "--max-messages", "100", "--stop-after-idle", str(idle))
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    return stdout, stderr


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGTERM (the operator's stop), then its stdout and stderr once it ends (bounded)."""
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=120)


def reap(proc: subprocess.Popen | None) -> None:
    """A run a failed test left going: killed and waited for."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.communicate()


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.communicate()


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def windows(out: str) -> list[dict]:
    """The window.json of every committed window."""
    found = []
    for path in sorted(glob.glob(os.path.join(out, "deltas", "w-*", "window.json"))):
        with open(path, encoding="utf-8") as f:
            found.append(json.load(f))
    return found


def keys_file(tmp: str) -> str:
    keys = os.path.join(tmp, "secure", "keys.json")
    subprocess.run([PY, "-m", "pipelines.keys", "init", "--keys", keys], check=True, capture_output=True, cwd=ROOT)
    return keys


def _run(args: list[str]) -> None:
    proc = subprocess.run([PY, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]


def batch_merge_lines(base: str, lines: list[str], keys: str, out: str) -> None:
    """`backfill merge` of a JSON Lines file made of ``lines`` (in this order)."""
    path = out + "-events.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    _run(["pipelines.merge", "--base", base, "--registrations", path, "--keys", keys, "--out", out, "--as-of", AS_OF])


def batch_merge(base: str, events: list[dict], keys: str, out: str) -> None:
    batch_merge_lines(base, [json.dumps(e, ensure_ascii=False) for e in events], keys, out)


def compact(base: str, stream_out: str, keys: str, out: str) -> dict:
    """`backfill compact` of the stream's windows onto ``base``; returns its manifest."""
    _run(["pipelines.compact", "--base", base, "--deltas", stream_out, "--keys", keys, "--out", out, "--as-of", AS_OF])
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def assert_same_base(batch_out: str, compact_out: str) -> None:
    """The two merged bases are equal, column by column, line by line."""
    a = pq.read_table(os.path.join(batch_out, "base")).sort_by("line_id")
    b = pq.read_table(os.path.join(compact_out, "base")).sort_by("line_id")
    b = b.select(a.column_names).cast(a.schema)
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        assert a.column(name).equals(b.column(name)), name


def event_row(eid, line, at: str = "2026-11-30T10:00:00", **fields) -> dict:
    """A registration event (a valid resident ID registration at the store) with ``fields`` overridden."""
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
    """(body bytes, attributes) of a Pub/Sub message carrying ``body`` (its JSON unless ``data`` is given)."""
    attrs = {"event_id": str(body["event_id"]), "line_id": str(body["line_id"])} if attrs is None else attrs
    return (data if data is not None else json.dumps(body, ensure_ascii=False).encode("utf-8")), attrs
