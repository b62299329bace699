"""The in-process report's tasks, run by the forked workers of ``pipelines/task_pool.py`` (or by the launcher).

    with TaskPool(workers, start) as pool:
        base = pool.submit(gather_base, files, past_on, n_buckets, folder) # -> (its BucketStore, counts)
        notices = pool.submit(gather_history, notify, campaign_id, n_buckets, folder)
        events = pool.submit(gather_events, sources, dead, n_buckets, folder)
        pool.submit(line_task, refs, settings, folder)                      # one bucket of line ids -> BucketResult
        pool.submit(agent_task, refs)                                       # one bucket of event ids -> facts, counts

A task gets spilled buckets as references to the local Arrow
files of ``pipelines/io/report_buckets.py`` (the report's columns only: ids,
codes, times, regions; never an identity value) and hands back references
for what grows with the lines (the past-deadline rows, the times to
register), so nothing of a bucket's size crosses a pipe.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

import pyarrow as pa

from pipelines.io.report_buckets import BucketStore, Ref, read_refs, write_parts
from pipelines.io.report_files import HISTORY_OPTIONAL, HISTORY_SCHEMA, RECEIPTS_SCHEMA
from pipelines.io.report_reads import column_batches, dead_letter_batches, event_agent_batches
from transforms.compliance.report_agents import taken_facts
from transforms.compliance.report_lines import base_schema, bucket_facts
from transforms.compliance.report_steps import add_counts, base_step, keyed_step, notices_step, receipts_step
from transforms.compliance.report_steps import timed_hours

__all__ = [
    "gather_base",
    "gather_history",
    "gather_events",
    "LineSettings",
    "BucketResult",
    "line_task",
    "agent_task",
]


def gather_base(files: list[str], past_on: bool, n_buckets: int, folder: str | None) -> tuple[BucketStore, dict]:
    """The merged base read by bucket of line ids (``past_on``: with the status the past-deadline list needs):
    its store (from a worker, only the references of its spilled parts travel) and counts."""
    store, counts = BucketStore(n_buckets, folder), {}
    for base in column_batches(files, base_schema(past_on), "the merged base"):
        add_counts(counts, base_step(base))
        store.add("base", base, "line_id")
    store.flush()
    return store, counts


def gather_history(notify, campaign_id: str | None, n_buckets: int, folder: str | None) -> tuple:
    """This campaign's line notices and delivery receipts by bucket of line ids: their store, the history's
    partial facts (in the order read) and the counts."""
    store, parts, counts = BucketStore(n_buckets, folder), [], {}
    for history in column_batches(notify.history_files, HISTORY_SCHEMA, "the notify history", HISTORY_OPTIONAL):
        lines, part, counted = notices_step(history, campaign_id)
        if part is not None:
            parts.append(part)
        add_counts(counts, counted)
        store.add("history", lines, "line_id")
    for receipts in column_batches(notify.receipt_files, RECEIPTS_SCHEMA, "the notify delivery receipts"):
        lines, counted = receipts_step(receipts, campaign_id)
        add_counts(counts, counted)
        store.add("receipts", lines, "line_id")
    store.flush()
    return store, parts, counts


def gather_events(
    sources: list[tuple[str, str]], dead_letter_files: list[str], n_buckets: int, folder: str | None
) -> tuple[BucketStore, dict]:
    """The merges' events and dead letters by bucket of event ids: their store (from a worker, only the
    references of its spilled parts travel), and the counts."""
    store, counts = BucketStore(n_buckets, folder), {}
    for events in event_agent_batches(sources):
        keyed, counted = keyed_step(events, "events")
        add_counts(counts, counted)
        store.add("events", keyed, "event_id")
    for dead in dead_letter_batches(dead_letter_files):
        keyed, counted = keyed_step(dead, "dead_letters")
        add_counts(counts, counted)
        store.add("dead_letters", keyed, "event_id")
    store.flush()
    return store, counts


class LineSettings(NamedTuple):
    merged: bool
    timezone: str
    past_on: bool


class BucketResult(NamedTuple):
    """One bucket's facts and counts; its past-deadline rows and times to register (``micros``, ``hour``):
    tables, or references to the files a worker wrote them to (None: no row)."""

    facts: dict
    counts: dict
    past: pa.Table | Ref | None
    timed: pa.Table | Ref | None


def _kept(table: pa.Table, tag: str, folder: str | None) -> pa.Table | Ref | None:
    """A result table as is (in this process), or written to a file of the spill folder (its reference)."""
    if table.num_rows == 0:
        return None
    if folder is None:
        return table
    path = f"{folder}/{tag}-{uuid.uuid4().hex}.arrow"
    write_parts(path, [table])
    return (tag, path, 0)


def line_task(bucket: list[Ref] | dict[str, pa.Table], settings: LineSettings, folder: str | None) -> BucketResult:
    """One bucket of line ids (its spilled references, or its tables) -> :class:`BucketResult`."""
    tables = read_refs(bucket) if isinstance(bucket, list) else bucket
    result = bucket_facts(
        tables.get("needed"),
        tables.get("base"),
        tables.get("history"),
        merged=settings.merged,
        timezone=settings.timezone,
        past_on=settings.past_on,
        receipts=tables.get("receipts"),
    )
    del tables
    timed = pa.table(dict(zip(("micros", "hour"), timed_hours(result.timed)))) if len(result.timed) else None
    return BucketResult(
        result.facts,
        result.counts,
        _kept(result.past, "past", folder),
        None if timed is None else _kept(timed, "timed", folder),
    )


def agent_task(bucket: list[Ref] | dict[str, pa.Table]) -> tuple[dict, dict]:
    """One bucket of event ids -> the agents' partial facts and the bucket's counts."""
    tables = read_refs(bucket) if isinstance(bucket, list) else bucket
    return taken_facts(tables.get("events"), tables.get("dead_letters"))
