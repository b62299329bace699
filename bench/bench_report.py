"""The report benchmark (``python -m bench.run report``).

The inputs are real step outputs for the 2,000,000-line base
(``bench-data/base_2m.parquet``), made once and kept under
``bench-data/report_2m/``: the scan (as of 2026-11-30), notify wave 1 to files
(2026-12-01) and the merge of the 1,000,000 benchmark events
(``bench-data/events_1m.parquet``, as of 2026-12-01).

Two sides run alternating, whole processes, median of 3 after one uncounted
warm-up each (:func:`bench.compare.compare`):

* ``backfill report`` over those outputs: every table, Parquet + CSV, the
  charts and report.html;
* the same completion table (needed, complete and rate per region) as one
  DuckDB query over the same Parquet files (:func:`duck_completion`), whose
  result must equal the report's ``by_region`` columns.

Target (issue 14): the whole report within 2x the DuckDB process's wall time.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from bench.compare import Side, SideStats, compare, output_folder, ratio_check
from bench.core import Check, Context, Row, Section, checked, ensure_base, label, register, say
from bench.inputs import ensure_events, read_json
from bench.measure import measure, python_env

__all__ = ["bench_report", "duck_completion", "TARGET_VS_DUCKDB"]

TARGET_VS_DUCKDB = 2.0
REPORT, DUCK = "report", "DuckDB process"
SCAN_DAY, WAVE_DAY = "2026-11-30", "2026-12-01"
CAMPAIGN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "campaign.yaml")

QUERY = """
WITH needed AS (
    SELECT line_id, region FROM read_parquet('{scan}/classified/*.parquet') WHERE needs_registration),
now AS (SELECT line_id, identity_status FROM read_parquet('{merge}/base/*.parquet'))
SELECT region, count(*) AS needed,
       count(*) FILTER (WHERE now.identity_status = 'COMPLETE') AS complete,
       round(count(*) FILTER (WHERE now.identity_status = 'COMPLETE') / count(*), 6) AS completion_rate
