"""BuildNotificationJobs: the notify step's composite transform (no I/O inside).

    lines ---------> SelectTargets --+                      (no history, no registered: no shuffle)
    registered ----> KeyRegistered --+-> ShuffleByLine -> Plan --jobs------------+
    history -------> KeyHistory -----+        (by line)         |                  |
    receipts ------> KeyReceipts ----+                          +--regions-> SumRegions -> Announce --+
                                                                +--keys----> DayBounds (global) ------+
                                                                                     | side input
                                            jobs + announcements -> ScheduleAndRender -> sms | call | announcement

    DayBounds, in two passes:  keys -> KeyHistograms (summed) -> WantedBins --------------+ side input
                               keys -> WantedKeys (those of the wanted bins) -> GatherWantedKeys -> DayBounds

Every step moves Arrow tables (:mod:`transforms.core.coders`). The planner and the
job builders are plain functions (:mod:`transforms.notify.planner`,
:mod:`transforms.notify.jobs`); this module only wires them. Daily caps need a
global order, but only a histogram of the 16-byte job keys and the few keys of
the bins that hold a day bound are gathered for it (``DayBounds``, two passes:
:mod:`transforms.notify.day_bounds`, about N / 65,536 keys per send day); the
jobs stay in their batches and find their day by binary search.
"""

from __future__ import annotations

import datetime as dt
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa

from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.metrics import SumCounts, counter
from transforms.notify.batch_steps import LINE_CHANNELS, announce, key_history, key_receipts, key_registered
from transforms.notify.batch_steps import add_histograms, bounds_from_wanted, channel_histograms, channel_keys
from transforms.notify.batch_steps import plan_parts, schedule_jobs, select_targets, send_day_bins, wanted_keys
from transforms.notify.planner import PlanContext
from transforms.notify.jobs import KEY
from transforms.notify.schedule import Schedule
from transforms.core.shuffle import ArrowGroupByBucket
from transforms.core.tags import COUNTS, KEYS

__all__ = ["BuildNotificationJobs", "NotifyOutputs"]


class NotifyOutputs(typing.NamedTuple):
    sms: beam.PCollection  # pa.Table batches of schemas/notify_sms_job.avsc
    call: beam.PCollection  # ... notify_call_job.avsc
    announcement: beam.PCollection  # ... notify_announcement_job.avsc
    counts: beam.PCollection  # one dict: the run's tallies


@beam.typehints.with_output_types(pa.Table)
class _SelectTargetsFn(beam.DoFn):
    def __init__(self, n_buckets: int | None):
        self._n = n_buckets

    def process(self, lines: pa.Table):
        table = select_targets(lines, self._n)
        if table is not None:
            yield table


@beam.typehints.with_output_types(pa.Table)
class _KeyRegisteredFn(beam.DoFn):
    """Line ids COMPLETE in a merged base (or every id of a plain list)."""

    def __init__(self, n_buckets: int):
        self._n = n_buckets

    def process(self, table: pa.Table):
        table = key_registered(table, self._n)
        if table is not None:
            yield table


@beam.typehints.with_output_types(pa.Table, announced=pa.Table, used=dict)
class _KeyHistoryFn(beam.DoFn):
    """Line jobs go to their bucket; this wave's announcements and this campaign's day loads beside."""

    def __init__(self, campaign_id: str, wave: int, n_buckets: int):
        self._campaign, self._wave, self._n = campaign_id, wave, n_buckets

    def process(self, table: pa.Table):
        lines, announced, used = key_history(table, self._campaign, self._wave, self._n)
        if used is not None:
            yield beam.pvalue.TaggedOutput("used", used)
        if announced is not None:
            yield beam.pvalue.TaggedOutput("announced", announced)
        if lines is not None:
            yield lines


@beam.typehints.with_output_types(pa.Table)
class _KeyReceiptsFn(beam.DoFn):
    def __init__(self, n_buckets: int):
        self._n = n_buckets

    def process(self, table: pa.Table):
        table = key_receipts(table, self._n)
        if table is not None:
            yield table


