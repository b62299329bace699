"""BuildNotificationJobs: the notify step's composite transform (no I/O inside).

    lines ---------> SelectTargets --+                      (no history, no registered: no shuffle)
    registered ----> KeyRegistered --+-> ShuffleByLine -> Plan --jobs------------+
    history -------> KeyHistory -----+        (by line)         |                  |
    receipts ------> KeyReceipts ----+                          +--regions-> SumRegions -> Announce --+
                                                                +--keys----> DayBounds (global) ------+
                                                                                     | side input
                                            jobs + announcements -> ScheduleAndRender -> sms | call | announcement

Every step moves Arrow tables (:mod:`transforms.core.coders`). The planner and the
job builders are plain functions (:mod:`transforms.notify.planner`,
:mod:`transforms.notify.jobs`); this module only wires them. Daily caps need a
global order, but only 16-byte job keys are gathered for it (``DayBounds``);
the jobs stay in their batches and find their day by binary search.
"""

from __future__ import annotations

import datetime as dt
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.metrics import SumCounts, counter, value_counts
from transforms.notify.planner import PLAN_COLUMNS, PlanContext, plan_lines, sum_regions
from transforms.notify.jobs import KEY, announcement_rows, finish_jobs, keys_of, with_job_ids
from transforms.notify.schedule import Schedule, check_spill, day_bounds
from transforms.core.shuffle import ArrowGroupByBucket, with_bucket
from transforms.core.tags import COUNTS, KEYS

__all__ = ["BuildNotificationJobs", "NotifyOutputs"]

LINE_CHANNELS = ("sms", "call")
JOB_BATCH = 65_536


class NotifyOutputs(typing.NamedTuple):
    sms: beam.PCollection  # pa.Table batches of schemas/notify_sms_job.avsc
    call: beam.PCollection  # ... notify_call_job.avsc
    announcement: beam.PCollection  # ... notify_announcement_job.avsc
    counts: beam.PCollection  # one dict: the run's tallies


def _bucketed(table: pa.Table, n: int) -> pa.Table:
    return with_bucket(table, table.column("line_id"), n)


@beam.typehints.with_output_types(pa.Table)
class _SelectTargetsFn(beam.DoFn):
    def __init__(self, n_buckets: int | None):
        self._n = n_buckets

    def process(self, lines: pa.Table):
        table = lines.select(list(PLAN_COLUMNS))
        table = table.filter(pc.fill_null(table.column("needs_registration"), False))
        if table.num_rows:
            yield _bucketed(table, self._n) if self._n else table


@beam.typehints.with_output_types(pa.Table)
class _KeyRegisteredFn(beam.DoFn):
    """Line ids COMPLETE in a merged base (or every id of a plain list)."""

    def __init__(self, n_buckets: int):
        self._n = n_buckets

    def process(self, table: pa.Table):
        if "identity_status" in table.column_names:
            table = table.filter(pc.fill_null(pc.equal(table.column("identity_status"), "COMPLETE"), False))
        table = table.select(["line_id"]).filter(pc.is_valid(table.column("line_id")))
        if table.num_rows:
            yield _bucketed(table, self._n)


@beam.typehints.with_output_types(pa.Table, announced=pa.Table, used=dict)
class _KeyHistoryFn(beam.DoFn):
    """Line jobs go to their bucket; this wave's announcements and this campaign's day loads beside."""

    def __init__(self, campaign_id: str, wave: int, n_buckets: int):
        self._campaign, self._wave, self._n = campaign_id, wave, n_buckets

    def process(self, table: pa.Table):
        mine = pc.equal(table.column("campaign_id"), self._campaign)
        if pc.any(mine).as_py():
            loads = table.filter(mine).group_by(["channel", "send_day"]).aggregate([("job_id", "count")])
            yield beam.pvalue.TaggedOutput(
                "used",
                {
                    "used": {
                        f"{c}|{d.isoformat()}": n for c, d, n in zip(*(loads.column(i).to_pylist() for i in range(3)))
                    }
                },
            )
        is_line = pc.is_valid(table.column("line_id"))
        announced = pc.and_(pc.and_(pc.invert(is_line), mine), pc.equal(table.column("wave"), self._wave))
        if pc.any(announced).as_py():
            yield beam.pvalue.TaggedOutput("announced", table.filter(announced).select(["job_id"]))
        lines = table.filter(is_line)
        if lines.num_rows:
            yield _bucketed(lines.select(["job_id", "line_id", "channel", "campaign_id", "wave", "send_day"]), self._n)


