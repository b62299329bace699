"""Delivery receipts: record DELIVERED / FAILED against the jobs of the history.

    backfill notify --receipts 'receipts/*.csv' --out OUT
    backfill notify --receipts-subscription projects/P/subscriptions/S --out OUT

A receipt file is CSV (header ``job_id,status,at``) or JSON Lines (objects
with those keys); ``at`` is ISO-8601, UTC when it has no zone. Receipts are
checked against ``OUT/history/jobs/`` and written whole to
``OUT/history/receipts/RUN.parquet`` with the job's line, channel, campaign
and wave, so the next wave's planner finds them by line: a line whose SMS
FAILED gets a call (MOBILE, when the wave calls) or falls to the announcement.
A receipt already recorded is counted as a duplicate, not written twice. A
receipt that cannot be used becomes a dead letter (``OUT/dead_letter/``):
``RECEIPT_JOB_ID_MISSING``, ``RECEIPT_UNKNOWN_JOB``, ``RECEIPT_BAD_STATUS``,
``RECEIPT_BAD_TIMESTAMP``. Beam-free: receipts are small, Arrow is enough.
"""

from __future__ import annotations

import io
import json
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.common import UserError
from pipelines.io.notify_files import HISTORY_JOBS, HISTORY_RECEIPTS, history_splits, matching_paths, write_whole
from schemas import arrow_schema
from transforms.core.deadletter import DeadLetterContext, dead_letter_table

__all__ = ["read_receipt_files", "record_receipts", "STATUSES"]

STATUSES = ("DELIVERED", "FAILED")
_COLUMNS = ("job_id", "status", "at")
JOB_ID_SHAPE = r"^\s*[0-9A-Fa-f]{32}\s*$"  # sha256's first 32 hex characters (transforms/notify/jobs.py)


def read_receipt_files(patterns: list[str]) -> pa.Table:
    """job_id, status, at (text), _src_file, _src_row from CSV and JSON Lines files."""
    files: list[str] = []
    for pattern in patterns:
        found = (
            matching_paths(pattern)
            if any(c in pattern for c in "*?[")
            else ([pattern] if FileSystems.exists(pattern) else [])
        )
        if not found and FileSystems.exists(pattern):
            found = [f for f in matching_paths(FileSystems.join(pattern.rstrip("/"), "*"))]
        found = [f for f in found if f.endswith((".csv", ".jsonl", ".json"))]
        if not found:
            raise UserError(f"--receipts {pattern}: no .csv or .jsonl receipt files")
        files += found
    parts = []
    for path in files:
        try:
            with FileSystems.open(path) as handle:
                raw = handle.read().decode("utf-8-sig")
            rows = _parse(raw, path)
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"--receipts {path}: cannot be read ({type(exc).__name__})") from None
        table = pa.table({c: pa.array([r.get(c) for r in rows], pa.string()) for c in _COLUMNS})
        table = table.append_column("_src_file", pa.array([path] * len(rows), pa.string()))
        parts.append(table.append_column("_src_row", pa.array(np.arange(1, len(rows) + 1), pa.int64())))
    return pa.concat_tables(parts)


def _parse(raw: str, path: str) -> list[dict]:
    if path.endswith(".csv"):
        import csv

        reader = csv.DictReader(io.StringIO(raw))
        if not reader.fieldnames or not set(_COLUMNS) <= {f.strip() for f in reader.fieldnames}:
            raise UserError(f"--receipts {path}: the header must name job_id, status and at")
        return [{k.strip(): (v if v is None else str(v)) for k, v in row.items() if k} for row in reader]
    rows = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = {}
        rows.append(
            {k: (None if obj.get(k) is None else str(obj.get(k))) for k in _COLUMNS} if isinstance(obj, dict) else {}
        )
    return rows


