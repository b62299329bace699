"""ReportFacts: the report's per-line work as a Beam composite (no I/O): facts, the past-deadline list, counts.

    scan -----NeededLines----+                                    +--> past-deadline rows (a table per bucket)
    base -----KeyBaseByLine--+--JoinByLine--LineFacts-------------+--> facts (partial, added up: SumFacts)
    history --CampaignNotices+                  '--timed--ShuffleByHour--PickOrderStats--> time to register
    receipts -CampaignReceipts+
    events ---KeyEventsById--+--JoinByEvent--AgentFacts-----------> facts
    dead letters --KeyDead---+
    scan --OpenedByAgent------------------------------------------> facts

Both joins are :class:`transforms.core.shuffle.ArrowGroupByBucket` (a Beam
GroupByKey of Arrow tables by a hash bucket, spilled to sealed local files
on a local runner), so no side is ever held whole: a worker holds one bucket
of line ids (the needed lines, their base rows and their notices) or of event
ids. What leaves a bucket is small: partial facts (counts per region, wave,
day, agent..., ``report_groups.FACTS``) that :class:`SumFacts` adds up, the
bucket's past-deadline rows (written as files by the launcher's job), and the
times to register, grouped again by whole hour for the exact quantiles
(``report_quantiles.py``).

    out = {"scan": scan_batches, "base": base_batches, "history": ..., "events": ..., "dead_letters": ...} \\
        | ReportFacts(campaign_id="rn-2026-q4", merged=True, timezone="Asia/Shanghai", past_on=True, n_buckets=8)
    out.facts        # one dict: fact name -> pa.Table
    out.past         # pa.Table batches (PAST_DEADLINE_SCHEMA)
    out.time         # one TimeToRegister
    out.counts       # one dict: the tallies the manifest's balance is checked on
"""

from __future__ import annotations

import typing

import apache_beam as beam
import pyarrow as pa

from transforms.compliance.report_agents import taken_facts
from transforms.compliance.report_groups import add_facts
from transforms.compliance.report_lines import bucket_facts
from transforms.compliance.report_steps import base_step, hour_ranks, keyed_step, merge_picks, notices_step, pick_hour
from transforms.compliance.report_steps import receipts_step, scan_step, time_to_register, timed_hours
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.metrics import SumCounts, counter
from transforms.core.shuffle import BUCKET, ArrowGroupByBucket, with_bucket

__all__ = ["ReportFacts", "ReportOutputs", "SumFacts"]

FACTS, COUNTS, TIMED = "facts", "counts", "timed"


class ReportOutputs(typing.NamedTuple):
    facts: beam.PCollection  # one dict: fact name -> pa.Table
    past: beam.PCollection  # pa.Table batches of the past-deadline list
    time: beam.PCollection  # one TimeToRegister
    counts: beam.PCollection  # one dict of tallies


class SumFacts(beam.CombineFn):
    """Partial facts (dicts of tables) -> their sums; the accumulator is compacted as it grows."""

    def create_accumulator(self) -> list:
        return []

    def add_input(self, acc: list, part: dict) -> list:
        acc.append(part)
        return [add_facts(acc)] if len(acc) >= 64 else acc

    def merge_accumulators(self, accs) -> list:
        return [add_facts(part for acc in accs for part in acc)]

    def extract_output(self, acc: list) -> dict:
        return add_facts(acc)


@beam.typehints.with_output_types(pa.Table, facts=dict, counts=dict)
class _ScanFn(beam.DoFn):
    """A scan batch -> its needed lines, bucketed by line id; the agents' opened lines; the counts."""

    def __init__(self, n_buckets: int):
        self._n = n_buckets

    def process(self, scan: pa.Table):
        needed, facts, counts = scan_step(scan)
        yield beam.pvalue.TaggedOutput(FACTS, facts)
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
        if needed.num_rows:
            yield with_bucket(needed, needed["line_id"], self._n)


@beam.typehints.with_output_types(pa.Table, counts=dict)
class _KeyBaseFn(beam.DoFn):
    def __init__(self, n_buckets: int):
        self._n = n_buckets

    def process(self, base: pa.Table):
        yield beam.pvalue.TaggedOutput(COUNTS, base_step(base))
        if base.num_rows:
            yield with_bucket(base, base["line_id"], self._n)


