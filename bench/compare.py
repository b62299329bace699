"""Side by side: run two (or more) commands alternating, keep the median of each.

    sides = [Side("scan", [...scan command...]), Side("duckdb", [...duck command...])]
    stats = compare(sides, runs=3)                 # A B (warm-up) | A B A B A B | A B (memory)
    check = ratio_check("scan vs DuckDB", stats["scan"], stats["duckdb"], at_most=1.5)

Each run is a child process measured whole (:func:`bench.measure.measure`:
wall clock from start to exit, CPU seconds of its process tree). After one
warm-up run of every side (not counted: the first run pays the page cache and
the imports' byte-code), the sides run in turn, A, B, A, B, ..., so that a
machine that gets busier or quieter part of the way affects both sides
alike; wall clock and CPU seconds are each the median of a side's runs.
These timed runs do not sample memory (sampling it slows the process it
measures, more so one that forks workers: ``bench/measure.py``); then each
side runs ``memory_runs`` more times with its memory sampled, and the
median of those peaks is the side's peak memory. A side's ``before`` empties
its output folder before each run; its ``after`` reads what a timed run
wrote (a manifest, a JSON line) and keeps it beside the measurement.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from typing import Any, Callable

from bench.core import BenchError, Check, Row, checked, say
from bench.measure import Measurement, measure, python_env, wait_for_quiet

__all__ = ["Side", "SideStats", "compare", "run_order", "median_stats", "ratio_check", "rate_check", "describe"]


@dataclasses.dataclass
class Side:
    name: str
    command: list[str]
    before: Callable[[], None] | None = None  # e.g. empty the output folder
    after: Callable[[Measurement], Any] | None = None  # e.g. read the manifest the run wrote
    env: dict | None = None
    cwd: str | None = None


@dataclasses.dataclass
class SideStats:
    name: str
    seconds: float  # medians over the counted runs
    cpu_seconds: float
    peak_mb: float
    others_cpu_seconds: float
    runs: list[Measurement]
    results: list[Any]  # what ``after`` returned, one per counted run

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def result(self) -> Any:
        """The result of the run whose wall clock is the median (the middle one, or the lower middle)."""
        ranked = sorted(range(self.n), key=lambda i: self.runs[i].seconds)
        return self.results[ranked[(self.n - 1) // 2]]

    def row(self, what: str, rows: int, note: str = "") -> Row:
        how = f"median of {self.n}" if self.n > 1 else "one run"
        return Row(
            what,
            rows,
            self.seconds,
            self.peak_mb,
            f"{note}; {how}" if note else how,
            self.cpu_seconds,
            self.others_cpu_seconds,
        )


def run_order(names: list[str], runs: int, warmup: bool) -> list[tuple[str, bool]]:
    """(side, counted) in the order they run: one uncounted warm-up of each, then the sides in turn."""
    order = [(name, False) for name in names] if warmup else []
    return order + [(name, True) for _ in range(runs) for name in names]


def median_stats(name: str, runs: list[Measurement], results: list[Any], peaks: list[float] | None = None) -> SideStats:
    """Medians of the timed ``runs``; the peak memory is the median of ``peaks`` (the memory runs' peaks),
    or of the runs' own when not given."""
    med = lambda f: statistics.median(f(m) for m in runs)  # noqa: E731
    return SideStats(
        name,
        med(lambda m: m.seconds),
        med(lambda m: m.cpu_seconds),
        statistics.median(peaks) if peaks else med(lambda m: m.peak_mb),
        med(lambda m: m.others_cpu_seconds),
        list(runs),
        list(results),
    )


def _run(side: Side, label: str, measure_fn, memory: bool) -> Measurement:
    """One measured run of ``side`` (its ``before`` first); a failed command raises (one line)."""
    if side.before:
        side.before()
    env = side.env if side.env is not None else python_env()
    m = checked(measure_fn(side.command, env=env, cwd=side.cwd, memory=memory), side.name)
    peak = f", peak {m.peak_mb:,.0f} MB" if memory else ""
    say(f"  {label}: {m.seconds:.1f} s, {m.cpu_seconds:.1f} CPU s (others {m.others_cpu_seconds:.1f}){peak}")
    return m


def compare(
    sides: list[Side],
    runs: int = 3,
    warmup: bool = True,
    settle: bool = True,
    measure_fn=measure,
    memory_runs: int = 1,
) -> dict[str, SideStats]:
    """Run every side ``runs`` times, alternating, after one uncounted warm-up each, then ``memory_runs``
    times with its memory sampled; medians by side name.

    A command that fails raises :class:`bench.core.BenchError` (one line).
    """
    if len({s.name for s in sides}) != len(sides):
        raise ValueError("two sides with one name")
    by_name = {s.name: s for s in sides}
    if settle:
        busy = wait_for_quiet()
        if busy >= 0.25:
            say(f"  (the machine stays busy: {100 * busy:.0f} % of its CPUs in use; measuring anyway, alternating)")
    kept: dict[str, list[tuple[Measurement, Any]]] = {s.name: [] for s in sides}
    order = run_order([s.name for s in sides], runs, warmup)
    total = len(order) + memory_runs * len(sides)
    for i, (name, counted) in enumerate(order, 1):
        side = by_name[name]
        m = _run(side, f"[{i}/{total}] {name}{'' if counted else ' (warm-up, not counted)'}", measure_fn, False)
        try:
            result = side.after(m) if side.after else None
        except (OSError, ValueError, KeyError, IndexError) as exc:  # ran, but left no readable result
            raise BenchError(f"{name}: exit 0 but no readable result ({type(exc).__name__}: {exc})") from None
        if counted:
            kept[name].append((m, result))
    peaks: dict[str, list[float]] = {s.name: [] for s in sides}
    for i, (name, _) in enumerate(run_order([s.name for s in sides], memory_runs, False), len(order) + 1):
        peaks[name].append(_run(by_name[name], f"[{i}/{total}] {name} (memory sampled)", measure_fn, True).peak_mb)
    return {
        name: median_stats(name, [m for m, _ in got], [r for _, r in got], peaks[name]) for name, got in kept.items()
    }


def describe(a: SideStats, b: SideStats, ratio: float) -> str:
    how = f"median of {a.n}, alternating" if a.n > 1 else "one run each"
    return f"{a.seconds:,.1f} s vs {b.seconds:,.1f} s = {ratio:.2f}x ({how})"


def ratio_check(
    name: str, a: SideStats, b: SideStats, *, at_most: float | None = None, at_least: float | None = None, step=""
) -> Check:
    """``a``'s median wall clock over ``b``'s, checked against ``at_most`` or ``at_least`` (a speed-up)."""
    if (at_most is None) == (at_least is None):
        raise ValueError("one of at_most, at_least")
    if at_most is not None:
        ratio = a.seconds / b.seconds
        return Check(name, describe(a, b, ratio), f"<= {at_most:g}x", ratio <= at_most, step)
    ratio = a.seconds / b.seconds
    return Check(name, describe(a, b, ratio), f">= {at_least:g}x faster", ratio >= at_least, step)


def rate_check(name: str, stats: SideStats, count: int, unit: str, at_least: float, step="") -> Check:
    """``count`` over the median wall clock, against a floor."""
    rate = count / stats.seconds
    how = f"median of {stats.n}" if stats.n > 1 else "one run"
    return Check(
        name,
        f"{rate:,.0f} {unit}/s ({count:,} in {stats.seconds:,.1f} s, {how})",
        f">= {at_least:,.0f} {unit}/s",
        rate >= at_least,
        step,
    )


def output_folder(path: str) -> Callable[[], None]:
    """A ``before`` hook: remove ``path`` (a command's output folder) so each run starts from nothing."""

    def empty() -> None:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(os.path.dirname(path), exist_ok=True)

    return empty
