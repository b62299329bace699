"""Reads and writes of ``backfill notify``: inputs checked before launch, the file sink, the history.

Inputs (local paths directly, URIs such as ``gs://`` through Beam's FileSystems: :mod:`pipelines.io.paths`;
nothing here imports Beam for a local path):

* ``--scan SCAN_OUT`` (old name ``--classified``): ``SCAN_OUT/classified/*.parquet`` from ``backfill scan``,
  read by row group (only the columns the planner needs).
* ``--merged PATH`` (old name ``--registered``): the merged base of ``backfill merge`` (its ``--out``
  folder, its ``base/`` folder, a file or a glob; Parquet, hive partitions
  included), or a plain Parquet or CSV list of line ids.
* ``OUT/history/jobs/`` and ``OUT/history/receipts/``: what earlier runs handed over.
* ``--suppress FILE``: do-not-SMS numbers, one a line (``#`` comments allowed).

Outputs: ``OUT/jobs/{sms,call,announcement}/*.avro``. Each file is written
under ``OUT/_tmp/RUN/`` and renamed into place whole; only then are its jobs
added to ``OUT/history/jobs/`` (also written and renamed whole). File names
are a hash of their job ids, so a retried bundle rewrites the same file. The Beam job's reads and writes
(``ReadTables``, ``WriteJobFiles``) are in :mod:`pipelines.io.notify_beam`; the in-process engine stages
the same files (:func:`stage_job_files`) and places them once the run's counts balance.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines.common import UserError
from pipelines.io.paths import is_uri, join_path, match_path, open_read
from schemas import avro_schema, field_names
from transforms.core.special_files import special_file
from transforms.scan.normalize import normalize_msisdn
from transforms.notify.planner import PLAN_COLUMNS
from transforms.notify.encode import write_avro
from transforms.notify.jobs import history_rows

log = logging.getLogger("backfill")

__all__ = [
    "classified_splits",
    "registered_splits",
    "history_splits",
    "read_suppress",
    "read_split",
    "write_history",
    "write_whole",
    "stage_job_files",
    "place",
    "HISTORY_JOBS",
    "HISTORY_RECEIPTS",
]

HISTORY_JOBS = ("history", "jobs")
HEADERLESS = -2  # the row group of a CSV list of line ids without a header
HISTORY_RECEIPTS = ("history", "receipts")


def matching_paths(pattern: str) -> list[str]:
    try:
        return sorted(path for path, _ in match_path(pattern))
    except Exception:  # an unreachable bucket or a bad pattern: no files
        return []


def _splits(files: list[str], columns: list[str] | None) -> list[tuple[str, int, tuple | None]]:
    out = []
    for path in files:
        if path.endswith(".csv"):
            out.append((path, -1, tuple(columns) if columns else None))
            continue
        with open_read(path) as handle:
            meta = pq.ParquetFile(handle).metadata
        out += [(path, i, tuple(columns) if columns else None) for i in range(meta.num_row_groups)]
    return out


def _schema_of(path: str) -> list[str]:
    with open_read(path) as handle:
        if path.endswith(".csv"):
            return pacsv.open_csv(handle).schema.names
        return pq.ParquetFile(handle).schema_arrow.names


def classified_splits(scan_out: str) -> tuple[list, int]:
    """Row groups of the scan's classified lines, and their row count; refuses what is not a scan output."""
    folder = join_path(scan_out.rstrip("/"), "classified")
    files = matching_paths(join_path(folder, "*.parquet"))
    if not files:
        raise UserError(f"--scan {scan_out}: no classified lines (expected {folder}/*.parquet from backfill scan)")
    rows = 0
    for path in files:
        try:
            with open_read(path) as handle:
                parquet = pq.ParquetFile(handle)
                names, rows = parquet.schema_arrow.names, rows + parquet.metadata.num_rows
        except Exception as exc:
            raise UserError(f"--scan {scan_out}: {path} is not readable Parquet ({type(exc).__name__})") from None
        missing = [c for c in PLAN_COLUMNS if c not in names]
        if missing:
            raise UserError(f"--scan {scan_out}: {path} is not a scan output (missing column(s) {', '.join(missing)})")
    if rows == 0:
        raise UserError(f"--scan {scan_out}: the scan output holds no lines")
    return _splits(files, list(PLAN_COLUMNS)), rows


