"""The Beam job of ``backfill notify``: the wave's pipeline built, run, and its result read back.

    result = run_beam_wave(args, plan, out, head, timer, tmp, spill_dir)

Runs on a remote runner, with Beam's local worker options, ``--spill off``, ``--topic`` or a dry run; a
local run otherwise runs in process (``pipelines/notify_local.py``), with the same per-batch steps
(:mod:`transforms.notify.batch_steps`). Used by :mod:`pipelines.notify`.
"""

from __future__ import annotations

import apache_beam as beam

from pipelines.common import UserError
from pipelines.io.notify_beam import ReadTables, WriteJobFiles
from pipelines.io.notify_files import HISTORY_JOBS, HISTORY_RECEIPTS, history_splits
from pipelines.io.paths import join_path
from pipelines.manifest import Timer, read_json, write_json
from pipelines.notify_manifest import _save, unbalanced, with_result
from pipelines.notify_plan import WavePlan, plan_buckets
from pipelines.progress import NO_PROGRESS, progress
from transforms.core.counts import merge_counts
from transforms.notify.composite import BuildNotificationJobs
from transforms.notify.summary import SummariseJobs

__all__ = ["build_pipeline", "run_beam_wave"]


def _finish_counts(counts: dict, summary: dict, stats: list) -> dict:
    total: dict = {}
    stats = [dict(s) for s in stats]
    spans = [s.pop("publish") for s in stats if "publish" in s]  # times: min and max, not sums
    for part in [counts, *stats]:
        merge_counts(total, part)
    if spans:
        total["publish"] = {
            "messages": sum(s["messages"] for s in spans),
            "first": min(s["first"] for s in spans),
            "last": max(s["last"] for s in spans),
        }
    total["summary"] = summary
    return total


def _record(result: dict, path: str, head: dict, timer: Timer, out: str, save: bool) -> None:
    """In the job, once the jobs are handed over: the wave's manifest saved (runs/RUN.json, manifest.json) and
    its balance checked, so a wave whose counts do not add up fails on any runner, recorded first."""
    manifest = with_result(head, result, timer)
    write_json(path, {**result, "manifest": manifest})
    if save:
        _save(out, head["run_id"], manifest)
        if not manifest["counts"]["balanced"]:
            raise UserError(unbalanced(manifest))


def build_pipeline(
    p,
    *,
    campaign,
    wave,
    first_day,
    splits,
    registered,
    history,
    receipts,
    suppressed,
    n_buckets,
    spill_dir,
    samples,
    allow_late_sends=False,
    divisions=None,
    progress=NO_PROGRESS,
):
    """Wire reads and BuildNotificationJobs; returns (NotifyOutputs, summary PCollection)."""
    inputs = {"lines": p | "ReadClassified" >> ReadTables(splits)}
    progress.count(inputs["lines"], "read")
    if registered:
        inputs["registered"] = p | "ReadRegistered" >> ReadTables(registered)
    if history:
        inputs["history"] = p | "ReadHistory" >> ReadTables(history)
    if receipts:
        inputs["receipts"] = p | "ReadReceipts" >> ReadTables(receipts)
    outputs = inputs | "BuildNotificationJobs" >> BuildNotificationJobs(
        campaign,
        wave,
        first_day,
        suppressed=suppressed,
        n_buckets=n_buckets,
        spill_dir=spill_dir,
        allow_late_sends=allow_late_sends,
        divisions=divisions,
    )
    jobs = {"sms": outputs.sms, "call": outputs.call, "announcement": outputs.announcement}
    for channel in ("sms", "call"):
        progress.count(jobs[channel], "jobs")
    summary = (
        jobs | "SummariseJobs" >> SummariseJobs(samples)
        if samples is not None
        else p | "NoSummary" >> beam.Create([{}])
    )
    return outputs, jobs, summary


def run_beam_wave(args, plan: WavePlan, out: str, head: dict, timer: Timer, tmp: str, spill_dir: str | None) -> dict:
    """The wave's pipeline; its result (counts, summary, the manifest the job wrote) read back from ``tmp``."""
    run_id = head["run_id"]
    n_buckets = plan_buckets(args, plan)
    result_path = join_path(tmp, "result.json")
    watch = progress("notify", run_id, {"read": plan.rows, "jobs": None}, plan.options, args.progress_seconds)
    with watch as prog, beam.Pipeline(options=plan.options) as p:
        outputs, jobs, summary = build_pipeline(
            p,
            campaign=plan.campaign,
            wave=plan.wave.wave,
            first_day=plan.first_day,
            splits=plan.splits,
            registered=plan.registered,
            history=history_splits(out, HISTORY_JOBS),
            receipts=history_splits(out, HISTORY_RECEIPTS),
            suppressed=plan.suppressed,
            n_buckets=n_buckets,
            spill_dir=spill_dir,
            samples=args.samples if args.dry_run else None,
            allow_late_sends=args.allow_late_sends,
            divisions=plan.policy.code_tables.divisions,
            progress=prog,
        )  # the table and samples are the dry run's
        stats = _hand_over(args, p, jobs, out, run_id, f"{plan.campaign.campaign_id}-w{plan.wave.wave}")
        (
            outputs.counts
            | "Finish" >> beam.Map(_finish_counts, beam.pvalue.AsSingleton(summary), beam.pvalue.AsList(stats))
            | "RecordWave" >> beam.Map(_record, result_path, head, timer, out, not args.dry_run)
        )
    return read_json(result_path)


def _hand_over(args, p, jobs: dict, out: str, run_id: str, prefix: str):
    """The jobs published to --topic or written as files (nothing in a dry run); the hand-over's stats."""
    if args.dry_run:
        return p | "NoHandOver" >> beam.Create([])
    if args.topic:
        from pipelines.io.pubsub import PublishJobs

        return jobs | "PublishJobs" >> PublishJobs(args.topic, out, run_id, max_messages=args.publish_batch)
    return jobs | "WriteJobFiles" >> WriteJobFiles(out, prefix, run_id)
