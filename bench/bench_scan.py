"""The scan benchmark (``python -m bench.run scan``).

Four sides run alternating, whole processes, median of 3 after one
uncounted warm-up each, then once more each with their memory sampled
(:func:`bench.compare.compare`), on the 2-million-line base
(``bench-data/base_2m.parquet``):

* ``backfill scan`` with its defaults (in process, one worker process per CPU);
* DuckDB running the document checks in SQL over the same file
  (``python -m bench.duck``; a subset of the rules, listed in the report;
  it uses every CPU too);
* ``backfill scan --workers 1`` and ``backfill scan --workers 2``: one and two
  local worker processes.

Then, once each: ``backfill scan`` on 10 million lines for the memory row
(``BENCH_10M=0`` skips it), and on 200,000 lines (20,000 with ``--quick``)
beside the naive per-row Beam baseline (:mod:`bench.naive`), which must agree
with it.

Targets (issue 14): the scan's wall clock at most 1.5x DuckDB's (stretch:
1.0x); two workers at least 1.5x faster than one; peak memory under 1 GB
and flat from 2M to 10M lines (the 10M peak within 1.25x of the 2M peak).
Kept from issue 2: at least 8x the naive baseline's lines/s.
"""

from __future__ import annotations

import json
import os

from bench.compare import Side, SideStats, compare, output_folder, ratio_check
from bench.core import AS_OF, Check, Context, Row, Section, checked, ensure_base, label, register, say
from bench.inputs import read_json
from bench.measure import measure, python_env

__all__ = ["bench_scan", "TARGET_VS_DUCKDB", "STRETCH_VS_DUCKDB", "TARGET_TWO_WORKERS", "TARGET_PEAK_MB", "FLAT"]

TARGET_VS_DUCKDB = 1.5
STRETCH_VS_DUCKDB = 1.0
TARGET_TWO_WORKERS = 1.5
TARGET_PEAK_MB = 1024
FLAT = 1.25  # large peak / 2M peak
TARGET_VS_NAIVE = 8.0
DEFAULT, DUCK, ONE, TWO = "scan, defaults", "DuckDB", "scan, 1 worker", "scan, 2 workers"


def _scan_side(ctx: Context, name: str, base: str, folder: str, extra: list[str] = ()) -> Side:
    out = ctx.work(folder)
    command = [ctx.backfill, "scan", "--base", base, "--out", out, "--as-of", AS_OF, *extra]

    def after(m) -> dict:
        manifest = read_json(os.path.join(out, "manifest.json"))
        summary = read_json(os.path.join(out, "summary.json"))
        return {
            "summary": summary,
            "runner": manifest.get("runner"),
            "workers": manifest.get("workers"),
            "shuffle": manifest.get("shuffle"),
            "timings": manifest.get("timings"),
        }

    return Side(name, command, output_folder(out), after)


def _once(ctx: Context, side: Side) -> tuple[Row, dict]:
    """One run of a scan side (no alternation: the memory row and the naive agreement)."""
    side.before()
    say(f"{side.name} (one run)")
    m = checked(measure(side.command, env=python_env()), side.name)
    result = side.after(m)
    say(f"  {m.seconds:.1f} s, {m.cpu_seconds:.1f} CPU s (others {m.others_cpu_seconds:.1f}), peak {m.peak_mb:,.0f} MB")
    rows = result["summary"]["rows_in"]
    return Row(side.name, rows, m.seconds, m.peak_mb, "one run", m.cpu_seconds, m.others_cpu_seconds), result


def _naive(ctx: Context, base: str, size: str) -> tuple[Row, dict]:
    out = ctx.work("naive")
    say(f"naive per-row Beam baseline: {os.path.basename(base)} (one run)")
    m = checked(
        measure([ctx.python, "-m", "bench.naive", "--base", base, "--out", out, "--as-of", AS_OF], env=python_env()),
        "naive baseline",
    )
    summary = read_json(os.path.join(out, "summary.json"))
    say(f"  {m.seconds:.1f} s, {m.cpu_seconds:.1f} CPU s, peak {m.peak_mb:,.0f} MB")
    rows = summary["classified"] + summary["dead_letters"]
    note = "FnApiRunner, one dict per row; one run"
    return Row(
        f"naive per-row Beam, {size}", rows, m.seconds, m.peak_mb, note, m.cpu_seconds, m.others_cpu_seconds
    ), summary


def _memory_checks(scan: SideStats, large: Row | None, size: str) -> list[Check]:
    if large is None:
        return [
            Check(
                "scan peak memory",
                f"{size} {scan.peak_mb:,.0f} MB (memory run)",
                f"< {TARGET_PEAK_MB:,} MB",
                scan.peak_mb < TARGET_PEAK_MB,
                "scan_memory",
            ),
            Check("scan memory flat", "skipped (BENCH_10M=0)", f"<= {FLAT}x", None, "scan_flat"),
        ]
    peak = max(scan.peak_mb, large.peak_mb)
    growth = large.peak_mb / scan.peak_mb
    large_size = f"{large.rows / 1e6:g}M" if large.rows >= 1_000_000 else f"{large.rows // 1000}k"
    measured = f"{size} {scan.peak_mb:,.0f} MB (memory run), {large_size} {large.peak_mb:,.0f} MB"
    return [
        Check("scan peak memory", measured, f"< {TARGET_PEAK_MB:,} MB", peak < TARGET_PEAK_MB, "scan_memory"),
        Check(
            f"scan memory flat, {large_size} peak / {size} peak",
            f"{large.peak_mb:,.0f} / {scan.peak_mb:,.0f} MB = {growth:.2f}x",
            f"<= {FLAT}x",
            growth <= FLAT,
            "scan_flat",
        ),
    ]


