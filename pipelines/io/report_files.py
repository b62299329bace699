"""The report's inputs as the launcher sees them, and its tables out.

The launcher reads manifests, lists files and reads Parquet footers: never a
row. Every input is checked to exist and to belong with the others, and a
missing one is a one-line error naming the folder and what was expected
there. The rows themselves are read by the report's Beam job
(``pipelines/io/report_sources.py``), only the columns the figures need.
The scan and the live state are listed here (a merge's output, or from the
first compaction or purge on that of compact or retention); the notify
output is ``report_notify.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import json
import os

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.common import UserError
from pipelines.io.spreadsheet import spreadsheet_safe

__all__ = [
    "SCAN_SCHEMA",
    "HISTORY_SCHEMA",
    "RECEIPTS_SCHEMA",
    "LIVE_STEPS",
    "ScanOutput",
    "MergeOutput",
    "filesystem",
    "exists",
    "list_files",
    "read_json_file",
    "read_bytes",
    "read_scan",
    "read_scan_summary",
    "read_merge",
    "drop_partitions",
    "write_tables",
    "csv_ready",
]

# The outputs whose base/ is the live state: a merge, and from the first compaction or purge on, those.
LIVE_STEPS = ("merge", "compact", "retention")

SCAN_SCHEMA = pa.schema(
    [
        ("line_id", pa.string()),
        ("region", pa.string()),
        ("line_type", pa.string()),
        ("agent_id", pa.string()),
        ("needs_registration", pa.bool_()),
        ("flags", pa.list_(pa.string())),
    ]
)
HISTORY_SCHEMA = pa.schema(
    [
        ("line_id", pa.string()),
        ("campaign_id", pa.string()),
        ("wave", pa.int32()),
        ("sent_at", pa.timestamp("us", tz="UTC")),
        ("channel", pa.string()),
        ("job_id", pa.string()),
        ("variant", pa.string()),  # A/B template variant: absent from the files of waves without variants
    ]
)
HISTORY_OPTIONAL = ("variant",)
RECEIPTS_SCHEMA = pa.schema(
    [
        ("line_id", pa.string()),
        ("job_id", pa.string()),
        ("campaign_id", pa.string()),
        ("status", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
    ]
)


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """Arrow's file system for a local path or a URI (gs:// included: Arrow's GCS client)."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def exists(path: str) -> bool:
    fs, where = filesystem(path)
    return fs.get_file_info(where).type != pafs.FileType.NotFound


def _uri(folder: str, found: str) -> str:
    """A listed path as the job opens it: absolute locally, with its scheme on an object store."""
    return f"{folder.split('://', 1)[0]}://{found}" if "://" in folder else found


def list_files(folder: str, suffix: str, recursive: bool = True) -> list[str]:
    """The data files under ``folder`` ending in ``suffix`` (hidden and ``_`` files left out), sorted."""
    fs, where = filesystem(folder)
    try:
        infos = fs.get_file_info(pafs.FileSelector(where, recursive=recursive))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        _uri(folder, i.path)
        for i in infos
        if i.type == pafs.FileType.File
        and i.path.endswith(suffix)
        and not os.path.basename(i.path).startswith((".", "_"))
    )


def read_bytes(path: str) -> bytes:
    fs, where = filesystem(path)
    with fs.open_input_stream(where) as handle:
        return handle.read()


def read_json_file(path: str) -> dict:
    return json.loads(read_bytes(path).decode("utf-8"))


@dataclasses.dataclass
class ScanOutput:
    folder: str
    files: list[str]  # classified/*.parquet
    rows: int  # classified lines (from the files' footers)
    as_of: dt.date
    run_id: str | None


