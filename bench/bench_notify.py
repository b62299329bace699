"""The notify benchmark (``python -m bench.run notify``).

Measured, each as a child process timed from start to exit:

* ``backfill notify`` wave 1 of ``examples/campaign.yaml`` on the scan of the
  2-million-line base (``bench-data/base_2m.parquet``, scanned once into
  ``bench-data/notify/scan_2m``), to Avro files: jobs/s over the whole command,
  and over the pipeline alone (the manifest's ``pipeline_seconds``: without
  interpreter start, imports and argument checks);
* publishing to the Pub/Sub emulator (started here, ``dev/pubsub_emulator.py``):
  ``backfill notify --topic`` on the first 200,000 targeted lines of that scan,
  beside a bare batched publisher loop (:mod:`bench.notify_bare`) publishing
  the same messages with the same batch settings. Rounds alternate (bare, ours,
  bare, ours, ...) on fresh topics and the best of each is kept, because this
  2-core machine is shared. The rates compared are the publish phases (first
  publish to last acknowledgement); whole-command rates are reported beside.

Targets (issue 4): at least 200,000 jobs/s to files; publishing at least 0.8x
the bare loop.
"""

from __future__ import annotations

import json
import os
import shutil

from bench.core import AS_OF, ROOT, BenchError, Check, Context, Row, Section, checked, ensure_base, register, say
from bench.measure import Measurement, measure, python_env, wait_for_quiet

__all__ = ["bench_notify", "TARGET_FILES_RATE", "TARGET_VS_BARE"]

TARGET_FILES_RATE = 200_000  # jobs/s
TARGET_VS_BARE = 0.8
PUBLISH_LINES = 200_000
ROUNDS = 3
CAMPAIGN = os.path.join(ROOT, "examples", "campaign.yaml")


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _scan(ctx: Context) -> str:
    """bench-data/notify/scan_2m: the 2M base scanned once (kept while its summary matches the base)."""
    import pyarrow.parquet as pq

    base = ensure_base(ctx, "base_2m", 2_000_000)
    out = os.path.join(ctx.data_dir, "notify", "scan_2m")
    summary = os.path.join(out, "summary.json")
    if (
        os.path.exists(summary)
        and _read_json(summary).get("rows_in") == pq.read_metadata(base).num_rows
        and os.path.getmtime(summary) > os.path.getmtime(base)
    ):
        return out
    say("scanning bench-data/base_2m.parquet once for notify (kept in bench-data/notify/scan_2m) ...")
    shutil.rmtree(out, ignore_errors=True)
    checked(
        measure([ctx.backfill, "scan", "--base", base, "--out", out, "--as-of", AS_OF], env=python_env()),
        "scan for notify",
    )
    return out


def _subset(ctx: Context, scan: str) -> str:
    """The first PUBLISH_LINES targeted lines of the scan, as a scan output of their own."""
    import pyarrow.parquet as pq

    out = os.path.join(ctx.data_dir, "notify", f"scan_{PUBLISH_LINES // 1000}k_targeted")
    path = os.path.join(out, "classified", "part-00000.parquet")
    if os.path.exists(path) and os.path.getmtime(path) > os.path.getmtime(os.path.join(scan, "summary.json")):
        return out
    table = pq.read_table(os.path.join(scan, "classified"))
    table = table.filter(table.column("needs_registration")).slice(0, PUBLISH_LINES)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path, row_group_size=65_536)
    return out


def _notify(
    ctx: Context, classified: str, label: str, extra: list[str] = (), wave: int = 1, fresh: bool = True
) -> tuple[dict, Measurement]:
    out = ctx.work(label) if fresh else os.path.join(ctx.out_dir, "work", label)
    wait_for_quiet()
    m = checked(
        measure(
            [
                ctx.backfill,
                "notify",
                "--scan",
                classified,
                "--campaign",
                CAMPAIGN,
                "--wave",
                str(wave),
                "--out",
                out,
                "--as-of",
                AS_OF,
                *extra,
            ],
            env=python_env(),
        ),
        f"notify {label}",
    )
    return _read_json(os.path.join(out, "manifest.json")), m


