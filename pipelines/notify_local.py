"""A notify wave on this machine without Beam: the Beam job's steps as tasks of a pool of worker processes.

    result = run_in_process(args, plan, out, head, timer, spill)

``backfill notify`` writing files on a local runner runs here (``--topic``, ``--dry-run``, ``--spill off``,
Beam's worker options or a remote runner take the Beam job, ``pipelines/notify_job.py``): starting Beam and
its runner costs more than planning a wave of a million jobs. The passes (tasks in
``pipelines/notify_tasks.py``, run by ``workers`` processes forked from this one; 1: this process):

1. plan: with nothing joined to the lines, each classified split is read and planned; otherwise each split
   of the lines, the merged lines, the history and the receipts is read and spilled by line bucket (sealed),
   then each bucket is planned. Jobs get their ids and are spilled (sealed: they hold phone numbers);
2. here: the wave's announcements from the summed region tallies (as the Beam job's Announce), and the
   send-day bounds of every channel (as its DayBounds), in two passes over the jobs' 16-byte keys
   (:mod:`transforms.notify.day_bounds`): the planning tasks' histograms of their keys are added up, which
   gives the bins that hold a day bound; then a task per planning task reads its spilled keys back and
   returns those of these bins (about N / 65,536 keys per send day), from which the bounds are picked;
3. write: each jobs part is scheduled, rendered and staged as its Avro file and history file.

This process holds references, region tallies, histograms and the few keys of the wanted bins, never jobs
nor all their keys. The counts are added up and checked
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
from pipelines.notify_tasks import Settings, key_task, plan_bucket_task, plan_split_task, start_worker
from pipelines.notify_tasks import wanted_keys_task, write_task
from pipelines.progress_text import InProcessProgress
from pipelines.task_pool import TaskPool
from transforms.core.counts import merge_counts
from transforms.notify.batch_steps import add_histograms, announce, bounds_from_wanted
from transforms.notify.batch_steps import channel_histograms, send_day_bins, wanted_keys
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


def _plan_pass(pool: TaskPool, plan: WavePlan, out: str, prog: InProcessProgress, planned_one) -> tuple:
    """Pass 1: (planned results, this wave's announced job ids, this campaign's day loads);
    ``planned_one(result)`` as each planning task ends."""

    def read(result: dict) -> None:
        prog.done += result.get("rows", 0)

    def read_and_planned(result: dict) -> None:
        read(result)
        planned_one(result)

    joins = {
        "registered": plan.registered,
        "history": history_splits(out, HISTORY_JOBS),
        "receipts": history_splits(out, HISTORY_RECEIPTS),
    }
    joins = {kind: splits for kind, splits in joins.items() if splits}
    if not joins:
        return pool.run(plan_split_task, ((split,) for split in plan.splits), read_and_planned), [], []
    calls = [("lines", split) for split in plan.splits] + [(k, split) for k, v in joins.items() for split in v]
    keyed = pool.run(key_task, calls, read)
    buckets: dict[int, dict[str, list]] = {}
    for result in keyed:
        for bucket, ref in result["parts"]:
            buckets.setdefault(bucket, {}).setdefault(result["kind"], []).append(ref)
    announced = [r["announced"] for r in keyed if r["announced"] is not None]
    used = [r["used"] for r in keyed if r["used"] is not None]
    calls = ((buckets[b],) for b in sorted(buckets) if "lines" in buckets[b])
    return pool.run(plan_bucket_task, calls, planned_one), announced, used


def _send_day_bounds(pool: TaskPool, args, plan: WavePlan, planned: list, hists: dict, used: list, own: dict):
    """channel -> its send-day bounds, from the summed histograms (pass 1) and the keys of the wanted bins
    (pass 2: each planning task's spilled keys filtered by a task; ``own``: the launcher's announcement keys)."""
    campaign = plan.campaign
    limit = None if args.allow_late_sends else campaign.send_limit(plan.wave.wave)
    wanted = send_day_bins(hists, used, dict(campaign.daily_cap), plan.first_day, limit)
    needed = {channel: w.needed for channel, w in wanted.items() if len(w.needed)}
    raw: dict[str, list[bytes]] = {}
    if needed:
        calls = [(r["keys"], needed) for r in planned if any(channel in needed for channel in r["keys"])]
        for result in pool.run(wanted_keys_task, calls) + [wanted_keys(own, needed)]:
            for channel, keys in result.items():
                raw.setdefault(channel, []).append(keys if isinstance(keys, bytes) else keys.tobytes())
    found = {channel: np.frombuffer(b"".join(parts), KEY_DTYPE) for channel, parts in raw.items()}
    return bounds_from_wanted(found, wanted)


def _passes(pool: TaskPool, args, plan: WavePlan, out: str, prog: InProcessProgress) -> tuple[dict, list]:
    """The three passes (module docstring); returns the run's counts and the staged files."""
    campaign, wave = plan.campaign, plan.wave
    hists: dict = {}
    planned, announced, used = _plan_pass(pool, plan, out, prog, lambda r: add_histograms(hists, r.pop("hists")))
    counts: dict = {}
    for result in planned:
        merge_counts(counts, result["counts"])
    regions = [r["regions"] for r in planned if r["regions"] is not None]
    calls = [(channel, ref) for r in planned for channel, ref in r["jobs"]]
    own: dict = {}
    if "announcement" in wave.channels and regions:
        announced_counts, table = announce(pa.concat_tables(regions), announced, campaign.campaign_id, wave.wave)
        merge_counts(counts, announced_counts)
        if table is not None:
            own["announcement"] = keys_of(table.column(KEY))
            add_histograms(hists, channel_histograms(own))
            calls.append(("announcement", table))
    bounds = _send_day_bounds(pool, args, plan, planned, hists, used, own)
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
