"""backfill demo: the whole loop on the embedded default, end to end.

    backfill demo [--lines N] [--out DIR] [--seed S]

Local files and the local Beam runner only; nothing is downloaded. Each
capability of the product adds its step here, so the demo always runs
everything that exists: today it generates a synthetic base and scans it.
"""
from __future__ import annotations

import os
import sys
import time

from pipelines.common import ArgumentParser, run_main

DEFAULT_LINES = 50_000
AS_OF = "2026-11-30"


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill demo", description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=DEFAULT_LINES, help="lines in the synthetic base")
    p.add_argument("--seed", type=int, default=2013, help="generator seed")
    p.add_argument("--out", default="demo-out", help="output folder")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.time()


def run(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.lines < 1:
        raise SystemExit("backfill demo: error: --lines must be at least 1")
    out = args.out
    os.makedirs(out, exist_ok=True)
    base = os.path.join(out, "base.parquet")

    from pipelines import generate, scan

    started = _step(f"1. generate a synthetic base of {args.lines:,} lines")
    generate.write_base(base, args.lines, args.seed)
    print(f"   {base} ({time.time() - started:.1f} s)")

    started = _step("2. scan: classify every line under the Decree 25 policy")
    summary = scan.run(["--base", base, "--out", os.path.join(out, "scan"), "--as-of", AS_OF])
    print(scan.format_summary(summary))
    print(f"   {os.path.join(out, 'scan')} ({time.time() - started:.1f} s)")
    return 0


def main(argv=None) -> int:
    return run_main("backfill demo", run, argv)


if __name__ == "__main__":
    sys.exit(main())