@beam.typehints.with_output_types(pa.Table, facts=dict, counts=dict)
class _NoticesFn(beam.DoFn):
    """A history batch -> this campaign's line jobs, bucketed by line id; its waves; the other campaigns' count."""

    def __init__(self, campaign_id: str | None, n_buckets: int):
        self._campaign, self._n = campaign_id, n_buckets

    def process(self, history: pa.Table):
        lines, facts, counts = notices_step(history, self._campaign)
        if facts is not None:
            yield beam.pvalue.TaggedOutput(FACTS, facts)
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
        if lines.num_rows:
            yield with_bucket(lines, lines["line_id"], self._n)


@beam.typehints.with_output_types(pa.Table, counts=dict)
class _ReceiptsFn(beam.DoFn):
    """A receipt batch -> this campaign's receipts of line jobs, bucketed by line id; the rest counted."""

    def __init__(self, campaign_id: str | None, n_buckets: int):
        self._campaign, self._n = campaign_id, n_buckets

    def process(self, receipts: pa.Table):
        lines, counts = receipts_step(receipts, self._campaign)
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
        if lines.num_rows:
            yield with_bucket(lines, lines["line_id"], self._n)


@beam.typehints.with_output_types(pa.Table, facts=dict, counts=dict, timed=pa.Table)
class _LineFactsFn(beam.DoFn):
    """One bucket of line ids -> its past-deadline rows, partial facts, times to register (by hour), counts."""

    def __init__(self, merged: bool, timezone: str, past_on: bool):
        self._merged, self._timezone, self._past_on = merged, timezone, past_on
        self._lines = counter("report_needed_lines")

    def process(self, element):
        _, tables = element

        def part(tag):
            return tables[tag].drop_columns([BUCKET]) if tag in tables else None

        result = bucket_facts(
            part("needed"),
            part("base"),
            part("history"),
            merged=self._merged,
            timezone=self._timezone,
            past_on=self._past_on,
            receipts=part("receipts"),
        )
        self._lines.inc(sum(result.counts["needed_lines"].values()))
        yield beam.pvalue.TaggedOutput(FACTS, result.facts)
        yield beam.pvalue.TaggedOutput(COUNTS, result.counts)
        if len(result.timed):
            micros, hours = timed_hours(result.timed)
            yield beam.pvalue.TaggedOutput(TIMED, pa.table({"micros": micros, BUCKET: hours}))
        if result.past.num_rows:
            yield result.past


@beam.typehints.with_output_types(pa.Table, counts=dict)
class _KeyByIdFn(beam.DoFn):
    """Events or dead letters -> bucketed by event id; rows without one are counted and left out."""

    def __init__(self, side: str, n_buckets: int):
        self._side, self._n = side, n_buckets

    def process(self, table: pa.Table):
        keyed, counts = keyed_step(table, self._side)
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
        if keyed.num_rows:
            yield with_bucket(keyed, keyed["event_id"], self._n)


@beam.typehints.with_output_types(dict, counts=dict)
class _AgentFactsFn(beam.DoFn):
    def process(self, element):
        _, tables = element

        def part(tag):
            return tables[tag].drop_columns([BUCKET]) if tag in tables else None

        facts, counts = taken_facts(part("events"), part("dead_letters"))
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
        yield facts


def _pick_hour(element, plan: dict):
    hour, tables = element
    found = pick_hour(hour, tables["timed"]["micros"].to_numpy(zero_copy_only=False), plan)
    if found:
        yield found


