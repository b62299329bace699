"""The report's per-line work in this process, without Beam: the same facts as the Beam job, joined by bucket.

    manifest = run_in_process(plan, finishing, spill=True, watch=(run_id, every))

``backfill report`` on a local runner with no worker option runs here (the
Beam job, ``report_job.py``, is for a distributed runner or local worker
processes): starting Beam costs seconds, more than the work of a base of a
few million lines. The steps are the Beam job's, in order:

1. the scan, the merged base, the notify history and its receipts are read
   batch by batch (``pipelines/io/report_reads.py``); each batch gives its
   counts and partial facts (``transforms/compliance/report_steps.py``) and
   its rows for the join, gathered by bucket of line ids
   (``pipelines/io/report_buckets.py``: a bucket's rows are spilled to local
   files when there are several buckets, so memory holds one bucket, never
   the base);
2. each bucket gives its facts, its past-deadline rows (written at once,
   ``report_sinks.PastDeadlineFiles``) and its times to register
   (``report_lines.bucket_facts``);
3. the events and dead letters of the merges, by bucket of event ids, give
   the agents' facts (``report_agents.taken_facts``);
4. the exact quantiles of the time to register from the values of the few
   hours that hold them (``report_quantiles.py``);
5. the last step, the same as the job's (``report_finish.finish_report``):
   tables, page, and the manifest once the counts balance.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import numpy as np
import pyarrow as pa

from pipelines.io.report_buckets import BucketStore, spill_folder
from pipelines.io.report_files import HISTORY_OPTIONAL, HISTORY_SCHEMA, RECEIPTS_SCHEMA, SCAN_SCHEMA
from pipelines.io.report_reads import column_batches, dead_letter_batches, event_agent_batches
from pipelines.io.report_sinks import PastDeadlineFiles
from pipelines.report_finish import ReportFinish, finish_report
from pipelines.report_inputs import ReportPlan
from pipelines.progress_text import InProcessProgress
from transforms.compliance.report_agents import taken_facts
from transforms.compliance.report_groups import add_facts
from transforms.compliance.report_lines import BASE_SCHEMA, bucket_facts
from transforms.compliance.report_steps import add_counts, base_step, hour_ranks, keyed_step, merge_picks
from transforms.compliance.report_steps import notices_step, pick_hour, receipts_step, scan_step
from transforms.compliance.report_steps import time_to_register, timed_hours, wanted_hours

__all__ = ["run_in_process"]

log = logging.getLogger("backfill")


class _Facts:
    """Partial facts added up as they come, compacted as they grow (as the job's ``SumFacts``)."""

    def __init__(self):
        self._parts: list[dict] = []

    def add(self, part: dict) -> None:
        self._parts.append(part)
        if len(self._parts) >= 64:
            self._parts = [add_facts(self._parts)]

    def total(self) -> dict:
        return add_facts(self._parts)


def _gather_lines(plan: ReportPlan, store: BucketStore, facts: _Facts, counts: dict, prog: InProcessProgress) -> None:
    """Read the scan, merged base, history and receipts: counts, partial facts, rows into their buckets."""
    for scan in column_batches(plan.scan.files, SCAN_SCHEMA, "the classified lines"):
        needed, part, counted = scan_step(scan)
        facts.add(part)
        add_counts(counts, counted)
        store.add("needed", needed, "line_id")
        prog.done += scan.num_rows
    if plan.merge is not None:
        for base in column_batches(plan.merge.base_files, BASE_SCHEMA, "the merged base"):
            add_counts(counts, base_step(base))
            store.add("base", base, "line_id")
    notify = plan.notify
    if notify is None or not notify.history_files:
        return
    for history in column_batches(notify.history_files, HISTORY_SCHEMA, "the notify history", HISTORY_OPTIONAL):
        lines, part, counted = notices_step(history, plan.campaign_id)
        if part is not None:
            facts.add(part)
        add_counts(counts, counted)
        store.add("history", lines, "line_id")
    for receipts in column_batches(notify.receipt_files, RECEIPTS_SCHEMA, "the notify delivery receipts"):
        lines, counted = receipts_step(receipts, plan.campaign_id)
        add_counts(counts, counted)
        store.add("receipts", lines, "line_id")


def _line_facts(plan: ReportPlan, store: BucketStore, facts: _Facts, counts: dict, finishing: ReportFinish):
    """Each bucket of line ids -> its facts and counts; its past-deadline rows written; the times to register
    kept by bucket (in the store, under the tag ``timed``: spilled like the rows)."""
    with PastDeadlineFiles(finishing.pub.stage, finishing.as_of) as past:
        for bucket in range(store.n):
            tables = store.tables(bucket)
            if not tables:
                continue  # no row of any input: the job has no such bucket either
            result = bucket_facts(
                tables.get("needed"),
                tables.get("base"),
                tables.get("history"),
                merged=plan.merge is not None,
                timezone=plan.timezone,
                past_on=plan.past_on,
                receipts=tables.get("receipts"),
            )
            del tables
            facts.add(result.facts)
            add_counts(counts, result.counts)
            past.write(result.past)
            if len(result.timed):
                micros, hours = timed_hours(result.timed)
                store.add_to(bucket, "timed", pa.table({"micros": micros, "hour": hours}))


def _agent_facts(plan: ReportPlan, folder: str | None, facts: _Facts, counts: dict) -> None:
    """The merges' events and dead letters by bucket of event ids -> the agents' facts and the counts."""
    store = BucketStore(plan.n_buckets, folder)
    for events in event_agent_batches(plan.merge.events):
        keyed, counted = keyed_step(events, "events")
        add_counts(counts, counted)
        store.add("events", keyed, "event_id")
    for dead in dead_letter_batches(plan.merge.dead_letter_files):
        keyed, counted = keyed_step(dead, "dead_letters")
        add_counts(counts, counted)
        store.add("dead_letters", keyed, "event_id")
    for bucket in range(store.n):
        tables = store.tables(bucket)
        if tables:
            part, counted = taken_facts(tables.get("events"), tables.get("dead_letters"))
            facts.add(part)
            add_counts(counts, counted)


def _time(summed: dict, store: BucketStore):
    """Median and 90th percentile of the time to register: only the values of the hours that hold them."""
    plan = hour_ranks(summed)
    hours, found = wanted_hours(plan), {}
    for bucket in range(store.n):
        timed = store.tables(bucket).get("timed")
        if timed is None or not hours:
            continue
        hour = timed["hour"].to_numpy(zero_copy_only=False)
        micros = timed["micros"].to_numpy(zero_copy_only=False)
        for h in hours:
            found.setdefault(h, []).append(micros[hour == h])
    picks = (pick_hour(h, np.concatenate(values), plan) for h, values in sorted(found.items()))
    return time_to_register(merge_picks(picks), plan)


def _warm_up() -> None:
    """Import what the last step draws with, in a thread, while the main one waits on Arrow (which lets go of
    the GIL while it decodes and hashes): matplotlib, its fonts, jinja2. Nothing is drawn here."""
    with contextlib.suppress(Exception):  # the last step imports them again and says what fails
        import jinja2  # noqa: F401
        import matplotlib.backends.backend_agg
        import matplotlib.figure  # noqa: F401

        from pipelines.render.report_charts import cjk_font

        cjk_font()


def run_in_process(plan: ReportPlan, finishing: ReportFinish, spill: bool, watch: tuple[str, float]) -> dict:
    """The report's facts, past-deadline list and counts in this process; then its last step (the manifest
    returned). ``spill``: several buckets go through local files (else they are kept in memory)."""
    run_id, every = watch
    facts, counts = _Facts(), {}
    prog = InProcessProgress(f"report {run_id}", plan.scan.rows, every)
    several = plan.n_buckets > 1 and spill
    warm = threading.Thread(target=_warm_up, name="report-imports", daemon=True)
    warm.start()
    with spill_folder("report") if several else contextlib.nullcontext() as folder, prog.running():
        store = BucketStore(plan.n_buckets, folder)
        _gather_lines(plan, store, facts, counts, prog)
        _line_facts(plan, store, facts, counts, finishing)
        if plan.merge is not None and plan.merge.events is not None:
            _agent_facts(plan, folder, facts, counts)
        summed = facts.total()
        time_to = _time(summed, store)
    warm.join()
    return finish_report(summed, time_to, counts, None, job=finishing)