def registered_splits(path: str) -> tuple[list, int]:
    """Row groups (or CSV files) of the lines registered since the scan."""
    base = path.rstrip("/")
    candidates = [join_path(base, "base"), base]
    files: list[str] = []
    for root in candidates:
        if root.endswith((".parquet", ".csv")) or any(ch in root for ch in "*?["):
            files = matching_paths(root)
        else:
            files = [f for f in matching_paths(join_path(root, "**")) if f.endswith((".parquet", ".csv"))]
        if files:
            break
    if not files:
        raise UserError(f"--merged {path}: no Parquet or CSV files found")
    rows, splits = 0, []
    for f in files:
        try:
            names = _schema_of(f)
        except Exception as exc:
            raise UserError(f"--merged {path}: {f} is not readable ({type(exc).__name__})") from None
        if f.endswith(".csv") and "line_id" not in names and len(names) == 1:
            splits.append((f, HEADERLESS, ("line_id",)))  # a bare list of line ids, one a line
            continue
        if "line_id" not in names:
            raise UserError(f"--merged {path}: {f} has no line_id column")
        _check_registered_columns(path, f, names)
        columns = ["line_id", "identity_status"] if "identity_status" in names else ["line_id"]
        splits += _splits([f], columns)
        if not f.endswith(".csv"):
            with open_read(f) as handle:
                rows += pq.ParquetFile(handle).metadata.num_rows
    return splits, rows


# Columns of the project's other data sets (a subscriber base, registration events, a vault, a notify history or
# its jobs, a scan's classified lines): a file holding one of them is not a list of registered line ids.
_OTHER_DATA = ("subscriber_base", "registration_event", "vault_key", "vault_value", "notify_history", "notify_sms_job")


def _check_registered_columns(path: str, f: str, names: list[str]) -> None:
    """A merged base (``identity_status``, without the scan's ``needs_review``) or a list of line ids (no column
    of another data set beside ``line_id``): anything else given by mistake (the raw base, a vault, a notify
    folder, the registration events, a scan) would count every line it holds as registered and send nothing."""
    if "identity_status" in names:
        if "needs_review" in names:
            raise UserError(
                f"--merged {path}: {f} is a scan's classified lines, not a merged base: give the merge's output"
            )
        return
    other = {c for kind in _OTHER_DATA for c in field_names(kind)} - {"line_id"}
    foreign = [c for c in names if c in other]
    if foreign:
        raise UserError(
            f"--merged {path}: {f} is neither a merged base (no identity_status column) nor a list of line ids "
            f"(it has the column(s) {', '.join(foreign[:3])} of another data set): give the merge's output or a list "
            "of line ids; nothing was sent"
        )


def history_splits(out: str, kind: tuple[str, str]) -> list:
    """Row groups of the history's files; a file that is not one (unreadable, or without the history's
    columns: copied there by hand) is a one-line error naming it, before anything is planned or sent."""
    files = matching_paths(join_path(out.rstrip("/"), *kind, "*.parquet"))
    wanted = field_names("notify_history" if kind == HISTORY_JOBS else "notify_receipt")
    out_splits = []
    for path in files:
        try:
            with open_read(path) as handle:
                parquet = pq.ParquetFile(handle)
                names, groups = parquet.schema_arrow.names, parquet.metadata.num_row_groups
        except Exception as exc:
            raise UserError(
                f"--out {out}: {path} is not a readable notify history file ({type(exc).__name__})"
            ) from None
        missing = [c for c in wanted if c not in names]
        if missing:
            raise UserError(f"--out {out}: {path} is not a notify history file (no column {missing[0]})")
        out_splits += [(path, i, None) for i in range(groups)]
    return out_splits


def read_suppress(path: str) -> pa.Array:
    """Do-not-SMS numbers, normalised like the scan's msisdn."""
    if kind := special_file(path):
        raise UserError(f"--suppress {path}: is {kind}, not a list of numbers")
    try:
        with open_read(path) as handle:
            text = handle.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"--suppress {path}: not UTF-8 text") from None
    except Exception as exc:
        raise UserError(f"--suppress {path}: cannot be read ({type(exc).__name__})") from None
    values = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    numbers = normalize_msisdn(pa.array([v for v in values if v], pa.string()))
    # A phone number is 7 to 13 digits once normalised (a local fixed line to a 13-digit IoT number): what the
    # normaliser makes of other text (a base row given by mistake: every digit of the row) is left out, unquoted
    numbers = pc.if_else(pc.match_substring_regex(numbers, r"^[0-9]{7,13}$"), numbers, pa.scalar(None, pa.string()))
    if numbers.null_count and numbers.null_count == len(numbers):
        raise UserError(
            f"--suppress {path}: none of its {len(numbers):,} lines is a phone number (one number a line, # for "
            "comments); nothing was written"
        )
    if numbers.null_count:
        log.warning(
            "--suppress %s: %d of %d lines are no phone number, left out", path, numbers.null_count, len(numbers)
        )
    return pc.unique(numbers.filter(pc.is_valid(numbers)))


