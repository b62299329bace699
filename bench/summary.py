"""The one table of issue 14 ("Speed"), filled from the sections' checks: ``bench-out/summary.md``.

Each :class:`bench.core.Check` that fills a row of the issue's table names it
in ``step`` (one of :data:`STEPS`); rows whose section did not run, or
failed, say so. The machine line (CPU count, RAM, Python, load average
before the run) goes above the table, ready to paste into the README.
A run of some of the sections (``python -m bench.run merge``) fills the
other rows from the sections' last ``OUT/NAME.json``, each marked with the
time of that earlier run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform

from bench.core import Check, Context

__all__ = ["STEPS", "machine_line", "summary_markdown", "write_summary", "earlier_checks"]

# step key -> (the row of the table, the section that measures it)
STEPS: dict[str, tuple[str, str]] = {
    "scan_duck": ("scan, 2M lines, whole command, vs the DuckDB SQL of the document checks (bench/duck.py)", "scan"),
    "scan_duck_stretch": ("the same, stretch target", "scan"),
    "merge_rate": ("merge, a 2M-line base with registrations for half the lines needing one", "merge"),
    "merge_bare": ("merge vs the bare loop of the same cryptographic calls (bench/crypto.py)", "merge"),
    "notify_rate": ("notify, wave 1 of a 2M-line scan, to files", "notify"),
    "report_duck": ("report, 2M lines, vs a DuckDB process computing the completion table", "report"),
    "workers_scan": ("two local worker processes vs one: scan", "scan"),
    "workers_merge": ("two local worker processes vs one: merge", "merge"),
    "scan_memory": ("scan peak memory", "scan"),
    "scan_flat": ("scan peak memory, 10M vs 2M lines (flat)", "scan"),
}
SECTIONS = {section for _, section in STEPS.values()}


def _memory_gb() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


def machine_line(ctx: Context) -> str:
    load = ", ".join(f"{x:.2f}" for x in ctx.load_before) if ctx.load_before else "unknown"
    return (
        f"machine: {os.cpu_count()} CPU, {_memory_gb():.0f} GB RAM, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}; load average before the run {load} (1, 5, 15 min); "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    )


def summary_markdown(ctx: Context, checks: list[Check], errors: dict[str, str]) -> str:
    """The issue's table: one row per step, in the issue's order."""
    by_step = {c.step: c for c in checks if c.step}
    lines = [
        "# Speed (issue 14)",
        "",
        machine_line(ctx),
        "",
        "Each side is a whole process (wall clock, CPU, peak memory of its process tree), "
        + (
            "one run each (--quick: 200k-line inputs, not the issue's sizes)."
            if ctx.quick
            else "median of 3 runs, sides alternating after one uncounted warm-up each; peak memory from one more "
            "run of each side (sampling it slows the timed runs)."
        ),
        "",
        "| step | measured | target | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for key, (step, section) in STEPS.items():
        check = by_step.get(key)
        if check is None:
            why = f"not measured: {errors[section]}" if section in errors else "not measured"
            lines.append(f"| {step} | {why} | - | - |")
            continue
        verdict = {True: "PASS", False: "MISS", None: "-"}[check.ok]
        lines.append(f"| {step} | {check.measured} | {check.target} | {verdict} |")
    return "\n".join(lines) + "\n"


def write_summary(ctx: Context, checks: list[Check], errors: dict[str, str]) -> str:
    """Write ``OUT/summary.md``; returns its text."""
    text = summary_markdown(ctx, checks, errors)
    with open(os.path.join(ctx.out_dir, "summary.md"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return text


def earlier_checks(ctx: Context, ran: list[str]) -> list[Check]:
    """The summary's checks of the sections not run this time, from their last ``OUT/NAME.json``, marked."""
    found = []
    for name in sorted(SECTIONS - set(ran)):
        path = os.path.join(ctx.out_dir, f"{name}.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
        when = saved.get("machine", "").rsplit("; ", 1)[-1]
        for c in saved.get("checks", []):
            if c.get("step"):
                found.append(
                    Check(c["name"], f"{c['measured']} [earlier run, {when}]", c["target"], c["ok"], c["step"])
                )
    return found
