"""Simulated registration events, to a file or a Pub/Sub topic, for the demo, the quick start and the benchmarks.

    backfill simulate --scan SCAN_OUT [--out events.jsonl] [--publish projects/P/topics/T] \\
        [--share 0.4] [--seed 1] [--as-of 2026-12-03]

(``python -m dev.simulate`` from a checkout; ``--classified`` is the old name
of ``--scan``.) ``--out`` writes the events as JSON Lines, the batch merge's
``--registrations``; ``--publish`` sends each event as one message, the JSON
object in UTF-8 with attributes ``event_id`` and ``line_id``: what the
streaming merge reads. Give one or both.

Picks a share of the lines that need registration and gives each a
completed registration with a valid identity of its subscriber kind (drawn
from a generated base and kept only if the policy finds it COMPLETE), a
channel, an agent where one took it, and a time on the as-of day (or spread
over ``days`` days from it). A few events are repeated (redelivery), a few
fail the policy (all taken by one careless agent, :data:`CARELESS_AGENT`, so
the report's Art. 14 table has someone to list) and a few name lines that
do not exist, so the merge's counts have something to show. ``exclude``
leaves out lines already registered (a later round of registrations).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from dev.outputs import existing_file_refusal, removed_on_failure
from pipelines.common import ArgumentParser, UserError, parse_as_of, run_main, split_beam_flags
from transforms.scan.classify import classify_batch
from transforms.core.deadletter import DeadLetterContext
from transforms.scan.policy import load_policy

__all__ = ["simulate_registrations"]

IDENTITY = ["doc_type", "doc_number", "name", "address", "handler_doc_type", "handler_doc_number", "handler_name"]
CHANNELS = np.array(["STORE", "AGENT", "ONLINE", "SELF_SERVICE"])
VERIFIED = np.array(["ID_CARD_READER", "FACE_MATCH", "MANUAL"])
CARELESS_AGENT = "AG00013"


def _valid_identities(n: int, seed: int, as_of: dt.date) -> dict[str, pa.Table]:
    """Identities the policy finds COMPLETE, per subscriber kind."""
    from dev.generate import generate_table

    pool = generate_table(max(n * 3, 2_000), seed)
    raw = pool.append_column("_src_file", pa.array(["pool"] * pool.num_rows)).append_column(
        "_src_row", pa.array(np.arange(1, pool.num_rows + 1), pa.int64())
    )
    result = classify_batch(raw, load_policy(), as_of, DeadLetterContext("simulate", "pool", ""), secrets.token_hex(16))
    verdict = result.classified
    complete = pc.equal(verdict.column("identity_status"), "COMPLETE")
    kept = pool.filter(pc.is_in(pool.column("line_id"), value_set=verdict.filter(complete).column("line_id")))
    kinds = pc.utf8_upper(pc.utf8_trim_whitespace(kept.column("subscriber_kind")))
    return {kind: kept.filter(pc.equal(kinds, kind)).select(IDENTITY) for kind in ("INDIVIDUAL", "ORGANIZATION")}


def simulate_registrations(
    classified_dir: str,
    out_path: str,
    share: float = 0.4,
    seed: int = 1,
    as_of: dt.date | None = None,
    days: int = 1,
    exclude=None,
) -> dict[str, int]:
    """Write events (JSON Lines) for ``share`` of the lines needing registration; returns counts."""
    events, counts = simulated_events(classified_dir, share, seed, as_of, days, exclude)
    write_events(events, out_path)
    return counts


def write_events(events: list[dict], out_path: str) -> None:
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in events).encode("utf-8")
    with FileSystems.create(out_path) as handle:
        handle.write(payload)


def simulated_events(
    classified_dir: str,
    share: float = 0.4,
    seed: int = 1,
    as_of: dt.date | None = None,
    days: int = 1,
    exclude=None,
) -> tuple[list[dict], dict[str, int]]:
    """Events for ``share`` of the lines needing registration, in publishing order, and their counts."""
    as_of = as_of or dt.date.today()
    rng = np.random.default_rng(seed)
    targets = _targets(classified_dir, exclude)
    chosen = targets.take(pa.array(np.flatnonzero(rng.random(targets.num_rows) < share)))
    pools = _valid_identities(chosen.num_rows, seed + 7919, as_of)
    rows = _with_identities(chosen, pools, rng)
    rng.shuffle(rows)
    start = dt.datetime.combine(as_of, dt.time(8, 0))
    _stamp_events(rows, rng, seed, start, days)
    extra = _faults(rows, rng, seed, start)
    return rows + extra, {
        "events": len(rows) + len(extra),
        "lines": len(rows),
        "duplicates": max(1, len(rows) // 50) if rows else 0,
        "invalid": max(1, len(rows) // 100) if rows else 0,
        "unknown_lines": 3 if rows else 0,
    }


def _targets(classified_dir: str, exclude) -> pa.Table:
    """The scan's lines that need registration, less those in ``exclude``."""
    classified = pq.read_table(
        FileSystems.join(classified_dir, "classified"), columns=["line_id", "subscriber_kind", "needs_registration"]
    )
    targets = classified.filter(classified.column("needs_registration"))
    if exclude is not None:
        targets = targets.filter(
            pc.invert(pc.is_in(targets.column("line_id"), value_set=pa.array(exclude, pa.string())))
        )
    return targets