def read_split(split) -> pa.Table:
    path, group, columns = split
    with open_read(path) as handle:
        if group < 0:
            read = pacsv.ReadOptions(column_names=["line_id"]) if group == HEADERLESS else None
            options = pacsv.ConvertOptions(
                column_types={c: pa.string() for c in ("line_id", "identity_status")},
                include_columns=list(columns) if columns else None,
            )
            return pacsv.read_csv(handle, read_options=read, convert_options=options)
        data = handle.read() if "://" in path else None
        source = pa.BufferReader(data) if data is not None else path
        table = pq.ParquetFile(source).read_row_group(group, columns=list(columns) if columns else None)
    return table


def content_name(table: pa.Table, prefix: str, suffix: str) -> str:
    """A file name from the job ids it holds: the same jobs give the same name."""
    ids = table.column("job_id").combine_chunks()
    digest = hashlib.blake2b(digest_size=10)
    offsets = np.frombuffer(ids.buffers()[1], np.int32)[ids.offset : ids.offset + len(ids) + 1]
    digest.update((offsets - offsets[0]).tobytes())
    digest.update(memoryview(ids.buffers()[2])[offsets[0] : offsets[-1]])
    digest = digest.hexdigest()
    return f"{prefix}-{digest}-{table.num_rows}{suffix}"


def _create(path: str):
    if not is_uri(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return open(path, "wb")
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.create(path)


def place(tmp: str, final: str) -> None:
    """Rename a whole written ``tmp`` file to ``final`` (replacing it): readers never see half a file."""
    if not is_uri(final):
        os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
        os.replace(tmp, final)
        return
    from apache_beam.io.filesystems import FileSystems

    if FileSystems.exists(final):
        FileSystems.delete([final])
    FileSystems.rename([tmp], [final])


def write_whole(data, tmp: str, final: str) -> None:
    """Write ``data`` (bytes, or a function of a file handle) to ``tmp`` and rename it to ``final``.

    Readers never see half a file."""
    with _create(tmp) as handle:
        if callable(data):
            data(handle)
        else:
            handle.write(data)
    place(tmp, final)


def _history_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(
        table, sink, use_dictionary=["region", "channel", "campaign_id", "run_id", "variant"], write_statistics=False
    )
    return sink.getvalue()


def write_history(table: pa.Table, out: str, run_id: str) -> None:
    """Add durable jobs to ``OUT/history/jobs/`` (one Parquet file, written whole)."""
    if table.num_rows == 0:
        return
    name = content_name(table, "history", ".parquet")
    write_whole(_history_bytes(table), join_path(out, "_tmp", run_id, name), join_path(out, *HISTORY_JOBS, name))


def stage_job_files(table: pa.Table, channel: str, out: str, prefix: str, run_id: str) -> list[tuple[str, str]]:
    """Write one channel's job table as an Avro file and its history records as a Parquet file, both under
    ``OUT/_tmp/RUN/``; returns their (staged, final) paths, the jobs file first: place them in that order
    (:func:`place`), the history only once its jobs are."""
    name = content_name(table, prefix, ".avro")
    schema = avro_schema(f"notify_{channel}_job")
    staged = [(join_path(out, "_tmp", run_id, f"{channel}-{name}"), join_path(out, "jobs", channel, name))]
    with _create(staged[0][0]) as handle:
        write_avro(handle, table, schema, name)
    history = history_rows(table, run_id)
    if history.num_rows:
        history_name = content_name(history, "history", ".parquet")
        tmp = join_path(out, "_tmp", run_id, history_name)
        with _create(tmp) as handle:
            handle.write(_history_bytes(history))
        staged.append((tmp, join_path(out, *HISTORY_JOBS, history_name)))
    return staged
