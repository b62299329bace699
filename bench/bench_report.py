"""The report benchmark (``python -m bench.run report``).

The inputs are real step outputs for the 2,000,000-line base
(``bench-data/base_2m.parquet``), made once and kept under
``bench-data/report_2m/``: the scan (as of 2026-11-30), notify wave 1 to files
(2026-12-01) and the merge of the 1,000,000 benchmark events
(``bench-data/events_1m.parquet``, as of 2026-12-01).

Measured, each as a child process timed from start to exit:

* ``backfill report`` over those outputs: every table, Parquet + CSV, the
  charts and report.html;
* the same completion table (needed, complete and rate per region) as one
  DuckDB query over the same Parquet files (:func:`duck_completion`), whose
  result must equal the report's ``by_region`` columns.

Target (issue 6 "Speed"): the whole report within 2x the DuckDB query's time.
"""

from __future__ import annotations

import json
import os
import sys
import time

from bench.core import Check, Context, Row, Section, checked, ensure_base, register, say
from bench.measure import Measurement, measure, python_env, wait_for_quiet

__all__ = ["bench_report", "duck_completion", "TARGET_VS_DUCKDB"]

TARGET_VS_DUCKDB = 2.0
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


def ensure_outputs(ctx: Context) -> dict:
    """bench-data/report_2m/{scan,notify,merge}: made once by the real steps, kept for re-runs."""
    from bench.bench_merge import ensure_events

    base = ensure_base(ctx, "base_2m", 2_000_000)
    events = ensure_events(ctx, base)
    root = os.path.join(ctx.data_dir, "report_2m")
    paths = {name: os.path.join(root, name) for name in ("scan", "notify", "merge", "keys")}
    if os.path.exists(os.path.join(paths["merge"], "manifest.json")):
        return paths
    say(f"making the report's inputs under {root} (once; kept for re-runs)")
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    keys = os.path.join(paths["keys"], "keys.json")
    _step(ctx, "scan 2M", ["scan", "--base", base, "--out", paths["scan"], "--as-of", SCAN_DAY])
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
        "merge 2M + 1M events",
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


def _run_report(ctx: Context, paths: dict) -> tuple[str, Measurement, dict]:
    """``backfill report`` over the 2M outputs, timed; its output folder and manifest."""
    out = ctx.work("report_2m")
    wait_for_quiet()
    say("backfill report over the 2M outputs")
    m = checked(
        measure(
            [
                ctx.backfill,
                "report",
                "--scan",
                paths["scan"],
                "--merged",
                paths["merge"],
                "--notify",
                paths["notify"],
                "--campaign",
                CAMPAIGN,
                "--out",
                out,
                "--as-of",
                WAVE_DAY,
            ],
            env=python_env(),
        ),
        "report",
    )
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    needed = manifest["completion"]["needed"]
    say(
        f"  {m.seconds:.1f} s ({m.cpu_seconds:.1f} CPU s), peak {m.peak_mb:,.0f} MB; {needed:,} lines needed registration"
    )
    return out, m, manifest


def _run_duck(ctx: Context, paths: dict) -> tuple[Measurement, dict]:
    """:func:`duck_completion` in a child process, timed; its result (query seconds and rows)."""
    wait_for_quiet()
    say("DuckDB: the completion table by region over the same Parquet files")
    result = os.path.join(ctx.work("report_duck"), "duck.json")
    d = checked(
        measure(
            [ctx.python, "-m", "bench.bench_report", "--duck", paths["scan"], paths["merge"], result], env=python_env()
        ),
        "duckdb",
    )
    with open(result, encoding="utf-8") as handle:
        duck = json.load(handle)
    say(f"  query {duck['seconds']:.2f} s; process {d.seconds:.1f} s, peak {d.peak_mb:,.0f} MB")
    return d, duck


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


def _rows(scan_rows: int, m: Measurement, d: Measurement, duck: dict) -> list[Row]:
    return [
        Row(
            "backfill report (every table, Parquet + CSV, charts, report.html)",
            scan_rows,
            m.seconds,
            m.peak_mb,
            "whole command",
            m.cpu_seconds,
            m.others_cpu_seconds,
        ),
        Row("DuckDB completion-by-region query", scan_rows, duck["seconds"], None, "query only"),
        Row(
            "DuckDB completion-by-region query",
            scan_rows,
            d.seconds,
            d.peak_mb,
            "whole process",
            d.cpu_seconds,
            d.others_cpu_seconds,
        ),
    ]


def _checks(m: Measurement, d: Measurement, duck: dict, same: bool) -> list[Check]:
    """Issue 6's target against the query alone and against the whole process; the same figures."""
    ratio = m.seconds / duck["seconds"]
    ratio_process = m.seconds / d.seconds
    return [
        Check(
            "report time / DuckDB query time", f"{ratio:.1f}x", f"<= {TARGET_VS_DUCKDB:.0f}x", ratio <= TARGET_VS_DUCKDB
        ),
        Check(
            "report process / DuckDB process (both with interpreter start-up)",
            f"{ratio_process:.1f}x",
            f"<= {TARGET_VS_DUCKDB:.0f}x",
            ratio_process <= TARGET_VS_DUCKDB,
        ),
        Check("the report's by_region equals DuckDB's table", "yes" if same else "NO", "yes", same),
    ]


@register("report")
def bench_report(ctx: Context) -> Section:
    paths = ensure_outputs(ctx)
    out, m, manifest = _run_report(ctx, paths)
    d, duck = _run_duck(ctx, paths)
    same = _same_as_duck(out, duck)
    scan_rows = json.load(open(os.path.join(paths["scan"], "manifest.json"), encoding="utf-8"))["counts"]["classified"]
    timings = manifest["timings"]
    notes = [
        f"report phases (s from start): {', '.join(f'{k} {v}' for k, v in timings.items() if k != 'host')}",
        f"{manifest['completion']['needed']:,} lines needed registration; {len(duck['rows'])} regions",
    ]
    return Section(
        "report",
        "Report over 2,000,000 lines (issue 6)",
        _rows(scan_rows, m, d, duck),
        _checks(m, d, duck, same),
        notes,
        {"manifest_timings": timings, "duck_query_seconds": duck["seconds"]},
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--duck":
        os.makedirs(os.path.dirname(sys.argv[4]), exist_ok=True)
        with open(sys.argv[4], "w", encoding="utf-8") as out:
            json.dump(duck_completion(sys.argv[2], sys.argv[3]), out, default=float)
    else:
        sys.exit("usage: python -m bench.bench_report --duck SCAN_DIR MERGE_DIR OUT.json")