def _naive_checks(small: Row, small_result: dict, naive: Row, naive_summary: dict, size: str) -> list[Check]:
    statuses = small_result["summary"]["identity_status"]
    same = statuses == {k: naive_summary["identity_status"].get(k, 0) for k in statuses}
    per_cpu = (small.rows / max(small.cpu_seconds, 1e-9)) / (naive.rows / max(naive.cpu_seconds, 1e-9))
    return [
        Check(
            f"scan vs naive on the same {size} file, lines/s",
            f"{small.rate / naive.rate:.1f}x (per CPU second: {per_cpu:.1f}x)",
            f">= {TARGET_VS_NAIVE:.0f}x",
            small.rate / naive.rate >= TARGET_VS_NAIVE,
        ),
        Check(f"scan and naive agree on identity_status counts, {size}", "equal" if same else "differ", "equal", same),
    ]


def _notes(stats: dict, duck: dict, size: str) -> list[str]:
    default, one, two = stats[DEFAULT], stats[ONE], stats[TWO]
    statuses = default.result["summary"]["identity_status"]
    keys = set(statuses) | set(duck["identity_status"])
    gap = max(abs(statuses.get(k, 0) - duck["identity_status"].get(k, 0)) for k in keys) / max(
        sum(statuses.values()), 1
    )
    return [
        f"CPU seconds ({size}, medians): scan {default.cpu_seconds:,.1f} with its defaults "
        f"({default.result['workers']} worker processes), {one.cpu_seconds:,.1f} with one worker, "
        f"{two.cpu_seconds:,.1f} with two; DuckDB {stats[DUCK].cpu_seconds:,.1f} ({duck['threads']} threads; its query alone "
        f"{duck['query_seconds']:.1f} s). Peak memory with two workers (all processes): {two.peak_mb:,.0f} MB.",
        f"DuckDB covers: {'; '.join(duck['covers'])}. It leaves out: {'; '.join(duck['leaves_out'])}. "
        f"Its identity_status counts differ from the scan's by at most {100 * gap:.1f} % of lines.",
        "seconds = wall clock of the whole command (interpreter start, planning, Parquet read and write, summary); "
        "peak MB = largest sum over the process tree of each process's proportional set size (a page shared by forked workers "
        "counted once), sampled every 50 ms in one more run of each side (the timed runs are not sampled: it slows them).",
    ]


@register("scan")
def bench_scan(ctx: Context) -> Section:
    lines, large_lines = ctx.lines(2_000_000), ctx.lines(10_000_000, 500_000)
    size = label(lines).upper()
    base = ensure_base(ctx, f"base_{label(lines)}", lines)
    small_lines = ctx.lines(200_000, 20_000)
    base_small = ensure_base(ctx, f"base_{label(small_lines)}", small_lines)
    base_large = ensure_base(ctx, f"base_{label(large_lines)}", large_lines) if ctx.ten_million else None
    duck_side = Side(
        DUCK,
        [ctx.python, "-m", "bench.duck", "--base", base, "--as-of", AS_OF],
        after=lambda m: json.loads(m.output.strip().splitlines()[-1]),
    )
    sides = [
        _scan_side(ctx, DEFAULT, base, "scan_default"),
        duck_side,
        _scan_side(ctx, ONE, base, "scan_1w", ["--workers", "1"]),
        _scan_side(ctx, TWO, base, "scan_2w", ["--workers", "2"]),
    ]
    stats = compare(sides, runs=ctx.runs, warmup=ctx.warmup, settle=not ctx.quick)
    default, one, duck = stats[DEFAULT], stats[ONE], stats[DUCK]
    large, large_result = (None, None)
    if base_large:
        large, large_result = _once(ctx, _scan_side(ctx, f"scan {label(large_lines).upper()}", base_large, "scan_l"))
    small, small_result = _once(ctx, _scan_side(ctx, f"scan {label(small_lines)}", base_small, "scan_small"))
    naive, naive_summary = _naive(ctx, base_small, label(small_lines))
    rows_in = default.result["summary"]["rows_in"]
    rows = [
        default.row(f"scan {size}, defaults ({default.result['workers']} workers)", rows_in, "whole command"),
        duck.row(f"DuckDB document checks {size}", duck.result["rows"], "whole process, rule subset"),
        one.row(f"scan {size}, 1 worker process", rows_in, "whole command"),
        stats[TWO].row(f"scan {size}, 2 worker processes", rows_in, "whole command"),
        *([large] if large else []),
        small,
        naive,
    ]
    checks = [
        ratio_check(f"scan / DuckDB, {size}, wall clock", default, duck, at_most=TARGET_VS_DUCKDB, step="scan_duck"),
        ratio_check("the same, stretch target", default, duck, at_most=STRETCH_VS_DUCKDB, step="scan_duck_stretch"),
        ratio_check(
            f"scan {size}, one worker / two workers", one, stats[TWO], at_least=TARGET_TWO_WORKERS, step="workers_scan"
        ),
        *_memory_checks(default, large, size),
        *_naive_checks(small, small_result, naive, naive_summary, label(small_lines)),
    ]
    details = {"scan": default.result, "scan_1_worker": one.result, "scan_2_workers": stats[TWO].result}
    details["scan_large"] = large_result
    details |= {"scan_small": small_result, "naive": naive_summary, "duckdb": duck.result}
    return Section("scan", "Scan: speed and memory", rows, checks, _notes(stats, duck.result, size), details)