@beam.typehints.with_output_types(pa.Table, regions=pa.Table, keys=pa.Table, counts=dict)
class _PlanFn(beam.DoFn):
    """Plan one bucket (or one batch, when nothing is joined) and give line jobs their ids."""

    def __init__(self, ctx: PlanContext, suppressed: pa.Array | None):
        self._ctx, self._suppressed = ctx, suppressed
        self._jobs = {c: counter(f"jobs_{c}") for c in LINE_CHANNELS}

    def process(self, element):
        parts = {"lines": element} if isinstance(element, pa.Table) else element[1]
        planned = plan_parts(parts, self._ctx, self._suppressed)
        if planned is None:
            return
        yield beam.pvalue.TaggedOutput(COUNTS, planned.counts)
        for outcome, n in planned.counts["plan"]["outcomes"].items():
            if n:
                counter(f"lines_{outcome}").inc(n)
        yield beam.pvalue.TaggedOutput("regions", planned.regions)
        for channel, part in planned.jobs:
            self._jobs[channel].inc(part.num_rows)
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


class _SumHistograms(beam.CombineFn):
    """Pass 1 of the send-day bounds: (channel, _key) tables in, channel -> their keys counted by bin out."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, table):
        return add_histograms(acc, channel_histograms(channel_keys(table)))

    def merge_accumulators(self, accs):
        total: dict = {}
        for acc in accs:
            add_histograms(total, acc)
        return total

    def extract_output(self, acc):
        return acc


def _wanted_keys(keys: pa.Table, wanted: dict):
    """Pass 2: a (channel, _key) table of the rows of ``keys`` in a bin that holds a day bound (none: none)."""
    needed = {channel: w.needed for channel, w in wanted.items() if len(w.needed)}
    if not needed:
        return
    for channel, mine in wanted_keys(channel_keys(keys), needed).items():
        if len(mine):
            raw = pa.py_buffer(np.ascontiguousarray(mine).tobytes())
            column = pa.Array.from_buffers(pa.binary(16), len(mine), [None, raw])
            yield pa.table({"channel": pa.repeat(pa.scalar(channel, pa.string()), len(mine)), KEY: column})


def _day_bounds(keys: pa.Table | None, wanted: dict) -> dict:
    """DayBounds: the send-day bounds from the gathered (channel, _key) rows of the wanted bins."""
    return bounds_from_wanted(channel_keys(keys), wanted)


@beam.typehints.with_output_types(pa.Table, counts=dict)
class _AnnounceFn(beam.DoFn):
    def __init__(self, campaign_id: str, wave: int):
        self._campaign, self._wave = campaign_id, wave

    def process(self, regions: pa.Table | None, announced: list):
        if regions is None:
            return
        counts, table = announce(regions, announced, self._campaign, self._wave)
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
        if table is not None:
            counter("jobs_announcement").inc(table.num_rows)
            yield table


@beam.typehints.with_output_types(pa.Table, sms=pa.Table, call=pa.Table, announcement=pa.Table, counts=dict)
class _ScheduleFn(beam.DoFn):
    def __init__(self, campaign, wave: int, first_day: dt.date, divisions: str | None):
        self._campaign, self._wave, self._first, self._divisions = campaign, wave, first_day, divisions
        self._schedule = Schedule.of(campaign)

    def process(self, jobs: pa.Table, bounds: dict):
        tally, table = schedule_jobs(
            jobs, bounds, self._campaign, self._wave, self._schedule, self._first, self._divisions
        )
        yield beam.pvalue.TaggedOutput(COUNTS, tally)
        yield beam.pvalue.TaggedOutput(next(iter(tally["jobs"])), table)


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
        """channel -> the first job key of each send day (one dict, a side input of ScheduleAndRender), in two
        passes over the jobs' keys (transforms/notify/day_bounds.py): nothing gathers every key."""
        campaign = self._campaign
        limit = None if self._late else campaign.send_limit(wave.wave)
        keys = tuple(key_parts) | "FlattenKeys" >> beam.Flatten().with_output_types(pa.Table)
        wanted = (
            keys
            | "KeyHistograms" >> beam.CombineGlobally(_SumHistograms())
            | "WantedBins"  # channel -> where its day bounds lie; refuses caps that spill
            >> beam.Map(send_day_bins, beam.pvalue.AsList(used), dict(campaign.daily_cap), self._first, limit)
        )
        return (
            keys
            | "WantedKeys" >> beam.FlatMap(_wanted_keys, beam.pvalue.AsSingleton(wanted)).with_output_types(pa.Table)
            | "GatherWantedKeys" >> beam.CombineGlobally(_ConcatTables())
            | "DayBounds" >> beam.Map(_day_bounds, beam.pvalue.AsSingleton(wanted))
        )
