"""The demo's live step: registrations through Pub/Sub into the streaming merge, then compacted.

Starts the Pub/Sub emulator (``dev/pubsub_emulator.py``), publishes a
round of simulated registrations as the design's messages (a JSON event,
attributes ``event_id`` and ``line_id``; a few redelivered), runs
``backfill merge --streaming`` until the subscription has been idle a few
seconds, and folds its window deltas into a new base with ``backfill
compact``. Without the emulator installed the step says so and the demo goes on
from the batch merge's output.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["stream_and_compact"]

WINDOW_SECONDS = "2"
IDLE_SECONDS = "4"


def stream_and_compact(path, scan_dir: str, base: str, vault: str, keys: str, day: str, seed: int) -> tuple[str, str]:
    """Returns the (base, vault) the demo goes on with: the compacted ones, or the inputs if skipped."""
    from dev.pubsub_emulator import EmulatorUnavailable, running_emulator
    from dev.simulate_publish import publish_file

    events = path("events", "registrations-live.jsonl")
    counts = _simulate_live(events, scan_dir, base, day, seed)
    try:
        with running_emulator() as emulator:
            topic, subscription = emulator.topic_and_subscription("demo-live")
            published = publish_file(topic, events)
            print(f"   published {published:,} messages to {topic} ({counts['duplicates']} redelivered)")
            proc = _streaming_merge(subscription, base, keys, path("stream"), day)
    except EmulatorUnavailable as exc:
        print(f"   skipped: {exc}")
        return base, vault
    _show_merge(proc)
    _compact(base, vault, path("stream"), keys, path("compact"), day)
    return path("compact", "base"), path("compact", "vault")


def _simulate_live(events: str, scan_dir: str, base: str, day: str, seed: int) -> dict[str, int]:
    """A round of registrations for lines the base does not have registered yet, written to ``events``."""
    from dev.simulate import simulate_registrations

    merged = pq.read_table(base, columns=["line_id", "registration_event_id"])
    registered = merged.filter(pc.is_valid(merged["registration_event_id"]))["line_id"]
    return simulate_registrations(
        scan_dir,
        events,
        share=0.15,
        seed=seed,
        as_of=dt.date.fromisoformat(day),
        exclude=registered,
    )


def _streaming_merge(subscription: str, base: str, keys: str, out: str, day: str) -> subprocess.CompletedProcess:
    """``backfill merge --streaming`` on the subscription until it has been idle ``IDLE_SECONDS``."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.merge",
            "--streaming",
            "--subscription",
            subscription,
            "--base",
            base,
            "--keys",
            keys,
            "--out",
            out,
            "--as-of",
            day,
            "--window-seconds",
            WINDOW_SECONDS,
            "--stop-after-idle",
            IDLE_SECONDS,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )


def _show_merge(proc: subprocess.CompletedProcess) -> None:
    """Echo the streaming merge's summary, indented; its last error line if it failed."""
    sys.stdout.write("".join(f"   {line}\n" for line in proc.stdout.splitlines()))
    if proc.returncode != 0:
        from pipelines.common import UserError

        raise UserError(f"the streaming merge failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")


def _compact(base: str, vault: str, deltas: str, keys: str, out: str, day: str) -> None:
    """Fold the window deltas into a new base and vault with ``backfill compact``; print its summary."""
    from pipelines import compact

    summary = compact.run(
        [
            "--base",
            base,
            "--vault",
            vault,
            "--deltas",
            deltas,
            "--keys",
            keys,
            "--out",
            out,
            "--as-of",
            day,
        ]
    )
    print("   " + compact.format_summary(summary).replace("\n", "\n   "))