@dataclasses.dataclass
class MergeOutput:
    folder: str
    base_files: list[str]
    as_of: dt.date
    run_id: str | None
    events: list[tuple[str, str]] | None  # (registration file, encoding), earlier merges first; None: none recorded
    dead_letter_files: list[str]  # of this merge and the earlier ones
    events_missing: list[str] = dataclasses.field(default_factory=list)  # recorded event files that are gone
    step: str = "merge"  # or compact, retention: the live state after a compaction or a purge
    unmatched: list[str] = dataclasses.field(default_factory=list)  # --earlier-merges patterns that found no merge


def _manifest(folder: str, step: str | tuple[str, ...], what: str) -> dict:
    path = os.path.join(folder, "manifest.json")
    if not exists(path):
        raise UserError(f"{folder} has no manifest.json: give the {what} output folder")
    try:
        manifest = read_json_file(path)
    except ValueError:
        raise UserError(f"{path} is not a JSON manifest") from None
    steps = (step,) if isinstance(step, str) else step
    if manifest.get("step") not in steps:
        expected = " or ".join(repr(s) for s in steps)
        raise UserError(
            f"{folder} is the output of {manifest.get('step')!r}, not of {expected}: give the {what} output folder"
        )
    return manifest


def _parquet_files(folder: str, columns: list[str], what: str, count: bool = False) -> tuple[list[str], int]:
    """The Parquet files under ``folder`` (the first must hold ``columns``) and, with ``count``, their rows
    (from every footer)."""
    files = list_files(folder, ".parquet")
    if not files:
        raise UserError(f"no Parquet files under {folder}: {what} is missing")
    rows = 0
    for i, path in enumerate(files if count else files[:1]):
        fs, where = filesystem(path)
        try:
            with fs.open_input_file(where) as handle:
                meta = pq.ParquetFile(handle).metadata
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"{folder} does not hold {what} ({str(exc).splitlines()[0]})") from None
        missing = [c for c in columns if c not in meta.schema.to_arrow_schema().names] if i == 0 else []
        if missing:
            raise UserError(f"{folder} does not hold {what} (no {', '.join(missing)} column)")
        rows += meta.num_rows
    return files, rows


def read_scan(folder: str) -> ScanOutput:
    manifest = _manifest(folder, "scan", "scan's")
    files, rows = _parquet_files(os.path.join(folder, "classified"), SCAN_SCHEMA.names, "the classified lines", True)
    return ScanOutput(folder, files, rows, dt.date.fromisoformat(manifest["as_of"]), manifest.get("run_id"))


def read_scan_summary(folder: str) -> dict:
    """The scan's own counts (``summary.json``: statuses, reasons, flags, dead letters); {} when it has none."""
    path = os.path.join(folder, "summary.json")
    if not exists(path):
        return {}
    try:
        return read_json_file(path)
    except ValueError:
        raise UserError(f"{path} is not the scan's JSON summary") from None


def _dead_letter_files(folder: str) -> list[str]:
    return [
        p
        for p in list_files(os.path.join(folder, "dead_letter"), "", recursive=False)
        if p.endswith((".parquet", ".jsonl"))
    ]


def _earlier(patterns: list[str], folder: str, as_of: dt.date) -> tuple[list[tuple[str, dict]], list[str]]:
    """Earlier merges: folders given, or a pattern (``out/merge/*``) of which the merges before
    ``as_of`` count (the current one and later days are left out, so the DAG passes one pattern); and the
    patterns that found none (a mistyped one would leave the earlier days' registrations out unsaid)."""
    found, unmatched = [], []
    for pattern in patterns:
        if "*" not in pattern:
            found.append((pattern, _manifest(pattern, "merge", "earlier merge's")))
            continue
        merges, seen = _matching_merges(pattern, folder, as_of)
        found += merges
        if not seen:
            unmatched.append(pattern)
    return found, unmatched


