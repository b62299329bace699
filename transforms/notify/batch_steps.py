"""The notify step's per-batch steps (Beam-free): what each step of the Beam job does to one table.

    lines = select_targets(classified, n_buckets)          # SelectTargets (bucketed when anything is joined)
    registered = key_registered(merged, n_buckets)          # KeyRegistered
    lines, announced, used = key_history(history, campaign_id, wave, n_buckets)   # KeyHistory
    receipts = key_receipts(receipts, n_buckets)            # KeyReceipts
    planned = plan_parts(parts, ctx, suppressed)            # Plan: counts, regions, job parts with ids and keys
    hists = channel_histograms(channel_keys(keys))          # KeyHistograms (pass 1), summed: add_histograms
    wanted = send_day_bins(hists, used, caps, first_day, limit)                   # WantedBins
    few = wanted_keys(channel_keys(keys), {c: w.needed for c, w in wanted.items()})  # WantedKeys (pass 2)
    bounds = bounds_from_wanted(few, wanted)                # DayBounds, from the few keys gathered
    counts, table = announce(regions, announced, campaign_id, wave)               # Announce
    tally, table = schedule_jobs(jobs, bounds, campaign, wave, schedule, first_day, divisions)  # ScheduleAndRender

Both engines call these: the Beam job's DoFns (:mod:`transforms.notify.composite`) are thin wrappers, and the
in-process engine (``pipelines/notify_tasks.py``) runs them in its worker processes. One piece of logic.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.counts import value_counts
from transforms.core.spill_files import BUCKET
from transforms.notify.jobs import KEY, announcement_rows, finish_jobs, keys_of, with_job_ids
from transforms.notify.planner import PLAN_COLUMNS, PlanContext, plan_lines, sum_regions
from transforms.notify.day_bounds import Wanted, bounds_from_bins, in_bins, key_histogram, wanted_bins
from transforms.notify.schedule import KEY_DTYPE, Schedule, check_spill
from transforms.scan.crossrecord import bucket_of

__all__ = [
    "LINE_CHANNELS",
    "JOB_BATCH",
    "Planned",
    "select_targets",
    "key_registered",
    "key_history",
    "key_receipts",
    "plan_parts",
    "channel_keys",
    "channel_histograms",
    "add_histograms",
    "send_day_bins",
    "wanted_keys",
    "bounds_from_wanted",
    "send_day_bounds",
    "announce",
    "schedule_jobs",
]

LINE_CHANNELS = ("sms", "call")
JOB_BATCH = 65_536  # rows of a job table (and so of a jobs file): small enough to stay in the CPU caches
HISTORY_LINE_COLUMNS = ["job_id", "line_id", "channel", "campaign_id", "wave", "send_day"]


def _bucketed(table: pa.Table, n: int) -> pa.Table:
    """``table`` with its ``_bucket`` column: the bucket of its line_id (as transforms.core.shuffle.with_bucket)."""
    buckets = pa.array(bucket_of(table.column("line_id"), n), pa.int32())
    if BUCKET in table.column_names:
        return table.set_column(table.schema.get_field_index(BUCKET), BUCKET, buckets)
    return table.append_column(BUCKET, buckets)


def select_targets(lines: pa.Table, n_buckets: int | None) -> pa.Table | None:
    """The lines that need registration (their plan columns), bucketed when ``n_buckets``; None for none."""
    table = lines.select(list(PLAN_COLUMNS))
    table = table.filter(pc.fill_null(table.column("needs_registration"), False))
    if not table.num_rows:
        return None
    return _bucketed(table, n_buckets) if n_buckets else table


def key_registered(table: pa.Table, n_buckets: int) -> pa.Table | None:
    """Line ids COMPLETE in a merged base (or every id of a plain list), bucketed."""
    if "identity_status" in table.column_names:
        table = table.filter(pc.fill_null(pc.equal(table.column("identity_status"), "COMPLETE"), False))
    table = table.select(["line_id"]).filter(pc.is_valid(table.column("line_id")))
    return _bucketed(table, n_buckets) if table.num_rows else None


def key_history(table: pa.Table, campaign_id: str, wave: int, n_buckets: int):
    """(line jobs bucketed, this wave's announcement job ids, this campaign's day loads ``{"used": {...}}``);
    each None when there is none."""
    mine = pc.equal(table.column("campaign_id"), campaign_id)
    used = announced = lines = None
    if pc.any(mine).as_py():
        loads = table.filter(mine).group_by(["channel", "send_day"]).aggregate([("job_id", "count")])
        columns = (loads.column(i).to_pylist() for i in range(3))
        used = {"used": {f"{c}|{d.isoformat()}": n for c, d, n in zip(*columns)}}
    is_line = pc.is_valid(table.column("line_id"))
    is_announced = pc.and_(pc.and_(pc.invert(is_line), mine), pc.equal(table.column("wave"), wave))
    if pc.any(is_announced).as_py():
        announced = table.filter(is_announced).select(["job_id"])
    line_jobs = table.filter(is_line)
    if line_jobs.num_rows:
        lines = _bucketed(line_jobs.select(HISTORY_LINE_COLUMNS), n_buckets)
    return lines, announced, used


def key_receipts(table: pa.Table, n_buckets: int) -> pa.Table | None:
    table = table.filter(pc.is_valid(table.column("line_id")))
    return _bucketed(table.select(["job_id", "line_id", "status", "at"]), n_buckets) if table.num_rows else None


@dataclasses.dataclass
class Planned:
    """One planned bucket (or batch): its counts, its region tallies and its line jobs, a table of at most
    JOB_BATCH rows per part, each with its ``job_id`` and 16-byte ``_key``."""

    counts: dict
    regions: pa.Table
    jobs: list[tuple[str, pa.Table]]  # (channel, jobs)


def plan_parts(parts: dict, ctx: PlanContext, suppressed: pa.Array | None) -> Planned | None:
    """Plan the target ``lines`` of ``parts`` with what is joined to them (``registered``, ``history``,
    ``receipts``; each optional); None when there is no line."""
    lines = parts.get("lines")
    if lines is None or lines.num_rows == 0:
        return None
    registered = parts.get("registered")
    plan = plan_lines(
        lines,
        ctx,
        registered=registered.column("line_id") if registered is not None else None,
        history=parts.get("history"),
        receipts=parts.get("receipts"),
        suppressed=suppressed,
    )
    channels, jobs = plan.jobs.column("channel"), []
    for channel in LINE_CHANNELS:
        mine = plan.jobs.filter(pc.equal(channels, channel))
        # A shuffled bucket can hold hundreds of thousands of lines: render and write in tables of at most
        # JOB_BATCH rows, which stay in the CPU caches (and make smaller files).
        for start in range(0, mine.num_rows, JOB_BATCH):
            jobs.append((channel, with_job_ids(mine.slice(start, JOB_BATCH), ctx.campaign_id, ctx.wave, channel)))
    return Planned({"plan": plan.counts}, plan.regions, jobs)


def channel_keys(keys: pa.Table | None) -> dict[str, np.ndarray]:
    """channel -> its jobs' 16-byte keys (``S16``), from a table of (channel, _key) rows."""
    if keys is None:
        return {}
    channels = keys.column("channel")
    return {c: keys_of(keys.filter(pc.equal(channels, c)).column(KEY)) for c in pc.unique(channels).to_pylist()}


