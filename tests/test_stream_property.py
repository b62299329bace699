"""Property: random sequences of valid, duplicate, conflicting, malformed and reordered registrations give the same
base through the streaming merge (killed with SIGKILL and restarted in the middle) then `backfill compact`, as
through the batch merge of the same events.

The plans come from tests/support/stream_property.py (seeded); besides the equality, the events whose bad copy came
first must have reached their line, and a conflicting body must never be a line's registration.
"""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from tests.support.stream_cli import (
    assert_same_base,
    batch_merge_lines,
    compact,
    keys_file,
    kill,
    publish,
    run_until_idle,
    start,
    wait_for,
    windows,
)
from tests.support.stream_property import batch_lines, live_lines, make_plan

pytestmark = pytest.mark.e2e  # the Pub/Sub emulator and the commands in child processes


def _pool(base: str, tmp: str, seed: int) -> list[dict]:
    from bench.bench_merge import make_events

    path = os.path.join(tmp, "pool.parquet")
    make_events(base, path, n=160, seed=seed)
    return pq.read_table(path).to_pylist()


def _stream(pubsub_emulator, plan, base: str, keys: str, out: str) -> None:
    """Phase 1 into a run killed after its first window; every phase then processed to idle before the next."""
    topic, sub = pubsub_emulator.topic_and_subscription("prop", ack_deadline_seconds=10)
    first = start(sub, base, keys, out, "--max-messages", "20")
    try:
        publish(topic, [(c.data, c.attrs) for c in plan.phases[0]])
        wait_for(lambda: windows(out), 120, "the first committed window")
    finally:
        kill(first)
    run_until_idle(sub, base, keys, out)  # what the killed run landed, then the rest of phase 1 and redeliveries
    for phase in plan.phases[1:]:
        publish(topic, [(c.data, c.attrs) for c in phase])
        run_until_idle(sub, base, keys, out)


def _registrations(out: str) -> dict[str, tuple]:
    base = pq.read_table(os.path.join(out, "base"), columns=["line_id", "registration_event_id", "registered_at"])
    base = base.append_column("channel", pq.read_table(os.path.join(out, "base"), columns=["registration_channel"])[0])
    return {r["line_id"]: (r["registration_event_id"], r["registered_at"], r["channel"]) for r in base.to_pylist()}


@pytest.mark.parametrize("seed", [11, 12])
def test_stream_then_compact_equals_the_batch_merge(pubsub_emulator, tmp_path, seed):
    from dev.generate import write_base

    tmp = str(tmp_path)
    base = os.path.join(tmp, "base.parquet")
    write_base(base, 400, seed)
    keys = keys_file(tmp)
    plan = make_plan(_pool(base, tmp, seed), live_lines(base), seed)
    assert plan.must_apply and plan.conflicts  # the plan exercises what it claims to
    out = os.path.join(tmp, "stream")
    _stream(pubsub_emulator, plan, base, keys, out)
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        totals = json.load(f)["all_windows"]
    assert totals["balanced"]
    assert totals["messages_in"] >= sum(len(p) for p in plan.phases)  # redelivered copies add, nothing is lost
    assert totals["dead_letters"].get("EVENT_ID_CONFLICT", 0) >= len(plan.conflicts)
    batch_merge_lines(base, batch_lines(plan), keys, os.path.join(tmp, "batch"))
    compact(base, out, keys, os.path.join(tmp, "compact"))
    assert_same_base(os.path.join(tmp, "batch"), os.path.join(tmp, "compact"))

    lines = _registrations(os.path.join(tmp, "compact"))
    for event in plan.must_apply:  # applied, or superseded by a later registration of its line
        held_id, held_at, _ = lines[event["line_id"]]
        assert held_id is not None and (held_at, held_id) >= (_utc(event["registered_at"]), event["event_id"])
    for holder, other in plan.conflicts:  # the later body under a held id never becomes the registration
        held_id, _, channel = lines[holder["line_id"]]
        if held_id == holder["event_id"]:
            assert channel == holder["channel"] != other["channel"]


def _utc(text: str):
    import pyarrow as pa

    from transforms.scan.dates import parse_timestamps

    return parse_timestamps(pa.array([text]))[0][0].as_py()