def _matching_merges(pattern: str, folder: str, as_of: dt.date) -> tuple[list[tuple[str, dict]], bool]:
    """The merges before ``as_of`` among the folders ``pattern`` matches (``folder`` left out), and whether it
    matches a merge at all (``folder`` or a later day's: on a campaign's first day none is before it)."""
    found, seen = [], False
    parent, name = pattern.rstrip("/").rsplit("/", 1) if "/" in pattern else (".", pattern)
    fs, where = filesystem(parent)
    try:
        children = fs.get_file_info(pafs.FileSelector(where))
    except FileNotFoundError:
        return found, seen
    for info in sorted(children, key=lambda i: i.path):
        candidate = f"{parent.rstrip('/')}/{info.base_name}"
        if info.type != pafs.FileType.Directory or not fnmatch.fnmatch(info.base_name, name):
            continue
        if not exists(f"{candidate}/manifest.json"):
            continue
        manifest = read_json_file(f"{candidate}/manifest.json")
        seen |= manifest.get("step") in LIVE_STEPS
        if filesystem(candidate)[1] == filesystem(folder)[1]:
            continue
        if manifest.get("step") == "merge" and dt.date.fromisoformat(manifest["as_of"]) < as_of:
            found.append((candidate, manifest))
    return found, seen


def _registrations(manifest: dict) -> list[tuple[str, str]]:
    inputs = manifest.get("inputs", {})
    return [(p, inputs.get("encoding") or "utf-8") for p in inputs.get("registrations") or [] if p]


def read_merge(folder: str, earlier: list[str]) -> MergeOutput:
    from transforms.compliance.report_lines import BASE_SCHEMA

    manifest = _manifest(folder, LIVE_STEPS, "merge's (or compact's, retention's)")
    as_of = dt.date.fromisoformat(manifest["as_of"])
    base, _ = _parquet_files(os.path.join(folder, "base"), BASE_SCHEMA.names, "the merged base")
    sources, dead = [], []
    merges, unmatched = _earlier(earlier, folder, as_of)
    for other, other_manifest in merges:
        sources += _registrations(other_manifest)
        dead += _dead_letter_files(other)
    sources += _registrations(manifest)
    dead += _dead_letter_files(folder)
    missing = [p for p, _ in sources if "*" not in p and not exists(p)]
    events = [(p, e) for p, e in sources if p not in missing] if sources else None
    return MergeOutput(folder, base, as_of, manifest.get("run_id"), events, dead, missing, manifest["step"], unmatched)


def drop_partitions(out: str, as_of: dt.date) -> None:
    """Remove the report date's partition of every table (seeded from the previous output): a re-run of a day
    replaces it, the other days stay."""
    fs, root = filesystem(out)
    try:
        tables = fs.get_file_info(pafs.FileSelector(f"{root}/parquet"))
    except (FileNotFoundError, NotADirectoryError):
        return
    for table in tables:
        part = f"{table.path}/as_of={as_of.isoformat()}"
        if table.type == pafs.FileType.Directory and fs.get_file_info(part).type != pafs.FileType.NotFound:
            fs.delete_dir(part)


def write_tables(out: str, tables: dict[str, pa.Table], as_of: dt.date) -> dict:
    """Parquet (one hive partition per report date) and CSV per table."""
    fs, root = filesystem(out)
    fs.create_dir(f"{root}/csv", recursive=True)
    for name, table in tables.items():
        part = f"{root}/parquet/{name}/as_of={as_of.isoformat()}"
        fs.create_dir(part, recursive=True)
        pq.write_table(table, f"{part}/part-0.parquet", filesystem=fs)
        with fs.open_output_stream(f"{root}/csv/{name}.csv") as handle:
            pacsv.write_csv(csv_ready(table), handle)
    return {"parquet": os.path.join(out, "parquet"), "csv": os.path.join(out, "csv")}


def csv_ready(table: pa.Table) -> pa.Table:
    """CSV cannot hold null-typed columns: give them a string type; no cell may run as a formula."""
    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(i, field.name, pa.nulls(table.num_rows, pa.string()))
    return spreadsheet_safe(table)
