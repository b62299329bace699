"""Inputs made by the real steps once and kept under ``bench-data/`` for re-runs.

* :func:`ensure_scan`: ``bench-data/scan_SIZE``, the scan of ``base_SIZE``
  (notify's input, and where the merge finds the lines needing registration);
* :func:`ensure_registrations`: ``bench-data/registrations_half_SIZE.parquet``,
  registrations for half the lines the scan found needing one
  (:func:`bench.events.make_registrations`);
* :func:`ensure_events`: ``bench-data/events_SIZE.parquet``, events for as
  many lines as half the base, drawn with replacement
  (:func:`bench.events.make_events`; the report's merge input);
* :func:`ensure_next_day`: ``bench-data/registrations_day2_SIZE.parquet``, a
  later day's events for the merge benchmark's next-day merge.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from bench.core import AS_OF, Context, checked, ensure_base, label, say
from bench.measure import measure, python_env

__all__ = ["ensure_scan", "ensure_registrations", "ensure_events", "ensure_next_day", "read_json"]


def read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _fresh(path: str, source: str) -> bool:
    return os.path.exists(path) and os.path.getmtime(path) > os.path.getmtime(source)


def ensure_scan(ctx: Context, lines: int) -> str:
    """bench-data/scan_SIZE: ``base_SIZE`` scanned as of AS_OF (kept while newer than the base and complete)."""
    import pyarrow.parquet as pq

    base = ensure_base(ctx, f"base_{label(lines)}", lines)
    out = os.path.join(ctx.data_dir, f"scan_{label(lines)}")
    summary = os.path.join(out, "summary.json")
    if _fresh(summary, base) and read_json(summary).get("rows_in") == pq.read_metadata(base).num_rows:
        return out
    say(f"scanning {os.path.basename(base)} once into {out} (kept for re-runs) ...")
    shutil.rmtree(out, ignore_errors=True)
    m = checked(
        measure([ctx.backfill, "scan", "--base", base, "--out", out, "--as-of", AS_OF], env=python_env()),
        f"scan of {os.path.basename(base)}",
    )
    say(f"  {m.seconds:.1f} s")
    return out


def ensure_registrations(ctx: Context, lines: int) -> str:
    """Registrations for half the lines of ``base_SIZE`` that need one (made once, kept while newer than the scan)."""
    from bench.events import make_registrations

    scan = ensure_scan(ctx, lines)
    path = os.path.join(ctx.data_dir, f"registrations_half_{label(lines)}.parquet")
    if _fresh(path, os.path.join(scan, "summary.json")):
        return path
    say(f"making registrations for half the lines needing one into {path} (once; kept for re-runs) ...")
    started = time.perf_counter()
    n = make_registrations(os.path.join(scan, "classified"), path + ".partial")
    os.replace(path + ".partial", path)
    say(f"  {n:,} events in {time.perf_counter() - started:.1f} s")
    return path


def ensure_events(ctx: Context, base: str, n: int, name: str = "", seed: int = 7, prefix: str = "EV") -> str:
    """bench-data/NAME.parquet (default ``events_SIZE``): ``n`` events over ``base`` (:func:`bench.events.make_events`
    with ``seed`` and event ids ``prefix`` + a number); made once, again when the base is newer."""
    from bench.events import make_events

    path = os.path.join(ctx.data_dir, f"{name or f'events_{label(n)}'}.parquet")
    if not _fresh(path, base):
        say(f"making {n:,} events into {path} (once; kept for re-runs) ...")
        started = time.perf_counter()
        make_events(base, path + ".partial", n=n, seed=seed, prefix=prefix)
        os.replace(path + ".partial", path)
        say(f"  {time.perf_counter() - started:.1f} s")
    return path


def ensure_next_day(ctx: Context, lines: int) -> str:
    """bench-data/registrations_day2_SIZE.parquet: a later day's events, one for every eighth line of
    ``base_SIZE`` (drawn with replacement from its live lines, seed 9, ids ``D2...`` so that none is the id
    of an event of the first day; the usual faults and repeats)."""
    base = ensure_base(ctx, f"base_{label(lines)}", lines)
    return ensure_events(ctx, base, lines // 8, name=f"registrations_day2_{label(lines)}", seed=9, prefix="D2")