@beam.typehints.with_output_types(pa.Table)
class _KeyReceiptsFn(beam.DoFn):
    def __init__(self, n_buckets: int):
        self._n = n_buckets

    def process(self, table: pa.Table):
        table = table.filter(pc.is_valid(table.column("line_id")))
        if table.num_rows:
            yield _bucketed(table.select(["job_id", "line_id", "status", "at"]), self._n)


@beam.typehints.with_output_types(pa.Table, regions=pa.Table, keys=pa.Table, counts=dict)
class _PlanFn(beam.DoFn):
    """Plan one bucket (or one batch, when nothing is joined) and give line jobs their ids."""

    def __init__(self, ctx: PlanContext, suppressed: pa.Array | None):
        self._ctx, self._suppressed = ctx, suppressed
        self._jobs = {c: counter(f"jobs_{c}") for c in LINE_CHANNELS}

    def process(self, element):
        if isinstance(element, pa.Table):
            parts = {"lines": element}
        else:
            parts = element[1]
        lines = parts.get("lines")
        if lines is None or lines.num_rows == 0:
            return
        registered = parts.get("registered")
        plan = plan_lines(
            lines,
            self._ctx,
            registered=registered.column("line_id") if registered is not None else None,
            history=parts.get("history"),
            receipts=parts.get("receipts"),
            suppressed=self._suppressed,
        )
        yield beam.pvalue.TaggedOutput(COUNTS, {"plan": plan.counts})
        for outcome, n in plan.counts["outcomes"].items():
            if n:
                counter(f"lines_{outcome}").inc(n)
        yield beam.pvalue.TaggedOutput("regions", plan.regions)
        channels = plan.jobs.column("channel")
        for channel in LINE_CHANNELS:
            jobs = plan.jobs.filter(pc.equal(channels, channel))
            if jobs.num_rows == 0:
                continue
            self._jobs[channel].inc(jobs.num_rows)
            # A shuffled bucket can hold hundreds of thousands of lines: render and write in
            # tables of at most JOB_BATCH rows, which stay in the CPU caches (and make smaller files).
            for start in range(0, jobs.num_rows, JOB_BATCH):
                part = with_job_ids(jobs.slice(start, JOB_BATCH), self._ctx.campaign_id, self._ctx.wave, channel)
                yield beam.pvalue.TaggedOutput(KEYS, part.select(["channel", KEY]))
                yield part


class _ConcatTables(beam.CombineFn):
    def create_accumulator(self):
        return []

    def add_input(self, acc, table):
        acc.append(table)
        return acc

    def merge_accumulators(self, accs):
        return [t for acc in accs for t in acc]

    def extract_output(self, acc):
        return pa.concat_tables(acc) if acc else None


def _day_bounds(keys: pa.Table | None, used: list, caps: dict, first_day: dt.date, limit=None) -> dict:
    """channel -> the first job key of each day after the first (see notify_schedule); caps that push
    jobs past ``limit`` (a SendLimit; None when late sends are allowed) are refused (``check_spill``)."""
    loads: dict[str, dict[dt.date, int]] = {}
    for item in used:
        for name, n in item.get("used", {}).items():
            channel, day = name.split("|")
            loads.setdefault(channel, {})[dt.date.fromisoformat(day)] = n
    bounds = {}
    if keys is None:
        return bounds
    channels = keys.column("channel")
    for channel in pc.unique(channels).to_pylist():
        mine = keys.filter(pc.equal(channels, channel)).column(KEY)
        bounds[channel] = day_bounds(keys_of(mine), caps[channel], loads.get(channel), first_day)
        check_spill(channel, len(mine), caps[channel], first_day, bounds[channel], limit)
    return bounds


