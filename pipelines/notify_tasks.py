"""The in-process notify's tasks, each run by a worker process on one split, one bucket or one jobs part.

    plan_split_task(split)            -> nothing joined: a classified split read, its targets planned
    key_task(kind, split)             -> something joined: a split of lines/registered/history/receipts read,
                                         keyed, spilled by line bucket
    plan_bucket_task(refs)            -> one line bucket's targets planned with what is joined to them
    wanted_keys_task(ref, needed)     -> one planning task's spilled job keys: those in the wanted bins
    write_task(channel, part, bounds) -> one jobs part scheduled, rendered, staged as Avro + history

They are the Beam job's steps (``transforms/notify/composite.py``), calling the same functions
(:mod:`transforms.notify.batch_steps`), with sealed spill files (:mod:`transforms.core.spill_files`: the
run's spill key) in place of the shuffle and of the jobs between planning and scheduling (they hold phone
numbers). A planning task returns its counts, its region tallies, the references of its spilled jobs, and
for the daily caps (:mod:`transforms.notify.day_bounds`) a histogram of its jobs' 16-byte keys per channel
and the references of those keys, spilled beside its jobs; never jobs nor all its keys. Once the launcher
knows the bins that hold a day bound, ``wanted_keys_task`` returns the few keys of those bins. A write task
returns its tally and the (staged, final) paths of its files, placed by the launcher once the run's counts
balance.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa

from pipelines.io.notify_files import read_split, stage_job_files
from pipelines.io.task_files import Ref, SpillFile, gather
from transforms.core.counts import merge_counts
from transforms.core.spill_files import read_part
from transforms.notify.batch_steps import key_history, key_receipts, key_registered, plan_parts, schedule_jobs
from transforms.notify.batch_steps import select_targets
from transforms.notify.day_bounds import in_bins, key_histogram
from transforms.notify.jobs import KEY, keys_of
from transforms.notify.planner import PlanContext
from transforms.notify.schedule import Schedule

__all__ = [
    "Settings",
    "start_worker",
    "plan_split_task",
    "key_task",
    "plan_bucket_task",
    "wanted_keys_task",
    "write_task",
]


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every task of one wave needs; set once in each worker process (forked: nothing is pickled)."""

    campaign: object  # transforms.notify.campaign.Campaign
    ctx: PlanContext
    suppressed: pa.Array | None
    first_day: dt.date
    divisions: str | None
    n_buckets: int
    spill: str  # the run's private spill folder
    out: str
    prefix: str  # of the jobs files' names: CAMPAIGN-wWAVE
    run_id: str


_SETTINGS: list[Settings] = []


def start_worker(settings: Settings) -> None:
    """A worker process's initializer (and the launcher's, when it runs the tasks itself)."""
    _SETTINGS[:] = [settings]


def _settings() -> Settings:
    return _SETTINGS[0]


def plan_split_task(split: tuple) -> dict:
    """Nothing joined: one classified split read, its target lines planned (see :func:`_planned`)."""
    table = read_split(split)
    lines = select_targets(table, None)
    return {"rows": table.num_rows, **_planned({} if lines is None else {"lines": lines})}


def key_task(kind: str, split: tuple) -> dict:
    """Something joined: one split of ``kind`` (lines, registered, history, receipts) read and keyed, its rows
    spilled a part per line bucket; returns the parts' ``(bucket, reference)``, the rows read (lines), this
    wave's announced job ids and this campaign's day loads (history)."""
    s = _settings()
    table = read_split(split)
    result: dict = {"kind": kind, "rows": table.num_rows if kind == "lines" else 0, "announced": None, "used": None}
    if kind == "lines":
        keyed = select_targets(table, s.n_buckets)
    elif kind == "registered":
        keyed = key_registered(table, s.n_buckets)
    elif kind == "history":
        keyed, result["announced"], result["used"] = key_history(table, s.ctx.campaign_id, s.ctx.wave, s.n_buckets)
    else:
        keyed = key_receipts(table, s.n_buckets)
    result["parts"] = []
    if keyed is not None:
        spill = SpillFile(s.spill, kind)
        try:
            result["parts"] = spill.add_by(keyed, keyed.column("_bucket").to_numpy())
        finally:
            spill.close()
    return result


def plan_bucket_task(refs: dict[str, list[Ref]]) -> dict:
    """One line bucket: its target lines planned with what is joined to them (``refs``: kind -> parts)."""
    return _planned({kind: gather(parts) for kind, parts in refs.items()})


def _planned(parts: dict) -> dict:
    """Plan ``parts``; the jobs spilled (a part per table of at most JOB_BATCH jobs of one channel), then the
    16-byte keys of each channel's jobs as one more part. Returns counts, region tallies (None when nothing
    was planned), ``[(channel, reference)]``, channel -> the keys' reference and channel -> the keys'
    histogram (``uint32``: pass 1 of the send-day bounds)."""
    s = _settings()
    planned = plan_parts(parts, s.ctx, s.suppressed)
    if planned is None:
        return {"counts": {}, "regions": None, "jobs": [], "keys": {}, "hists": {}}
    jobs, columns, hists = [], {}, {}
    spill = SpillFile(s.spill, "jobs")
    try:
        for i, (channel, part) in enumerate(planned.jobs):
            jobs.append((channel, spill.add(i, part)[1]))
            columns.setdefault(channel, []).extend(part.column(KEY).chunks)
            hists[channel] = hists.get(channel, 0) + key_histogram(keys_of(part.column(KEY)))
        keys = {
            c: spill.add(len(jobs) + k, pa.table({KEY: pa.chunked_array(v)}))[1]
            for k, (c, v) in enumerate(columns.items())
        }
    finally:
        spill.close()
    hists = {channel: hist.astype(np.uint32) for channel, hist in hists.items()}  # half the bytes to send
    return {"counts": planned.counts, "regions": planned.regions, "jobs": jobs, "keys": keys, "hists": hists}


def wanted_keys_task(keys: dict[str, Ref], needed: dict[str, np.ndarray]) -> dict[str, bytes]:
    """Pass 2 of the send-day bounds: one planning task's spilled keys of the channels with ``needed`` bins
    (channel -> bins) read back; channel -> those of its keys that lie in these bins, as bytes."""
    found = {}
    for channel, ref in keys.items():
        if channel in needed:
            mine = keys_of(read_part(*ref).column(KEY))
            found[channel] = mine[in_bins(mine, needed[channel])].tobytes()
    return found


def write_task(channel: str, part: Ref | pa.Table, bounds: dict) -> dict:
    """One jobs part (spilled, or the announcements' table) scheduled with the run's day ``bounds``,
    rendered, and staged as its Avro file and history file; returns the tally and the staged paths."""
    s = _settings()
    jobs = part if isinstance(part, pa.Table) else read_part(*part)
    schedule = Schedule.of(s.campaign)
    tally, table = schedule_jobs(jobs, bounds, s.campaign, s.ctx.wave, schedule, s.first_day, s.divisions)
    staged = stage_job_files(table, channel, s.out, s.prefix, s.run_id)
    merge_counts(tally, {"files": {channel: 1}, "handed_over": {channel: table.num_rows}})
    return {"counts": tally, "staged": staged}