def _jobs(manifest: dict) -> int:
    return sum(manifest["counts"]["handed_over"].values())


def _files(ctx: Context, scan: str) -> tuple[list[Row], list[Check], dict]:
    best = None
    for attempt in range(ROUNDS):
        say(f"notify to files, 2M scan (run {attempt + 1} of {ROUNDS})")
        manifest, m = _notify(ctx, scan, "notify_files")
        say(
            f"  {_jobs(manifest):,} jobs in {m.seconds:.1f} s (pipeline {manifest['timings']['pipeline_seconds']:.1f} s; "
            f"{m.cpu_seconds:.1f} CPU s, others {m.others_cpu_seconds:.1f}), peak {m.peak_mb:,.0f} MB"
        )
        if best is None or m.seconds < best[1].seconds:
            best = (manifest, m)
    say("notify wave 2 into the same folder (joins the history of wave 1 and shuffles by line)")
    w2, m2 = _notify(ctx, scan, "notify_files", wave=2, fresh=False)
    say(f"  {_jobs(w2):,} jobs in {m2.seconds:.1f} s (pipeline {w2['timings']['pipeline_seconds']:.1f} s)")
    manifest, m = best
    jobs, pipeline = _jobs(manifest), manifest["timings"]["pipeline_seconds"]
    rows = [
        Row(
            "notify wave 1 to Avro files, 2M scan",
            jobs,
            m.seconds,
            m.peak_mb,
            f"whole command, best of {ROUNDS}",
            m.cpu_seconds,
            m.others_cpu_seconds,
        ),
        Row("  the same, pipeline only", jobs, pipeline, None, "manifest pipeline_seconds"),
        Row(
            "notify wave 2 after wave 1, same folder",
            _jobs(w2),
            m2.seconds,
            m2.peak_mb,
            "history join + line shuffle; one run",
            m2.cpu_seconds,
            m2.others_cpu_seconds,
        ),
    ]
    checks = [
        Check(
            "jobs/s to files, whole command",
            f"{jobs / m.seconds:,.0f}",
            f">= {TARGET_FILES_RATE:,}",
            jobs / m.seconds >= TARGET_FILES_RATE,
        ),
        Check(
            "jobs/s to files, pipeline only",
            f"{jobs / pipeline:,.0f}",
            f">= {TARGET_FILES_RATE:,}",
            jobs / pipeline >= TARGET_FILES_RATE,
        ),
    ]
    return rows, checks, {"counts": manifest["counts"], "timings": manifest["timings"]}


def _publish(ctx: Context, subset: str) -> tuple[list[Row], list[Check], dict]:
    say("notify to files on the 200k subset (the bare loop's messages)")
    files_manifest, _ = _notify(ctx, subset, "notify_bare_jobs")
    jobs_dir = os.path.join(ctx.out_dir, "work", "notify_bare_jobs")
    bare, ours = _publish_rounds(ctx, subset, jobs_dir, _jobs(files_manifest))
    b_rate, b_result, b_m = max(bare, key=lambda x: x[0])
    o_rate, o_manifest, o_m = max(ours, key=lambda x: x[0])
    n = o_manifest["timings"]["publish"]["messages"]
    ratio, whole_ratio = o_rate / b_rate, (n / o_m.seconds) / (b_result["messages"] / b_m.seconds)
    checks = [
        Check(
            "publish rate vs bare loop (publish phases)",
            f"{ratio:.2f}x",
            f">= {TARGET_VS_BARE}x",
            ratio >= TARGET_VS_BARE,
        ),
        Check("publish rate vs bare loop (whole commands)", f"{whole_ratio:.2f}x", "(reported)", None),
    ]
    details = {"bare": [b[1] for b in bare], "ours": [o[1]["timings"]["publish"] for o in ours]}
    return _publish_rows(b_result, b_m, o_manifest, o_m), checks, details