def _history(out: str, kind: tuple[str, str], columns: list[str]) -> pa.Table | None:
    files = matching_paths(FileSystems.join(out, *kind, "*.parquet"))
    if not files:
        return None
    history_splits(out, kind)  # every file checked first: one that is not a history file is named in one line
    tables = []
    for path in files:
        with FileSystems.open(path) as handle:
            # One file, read by ParquetFile rather than read_table: read_table goes through the dataset scanner,
            # whose threads can abort the process at exit after a scan (apache/arrow#39862; seen once here as
            # "terminate called without an active exception" after a receipts run).
            tables.append(pq.ParquetFile(handle).read(columns=columns))
    return pa.concat_tables(tables)


class _Checked(NamedTuple):
    """The receipts normalised and checked against the history's jobs."""

    job_id: pa.Array  # trimmed
    status: pa.Array  # trimmed, upper case
    at: pa.Array  # timestamp (us, UTC); null when unparseable
    index: pa.Array  # the job's row in the history; null when unknown
    reason: np.ndarray  # per receipt, its dead-letter reason; None when usable


def record_receipts(out: str, receipts: pa.Table, ctx: DeadLetterContext) -> dict:
    """Check receipts against the history and record the new ones; returns the counts."""
    out = out.rstrip("/")
    jobs = _history(out, HISTORY_JOBS, ["job_id", "line_id", "channel", "campaign_id", "wave"])
    if jobs is None:
        raise UserError(f"--out {out}: no notification history to record receipts against")
    checked = _check(receipts, jobs)
    bad = pa.array([r is not None for r in checked.reason])
    table, duplicates = _new_only(out, _with_jobs(checked, jobs, pc.invert(bad), ctx.run_id))
    if table.num_rows:
        _write_recorded(out, table, ctx.run_id)
    dead = receipts.filter(bad)
    if dead.num_rows:
        _write_dead_letters(out, dead, checked.reason, ctx)
    return _counts(receipts.num_rows, table, duplicates, dead, checked.reason)