FROM needed LEFT JOIN now USING (line_id)
GROUP BY region ORDER BY region
"""


def duck_completion(scan: str, merge: str) -> dict:
    """The completion table by region in DuckDB; returns seconds (query only) and the rows."""
    import duckdb

    con = duckdb.connect()
    started = time.perf_counter()
    rows = con.execute(QUERY.format(scan=scan, merge=merge)).fetchall()
    return {"seconds": time.perf_counter() - started, "rows": [list(r) for r in rows]}


def _step(ctx: Context, what: str, args: list[str]) -> None:
    say(f"  {what} ...")
    m = checked(measure([ctx.backfill, *args], env=python_env()), what)
    say(f"    {m.seconds:.1f} s")


def ensure_outputs(ctx: Context, lines: int) -> dict:
    """bench-data/report_SIZE/{scan,notify,merge}: made once by the real steps, kept for re-runs."""
    base = ensure_base(ctx, f"base_{label(lines)}", lines)
    events = ensure_events(ctx, base, lines // 2)
    root = os.path.join(ctx.data_dir, f"report_{label(lines)}")
    paths = {name: os.path.join(root, name) for name in ("scan", "notify", "merge", "keys")}
    if os.path.exists(os.path.join(paths["merge"], "manifest.json")):
        return paths
    say(f"making the report's inputs under {root} (once; kept for re-runs)")
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    keys = os.path.join(paths["keys"], "keys.json")
    _step(ctx, f"scan {label(lines)}", ["scan", "--base", base, "--out", paths["scan"], "--as-of", SCAN_DAY])
    _step(
        ctx,
        "notify wave 1",
        [
            "notify",
            "--scan",
            paths["scan"],
            "--campaign",
            CAMPAIGN,
            "--wave",
            "1",
            "--out",
            paths["notify"],
            "--as-of",
            WAVE_DAY,
        ],
    )
    _step(ctx, "keys init", ["keys", "init", "--keys", keys])
    _step(
        ctx,
        f"merge {label(lines)} + {label(lines // 2)} events",
        [
            "merge",
            "--base",
            base,
            "--registrations",
            events,
            "--keys",
            keys,
            "--out",
            paths["merge"],
            "--as-of",
            WAVE_DAY,
        ],
    )
    return paths


def _sides(ctx: Context, paths: dict) -> list[Side]:
    """``backfill report`` over the outputs, and :func:`duck_completion` in a process of its own."""
    out = ctx.work("report")
    report = [ctx.backfill, "report", "--scan", paths["scan"], "--merged", paths["merge"], "--notify"]
    report += [paths["notify"], "--campaign", CAMPAIGN, "--out", out, "--as-of", WAVE_DAY]
    result = os.path.join(ctx.work("report_duck"), "duck.json")
    duck = [ctx.python, "-m", "bench.bench_report", "--duck", paths["scan"], paths["merge"], result]

    def report_after(m) -> dict:
        return {"out": out, "manifest": read_json(os.path.join(out, "manifest.json"))}

    def duck_before() -> None:
        if os.path.exists(result):
            os.remove(result)

    return [
        Side(REPORT, report, output_folder(out), report_after),
        Side(DUCK, duck, duck_before, lambda m: read_json(result)),
    ]


def _same_as_duck(out: str, duck: dict) -> bool:
    """The report's by_region (region, needed, complete) equals DuckDB's rows."""
    import pyarrow.parquet as pq

    regions = (
        pq.read_table(os.path.join(out, "parquet", "by_region"))
        .select(["region", "needed", "complete"])
        .sort_by("region")
        .to_pylist()
    )
    return [[r["region"], r["needed"], r["complete"]] for r in regions] == [row[:3] for row in duck["rows"]]


def _rows(scan_rows: int, report: SideStats, duck: SideStats) -> list[Row]:
    query = statistics.median(r["seconds"] for r in duck.results)
    return [
        report.row("backfill report (every table, Parquet + CSV, charts, report.html)", scan_rows, "whole command"),
        duck.row("DuckDB completion-by-region query", scan_rows, "whole process"),
        Row("  the same, query only", scan_rows, query, None, f"median of {duck.n}"),
    ]


@register("report")
def bench_report(ctx: Context) -> Section:
    paths = ensure_outputs(ctx, ctx.lines(2_000_000))
    stats = compare(_sides(ctx, paths), runs=ctx.runs, warmup=ctx.warmup, settle=not ctx.quick)
    report, duck = stats[REPORT], stats[DUCK]
    manifest = report.result["manifest"]
    same = _same_as_duck(report.results[-1]["out"], duck.results[-1])  # the folder holds the last run
    scan_rows = read_json(os.path.join(paths["scan"], "manifest.json"))["counts"]["classified"]
    checks = [
        ratio_check("report / DuckDB process, wall clock", report, duck, at_most=TARGET_VS_DUCKDB, step="report_duck"),
        Check("the report's by_region equals DuckDB's table", "yes" if same else "NO", "yes", same),
    ]
    timings = manifest["timings"]
    notes = [
        f"report phases (s from start): {', '.join(f'{k} {v}' for k, v in timings.items() if k != 'host')}",
        f"{manifest['completion']['needed']:,} lines needed registration; {len(duck.result['rows'])} regions",
        "both sides are whole processes (interpreter start, imports, reading the Parquet files).",
    ]
    return Section(
        "report",
        f"Report over {scan_rows:,} lines",
        _rows(scan_rows, report, duck),
        checks,
        notes,
        {"manifest_timings": timings, "duck_query_seconds": [r["seconds"] for r in duck.results]},
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--duck":
        os.makedirs(os.path.dirname(sys.argv[4]), exist_ok=True)
        with open(sys.argv[4], "w", encoding="utf-8") as out:
            json.dump(duck_completion(sys.argv[2], sys.argv[3]), out, default=float)
    else:
        sys.exit("usage: python -m bench.bench_report --duck SCAN_DIR MERGE_DIR OUT.json")