def channel_histograms(keys: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pass 1 of the send-day bounds: channel -> its keys counted by bin (``day_bounds.key_histogram``)."""
    return {channel: key_histogram(mine) for channel, mine in keys.items()}


def add_histograms(total: dict[str, np.ndarray], hists: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``hists`` added into ``total`` (channel -> int64 counts; a channel's first histogram is copied)."""
    for channel, hist in hists.items():
        if channel in total:
            total[channel] += hist
        else:
            total[channel] = np.array(hist, np.int64)
    return total


def _day_loads(used: list) -> dict[str, dict[dt.date, int]]:
    """channel -> day -> jobs the history holds, from the ``{"used": {"channel|day": n}}`` items."""
    loads: dict[str, dict[dt.date, int]] = {}
    for item in used:
        for name, n in item.get("used", {}).items():
            channel, day = name.split("|")
            loads.setdefault(channel, {})[dt.date.fromisoformat(day)] = n
    return loads


def send_day_bins(hists: dict, used: list, caps: dict, first_day: dt.date, limit=None) -> dict[str, Wanted]:
    """channel -> where its day bounds lie (``day_bounds.wanted_bins``), from the summed histograms of every
    job's key by channel; caps that push jobs past ``limit`` (a SendLimit; None when late sends are allowed)
    are refused here (``check_spill``), before pass 2."""
    loads = _day_loads(used)
    wanted = {}
    order = (*LINE_CHANNELS, "announcement")  # the channels checked in a stable order: the same refusal each run
    for channel in sorted(hists, key=order.index):
        hist = hists[channel]
        wanted[channel] = wanted_bins(hist, caps[channel], loads.get(channel), first_day)
        jobs = int(np.sum(hist))
        check_spill(channel, jobs, caps[channel], first_day, wanted[channel].ranks, limit)  # one rank a bound
    return wanted


def wanted_keys(keys: dict[str, np.ndarray], needed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pass 2: channel -> its keys that lie in a bin holding a day bound (``needed``: channel -> those bins,
    ``Wanted.needed``); channels with none are left out."""
    return {c: mine[in_bins(mine, needed[c])] for c, mine in keys.items() if c in needed and len(needed[c])}


def bounds_from_wanted(keys: dict[str, np.ndarray], wanted: dict[str, Wanted]) -> dict:
    """channel -> the first job key of each day after the first (see notify_schedule), from the gathered
    keys of the wanted bins: the bounds ``schedule.day_bounds`` gives on every key."""
    empty = np.array([], KEY_DTYPE)
    return {channel: bounds_from_bins(keys.get(channel, empty), w) for channel, w in wanted.items()}


def send_day_bounds(keys: dict[str, np.ndarray], used: list, caps: dict, first_day: dt.date, limit=None) -> dict:
    """The send-day bounds from every job's key by channel in one place: both passes above, in a row."""
    wanted = send_day_bins(channel_histograms(keys), used, caps, first_day, limit)
    return bounds_from_wanted(wanted_keys(keys, {c: w.needed for c, w in wanted.items()}), wanted)


def announce(regions: pa.Table, announced: list, campaign_id: str, wave: int) -> tuple[dict, pa.Table | None]:
    """(counts, the wave's announcement jobs not announced before; None for none) from the summed regions."""
    table = announcement_rows(sum_regions(regions), campaign_id, wave)
    done = pa.concat_tables(announced).column("job_id") if announced else pa.array([], pa.string())
    sent = pc.fill_null(pc.is_in(table.column("job_id"), value_set=done), False)
    no_region = pc.sum(pc.if_else(pc.is_null(regions.column("region")), regions.column("lines"), 0)).as_py()
    counts = {"announcements_already_sent": pc.sum(sent).as_py() or 0, "lines_without_region": no_region or 0}
    table = table.filter(pc.invert(sent))
    return counts, table if table.num_rows else None


def schedule_jobs(
    jobs: pa.Table, bounds: dict, campaign, wave: int, schedule: Schedule, first_day: dt.date, divisions
) -> tuple[dict, pa.Table]:
    """(tally, the channel's job table): jobs of one channel scheduled by their keys and rendered."""
    channel = jobs.column("channel")[0].as_py()
    empty = np.array([], "S16")
    table = finish_jobs(jobs, channel, campaign, wave, schedule, bounds.get(channel, empty), first_day, divisions)
    tally: dict = {"jobs": {channel: table.num_rows}}
    by_variant = value_counts(table.column("variant"))
    if by_variant:
        tally["variants"] = {name: {channel: n} for name, n in by_variant.items()}
    if channel == "sms":
        tally["segments"] = pc.sum(table.column("segments")).as_py()
        tally["cost"] = pc.sum(table.column("cost")).as_py()
    days = pc.value_counts(table.column("send_day"))
    tally["by_day"] = {channel: {d.as_py().isoformat(): c.as_py() for d, c in zip(days.field(0), days.field(1))}}
    return tally, table
