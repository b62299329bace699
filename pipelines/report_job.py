"""The report's Beam job: the step outputs read column by column, joined by bucket, the report drawn from facts.

    with beam.Pipeline(options=options) as p:
        build_pipeline(p, plan, finishing, spill_dir)

    ReadScan ----------+
    ReadBase ----------+--ReportFacts--> facts, time to register, counts --FinishReport--> tables, CSV,
    ReadHistory -------+        '--> past-deadline rows --WritePastDeadline (Parquet shards, CSV parts)--^ report.html,
    ReadReceipts ------+                                                                                  manifest.json
    ReadEvents --------+
    ReadDeadLetters ---+

The per-line work is :class:`transforms.compliance.report_facts.ReportFacts`
(joins by bucket of line ids and of event ids through the merge's bucketed
Arrow shuffle); the last step (``pipelines/report_finish.py``) runs once,
after the writes, over the facts alone.
"""

from __future__ import annotations

import apache_beam as beam

from pipelines.io.report_files import HISTORY_OPTIONAL, HISTORY_SCHEMA, RECEIPTS_SCHEMA, SCAN_SCHEMA
from pipelines.io.report_sinks import write_past_deadline
from pipelines.io.report_sources import ReadColumns, ReadDeadLetters, ReadEventAgents
from pipelines.report_finish import ReportFinish, finish_report
from pipelines.report_inputs import ReportPlan
from transforms.compliance.report_facts import ReportFacts
from transforms.compliance.report_lines import BASE_SCHEMA

__all__ = ["ReportPlan", "build_pipeline"]


def _inputs(p: beam.Pipeline, plan: ReportPlan) -> dict:
    inputs = {"scan": p | "ReadScan" >> ReadColumns(plan.scan.files, SCAN_SCHEMA, "the classified lines")}
    merge = plan.merge
    if merge is not None:
        inputs["base"] = p | "ReadBase" >> ReadColumns(merge.base_files, BASE_SCHEMA, "the merged base")
        if merge.events is not None:
            inputs["events"] = p | "ReadEvents" >> ReadEventAgents(merge.events)
            if merge.dead_letter_files:
                inputs["dead_letters"] = p | "ReadDeadLetters" >> ReadDeadLetters(merge.dead_letter_files)
    notify = plan.notify
    if notify is not None and notify.history_files:
        inputs["history"] = p | "ReadHistory" >> ReadColumns(
            notify.history_files, HISTORY_SCHEMA, "the notify history", optional=HISTORY_OPTIONAL
        )
    if notify is not None and notify.history_files and notify.receipt_files:
        inputs["receipts"] = p | "ReadReceipts" >> ReadColumns(
            notify.receipt_files, RECEIPTS_SCHEMA, "the notify delivery receipts"
        )
    return inputs


def build_pipeline(p: beam.Pipeline, plan: ReportPlan, finishing: ReportFinish, spill_dir: str | None, progress=None):
    """Wire the report job; returns the PCollection of its manifest (one dict). ``progress`` counts the scan's
    lines read (pipelines/progress.py)."""
    inputs = _inputs(p, plan)
    if progress is not None:
        progress.count(inputs["scan"], "read")
    out = inputs | "ReportFacts" >> ReportFacts(
        campaign_id=plan.campaign_id,
        merged=plan.merge is not None,
        timezone=plan.timezone,
        past_on=plan.past_on,
        n_buckets=plan.n_buckets,
        spill_dir=spill_dir,
    )
    parquet, csv_parts = write_past_deadline(out.past, finishing.pub.stage, finishing.as_of)
    return out.facts | "FinishReport" >> beam.Map(
        finish_report,
        beam.pvalue.AsSingleton(out.time),
        beam.pvalue.AsSingleton(out.counts),
        beam.pvalue.AsList(csv_parts),
        beam.pvalue.AsList(parquet),
        job=finishing,
    )
