"""The side-by-side primitive of the benchmarks (bench/compare.py): order of runs, medians, verdicts.

Real child processes (``python -c``) stand for the commands; nothing here asserts a timing.
"""

from __future__ import annotations

import sys

import pytest

from bench.compare import Side, compare, median_stats, rate_check, ratio_check, run_order
from bench.core import BenchError
from bench.measure import Measurement


def _m(seconds: float, cpu: float, peak: float, others: float = 0.0) -> Measurement:
    return Measurement(["x"], seconds, peak, 0, "", cpu, others)


def _appender(log, name: str) -> list[str]:
    code = f"open({str(log)!r}, 'a').write({name!r} + '\\n'); print('result', {name!r})"
    return [sys.executable, "-c", code]


def test_run_order_warms_each_side_once_then_alternates():
    assert run_order(["A", "B"], 3, True) == [("A", False), ("B", False)] + [("A", True), ("B", True)] * 3
    assert run_order(["A", "B", "C"], 2, False) == [("A", True), ("B", True), ("C", True)] * 2


def test_compare_runs_children_alternating_and_keeps_only_counted_runs(tmp_path):
    log = tmp_path / "order.log"
    befores: list[str] = []
    sides = [
        Side(n, _appender(log, n), before=lambda n=n: befores.append(n), after=lambda m: m.output.split()[-1])
        for n in ("A", "B")
    ]
    stats = compare(sides, runs=3, warmup=True, settle=False)
    # one warm-up each, then A B A B A B timed, then A B with their memory sampled
    assert log.read_text().split() == ["A", "B"] * 5
    assert befores == ["A", "B"] * 5
    for name in ("A", "B"):
        assert stats[name].n == 3
        assert stats[name].results == [name] * 3
        assert all(m.ok for m in stats[name].runs)
        assert all(m.peak_mb == 0 for m in stats[name].runs)  # the timed runs do not sample memory
        assert stats[name].peak_mb > 0  # the memory run's: a Python process holds some megabytes


def test_memory_is_sampled_only_in_runs_of_its_own():
    calls: list[tuple[str, bool]] = []
    peaks = iter([300.0, 100.0, 200.0])

    def fake(command, env=None, cwd=None, memory=True):
        calls.append((command[0], memory))
        return _m(1.0 if command[0] == "a" else 2.0, 1.0, next(peaks) if memory else 0.0)

    stats = compare([Side("A", ["a"])], runs=2, warmup=True, settle=False, measure_fn=fake, memory_runs=3)
    assert calls == [("a", False)] * 3 + [("a", True)] * 3
    assert (stats["A"].n, stats["A"].seconds, stats["A"].peak_mb) == (2, 1.0, 200.0)  # the peaks' median


def test_a_failing_command_stops_with_one_line(tmp_path):
    bad = Side("broken", [sys.executable, "-c", "import sys; print('first'); sys.exit('it broke here')"])
    with pytest.raises(BenchError) as caught:
        compare([Side("fine", [sys.executable, "-c", "pass"]), bad], runs=1, warmup=False, settle=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("broken failed with exit code 1") and "it broke here" in message


def test_a_command_that_leaves_no_result_stops_with_one_line(tmp_path):
    missing = tmp_path / "manifest.json"
    side = Side("quiet", [sys.executable, "-c", "pass"], after=lambda m: missing.read_text())
    with pytest.raises(BenchError) as caught:
        compare([side], runs=1, warmup=False, settle=False)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("quiet: exit 0 but no readable result")


def test_medians_are_taken_per_measure_and_the_result_is_the_median_runs():
    stats = median_stats("A", [_m(3.0, 5.0, 100.0), _m(1.0, 9.0, 300.0), _m(2.0, 7.0, 200.0, 4.0)], ["r3", "r1", "r2"])
    assert (stats.seconds, stats.cpu_seconds, stats.peak_mb, stats.others_cpu_seconds) == (2.0, 7.0, 200.0, 0.0)
    assert stats.result == "r2"  # the run whose wall clock is the median
    even = median_stats("B", [_m(4.0, 1.0, 10.0), _m(2.0, 3.0, 30.0)], ["slow", "fast"])
    assert (even.seconds, even.cpu_seconds, even.peak_mb) == (3.0, 2.0, 20.0)
    assert even.result == "fast"  # the lower middle


def test_ratio_and_rate_checks():
    scan = median_stats("scan", [_m(41.0, 1, 1)] * 3, [None] * 3)
    duck = median_stats("duck", [_m(12.3, 1, 1)] * 3, [None] * 3)
    miss = ratio_check("scan / duck", scan, duck, at_most=1.5, step="scan_duck")
    assert miss.measured == "41.0 s vs 12.3 s = 3.33x (median of 3, alternating)"
    assert (miss.ok, miss.target, miss.step) == (False, "<= 1.5x", "scan_duck")
    assert ratio_check("duck / scan", duck, scan, at_most=1.5).ok is True
    one = median_stats("1", [_m(30.0, 1, 1)], [None])
    two = median_stats("2", [_m(19.0, 1, 1)], [None])
    faster = ratio_check("1 / 2", one, two, at_least=1.5)
    assert faster.ok is True and faster.measured == "30.0 s vs 19.0 s = 1.58x (one run each)"
    assert ratio_check("2 / 1", two, one, at_least=1.5).ok is False
    rate = rate_check("lines/s", one, 3_000_000, "lines", 150_000)
    assert rate.ok is False and rate.measured.startswith("100,000 lines/s")
    assert rate_check("lines/s", one, 4_500_000, "lines", 150_000).ok is True
    with pytest.raises(ValueError):
        ratio_check("x", one, two)


def test_the_summary_is_the_issues_table_and_a_failed_section_is_one_line(tmp_path, monkeypatch, capsys):
    from bench import core, run
    from bench.core import Check, Context, Section
    from bench.summary import STEPS

    def scan(ctx):
        checks = [Check("scan / duck", "41.0 s vs 12.3 s = 3.33x", "<= 1.5x", False, "scan_duck")]
        return Section("scan", "Scan", [], checks)

    def merge(ctx):
        raise BenchError("merge, 1 worker failed with exit code 1: no keys")

    monkeypatch.setitem(core.REGISTRY, "scan", scan)
    monkeypatch.setitem(core.REGISTRY, "merge", merge)
    ctx = Context(str(tmp_path / "data"), str(tmp_path / "out"), sys.executable, "backfill", False, True, (1.0, 2, 3))
    assert run.run_and_report(ctx, ["scan", "merge"]) == 1
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "load average before the run 1.00, 2.00, 3.00" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split(" | ")[0][2:] for line in table] == [step for step, _ in STEPS.values()]
    assert table[0].endswith("| 41.0 s vs 12.3 s = 3.33x | <= 1.5x | MISS |")
    merge_rows = [line for line in table if "merge" in line.split(" | ")[0]]
    assert merge_rows and all("not measured: merge, 1 worker failed with exit code 1: no keys" in r for r in merge_rows)
    assert "bench merge: error: merge, 1 worker failed with exit code 1: no keys\n" in capsys.readouterr().out


def test_measured_commands_keep_their_byte_code(monkeypatch):
    """A user's interpreter keeps the byte-code of what it imports; the measured commands must too, or every run
    compiles the project's modules again (the warm-up run is there to pay for it once)."""
    from bench.measure import python_env

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    env = python_env()
    assert "PYTHONDONTWRITEBYTECODE" not in env and env["PYTHONUNBUFFERED"] == "1"