def _publish_rounds(ctx: Context, subset: str, jobs_dir: str, count: int) -> tuple[list[tuple], list[tuple]]:
    """ROUNDS alternating rounds on the emulator, each on fresh topics: (rate, result, measurement) of
    the bare loop and (rate, manifest, measurement) of ``notify --topic``."""
    from dev.pubsub_emulator import EmulatorUnavailable, running_emulator

    bare, ours = [], []
    try:
        with running_emulator() as emulator:
            env = python_env()
            for round_ in range(ROUNDS):
                topic, _ = emulator.topic_and_subscription(f"bare{round_}")
                bare.append(_bare_round(ctx, topic, jobs_dir, count, env, round_))
                topic, _ = emulator.topic_and_subscription(f"ours{round_}")
                ours.append(_ours_round(ctx, subset, topic, round_))
    except EmulatorUnavailable as exc:
        raise BenchError(str(exc)) from None
    return bare, ours


def _bare_round(ctx: Context, topic: str, jobs_dir: str, count: int, env: dict, round_: int) -> tuple:
    """One round of the bare loop (:mod:`bench.notify_bare`) publishing the jobs to ``topic``."""
    wait_for_quiet()
    m = checked(
        measure(
            [
                ctx.python,
                "-m",
                "bench.notify_bare",
                "--topic",
                topic,
                "--jobs",
                jobs_dir,
                "--count",
                str(count),
            ],
            env=env,
            cwd=ROOT,
        ),
        "bare loop",
    )
    result = json.loads(m.output.strip().splitlines()[-1])
    rate = result["messages"] / result["seconds"]
    say(f"  bare loop round {round_ + 1}: {result['messages']:,} in {result['seconds']:.1f} s ({rate:,.0f}/s)")
    return rate, result, m


def _ours_round(ctx: Context, subset: str, topic: str, round_: int) -> tuple:
    """One round of ``backfill notify --topic`` on the subset."""
    manifest, om = _notify(ctx, subset, "notify_pubsub", ["--topic", topic])
    publish = manifest["timings"]["publish"]
    say(
        f"  notify --topic round {round_ + 1}: {publish['messages']:,} in {publish['seconds']:.1f} s "
        f"({publish['messages_per_second']:,}/s); whole command {om.seconds:.1f} s"
    )
    return publish["messages_per_second"], manifest, om


def _publish_rows(b_result: dict, b_m: Measurement, o_manifest: dict, o_m: Measurement) -> list[Row]:
    """The best rounds: each publish phase, and beside it the whole process."""
    n = o_manifest["timings"]["publish"]["messages"]
    return [
        Row(
            "bare batched publisher loop (publish phase)",
            b_result["messages"],
            b_result["seconds"],
            None,
            f"best of {ROUNDS}",
        ),
        Row(
            "  the same, whole process",
            b_result["messages"],
            b_m.seconds,
            b_m.peak_mb,
            "incl. reading the jobs",
            b_m.cpu_seconds,
            b_m.others_cpu_seconds,
        ),
        Row(
            "notify --topic (publish phase)", n, o_manifest["timings"]["publish"]["seconds"], None, f"best of {ROUNDS}"
        ),
        Row(
            "  the same, whole command",
            n,
            o_m.seconds,
            o_m.peak_mb,
            "incl. planning 200k lines",
            o_m.cpu_seconds,
            o_m.others_cpu_seconds,
        ),
    ]


@register("notify")
def bench_notify(ctx: Context) -> Section:
    scan = _scan(ctx)
    rows, checks, details = _files(ctx, scan)
    p_rows, p_checks, p_details = _publish(ctx, _subset(ctx, scan))
    notes = [
        "jobs = SMS + call + announcement jobs handed over (written whole, or acknowledged by Pub/Sub), each also "
        "recorded in the notification history.",
        "whole command = interpreter start, Beam import (about 1.7 s here), argument and input checks, pipeline; "
        "pipeline only = the Beam pipeline from construction to finish.",
        "the publish phases run from the first publish call to the last acknowledgement; ours includes the JSON "
        "encoding of the jobs and the history writes, the bare loop's messages are built before its clock starts.",
        "this 2-core machine is shared with other work; rates vary by tens of percent between runs. In the "
        "Pub/Sub rows, others' CPU includes the emulator (a JVM) that both loops publish to.",
    ]
    return Section(
        "notify",
        "Notify: jobs to files and to Pub/Sub",
        rows + p_rows,
        checks + p_checks,
        notes,
        {"files": details, "publish": p_details},
    )
