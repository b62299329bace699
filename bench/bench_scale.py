"""Memory flat in the base's size: every batch step at two base sizes (``python -m bench.run scale``).

For a base of 500,000 and one of 2,000,000 lines (``bench-data/base_500k``,
``base_2m``, seed 7) this runs, each as a child process on the local runner
with its defaults, timed from start to exit, its peak memory the largest sum
of the resident sets of its process tree (:mod:`bench.measure`):

* ``scan`` of the base;
* ``merge`` of registrations for a quarter of the lines (``make_events``,
  with its faults) into the raw base;
* ``compact`` of the same share of registrations committed as five streaming
  windows (``bench.bench_compact.write_windows``) over the raw base;
* ``retention`` of the merged base (as of 2032, so terminated lines are due);
* ``incident --key-version j1`` on the merged base (every tokenized line);
* ``report`` over the scan and the merge.

Target (issue 12): for every step, the peak at 2M lines within 1.25x of the
peak at 500k. The sizes are ``BENCH_SCALE_SIZES=500000,2000000``; the inputs
are made once per size under ``bench-data/scale_SIZE/`` and kept.
"""

from __future__ import annotations

import datetime as dt
import os

from bench.core import AS_OF, Check, Context, Row, Section, checked, ensure_base, register, say
from bench.measure import measure, python_env

__all__ = ["bench_scale", "SIZES", "FLAT", "STEPS"]

SIZES = (500_000, 2_000_000)
FLAT = 1.25
EVENT_SHARE = 0.25
RETENTION_AS_OF = "2032-12-01"  # terminated lines of the generated base are past their retention then
STEPS = ("scan", "merge", "compact", "retention", "incident", "report")


def _label(lines: int) -> str:
    return f"{lines // 1_000_000}m" if lines % 1_000_000 == 0 else f"{lines // 1000}k"


def _inputs(ctx: Context, lines: int) -> dict:
    """The base, a keyset, registrations and streaming windows for ``lines``: made once, kept for re-runs."""
    import pyarrow.parquet as pq

    from bench.bench_compact import WINDOWS, write_windows
    from bench.bench_merge import make_events

    base = ensure_base(ctx, f"base_{_label(lines)}", lines)
    folder = os.path.join(ctx.data_dir, f"scale_{_label(lines)}")
    paths = {name: os.path.join(folder, name) for name in ("keys/keys.json", "events.parquet", "deltas", "done")}
    paths["base"] = base
    if os.path.exists(paths["done"]):
        return paths
    say(f"making the inputs of {lines:,} lines into {folder} (once; kept for re-runs) ...")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if not os.path.exists(paths["keys/keys.json"]):
        checked(measure([ctx.backfill, "keys", "init", "--keys", paths["keys/keys.json"]], env=python_env()), "keys")
    make_events(base, paths["events.parquet"], n=int(lines * EVENT_SHARE), seed=7)
    rows = pq.read_table(paths["events.parquet"]).to_pylist()
    windows = [rows[i::WINDOWS] for i in range(WINDOWS)]
    write_windows([base], windows, paths["deltas"], paths["keys/keys.json"], dt.date.fromisoformat(AS_OF))
    open(paths["done"], "w").close()
    return paths


def _commands(ctx: Context, lines: int, given: dict) -> list[tuple[str, list[str]]]:
    work = {step: ctx.work(f"scale_{_label(lines)}_{step}") for step in STEPS}
    keys, merged = given["keys/keys.json"], work["merge"]
    b = ctx.backfill
    return [
        ("scan", [b, "scan", "--base", given["base"], "--out", work["scan"], "--as-of", AS_OF]),
        (
            "merge",
            [b, "merge", "--base", given["base"], "--registrations", given["events.parquet"], "--keys", keys]
            + ["--out", merged, "--as-of", AS_OF],
        ),
        (
            "compact",
            [b, "compact", "--base", given["base"], "--deltas", given["deltas"], "--keys", keys]
            + ["--out", work["compact"], "--as-of", AS_OF],
        ),
        (
            "retention",
            [b, "retention", "--merged", merged, "--keys", keys]
            + ["--out", work["retention"], "--as-of", RETENTION_AS_OF],
        ),
        (
            "incident",
            [b, "incident", "--key-version", "j1", "--merged", merged] + ["--out", work["incident"]],
        ),
        (
            "report",
            [b, "report", "--scan", work["scan"], "--merged", merged, "--out", work["report"], "--as-of", AS_OF],
        ),
    ]


def _measure_size(ctx: Context, lines: int) -> dict[str, Row]:
    given = _inputs(ctx, lines)
    rows = {}
    for step, command in _commands(ctx, lines, given):
        say(f"{step} {lines:,} lines")
        m = checked(measure(command, env=python_env()), f"{step} {lines:,}")
        say(f"  {m.seconds:.1f} s, peak {m.peak_mb:,.0f} MB")
        rows[step] = Row(f"{step} {lines:,}", lines, m.seconds, m.peak_mb, "", m.cpu_seconds, m.others_cpu_seconds)
    return rows


def _sizes() -> tuple[int, ...]:
    given = os.environ.get("BENCH_SCALE_SIZES")
    return tuple(int(s) for s in given.split(",")) if given else SIZES


@register("scale")
def bench_scale(ctx: Context) -> Section:
    sizes = _sizes()
    measured = {lines: _measure_size(ctx, lines) for lines in sizes}
    small, large = measured[sizes[0]], measured[sizes[-1]]
    checks = []
    for step in STEPS:
        ratio = large[step].peak_mb / small[step].peak_mb if small[step].peak_mb else float("inf")
        checks.append(
            Check(
                f"{step}: peak memory, {sizes[-1]:,} vs {sizes[0]:,} lines",
                f"{large[step].peak_mb:,.0f} MB vs {small[step].peak_mb:,.0f} MB ({ratio:.2f}x)",
                f"<= {FLAT}x (flat in the base's size)",
                ratio <= FLAT,
            )
        )
    rows = [measured[lines][step] for step in STEPS for lines in sizes]
    return Section(
        "scale",
        "Every batch step at two base sizes: wall time and peak memory",
        rows,
        checks,
        notes=[
            f"registrations: {EVENT_SHARE:.0%} of the lines, with faults (bench.bench_merge.make_events); "
            "compact: the same share committed as five streaming windows",
            f"retention as of {RETENTION_AS_OF}; incident by join key j1 (every tokenized line)",
        ],
    )
