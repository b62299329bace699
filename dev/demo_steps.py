"""The steps of ``backfill demo`` (:mod:`dev.demo`), in order: each prints its "== N. title" line and where its
output went, and leaves on the run's ``_Demo`` what later steps need.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

if TYPE_CHECKING:
    from dev.demo import _Demo


SCAN_DAY = "2026-11-30"
WAVE_DAYS = {1: "2026-12-01", 2: "2026-12-15"}
REGISTRATION_DAY = "2026-12-03"
SECOND_MERGE_DAY = "2026-12-22"
LIVE_DAY = "2026-12-23"
REPORT_DAY = "2027-02-01"  # after the deadline: the report lists who is still unregistered


def _done(started: float, where: str) -> None:
    print(f"   -> {where} ({time.time() - started:.1f} s)", flush=True)


def _generate(demo: _Demo) -> None:
    from dev import generate

    started = demo.step(f"generate a synthetic base of {demo.args.lines:,} lines")
    generate.write_base(demo.path("base.parquet"), demo.args.lines, demo.args.seed)
    _done(started, demo.path("base.parquet"))


def _scan(demo: _Demo) -> None:
    from pipelines import scan

    path = demo.path
    started = demo.step("scan: classify every line under the Decree 25 policy")
    summary = scan.run(["--base", path("base.parquet"), "--out", path("scan"), "--as-of", SCAN_DAY])
    print(scan.format_summary(summary))
    _done(started, path("scan"))


def _keys(demo: _Demo) -> None:
    from pipelines import keys

    started = demo.step("keys: create the keyset (join key for tokens, vault key), wrapped by a key-encryption key")
    # On a cluster the KEK is gcp-kms:// or aws-kms:// and the keyset a gs:// or s3:// URI; here a local KEK file.
    kek = "local-kek://" + os.path.abspath(demo.path("kek", "kek.b64"))
    keys.main(["init", "--keys", demo.path("keys", "keyset.json"), "--kek", kek])
    _done(started, demo.path("keys", "keyset.json"))


def _notify_wave_1(demo: _Demo) -> None:
    from pipelines import notify

    path = demo.path
    started = demo.step("notify wave 1: dry run, then SMS, call and announcement jobs to files")
    wave1 = [
        "--scan",
        path("scan"),
        "--campaign",
        demo.args.campaign,
        "--wave",
        "1",
        "--out",
        path("notify"),
        "--as-of",
        WAVE_DAYS[1],
    ]
    notify.main([*wave1, "--dry-run", "--show-regions", "3", "--samples", "1"])
    notify.main(wave1)
    _done(started, path("notify", "jobs"))


def _registrations(demo: _Demo) -> None:
    from dev.simulate import simulate_registrations

    path = demo.path
    started = demo.step("registrations arrive: simulated from a share of the notified lines")
    counts = simulate_registrations(
        path("scan"),
        path("events", "registrations.jsonl"),
        share=0.45,
        seed=demo.args.seed,
        as_of=dt.date.fromisoformat(REGISTRATION_DAY),
    )
    print(
        f"   {counts['events']:,} events: {counts['duplicates']:,} redelivered, {counts['invalid']:,} failing "
        f"the policy, {counts['unknown_lines']:,} for lines that do not exist"
    )
    _done(started, path("events", "registrations.jsonl"))


def _merge(demo: _Demo) -> None:
    from pipelines import merge

    path = demo.path
    started = demo.step("merge: registrations into the base, tokenized, originals sealed in the vault")
    merge.main(
        [
            "--base",
            path("base.parquet"),
            "--registrations",
            path("events", "registrations.jsonl"),
            "--keys",
            path("keys", "keyset.json"),
            "--out",
            path("merge"),
            "--as-of",
            REGISTRATION_DAY,
        ]
    )
    _done(started, path("merge"))


def _notify_wave_2(demo: _Demo) -> None:
    from pipelines import notify

    path = demo.path
    started = demo.step("notify wave 2: reminders, less the lines registered since")
    notify.main(
        [
            "--scan",
            path("scan"),
            "--campaign",
            demo.args.campaign,
            "--wave",
            "2",
            "--out",
            path("notify"),
            "--as-of",
            WAVE_DAYS[2],
            "--merged",
            path("merge"),
        ]
    )
    _done(started, path("notify", "jobs"))


def _second_merge(demo: _Demo) -> None:
    from dev.simulate import simulate_registrations
    from pipelines import merge

    path, seed = demo.path, demo.args.seed
    started = demo.step("more registrations after the reminders, merged the next days on the merged base")
    merged = pq.read_table(path("merge", "base"), columns=["line_id", "registration_event_id"])
    registered = merged.filter(merged.column("registration_event_id").is_valid()).column("line_id")
    counts = simulate_registrations(
        path("scan"),
        path("events", "registrations-2.jsonl"),
        share=0.35,
        seed=seed + 1,
        as_of=dt.date.fromisoformat(WAVE_DAYS[2]) + dt.timedelta(days=1),
        days=6,
        exclude=registered,
    )
    print(f"   {counts['events']:,} events over 6 days")
    merge.main(
        [
            "--merged",
            path("merge"),
            "--registrations",
            path("events", "registrations-2.jsonl"),
            "--keys",
            path("keys", "keyset.json"),
            "--out",
            path("merge-2"),
            "--as-of",
            SECOND_MERGE_DAY,
        ]
    )
    _done(started, path("merge-2"))


def _report(demo: _Demo) -> None:
    from pipelines import report

    path = demo.path
    started = demo.step("report: completion, waves, regions, agents (Art. 14), the past-deadline list")
    demo.figures = report.run(
        [
            "--scan",
            path("scan"),
            "--merged",
            path("merge-2"),
            "--earlier-merges",
            path("merge"),
            "--notify",
            path("notify"),
            "--campaign",
            demo.args.campaign,
            "--out",
            path("report"),
            "--as-of",
            REPORT_DAY,
        ]
    )
    print(report.format_summary(demo.figures))
    _done(started, path("report", "report.html"))


def _reveal(demo: _Demo) -> None:
    from pipelines import reveal

    path = demo.path
    started = demo.step("reveal: one registered line, for a stated purpose, on the audit log")
    merged = pq.read_table(path("merge-2", "base"), columns=["line_id", "registration_event_id"])
    registered = merged.filter(merged.column("registration_event_id").is_valid())
    if registered.num_rows:
        line_id = registered.column("line_id")[0].as_py()
        reveal.main(
            [
                "--keys",
                path("keys", "keyset.json"),
                "--merged",
                path("merge-2"),
                "--line-id",
                line_id,
                "--purpose",
                "demo: customer asked to see their record",
                "--fields",
                "name",
            ]
        )
    _done(started, "audit log beside the vault")


def _streaming(demo: _Demo) -> None:
    from dev.demo_streaming import stream_and_compact

    path = demo.path
    started = demo.step("streaming merge: live registrations through Pub/Sub (the emulator), windowed, then compacted")
    demo.live_base, demo.live_vault = stream_and_compact(
        path,
        path("scan"),
        path("merge-2", "base"),
        path("merge-2", "vault"),
        path("keys", "keyset.json"),
        LIVE_DAY,
        demo.args.seed + 2,
    )
    _done(started, demo.live_base)


def _retention(demo: _Demo) -> None:
    from pipelines import retention

    path = demo.path
    started = demo.step("retention: identity of lines terminated more than two years ago purged (Art. 11)")
    purge = demo.purge = retention.run(
        [
            "--base",
            demo.live_base,
            "--vault",
            demo.live_vault,
            "--keys",
            path("keys", "keyset.json"),
            "--out",
            path("retention"),
            "--as-of",
            SECOND_MERGE_DAY,
            "--future-as-of",  # the demo's timeline is fixed days, which may be after the day it runs
        ]
    )
    print(
        f"   purged {purge['counts']['purged']:,} lines terminated on or before "
        f"{purge['retention']['purge_terminated_on_or_before']}; vault key {purge['keys']['vault_before']} -> "
        f"{purge['keys']['vault_after']} (the live base and vault are now under {path('retention')})"
    )
    _done(started, path("retention"))


def _incident(demo: _Demo) -> None:
    from pipelines import incident

    path = demo.path
    started = demo.step("incident: a list of lines from a suspected leak, scoped and shredded (Art. 13)")
    live = pq.read_table(path("retention", "base"), columns=["line_id", "registration_event_id"])
    leaked = live.filter(live.column("registration_event_id").is_valid()).column("line_id").to_pylist()[1:6]
    with open(path("incident-lines.txt"), "w", encoding="utf-8") as handle:
        handle.write("".join(f"{line_id}\n" for line_id in leaked))
    incident.main(
        [
            "--lines",
            path("incident-lines.txt"),
            "--merged",
            path("retention"),
            "--keys",
            path("keys", "keyset.json"),
            "--shred",
            "--out",
            path("incident"),
            "--as-of",
            SECOND_MERGE_DAY,
            "--description",
            "demo: a laptop with an export of five registered lines was lost",
        ]
    )
    _done(started, path("incident", "incident.html"))


def _self_inspection(demo: _Demo) -> None:
    from pipelines import report

    started = demo.step("self-inspection: the year's runs, reveals, key changes and purges (Art. 15)")
    year = int(demo.purge["started"][:4])
    inspection = report.run(
        ["--self-inspection", "--year", str(year), "--manifests", demo.out, "--out", demo.path("inspection")]
        + ["--keys", demo.path("keys", "keyset.json")]
    )
    print("   " + report.format_summary(inspection))
    _done(started, inspection["outputs"]["html"])


def _completion(demo: _Demo) -> None:
    """The last lines: the completion rate, the report's path, the output folder."""
    c = demo.figures["completion"]
    rate = 100.0 * c["completion_rate"] if c["completion_rate"] is not None else 100.0
    print(
        f"\ncompletion: {c['complete']:,} of {c['needed']:,} lines that needed registration are now COMPLETE "
        f"({rate:.1f}%)"
    )
    print(f"report: {os.path.abspath(demo.path('report', 'report.html'))}")
    print(f"outputs under {os.path.abspath(demo.out)}")


# The demo's steps, in order: each prints its "== N. title" line and where its output went.
STEPS = (
    _generate,
    _scan,
    _keys,
    _notify_wave_1,
    _registrations,
    _merge,
    _notify_wave_2,
    _second_merge,
    _report,
    _reveal,
    _streaming,
    _retention,
    _incident,
    _self_inspection,
)
