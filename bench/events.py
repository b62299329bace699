"""Registration events for the benchmarks (and the tests that need many): Parquet, seed-stable.

* :func:`make_events`: ``n`` events for lines drawn (with replacement) from the
  ACTIVE and SUSPENDED lines of a base;
* :func:`make_registrations`: events for half the lines a scan found needing
  registration, each line drawn once.

Both give the events COMPLETE identities of the line's subscriber kind (taken
from another generated base, seed 8) and the same faults: 1 % bad timestamps,
0.5 % bad channels, 1 % placeholder names, 0.5 % unknown lines, then 2 % of the
events repeated, and the whole shuffled.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["make_events", "make_registrations", "EVENTS"]

EVENTS = 1_000_000
_IDENTITY = ("doc_type", "doc_number", "name", "address", "handler_doc_type", "handler_doc_number", "handler_name")


def make_events(base_path: str, out: str, n: int = EVENTS, seed: int = 7, prefix: str = "EV") -> int:
    """Write ``n`` registration events for the lines of ``base_path`` (Parquet), drawn with replacement from
    its ACTIVE and SUSPENDED lines, their ids ``prefix`` + a 9-digit number; returns rows written."""
    rng = np.random.default_rng(seed)
    lines = pq.read_table(base_path, columns=["line_id", "subscriber_kind", "status"])
    live = pc.and_(pc.is_valid(lines["line_id"]), pc.is_in(lines["status"], pa.array(["ACTIVE", "SUSPENDED"])))
    lines = lines.filter(pc.fill_null(live, False))
    picked = lines.take(pa.array(rng.integers(0, lines.num_rows, n)))
    return _write_events(picked, rng, out, prefix)


def make_registrations(classified: str, out: str, share: float = 0.5, seed: int = 7) -> int:
    """Registrations for ``share`` of the lines the scan (``classified``: its Parquet folder) found needing
    one, each such line at most once (before the faults and repeats of :func:`make_events`); returns rows."""
    rng = np.random.default_rng(seed)
    needing = pq.read_table(classified, columns=["line_id", "subscriber_kind", "needs_registration"])
    needing = needing.filter(needing["needs_registration"]).select(["line_id", "subscriber_kind"])
    n = int(needing.num_rows * share)
    picked = needing.take(pa.array(np.sort(rng.choice(needing.num_rows, n, replace=False))))
    return _write_events(picked, rng, out)


def _write_events(picked: pa.Table, rng: np.random.Generator, out: str, prefix: str = "EV") -> int:
    """One event per row of ``picked`` (line_id, subscriber_kind) with a COMPLETE identity of the same kind
    (from a base generated with seed 8), the faults and 2 % repeats, shuffled; returns rows written."""
    from dev.generate import generate_table, generate_truth

    n = picked.num_rows
    donors_n = max(50_000, n // 2)
    donors, truth = generate_table(donors_n, seed=8), generate_truth(donors_n, seed=8)
    good = pc.and_(pc.equal(truth["identity_class"], "COMPLETE"), pc.is_null(truth["dead_letter"]))
    good = pc.and_(good, pc.is_null(truth["cross_record"]))
    donors = donors.filter(pc.fill_null(good, False))
    org = pc.equal(pc.utf8_upper(pc.utf8_trim_whitespace(picked["subscriber_kind"])), "ORGANIZATION")
    org = pc.fill_null(org, False).to_numpy(zero_copy_only=False)
    kinds = pc.fill_null(
        pc.equal(pc.utf8_upper(pc.utf8_trim_whitespace(donors["subscriber_kind"])), "ORGANIZATION"), False
    ).to_numpy(zero_copy_only=False)
    people, orgs = np.flatnonzero(~kinds), np.flatnonzero(kinds)
    donor_at = np.where(org, orgs[rng.integers(0, len(orgs), n)], people[rng.integers(0, len(people), n)])
    who = donors.take(pa.array(donor_at))
    seconds = rng.integers(0, 30 * 86400, n)
    stamps = pa.array(np.datetime64("2026-11-01T00:00:00") + seconds.astype("timedelta64[s]"))
    columns = {
        "event_id": pa.array([f"{prefix}{i:09d}" for i in range(n)]),
        "line_id": picked["line_id"],
        **{f: who[f] for f in _IDENTITY},
        "channel": pa.array(np.array(["STORE", "AGENT", "ONLINE", "SELF_SERVICE"])[rng.integers(0, 4, n)]),
        "agent_id": pa.array([f"AG{int(a):05d}" for a in rng.integers(1, 300, n)]),
        "verified_by": pa.array(np.array(["ID_CARD_READER", "FACE_MATCH", "MANUAL"])[rng.integers(0, 3, n)]),
        "registered_at": pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%S"),
    }
    fault = rng.random(n)
    for name, low, high, value in (
        ("registered_at", 0.000, 0.010, "2026-13-45T99:00:00"),
        ("channel", 0.010, 0.015, "PIGEON"),
        ("name", 0.015, 0.025, "测试"),
        ("line_id", 0.025, 0.030, None),
    ):
        hit = pa.array((fault >= low) & (fault < high))
        replacement = pa.array([f"LX{i:09d}" for i in range(n)]) if value is None else pa.scalar(value)
        columns[name] = pc.if_else(hit, replacement, columns[name])
    events = pa.table(columns)
    repeats = events.take(pa.array(np.flatnonzero(rng.random(n) < 0.02)))
    events = pa.concat_tables([events, repeats]).take(pa.array(rng.permutation(n + repeats.num_rows)))
    pq.write_table(events, out, row_group_size=250_000)
    return events.num_rows