@beam.typehints.with_output_types(pa.Table, counts=dict)
class _AnnounceFn(beam.DoFn):
    def __init__(self, campaign_id: str, wave: int):
        self._campaign, self._wave = campaign_id, wave

    def process(self, regions: pa.Table | None, announced: list):
        if regions is None:
            return
        table = announcement_rows(sum_regions(regions), self._campaign, self._wave)
        done = pa.concat_tables(announced).column("job_id") if announced else pa.array([], pa.string())
        sent = pc.fill_null(pc.is_in(table.column("job_id"), value_set=done), False)
        no_region = pc.sum(pc.if_else(pc.is_null(regions.column("region")), regions.column("lines"), 0)).as_py()
        yield beam.pvalue.TaggedOutput(
            COUNTS, {"announcements_already_sent": pc.sum(sent).as_py() or 0, "lines_without_region": no_region or 0}
        )
        table = table.filter(pc.invert(sent))
        if table.num_rows:
            counter("jobs_announcement").inc(table.num_rows)
            yield table


@beam.typehints.with_output_types(pa.Table, sms=pa.Table, call=pa.Table, announcement=pa.Table, counts=dict)
class _ScheduleFn(beam.DoFn):
    def __init__(self, campaign, wave: int, first_day: dt.date, divisions: str | None):
        self._campaign, self._wave, self._first, self._divisions = campaign, wave, first_day, divisions
        self._schedule = Schedule.of(campaign)

    def process(self, jobs: pa.Table, bounds: dict):
        channel = jobs.column("channel")[0].as_py()
        table = finish_jobs(
            jobs,
            channel,
            self._campaign,
            self._wave,
            self._schedule,
            bounds.get(channel, np.array([], "S16")),
            self._first,
            self._divisions,
        )
        tally = {"jobs": {channel: table.num_rows}}
        by_variant = value_counts(table.column("variant"))
        if by_variant:
            tally["variants"] = {name: {channel: n} for name, n in by_variant.items()}
        if channel == "sms":
            tally["segments"] = pc.sum(table.column("segments")).as_py()
            tally["cost"] = pc.sum(table.column("cost")).as_py()
        days = pc.value_counts(table.column("send_day"))
        tally["by_day"] = {channel: {d.as_py().isoformat(): c.as_py() for d, c in zip(days.field(0), days.field(1))}}
        yield beam.pvalue.TaggedOutput(COUNTS, tally)
        yield beam.pvalue.TaggedOutput(channel, table)