class ReportFacts(beam.PTransform):
    """The report's facts from the scan, merged base, notify history, events and dead letters.

    Apply to a dict of PCollections of Arrow tables: ``scan`` (``line_id, region, line_type, agent_id,
    needs_registration, flags``), and optionally ``base`` (``report_lines.BASE_SCHEMA``), ``history``
    (``line_id, campaign_id, wave, sent_at, channel, job_id, variant``), ``receipts`` (``line_id, job_id,
    campaign_id, status, at``), ``events`` (``report_agents.EVENT_AGENT_SCHEMA``) and ``dead_letters``
    (``event_id, reason``).

    Args:
      campaign_id: the campaign whose notices count (None: none does).
      merged: a merge was given (else every needed line is UNMERGED).
      timezone: the campaign's time zone (the days of the curve).
      past_on: the deadline and the last wave have passed (the past-deadline list is made).
      n_buckets: buckets of the joins; one bucket's lines, base rows and notices must fit a worker.
      spill_dir: where the shuffles spill (local runners); None to shuffle the tables themselves.
    """

    def __init__(self, *, campaign_id, merged: bool, timezone: str, past_on: bool, n_buckets: int, spill_dir=None):
        super().__init__()
        self._campaign, self._merged, self._tz, self._past_on = campaign_id, merged, timezone, past_on
        self._n, self._spill = max(1, int(n_buckets)), spill_dir

    def expand(self, inputs: dict) -> ReportOutputs:
        n, facts, counts = self._n, [], []
        scan = inputs["scan"] | "NeededLines" >> beam.ParDo(_ScanFn(n)).with_outputs(FACTS, COUNTS, main="needed")
        join = {"needed": scan.needed}
        facts.append(scan.facts)
        counts.append(scan.counts)
        if "base" in inputs:
            base = inputs["base"] | "KeyBaseByLine" >> beam.ParDo(_KeyBaseFn(n)).with_outputs(COUNTS, main="base")
            join["base"] = base.base
            counts.append(base.counts)
        if "history" in inputs:
            notices = inputs["history"] | "CampaignNotices" >> beam.ParDo(_NoticesFn(self._campaign, n)).with_outputs(
                FACTS, COUNTS, main="history"
            )
            join["history"] = notices.history
            facts.append(notices.facts)
            counts.append(notices.counts)
        if "receipts" in inputs:
            receipts = inputs["receipts"] | "CampaignReceipts" >> beam.ParDo(
                _ReceiptsFn(self._campaign, n)
            ).with_outputs(COUNTS, main="receipts")
            join["receipts"] = receipts.receipts
            counts.append(receipts.counts)
        lines = (
            join
            | "JoinByLine" >> ArrowGroupByBucket(self._spill, label="JoinByLine")
            | "LineFacts"
            >> beam.ParDo(_LineFactsFn(self._merged, self._tz, self._past_on)).with_outputs(
                FACTS, COUNTS, TIMED, main="past"
            )
        )
        facts.append(lines.facts)
        counts.append(lines.counts)
        if "events" in inputs:
            facts.append(self._agents(inputs, counts))
        summed = tuple(facts) | "FlattenFacts" >> beam.Flatten() | "SumFacts" >> beam.CombineGlobally(SumFacts())
        plan = summed | "HourRanks" >> beam.Map(hour_ranks)
        time = (
            {"timed": lines.timed}
            | "ShuffleByHour" >> ArrowGroupByBucket(self._spill, label="ShuffleByHour")
            | "PickOrderStats" >> beam.FlatMap(_pick_hour, beam.pvalue.AsSingleton(plan))
            | "MergePicks" >> beam.CombineGlobally(merge_picks)
            | "TimeToRegister" >> beam.Map(time_to_register, beam.pvalue.AsSingleton(plan))
        )
        total = tuple(counts) | "FlattenCounts" >> beam.Flatten() | "SumCounts" >> beam.CombineGlobally(SumCounts())
        return ReportOutputs(summed, lines.past, time, total)

    def _agents(self, inputs: dict, counts: list) -> beam.PCollection:
        """Events and dead letters joined by event id: the agents' registrations taken and failed."""
        join = {}
        for side in ("events", "dead_letters"):
            if side in inputs:
                keyed = inputs[side] | f"Key{side.title().replace('_', '')}ById" >> beam.ParDo(
                    _KeyByIdFn(side, self._n)
                ).with_outputs(COUNTS, main="keyed")
                join[side] = keyed.keyed
                counts.append(keyed.counts)
        agents = (
            join
            | "JoinByEvent" >> ArrowGroupByBucket(self._spill, label="JoinByEvent")
            | "AgentFacts" >> beam.ParDo(_AgentFactsFn()).with_outputs(COUNTS, main="facts")
        )
        counts.append(agents.counts)
        return agents.facts
