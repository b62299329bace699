"""Peak memory of ``backfill compact`` at two base sizes (``python -m bench.run compact``).

Issue 12 asks that every batch step keep its memory flat in the base's size.
This runs the compaction on the local runner (defaults: the spill on) over
bases of 200,000 and 800,000 lines (``bench-data/base_200k.parquet``,
``base_800k.parquet``, seed 7), each with the same share of registrations
(5 % of the lines, ``bench.bench_merge.make_events``) committed as five
streaming windows, and compares the two peaks (the largest sum of the resident
sets of the command's process tree, :mod:`bench.measure`).

The windows are written as the streaming merge writes them
(:func:`write_windows`: ``process_window`` and ``write_window``, no Pub/Sub;
the events dealt round-robin to the windows); they are made once per size,
with their keyset, under ``bench-data/compact_SIZE/``. ``BENCH_COMPACT_SIZES=100000,400000`` measures
other sizes. Not a timed test: the table goes to ``bench-out/compact.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import os

from bench.core import AS_OF, Check, Context, Row, Section, checked, ensure_base, register, say
from bench.measure import measure, python_env

__all__ = ["bench_compact", "write_windows", "SIZES", "FLAT"]

SIZES = (200_000, 800_000)
EVENT_SHARE = 0.05  # registrations per base line
WINDOWS = 5
FLAT = 1.25  # the larger base's peak may be at most this many times the smaller's


def write_windows(base: list[str], windows: list[list[dict]], deltas_dir: str, keys: str, as_of: dt.date) -> list[str]:
    """Commit each list of registration events (dicts) as one streaming window over ``base`` (a raw base or a
    merge's ``OUT/base``), as the streaming merge commits them (``process_window``, then ``write_window``);
    returns the window folders."""
    import pyarrow as pa

    from pipelines.io.windows import load_index, write_window
    from transforms.core.deadletter import DeadLetterContext
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.tokenize import Tokenizer
    from transforms.crypto.vault import Vault
    from transforms.merge.messages import messages_table
    from transforms.merge.stream import SeenKeys, process_window
    from transforms.scan.policy import load_policy

    ctx = DeadLetterContext("merge", "bench-stream", f"{as_of.isoformat()}T00:00:00Z")
    policy, keyset, salt = load_policy(None), Keyset.load(keys), os.urandom(16).hex()
    index, _ = load_index(list(base), "utf-8", policy, as_of, ctx, salt)
    seen, folders = SeenKeys(), []
    for seq, events in enumerate(windows, start=1):
        records = [
            {
                "message_id": f"m{seq}-{i}",
                "publish_time": None,
                "attributes": {"event_id": str(e["event_id"]), "line_id": str(e["line_id"])},
                "data": json.dumps(e, ensure_ascii=False, default=str).encode("utf-8"),
            }
            for i, e in enumerate(events)
        ]
        result = process_window(
            messages_table(records),
            index,
            seen,
            tokenizer=Tokenizer(keyset),
            vault=Vault(keyset),
            policy=policy,
            as_of=as_of,
            ctx=ctx,
            salt=salt,
            source="projects/bench/subscriptions/bench",
        )
        seen.add(result.new_keys)
        times = pa.array([None] * len(result.new_keys), pa.timestamp("us", tz="UTC"))
        info = {"seq": seq, "landed_files": [], "counts": result.counts}
        folders.append(write_window(deltas_dir, f"w-{seq:06d}", result, times, info))
    return folders


def _stream(ctx: Context, base: str, lines: int) -> tuple[str, str]:
    """(deltas folder, keyset) of ``lines``: made once, kept for re-runs."""
    import pyarrow.parquet as pq

    from bench.bench_merge import make_events
    from transforms.crypto.keyset import Keyset

    folder = os.path.join(ctx.data_dir, f"compact_{lines // 1000}k")
    keys, deltas, done = (os.path.join(folder, name) for name in ("keys.json", "deltas", "done"))
    if os.path.exists(done):
        return deltas, keys
    say(f"making {WINDOWS} streaming windows over {os.path.basename(base)} into {folder} (once) ...")
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, mode=0o700)
    Keyset.generate().save(keys)
    events = os.path.join(folder, "events.parquet")
    make_events(base, events, n=int(lines * EVENT_SHARE), seed=7)
    rows = pq.read_table(events).to_pylist()
    windows = [rows[i::WINDOWS] for i in range(WINDOWS)]
    write_windows([base], windows, deltas, keys, dt.date.fromisoformat(AS_OF))
    open(done, "w").close()
    return deltas, keys


def _compact(ctx: Context, lines: int) -> tuple[Row, dict]:
    base = ensure_base(ctx, f"base_{lines // 1000}k", lines)
    deltas, keys = _stream(ctx, base, lines)
    out = ctx.work(f"compact_{lines // 1000}k")
    say(f"compact {lines:,} lines")
    command = [ctx.backfill, "compact", "--base", base, "--deltas", deltas, "--keys", keys, "--out", out]
    m = checked(measure([*command, "--as-of", AS_OF], env=python_env()), f"compact {lines:,}")
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    say(f"  {m.seconds:.1f} s, peak {m.peak_mb:,.0f} MB")
    note = f"{manifest['shuffle']['buckets']} bucket(s), {manifest['counts']['deltas']['windows']} windows"
    return Row(f"compact {lines:,}", lines, m.seconds, m.peak_mb, note, m.cpu_seconds, m.others_cpu_seconds), manifest


def _sizes() -> tuple[int, ...]:
    given = os.environ.get("BENCH_COMPACT_SIZES")
    return tuple(int(s) for s in given.split(",")) if given else SIZES


@register("compact")
def bench_compact(ctx: Context) -> Section:
    measured = [_compact(ctx, lines) for lines in _sizes()]
    rows = [row for row, _ in measured]
    small, large = rows[0], rows[-1]
    ratio = large.peak_mb / small.peak_mb if small.peak_mb else float("inf")
    checks = [
        Check(
            f"peak memory, {large.rows:,} vs {small.rows:,} lines",
            f"{large.peak_mb:,.0f} MB vs {small.peak_mb:,.0f} MB ({ratio:.2f}x)",
            f"<= {FLAT}x (flat in the base's size)",
            ratio <= FLAT,
        )
    ]
    notes = [
        f"each base with {EVENT_SHARE:.0%} of its lines' registrations in {WINDOWS} committed windows; local runner, "
        "defaults (spill on); peak MB = largest sum of each process's PSS over the process tree, sampled every 50 ms."
    ]
    details = {f"compact_{row.rows}": manifest["counts"] for row, manifest in measured}
    return Section("compact", "Compact: memory flat in the base's size", rows, checks, notes, details)


if __name__ == "__main__":
    raise SystemExit("run it through the registry: python -m bench.run compact")