class BuildNotificationJobs(beam.PTransform):
    """Classified lines (and what to leave out) in; SMS, call and announcement jobs out.

    Apply to a dict of PCollections of Arrow tables: ``lines`` (classified
    batches) and optionally ``registered`` (line_id, identity_status),
    ``history`` (schemas/notify_history.avsc) and ``receipts``
    (schemas/notify_receipt.avsc).

    Args:
      campaign: the loaded :class:`transforms.notify.campaign.Campaign`.
      wave: the wave number to plan.
      first_day: the wave's first send day (its start, or the as-of date if later).
      suppressed: do-not-SMS numbers (normalised digits), or None.
      n_buckets: buckets of the line shuffle (used when something is joined).
      spill_dir: where the shuffle spills (local runners), or None.
      allow_late_sends: let the daily caps push jobs past the deadline or into the next
        wave's start (refused otherwise, in one line: ``schedule.check_spill``).
      divisions: the policy's GB/T 2260 table (``code_tables.divisions``): ``{region}`` renders
        the region's name from it (without it, the code).
    """

    def __init__(
        self,
        campaign,
        wave: int,
        first_day: dt.date,
        *,
        suppressed: pa.Array | None = None,
        n_buckets: int = 1,
        spill_dir: str | None = None,
        allow_late_sends: bool = False,
        divisions: str | None = None,
    ):
        super().__init__()
        self._campaign, self._wave, self._first = campaign, wave, first_day
        self._suppressed, self._n, self._spill = suppressed, max(1, int(n_buckets)), spill_dir
        self._late, self._divisions = allow_late_sends, divisions

    def expand(self, inputs: dict) -> NotifyOutputs:
        campaign, wave = self._campaign, self._campaign.wave(self._wave)
        ctx = PlanContext(campaign.campaign_id, wave.wave, wave.channels, self._first, campaign.min_days_between)
        planned_input, announced, used = self._plan_input(inputs, wave)
        plan = planned_input | "Plan" >> beam.ParDo(_PlanFn(ctx, self._suppressed)).with_outputs(
            "regions", KEYS, COUNTS, main="jobs"
        )
        line_jobs, count_parts, key_parts = [plan.jobs], [plan.counts], [plan.keys]
        if "announcement" in wave.channels:
            ann = self._announce(plan.regions, announced, wave)
            line_jobs.append(ann.jobs)
            count_parts.append(ann.counts)
            key_parts.append(
                ann.jobs
                | "AnnouncementKeys" >> beam.Map(lambda t: t.select(["channel", KEY])).with_output_types(pa.Table)
            )
        bounds = self._send_day_bounds(key_parts, used, wave)
        jobs = (
            tuple(line_jobs)
            | "FlattenJobs" >> beam.Flatten().with_output_types(pa.Table)
            | "ScheduleAndRender"
            >> beam.ParDo(
                _ScheduleFn(campaign, wave.wave, self._first, self._divisions), beam.pvalue.AsSingleton(bounds)
            ).with_outputs("sms", "call", "announcement", COUNTS, main="unused")
        )
        count_parts.append(jobs.counts)
        counts = (
            tuple(count_parts) | "FlattenCounts" >> beam.Flatten() | "SumCounts" >> beam.CombineGlobally(SumCounts())
        )
        return NotifyOutputs(jobs.sms, jobs.call, jobs.announcement, counts)

    def _plan_input(self, inputs: dict, wave):
        """(what Plan reads: the target lines, shuffled by line with what is joined to them when
        anything is; this wave's announced jobs; this campaign's day loads)."""
        campaign = self._campaign
        p = inputs["lines"].pipeline
        joins = {k: v for k, v in inputs.items() if k != "lines" and v is not None}
        announced = p | "NoAnnouncedJobs" >> beam.Create([]).with_output_types(pa.Table)
        used = p | "NoDayLoads" >> beam.Create([]).with_output_types(dict)
        if not joins:
            return inputs["lines"] | "SelectTargets" >> beam.ParDo(_SelectTargetsFn(None)), announced, used
        n = self._n
        keyed = {"lines": inputs["lines"] | "SelectTargets" >> beam.ParDo(_SelectTargetsFn(n))}
        if "registered" in joins:
            keyed["registered"] = joins["registered"] | "KeyRegistered" >> beam.ParDo(_KeyRegisteredFn(n))
        if "history" in joins:
            hist = joins["history"] | "KeyHistory" >> beam.ParDo(
                _KeyHistoryFn(campaign.campaign_id, wave.wave, n)
            ).with_outputs("announced", "used", main="lines")
            keyed["history"], announced, used = hist.lines, hist.announced, hist.used
        if "receipts" in joins:
            keyed["receipts"] = joins["receipts"] | "KeyReceipts" >> beam.ParDo(_KeyReceiptsFn(n))
        return keyed | "ShuffleByLine" >> ArrowGroupByBucket(self._spill, label="ShuffleByLine"), announced, used

    def _announce(self, regions, announced, wave):
        """The wave's announcement jobs (main output ``jobs``) and their counts, from the planned regions."""
        regions = regions | "SumRegions" >> beam.CombineGlobally(_ConcatTables()).without_defaults()
        return regions | "Announce" >> beam.ParDo(
            _AnnounceFn(self._campaign.campaign_id, wave.wave), beam.pvalue.AsList(announced)
        ).with_outputs(COUNTS, main="jobs")

    def _send_day_bounds(self, key_parts: list, used, wave):
        """channel -> the first job key of each send day (one dict, a side input of ScheduleAndRender)."""
        campaign = self._campaign
        caps = dict(campaign.daily_cap)
        return (
            tuple(key_parts)
            | "FlattenKeys" >> beam.Flatten().with_output_types(pa.Table)
            | "GatherKeys" >> beam.CombineGlobally(_ConcatTables())
            | "DayBounds"
            >> beam.Map(
                _day_bounds,
                beam.pvalue.AsList(used),
                caps,
                self._first,
                None if self._late else campaign.send_limit(wave.wave),
            )
        )
