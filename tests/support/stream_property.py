"""Random message plans for the streaming-vs-batch property test: valid events, exact duplicates, malformed and
mismatched copies sent first, invalid copies corrected later, conflicting bodies under one event_id, events of one
line out of time order, garbage.

A plan is three *phases*; the test publishes a phase only after the stream has processed the one before, so the
order of two different bodies of one event_id is the same for the stream and for the batch file (which holds the
phases in order). Inside a phase the order is random: nothing in a phase depends on it (no event_id has two
different well-formed bodies in one phase).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

PHASES = 3
_FAULTS = {"registered_at": "2026-13-45T99:00:00", "channel": "PIGEON", "name": "测试"}


@dataclasses.dataclass
class Copy:
    data: bytes  # the message body
    attrs: dict  # the message attributes
    batch: str | None  # the same copy as a JSON Lines line of the batch file; None: no batch equivalent


@dataclasses.dataclass
class Plan:
    phases: list[list[Copy]]
    must_apply: list[dict]  # clean events whose bad copies came first: each must reach its line (or be superseded)
    conflicts: list[tuple[dict, dict]]  # (the body that holds the id, the later different body): never applied


def _body(event: dict) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode("utf-8")


def _copy(event: dict, attrs: dict | None = None, data: bytes | None = None, batch: bool = True) -> Copy:
    attrs = {"event_id": event["event_id"], "line_id": event["line_id"] or ""} if attrs is None else attrs
    data = _body(event) if data is None else data
    return Copy(data, attrs, data.decode("utf-8", "replace") if batch else None)


def live_lines(base_path: str) -> set[str]:
    """Line ids that appear once in the base, ACTIVE or SUSPENDED: an event of theirs can be applied."""
    table = pq.read_table(base_path, columns=["line_id", "status"])
    ids = table.column("line_id").to_pylist()
    once = {i for i, n in zip(*np.unique(np.array([i or "" for i in ids]), return_counts=True)) if n == 1}
    status = pc.utf8_upper(pc.utf8_trim_whitespace(table.column("status"))).to_pylist()
    return {i for i, s in zip(ids, status) if i in once and i and i == i.strip() and s in ("ACTIVE", "SUSPENDED")}


def is_clean(event: dict, live: set[str]) -> bool:
    return event["line_id"] in live and all(event.get(k) != v for k, v in _FAULTS.items())


def make_plan(pool: list[dict], live: set[str], seed: int) -> Plan:
    """Give every pool event a fate; see the module docstring."""
    rng = np.random.default_rng(seed)
    phases: list[list[Copy]] = [[] for _ in range(PHASES)]
    must_apply, conflicts = [], []
    fates = ("plain", "duplicate", "truncated", "mismatch", "invalid", "conflict", "garbage")
    weights = np.array([0.3, 0.15, 0.1, 0.1, 0.12, 0.13, 0.1])
    for i, event in enumerate(pool):
        fate = fates[rng.choice(len(fates), p=weights / weights.sum())]
        later = int(rng.integers(1, PHASES))
        earlier = int(rng.integers(0, later))
        if fate in ("plain", "garbage"):
            phases[int(rng.integers(0, PHASES))].append(_copy(event))
            if fate == "garbage":  # a body that is not JSON, under an id of its own
                junk = {"event_id": f"JUNK{seed}-{i}", "line_id": event["line_id"] or ""}
                phases[earlier].append(Copy(b"\xff{not json", junk, "{not json"))
        elif fate == "duplicate":
            for _ in range(int(rng.integers(2, 4))):
                phases[int(rng.integers(0, PHASES))].append(_copy(event))
        elif fate == "truncated":
            body = _body(event)
            phases[earlier].append(_copy(event, data=body[: len(body) // 2]))
            phases[later].append(_copy(event))
        elif fate == "mismatch":  # the attribute says this event, the body another: the stream's own failure
            other = {**event, "event_id": event["event_id"] + "-X"}
            attrs = {"event_id": event["event_id"], "line_id": event["line_id"] or ""}
            phases[earlier].append(_copy(other, attrs=attrs, batch=False))
            phases[later].append(_copy(event))
        elif fate == "invalid":  # a copy whose document number fails its check, corrected later
            phases[earlier].append(_copy({**event, "doc_number": "1234"}))
            phases[later].append(_copy(event))
        else:  # conflict: the same id, another channel, later
            other = {**event, "channel": "AGENT" if event.get("channel") != "AGENT" else "ONLINE"}
            phases[earlier].append(_copy(event))
            phases[later].append(_copy(other))
            if is_clean(event, live):
                conflicts.append((event, other))
        if fate in ("truncated", "mismatch", "invalid") and is_clean(event, live):
            must_apply.append(event)
    for phase in phases:
        order = rng.permutation(len(phase))
        phase[:] = [phase[k] for k in order]
    return Plan(phases, must_apply, conflicts)


def batch_lines(plan: Plan) -> list[str]:
    """The batch file: every copy that has a batch equivalent, phase after phase, in publish order."""
    return [c.batch for phase in plan.phases for c in phase if c.batch is not None]
