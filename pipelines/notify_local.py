"""A notify wave on this machine without Beam: the Beam job's steps as tasks of a pool of worker processes.

    result = run_in_process(args, plan, out, head, timer, spill)

``backfill notify`` writing files on a local runner runs here (``--topic``, ``--dry-run``, ``--spill off``,
Beam's worker options or a remote runner take the Beam job, ``pipelines/notify_job.py``): starting Beam and
its runner costs more than planning a wave of a million jobs. The passes (tasks in
``pipelines/notify_tasks.py``, run by ``workers`` processes forked from this one; 1: this process):

1. plan: with nothing joined to the lines, each classified split is read and planned; otherwise each split
   of the lines, the merged lines, the history and the receipts is read and spilled by line bucket (sealed),
   then each bucket is planned. Jobs get their ids and are spilled (sealed: they hold phone numbers);
2. here: the send-day bounds of every channel from the jobs' 16-byte keys, and the wave's announcements
   from the summed region tallies (as the Beam job's DayBounds and Announce);
3. write: each jobs part is scheduled, rendered and staged as its Avro file and history file.

This process holds references, region tallies and keys, never jobs. The counts are added up and checked
(targeted = decided, jobs = handed over) before any staged file is placed: an unbalanced wave hands over
nothing. Then the jobs files are placed, each before its history, and the manifest says ``in-process`` and
the number of workers.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.common import UserError
from pipelines.io.notify_files import HISTORY_JOBS, HISTORY_RECEIPTS, history_splits, place
from pipelines.io.paths import join_path
from pipelines.manifest import Timer, write_json
from pipelines.notify_manifest import _save, unbalanced, with_result
from pipelines.notify_plan import WavePlan, plan_buckets
from pipelines.notify_tasks import Settings, key_task, plan_bucket_task, plan_split_task, start_worker, write_task
from pipelines.progress_text import InProcessProgress
from pipelines.task_pool import TaskPool
from transforms.core.counts import merge_counts
from transforms.notify.batch_steps import announce, send_day_bounds
from transforms.notify.jobs import KEY, keys_of
from transforms.notify.planner import PlanContext
from transforms.notify.schedule import KEY_DTYPE

__all__ = ["run_in_process"]


def _settings(args, plan: WavePlan, out: str, run_id: str, spill: str) -> Settings:
    campaign, wave = plan.campaign, plan.wave
    return Settings(
        campaign=campaign,
        ctx=PlanContext(campaign.campaign_id, wave.wave, wave.channels, plan.first_day, campaign.min_days_between),
        suppressed=plan.suppressed,
        first_day=plan.first_day,
        divisions=plan.policy.code_tables.divisions,
        n_buckets=plan_buckets(args, plan),
        spill=spill,
        out=out,
        prefix=f"{campaign.campaign_id}-w{wave.wave}",
        run_id=run_id,
    )


def _plan_pass(pool: TaskPool, plan: WavePlan, out: str, prog: InProcessProgress) -> tuple[list, list, list]:
    """Pass 1: (planned results, this wave's announced job ids, this campaign's day loads)."""

    def read(result: dict) -> None:
        prog.done += result.get("rows", 0)

    joins = {
        "registered": plan.registered,
        "history": history_splits(out, HISTORY_JOBS),
        "receipts": history_splits(out, HISTORY_RECEIPTS),
    }
    joins = {kind: splits for kind, splits in joins.items() if splits}
    if not joins:
        return pool.run(plan_split_task, ((split,) for split in plan.splits), read), [], []
    calls = [("lines", split) for split in plan.splits] + [(k, split) for k, v in joins.items() for split in v]
    keyed = pool.run(key_task, calls, read)
    buckets: dict[int, dict[str, list]] = {}
    for result in keyed:
        for bucket, ref in result["parts"]:
            buckets.setdefault(bucket, {}).setdefault(result["kind"], []).append(ref)
    announced = [r["announced"] for r in keyed if r["announced"] is not None]
    used = [r["used"] for r in keyed if r["used"] is not None]
    planned = pool.run(plan_bucket_task, ((buckets[b],) for b in sorted(buckets) if "lines" in buckets[b]))
    return planned, announced, used


def _passes(pool: TaskPool, args, plan: WavePlan, out: str, prog: InProcessProgress) -> tuple[dict, list]:
    """The three passes (module docstring); returns the run's counts and the staged files."""
    campaign, wave = plan.campaign, plan.wave
    planned, announced, used = _plan_pass(pool, plan, out, prog)
    counts: dict = {}
    keys: dict[str, list[bytes]] = {}
    for result in planned:
        merge_counts(counts, result["counts"])
        for channel, raw in result["keys"].items():
            keys.setdefault(channel, []).append(raw)
    regions = [r["regions"] for r in planned if r["regions"] is not None]
    calls = [(channel, ref) for r in planned for channel, ref in r["jobs"]]
    if "announcement" in wave.channels and regions:
        announced_counts, table = announce(pa.concat_tables(regions), announced, campaign.campaign_id, wave.wave)
        merge_counts(counts, announced_counts)
        if table is not None:
            keys.setdefault("announcement", []).append(keys_of(table.column(KEY)).tobytes())
            calls.append(("announcement", table))
    by_channel = {channel: np.frombuffer(b"".join(raw), KEY_DTYPE) for channel, raw in keys.items()}
    limit = None if args.allow_late_sends else campaign.send_limit(wave.wave)
    bounds = send_day_bounds(by_channel, used, dict(campaign.daily_cap), plan.first_day, limit)
    written = pool.run(write_task, ((channel, part, bounds) for channel, part in calls))
    for result in written:
        merge_counts(counts, result["counts"])
    return counts, [result["staged"] for result in written]


def run_in_process(args, plan: WavePlan, out: str, head: dict, timer: Timer, spill: str) -> dict:
    """Plan the wave and write its jobs files and history into ``out``; returns the result (counts, the
    manifest under ``manifest``), as the Beam job's."""
    run_id = head["run_id"]
    prog = InProcessProgress(f"notify {run_id}", plan.rows, args.progress_seconds)
    settings = _settings(args, plan, out, run_id, spill)
    with prog.running(), TaskPool(plan.workers, start_worker, (settings,)) as pool:
        counts, staged = _passes(pool, args, plan, out, prog)
    result = {**counts, "summary": {}}
    manifest = with_result(head, result, timer)
    if not manifest["counts"]["balanced"]:  # before any file is placed: nothing is handed over
        write_json(join_path(out, "runs", f"{run_id}.json"), manifest)
        raise UserError(unbalanced(manifest) + "; no job was handed over")
    for files in staged:
        for tmp, final in files:  # the jobs file first; its history only once the jobs are in place
            place(tmp, final)
    _save(out, run_id, manifest)
    return {**result, "manifest": manifest}
