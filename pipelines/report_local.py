"""The report's per-line work in this process, without Beam: the same facts as the Beam job, joined by bucket.

    manifest = run_in_process(plan, finishing, spill=True, watch=(run_id, every), workers=2)

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

With ``workers`` > 1 (``--workers``) and spilled buckets, the work is shared
with forked worker processes (``pipelines/report_tasks.py``,
``pipelines/task_pool.py``): while this process reads the scan (and imports
matplotlib and jinja2 in a thread), workers read and bucket the merged base,
the notify history and the events; then each bucket is a task. The last step
(tables, charts, page) runs here, three of the five charts drawn meanwhile by
a process forked then (``report_charts.draw_aside``: the same PNG bytes). The
outputs are the same as with one process.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import numpy as np

from pipelines.io.report_buckets import BucketStore, read_refs, spill_folder
from pipelines.io.report_files import SCAN_SCHEMA
from pipelines.io.report_reads import column_batches
from pipelines.io.report_sinks import PastDeadlineFiles
from pipelines.report_finish import ReportFinish, finish_report
from pipelines.report_inputs import ReportPlan
from pipelines.report_tasks import BucketResult, LineSettings, agent_task, gather_base, gather_events, gather_history
from pipelines.report_tasks import line_task
from pipelines.progress_text import InProcessProgress
from pipelines.task_pool import TaskPool
from transforms.compliance.report_groups import add_facts
from transforms.compliance.report_steps import add_counts, hour_ranks, merge_picks, pick_hour
from transforms.compliance.report_steps import scan_step, time_to_register, wanted_hours

__all__ = ["run_in_process"]

log = logging.getLogger("backfill")

# Charts a forked process draws while this one writes the tables and draws the rest (with workers: a second core)
_ASIDE = ("completion_curve", "funnel", "variants")


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


def _gather_lines(plan: ReportPlan, store: BucketStore, facts: _Facts, counts: dict, prog, gathers: dict) -> None:
    """Read the scan here (counts, partial facts, needed lines into their buckets); then take the merged base,
    history and receipts as ``gathers`` read them (workers' futures, or calls made here)."""
    for scan in column_batches(plan.scan.files, SCAN_SCHEMA, "the classified lines"):
        needed, part, counted = scan_step(scan)
        facts.add(part)
        add_counts(counts, counted)
        store.add("needed", needed, "line_id")
        prog.done += scan.num_rows
    if gathers.get("base") is not None:
        gathered, counted = gathers["base"].result()
        add_counts(counts, counted)
        store.adopt(gathered)
    if gathers.get("history") is not None:
        gathered, parts, counted = gathers["history"].result()
        for part in parts:
            facts.add(part)
        add_counts(counts, counted)
        store.adopt(gathered)


def _bucket(store: BucketStore, bucket: int):
    """What a task gets of a bucket: the references of its spilled parts, or its tables (None: no row)."""
    if store.spills:
        return store.refs(bucket) or None
    return store.tables(bucket) or None


def _as_table(kept, tag: str):
    return read_refs([kept])[tag] if isinstance(kept, tuple) else kept


def _line_tasks(plan: ReportPlan, pool: TaskPool, store: BucketStore) -> list[tuple[int, object]]:
    """Each bucket of line ids with a row -> its task (the pool's when spilled; else run here when taken)."""
    settings = LineSettings(plan.merge is not None, plan.timezone, plan.past_on)
    pending: list[tuple[int, object]] = []
    for bucket in range(store.n):
        inputs = _bucket(store, bucket)
        if inputs is None:
            continue  # no row of any input: the job has no such bucket either
        if store.spills:
            pending.append((bucket, pool.submit(line_task, inputs, settings, store.folder)))
        else:
            pending.append((bucket, _Later(line_task, inputs, settings, None)))
    return pending


def _line_facts(pending: list, store: BucketStore, facts: _Facts, counts: dict, finishing: ReportFinish) -> None:
    """The buckets' facts and counts; their past-deadline rows written, in bucket order; the times to register
    kept by bucket (in the store, under the tag ``timed``: spilled like the rows)."""
    with PastDeadlineFiles(finishing.pub.stage, finishing.as_of) as past:
        for bucket, future in pending:
            result: BucketResult = future.result()
            facts.add(result.facts)
            add_counts(counts, result.counts)
            if result.past is not None:
                past.write(_as_table(result.past, "past"))
            if isinstance(result.timed, tuple):
                store.adopt_ref(bucket, result.timed)
            elif result.timed is not None:
                store.add_to(bucket, "timed", result.timed)


class _Later:
    """A call made in this process when its result is asked for, looked at as a future."""

    def __init__(self, fn, *args):
        self._fn, self._args = fn, args

    def result(self):
        args, self._args = self._args, ()  # the bucket's tables let go of once worked (called once)
        return self._fn(*args)


def _agent_tasks(pool: TaskPool, gathered, counts: dict) -> list:
    """The merges' events and dead letters by bucket of event ids (``gathered``: their store and counts) ->
    a task per bucket (the pool's when spilled)."""
    if gathered is None:
        return []
    store, counted = gathered.result()
    add_counts(counts, counted)
    pending = []
    for bucket in range(store.n):
        inputs = _bucket(store, bucket)
        if inputs is not None:
            pending.append(pool.submit(agent_task, inputs) if store.spills else _Later(agent_task, inputs))
    return pending


def _agent_facts(pending: list, facts: _Facts, counts: dict) -> None:
    """The agents' facts and the counts of each bucket of event ids."""
    for future in pending:
        part, counted = future.result()
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


def _start(pool: TaskPool, plan: ReportPlan, folder: str | None) -> dict:
    """What workers read while this process reads the scan, when the buckets are spilled: the merged base, the
    notify history and receipts, the merges' events and dead letters (futures; else calls made here)."""
    merge, notify, n = plan.merge, plan.notify, plan.n_buckets

    def call(fn, *args):
        return pool.submit(fn, *args, n, folder) if folder is not None else _Later(fn, *args, n, None)

    gathers = {}
    if merge is not None:
        gathers["base"] = call(gather_base, merge.base_files, plan.past_on)
    if notify is not None and notify.history_files:
        gathers["history"] = call(gather_history, notify, plan.campaign_id)
    if merge is not None and merge.events is not None:
        gathers["events"] = call(gather_events, merge.events, merge.dead_letter_files)
    return gathers


def _warm_up() -> None:
    """Import what the last step draws with, in a thread, while the main one waits on Arrow (which lets go of
    the GIL while it decodes and hashes): matplotlib, its fonts, jinja2, and Arrow's Acero (the facts' sums).
    Nothing is drawn here."""
    with contextlib.suppress(Exception):  # the last step imports them again and says what fails
        import jinja2  # noqa: F401
        import pyarrow.acero  # noqa: F401
        import matplotlib.backends.backend_agg
        import matplotlib.figure  # noqa: F401

        from pipelines.render.report_charts import cjk_font

        cjk_font()


def _no_start() -> None:
    """A worker needs nothing more than what it was forked with."""


def run_in_process(plan: ReportPlan, finishing: ReportFinish, spill: bool, watch: tuple, workers: int = 1) -> dict:
    """The report's facts, past-deadline list and counts in this process and ``workers`` forked ones; then its
    last step (the manifest returned). ``spill``: several buckets go through local files (else memory)."""
    run_id, every = watch
    facts, counts = _Facts(), {}
    prog = InProcessProgress(f"report {run_id}", plan.scan.rows, every)
    several = plan.n_buckets > 1 and spill
    with (
        spill_folder("report") if several else contextlib.nullcontext() as folder,
        TaskPool(workers, _no_start) as pool,
    ):
        pool.submit(int)  # the workers forked now, before this process starts a thread
        warm = threading.Thread(target=_warm_up, name="report-imports", daemon=True)
        warm.start()  # the last step (charts, page) is drawn here
        gathers = _start(pool, plan, folder if several else None)
        with prog.running():
            store = BucketStore(plan.n_buckets, folder)
            _gather_lines(plan, store, facts, counts, prog, gathers)
            lines = _line_tasks(plan, pool, store)
            agents = _agent_tasks(pool, gathers.get("events"), counts)  # queued behind the lines' tasks
            _line_facts(lines, store, facts, counts, finishing)
            _agent_facts(agents, facts, counts)
            summed = facts.total()
            time_to = _time(summed, store)
    warm.join()
    return finish_report(summed, time_to, counts, None, job=finishing, charts_aside=_ASIDE if workers > 1 else ())
