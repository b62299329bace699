"""``make bench``: speed and memory of the pipelines, measured end to end.

    .venv/bin/python -m bench.run            # every registered benchmark
    .venv/bin/python -m bench.run scan       # one; --list shows them
    BENCH_10M=0 .venv/bin/python -m bench.run scan   # skip the 10-million-line run
    .venv/bin/python -m bench.run --quick    # (or BENCH_QUICK=1) small inputs, one run each: checks the harness

The sections of issue 14 (scan, merge, notify, report) run each comparison
side by side (:mod:`bench.compare`: whole processes, alternating, median of 3
after one uncounted warm-up each) and, after all sections, write
``bench-out/summary.md``: the issue's table (step, measured, target,
PASS/MISS) under the machine line (:mod:`bench.summary`). ``--quick`` runs
every section on 200,000-line inputs (500,000 for the memory row), one run a
side and no warm-up, into ``bench-out/quick/``: minutes, for checking the
harness, not for the numbers (with no name: scan, notify, merge and report;
stream, compact and scale keep their own size settings).

A benchmark, not a timed test (issue "Speed and memory"): every command runs
as a child process on the local runner and is timed from start to exit; its
peak memory is the largest sum of the resident sets of the process and all
its descendants, sampled every 50 ms (:mod:`bench.measure`). Each benchmark
prints a Markdown table with its targets marked PASS or MISS and writes
``bench-out/NAME.md`` and ``bench-out/NAME.json``. A MISS does not fail the
run; a command that fails does (exit 1).

Input bases are generated once into ``bench-data/`` (seed 7) and kept for
re-runs. To add a benchmark (merge, notify, report), put a module
``bench/bench_NAME.py`` with a function that takes a :class:`bench.core.Context`
and returns a :class:`bench.core.Section`, decorated with ``@register("NAME")``:
it is found and run without touching this file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from bench.core import REGISTRY, ROOT, BenchError, Check, Context, say
from bench.summary import SECTIONS, earlier_checks, machine_line, write_summary

__all__ = ["main", "run_and_report"]


def run_and_report(ctx: Context, names: list[str]) -> int:
    os.makedirs(ctx.out_dir, exist_ok=True)
    if ctx.load_before is None:
        ctx.load_before = os.getloadavg()
    header = machine_line(ctx)
    checks: list[Check] = []
    errors: dict[str, str] = {}
    for name in names:
        say(f"== bench {name} ==")
        try:
            section = REGISTRY[name](ctx)
        except BenchError as exc:
            errors[name] = str(exc)
            say(f"bench {name}: error: {errors[name]}")
            continue
        except Exception as exc:  # a fault of the harness itself: one line, where it happened, and go on
            import traceback

            where = traceback.extract_tb(exc.__traceback__)[-1]
            errors[name] = f"{type(exc).__name__}: {exc} (at {os.path.relpath(where.filename, ROOT)}:{where.lineno})"
            say(f"bench {name}: error: {errors[name]}")
            continue
        checks += section.checks
        text = f"# bench: {name}\n\n{header}\n\n{section.markdown()}"
        say("\n" + text)
        with open(os.path.join(ctx.out_dir, f"{name}.md"), "w", encoding="utf-8") as handle:
            handle.write(text)
        with open(os.path.join(ctx.out_dir, f"{name}.json"), "w", encoding="utf-8") as handle:
            json.dump({"machine": header, **section.as_json()}, handle, indent=2, ensure_ascii=False)
        say(f"written: {os.path.join(ctx.out_dir, name + '.md')} and .json")
    if SECTIONS & set(names):
        say("\n" + write_summary(ctx, checks + earlier_checks(ctx, names), errors))
        say(f"written: {os.path.join(ctx.out_dir, 'summary.md')}")
    shutil.rmtree(os.path.join(ctx.out_dir, "work"), ignore_errors=True)
    for name, error in errors.items():
        say(f"bench {name}: error: {error}")
    return 1 if errors else 0


# Pipeline order: later benchmarks reuse the inputs of earlier ones.
ORDER = ("scan", "notify", "merge", "report")


def _discover() -> None:
    """Import every ``bench/bench_*.py``: each registers its benchmark(s)."""
    import importlib
    import pkgutil

    import bench

    for module in sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")):
        importlib.import_module(f"bench.{module}")
    ranked = sorted(REGISTRY, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    items = {n: REGISTRY[n] for n in ranked}
    REGISTRY.clear()
    REGISTRY.update(items)


def main(argv=None) -> int:
    import argparse

    _discover()
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "0") not in ("", "0"),
        help="small inputs (200k lines), one run a side, into bench-out/quick (also BENCH_QUICK=1)",
    )
    args = parser.parse_args(argv)
    if args.list:
        say("\n".join(REGISTRY))
        return 0
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        say(f"bench: error: unknown benchmark(s) {', '.join(unknown)} (one of {', '.join(REGISTRY)})")
        return 2
    bin_dir = os.path.dirname(sys.executable)
    ctx = Context(
        data_dir=os.path.join(ROOT, "bench-data"),
        out_dir=os.path.join(ROOT, "bench-out", "quick") if args.quick else os.path.join(ROOT, "bench-out"),
        python=sys.executable,
        backfill=os.path.join(bin_dir, "backfill") if os.path.exists(os.path.join(bin_dir, "backfill")) else "backfill",
        ten_million=os.environ.get("BENCH_10M", "1") != "0",
        quick=args.quick,
        load_before=os.getloadavg(),
    )
    # --quick checks this harness: by default the four sections of issue 14, not stream, compact and scale
    default = [n for n in REGISTRY if n in SECTIONS] if args.quick else list(REGISTRY)
    return run_and_report(ctx, args.names or default)


if __name__ == "__main__":
    sys.exit(main())
