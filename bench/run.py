"""``make bench``: speed and memory of the pipelines, measured end to end.

    .venv/bin/python -m bench.run            # every registered benchmark
    .venv/bin/python -m bench.run scan       # one; --list shows them
    BENCH_10M=0 .venv/bin/python -m bench.run scan   # skip the 10-million-line run

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

import datetime as dt
import json
import os
import platform
import shutil
import sys

from bench.core import REGISTRY, ROOT, BenchError, Context, say

__all__ = ["main", "run_and_report"]


def run_and_report(ctx: Context, names: list[str]) -> int:
    os.makedirs(ctx.out_dir, exist_ok=True)
    header = (
        f"machine: {os.cpu_count()} CPU, {_memory_gb():.0f} GB RAM, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}; {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    failed = False
    for name in names:
        say(f"== bench {name} ==")
        try:
            section = REGISTRY[name](ctx)
        except BenchError as exc:
            say(f"bench {name}: error: {exc}")
            failed = True
            continue
        text = f"# bench: {name}\n\n{header}\n\n{section.markdown()}"
        say("\n" + text)
        with open(os.path.join(ctx.out_dir, f"{name}.md"), "w", encoding="utf-8") as handle:
            handle.write(text)
        with open(os.path.join(ctx.out_dir, f"{name}.json"), "w", encoding="utf-8") as handle:
            json.dump({"machine": header, **section.as_json()}, handle, indent=2, ensure_ascii=False)
        say(f"written: {os.path.join(ctx.out_dir, name + '.md')} and .json")
    shutil.rmtree(os.path.join(ctx.out_dir, "work"), ignore_errors=True)
    return 1 if failed else 0


def _memory_gb() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


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
        out_dir=os.path.join(ROOT, "bench-out"),
        python=sys.executable,
        backfill=os.path.join(bin_dir, "backfill") if os.path.exists(os.path.join(bin_dir, "backfill")) else "backfill",
        ten_million=os.environ.get("BENCH_10M", "1") != "0",
    )
    return run_and_report(ctx, args.names or list(REGISTRY))


if __name__ == "__main__":
    sys.exit(main())