def _check(receipts: pa.Table, jobs: pa.Table) -> _Checked:
    """Normalise job_id, status and at; why a receipt cannot be used (a later check overrides an earlier one)."""
    # job ids are lower-case hex; a gateway may upper-case them
    job_id = pc.utf8_lower(pc.utf8_trim_whitespace(receipts.column("job_id")))
    status = pc.utf8_upper(pc.utf8_trim_whitespace(receipts.column("status")))
    at = pd.to_datetime(
        pd.Series(receipts.column("at").to_pylist(), dtype=object), utc=True, errors="coerce", format="ISO8601"
    )
    index = pc.index_in(job_id, value_set=jobs.column("job_id"))
    reason = np.full(receipts.num_rows, None, object)
    reason[pc.is_null(index).to_numpy(zero_copy_only=False)] = "RECEIPT_UNKNOWN_JOB"
    reason[at.isna().to_numpy()] = "RECEIPT_BAD_TIMESTAMP"
    reason[~pc.fill_null(pc.is_in(status, value_set=pa.array(STATUSES)), False).to_numpy(zero_copy_only=False)] = (
        "RECEIPT_BAD_STATUS"
    )
    reason[~pc.fill_null(pc.greater(pc.utf8_length(job_id), 0), False).to_numpy(zero_copy_only=False)] = (
        "RECEIPT_JOB_ID_MISSING"
    )
    at_us = pa.array(at.to_numpy(dtype="datetime64[us]"), pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
    return _Checked(job_id, status, at_us, index, reason)


def _with_jobs(checked: _Checked, jobs: pa.Table, good: pa.Array, run_id: str) -> pa.Table:
    """The usable receipts with their job's line, channel, campaign and wave (the receipt history's rows)."""
    found = jobs.take(checked.index.filter(good))
    return pa.table(
        {
            "job_id": checked.job_id.filter(good),
            "line_id": found.column("line_id"),
            "channel": found.column("channel"),
            "campaign_id": found.column("campaign_id"),
            "wave": found.column("wave"),
            "status": checked.status.filter(good),
            "at": checked.at.filter(good),
            "run_id": pa.repeat(pa.scalar(run_id), int(pc.sum(good.cast(pa.int64())).as_py() or 0)),
        },
        schema=arrow_schema("notify_receipt"),
    )


def _write_recorded(out: str, table: pa.Table, run_id: str) -> None:
    """The new receipts, one Parquet file of the history committed whole."""
    sink = io.BytesIO()
    pq.write_table(table, sink)
    name = f"receipts-{run_id}.parquet"
    write_whole(
        sink.getvalue(),
        FileSystems.join(out, "_tmp", run_id, name),
        FileSystems.join(out, *HISTORY_RECEIPTS, name),
    )


def _write_dead_letters(out: str, dead: pa.Table, reason: np.ndarray, ctx: DeadLetterContext) -> None:
    """The unusable receipts as dead letters, one JSON Lines file committed whole."""
    letters = dead_letter_table(
        ctx,
        [r for r in reason if r is not None],
        source_file=dead.column("_src_file"),
        source_row=dead.column("_src_row"),
        event_id=_shown_job_ids(dead.column("job_id")),
        detail="delivery receipt",
    )
    lines = "\n".join(json.dumps(r, ensure_ascii=False) for r in letters.to_pylist()) + "\n"
    write_whole(
        lines.encode("utf-8"),
        FileSystems.join(out, "_tmp", ctx.run_id, "receipts.jsonl"),
        FileSystems.join(out, "dead_letter", f"receipts-{ctx.run_id}.jsonl"),
    )


def _shown_job_ids(values) -> pa.Array:
    """The job ids a dead letter may quote: only text shaped like a job id (32 hex characters). Anything else in
    that column (a phone number, a name or a document number the gateway put there) is not quoted: null."""
    shaped = pc.fill_null(pc.match_substring_regex(values, JOB_ID_SHAPE), False)
    return pc.if_else(shaped, values, pa.scalar(None, pa.string()))


def _counts(n: int, table: pa.Table, duplicates: int, dead: pa.Table, reason: np.ndarray) -> dict:
    """Receipts in, recorded, duplicate and dead-lettered (which balance), by status and by reason."""
    by_status = pc.value_counts(table.column("status")).to_pylist() if table.num_rows else []
    reasons = pc.value_counts(pa.array([r for r in reason if r is not None], pa.string())).to_pylist()
    return {
        "receipts_in": n,
        "recorded": table.num_rows,
        "duplicates": duplicates,
        "dead_letters": dead.num_rows,
        "balanced": n == table.num_rows + duplicates + dead.num_rows,
        "status": {s["values"]: s["counts"] for s in by_status},
        "dead_letter_reasons": {r["values"]: r["counts"] for r in reasons},
    }


def _new_only(out: str, table: pa.Table) -> tuple[pa.Table, int]:
    """Drop receipts recorded before (same job, status and time) and repeats within this batch."""
    key = pc.binary_join_element_wise(
        table.column("job_id"),
        table.column("status"),
        pc.cast(pc.cast(table.column("at"), pa.int64()), pa.string()),
        "|",
    )
    _, first = np.unique(key.to_numpy(zero_copy_only=False), return_index=True)
    keep = np.zeros(table.num_rows, bool)
    keep[first] = True
    old = _history(out, HISTORY_RECEIPTS, ["job_id", "status", "at"])
    if old is not None and old.num_rows:
        old_key = pc.binary_join_element_wise(
            old.column("job_id"), old.column("status"), pc.cast(pc.cast(old.column("at"), pa.int64()), pa.string()), "|"
        )
        keep &= ~pc.fill_null(pc.is_in(key, value_set=old_key), False).to_numpy(zero_copy_only=False)
    kept = table.filter(pa.array(keep))
    return kept, table.num_rows - kept.num_rows