def _with_identities(chosen: pa.Table, pools: dict[str, pa.Table], rng: np.random.Generator) -> list[dict]:
    """One row per chosen line: its line_id and a valid identity of its subscriber kind."""
    rows: list[dict] = []
    for kind in ("INDIVIDUAL", "ORGANIZATION"):
        lines = chosen.filter(pc.equal(chosen.column("subscriber_kind"), kind)).column("line_id").to_pylist()
        pool = pools[kind]
        if not lines:
            continue
        if pool.num_rows == 0:
            raise UserError(f"no valid {kind} identity to simulate with")
        picks = pool.take(pa.array(rng.integers(0, pool.num_rows, len(lines)))).to_pylist()
        for line_id, identity in zip(lines, picks):
            rows.append({"line_id": line_id, **identity})
    return rows


def _stamp_events(rows: list[dict], rng: np.random.Generator, seed: int, start: dt.datetime, days: int) -> None:
    """Give each row (in place) an event id, a channel, an agent for AGENT, a verification and a time."""
    for i, row in enumerate(rows):
        channel = CHANNELS[rng.integers(0, len(CHANNELS))]
        row["event_id"] = f"E{seed:03d}-{i:08d}"
        row["channel"] = str(channel)
        row["agent_id"] = f"AG{rng.integers(1, 301):05d}" if channel == "AGENT" else None
        row["verified_by"] = str(VERIFIED[rng.integers(0, len(VERIFIED))])
        day = dt.timedelta(days=int(rng.integers(0, max(1, days))))
        row["registered_at"] = (start + day + dt.timedelta(seconds=int(rng.integers(0, 13 * 3600)))).isoformat()


def _faults(rows: list[dict], rng: np.random.Generator, seed: int, start: dt.datetime) -> list[dict]:
    """The events added to ``rows``: redeliveries, the careless agent's policy failures and unknown lines."""
    extra: list[dict] = []
    if not rows:
        return extra
    for row in rng.choice(rows, size=max(1, len(rows) // 50), replace=False):
        extra.append(dict(row))  # redelivered: the same event again
    for row in rng.choice(rows, size=max(1, len(rows) // 100), replace=False):
        extra.append(
            {
                **row,
                "event_id": row["event_id"] + "-bad",
                "name": "未知",
                "channel": "AGENT",
                "agent_id": CARELESS_AGENT,
                "registered_at": (start + dt.timedelta(hours=14)).isoformat(),
            }
        )
    for i in range(3):
        extra.append({**rows[i % len(rows)], "event_id": f"E{seed:03d}-unknown-{i}", "line_id": f"NO-SUCH-LINE-{i}"})
    return extra


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill simulate", description=__doc__.splitlines()[0])
    p.add_argument("--scan", "--classified", dest="scan", required=True, help="the scan's --out folder")
    p.add_argument("--out", default=None, help="events file to write (JSON Lines)")
    p.add_argument("--publish", default=None, metavar="TOPIC", help="publish each event to projects/P/topics/T")
    p.add_argument(
        "--share", type=float, default=0.4, help="share of lines needing registration that register (0 to 1)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--as-of", type=parse_as_of, default=None)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv=None) -> int:
    def body(argv):
        from dev.simulate_publish import check_topic_path, publish_events

        args, _ = split_beam_flags(_parser(), argv, pipeline=False)
        if args.out is None and args.publish is None:
            raise UserError("give --out FILE, --publish TOPIC or both")
        if not 0 <= args.share <= 1:  # nan too
            raise UserError(f"--share {args.share} is not a share between 0 and 1")
        if args.out is not None and (refusal := existing_file_refusal(args.out, args.overwrite)):
            raise UserError(refusal)
        if args.publish is not None:
            check_topic_path(args.publish)
        if not FileSystems.exists(FileSystems.join(args.scan, "classified")):
            raise UserError(f"--scan {args.scan} holds no classified/ folder: give the scan's --out folder")
        events, counts = simulated_events(args.scan, args.share, args.seed, args.as_of)
        if args.out is not None:
            with removed_on_failure(args.out):
                write_events(events, args.out)
            print(f"wrote {counts['events']:,} events to {args.out}")
        if args.publish is not None:
            sent = publish_events(args.publish, events)
            print(f"published {sent:,} messages to {args.publish} ({counts['duplicates']:,} sent twice)")
        return 0

    return run_main("backfill simulate", body, argv)


if __name__ == "__main__":
    sys.exit(main())
