"""The report's reads and writes: projected columns of the step outputs in, tables out.

Only the columns the figures need are read (never a token, mask or identity
value); every input is checked to exist and to belong with the others, and a
missing one is a one-line error naming the folder and what was expected there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from pipelines.common import UserError
from pipelines.io.spreadsheet import spreadsheet_safe
from transforms.compliance.report import first_per_key

SCAN_COLUMNS = ["line_id", "region", "line_type", "agent_id", "needs_registration", "flags"]
MERGE_COLUMNS = [
    "line_id",
    "status",
    "identity_status",
    "reasons",
    "registered_at",
    "registration_event_id",
    "registration_channel",
]
HISTORY_COLUMNS = ["line_id", "campaign_id", "wave", "sent_at"]


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """Arrow's file system for a local path or a URI (gs:// included: Arrow's GCS client, no Beam)."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def _exists(path: str) -> bool:
    fs, where = filesystem(path)
    return fs.get_file_info(where).type != pafs.FileType.NotFound


def _files(folder: str, suffix: str, recursive: bool = True) -> tuple[pafs.FileSystem, list[str]]:
    fs, where = filesystem(folder)
    try:
        infos = fs.get_file_info(pafs.FileSelector(where, recursive=recursive))
    except (FileNotFoundError, NotADirectoryError):
        return fs, []
    return fs, sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and i.path.endswith(suffix)
        and not os.path.basename(i.path).startswith((".", "_"))
    )


def _read_json(path: str) -> dict:
    fs, where = filesystem(path)
    with fs.open_input_stream(where) as handle:
        return json.loads(handle.read().decode("utf-8"))


@dataclasses.dataclass
class ScanOutput:
    classified: pa.Table
    as_of: dt.date
    run_id: str | None


@dataclasses.dataclass
class MergeOutput:
    base: pa.Table
    as_of: dt.date
    run_id: str | None
    events: pa.Table | None  # event_id, agent_id (distinct)
    dead_letters: pa.Table  # event_id, reason
    events_missing: list[str] = dataclasses.field(default_factory=list)  # recorded event files that are gone


@dataclasses.dataclass
class NotifyOutput:
    folder: str
    history: pa.Table | None
    runs: list[dict]


def _manifest(folder: str, step: str, what: str) -> dict:
    path = os.path.join(folder, "manifest.json")
    if not _exists(path):
        raise UserError(f"{folder} has no manifest.json: give the {what} output folder")
    try:
        manifest = _read_json(path)
    except ValueError:
        raise UserError(f"{path} is not a JSON manifest") from None
    if manifest.get("step") != step:
        raise UserError(
            f"{folder} is the output of {manifest.get('step')!r}, not of {step!r}: give the {what} output folder"
        )
    return manifest


def _parquet(folder: str, columns: list[str], what: str) -> pa.Table:
    fs, files = _files(folder, ".parquet")
    if not files:
        raise UserError(f"no Parquet files under {folder}: {what} is missing")
    try:
        return pq.read_table(files if len(files) > 1 else files[0], columns=columns, filesystem=fs)
    except (pa.ArrowInvalid, KeyError) as exc:
        raise UserError(f"{folder} does not hold {what} ({str(exc).splitlines()[0]})") from None


def read_scan(folder: str) -> ScanOutput:
    manifest = _manifest(folder, "scan", "scan's")
    table = _parquet(os.path.join(folder, "classified"), SCAN_COLUMNS, "the classified lines")
    return ScanOutput(table, dt.date.fromisoformat(manifest["as_of"]), manifest.get("run_id"))


def _dead_letters(folder: str) -> pa.Table:
    parts = []
    fs, files = _files(os.path.join(folder, "dead_letter"), "", recursive=False)
    for path in files:
        if path.endswith(".parquet"):
            parts.append(pq.read_table(path, columns=["event_id", "reason"], filesystem=fs))
        elif path.endswith(".jsonl") and fs.get_file_info(path).size:
            options = pajson.ParseOptions(
                explicit_schema=pa.schema([("event_id", pa.string()), ("reason", pa.string())]),
                unexpected_field_behavior="ignore",
            )
            with fs.open_input_stream(path) as handle:
                parts.append(pajson.read_json(handle, parse_options=options))
    empty = pa.table({"event_id": pa.array([], pa.string()), "reason": pa.array([], pa.string())})
    return pa.concat_tables([empty, *[p.select(["event_id", "reason"]).cast(empty.schema) for p in parts]])


def _event_agents(paths: list[str]) -> tuple[pa.Table | None, list[str]]:
    """event_id and agent_id of the registration files the merges read (None if none is recorded),
    and the recorded files that are gone (the report says so; it counts the events still there)."""
    recorded = [p for p in paths if p]
    missing = [p for p in recorded if "*" not in p and not _exists(p)]
    files = [p for p in recorded if p not in missing]
    if not recorded:
        return None, []
    parts = []
    for path in files:
        fs, where = filesystem(path)
        if path.endswith(".parquet") and fs.get_file_info(where).type == pafs.FileType.File:
            parts.append(pq.read_table(where, columns=["event_id", "agent_id"], filesystem=fs))
            continue
        from pipelines.io.events import plan_event_splits, read_event_split  # Beam's readers: other formats

        splits, _ = plan_event_splits([path])
        for split in splits:
            for table, _bad in read_event_split(split):
                parts.append(table.select(["event_id", "agent_id"]))
    if not parts:
        return pa.table({"event_id": pa.array([], pa.string()), "agent_id": pa.array([], pa.string())}), missing
    events = pa.concat_tables(
        [p.cast(pa.schema([("event_id", pa.string()), ("agent_id", pa.string())])) for p in parts]
    )
    events = events.filter(pc.is_valid(events["event_id"]))
    agent = pc.if_else(pc.equal(pc.utf8_trim_whitespace(events["agent_id"]), ""), None, events["agent_id"])
    events = events.set_column(1, "agent_id", agent)
    return first_per_key(events, "event_id"), missing


def _earlier(patterns: list[str], folder: str, as_of: dt.date) -> list[tuple[str, dict]]:
    """Earlier merges: folders given, or a pattern (``out/merge/*``) of which the merges before
    ``as_of`` count (the current one and later days are left out, so the DAG passes one pattern)."""
    found = []
    for pattern in patterns:
        if "*" not in pattern:
            found.append((pattern, _manifest(pattern, "merge", "earlier merge's")))
            continue
        parent, name = pattern.rstrip("/").rsplit("/", 1) if "/" in pattern else (".", pattern)
        fs, where = filesystem(parent)
        try:
            children = fs.get_file_info(pafs.FileSelector(where))
        except FileNotFoundError:
            continue
        for info in sorted(children, key=lambda i: i.path):
            candidate = f"{parent.rstrip('/')}/{info.base_name}"
            if info.type != pafs.FileType.Directory or not fnmatch.fnmatch(info.base_name, name):
                continue
            if filesystem(candidate)[1] == filesystem(folder)[1] or not _exists(f"{candidate}/manifest.json"):
                continue
            manifest = _read_json(f"{candidate}/manifest.json")
            if manifest.get("step") == "merge" and dt.date.fromisoformat(manifest["as_of"]) < as_of:
                found.append((candidate, manifest))
    return found


def read_merge(folder: str, earlier: list[str]) -> MergeOutput:
    manifest = _manifest(folder, "merge", "merge's")
    as_of = dt.date.fromisoformat(manifest["as_of"])
    base = _parquet(os.path.join(folder, "base"), MERGE_COLUMNS, "the merged base")
    paths, dead = [], [_dead_letters(folder)]
    for other, other_manifest in _earlier(earlier, folder, as_of):
        paths += other_manifest.get("inputs", {}).get("registrations") or []
        dead.append(_dead_letters(other))
    paths += manifest.get("inputs", {}).get("registrations") or []
    events, missing = _event_agents(paths)
    return MergeOutput(base, as_of, manifest.get("run_id"), events, pa.concat_tables(dead), missing)


def read_notify(folder: str) -> NotifyOutput:
    if not _exists(folder):
        raise UserError(f"{folder} does not exist: give the notify output folder")
    runs = []
    for path in _files(os.path.join(folder, "runs"), ".json", recursive=False)[1] or [
        os.path.join(folder, "manifest.json")
    ]:
        if _exists(path):
            runs.append(_read_json(path))
    if not runs:
        raise UserError(f"{folder} has no notify manifests: give the notify output folder")
    fs, files = _files(os.path.join(folder, "history", "jobs"), ".parquet", recursive=False)
    history = pq.read_table(files, columns=HISTORY_COLUMNS, filesystem=fs) if files else None
    return NotifyOutput(folder, history, runs)


def latest_campaign_run(notify: NotifyOutput) -> dict:
    """The ``campaign`` block of the latest notify run that planned a wave (a receipts run names none)."""
    planned = [r["campaign"] for r in notify.runs if r.get("campaign", {}).get("campaign_id")]
    return planned[-1] if planned else {}


def load_campaign_for(path: str | None, notify: NotifyOutput | None):
    """The campaign file given, else the one the latest notify run that planned a wave used (if still there)."""
    from transforms.notify.campaign import CampaignError, parse_campaign

    if path is None and notify is not None:
        source = latest_campaign_run(notify).get("source")
        path = source if source and _exists(source) else None
    if path is None:
        return None
    if not _exists(path):
        raise UserError(f"campaign {path}: no such file")
    fs, where = filesystem(path)
    with fs.open_input_stream(where) as handle:  # Arrow's file systems: no Beam import for a report
        data = handle.read()
    try:
        return parse_campaign(data, path)
    except CampaignError as exc:
        raise UserError(str(exc)) from None


def campaign_history(notify: NotifyOutput | None, campaign) -> tuple[pa.Table | None, int]:
    """This campaign's line jobs, and how many notices of other campaigns the history holds."""
    if notify is None or notify.history is None:
        return None, 0
    history = notify.history
    # without the campaign file, the campaign is the latest notify run's: never a mix of campaigns
    campaign_id = campaign.campaign_id if campaign is not None else latest_campaign_run(notify).get("campaign_id")
    mine = pc.equal(history["campaign_id"], campaign_id)
    return history.filter(mine), history.num_rows - int(pc.sum(pc.cast(mine, pa.int64())).as_py() or 0)


def check_notify_matches(notify: NotifyOutput | None, scan: ScanOutput, campaign) -> None:
    """The notices belong to this campaign and were planned from this scan."""
    if notify is None or campaign is None:
        return
    runs = [r for r in notify.runs if r.get("campaign", {}).get("campaign_id") == campaign.campaign_id]
    if not runs:
        ids = sorted({r.get("campaign", {}).get("campaign_id") for r in notify.runs} - {None})
        raise UserError(
            f"the notify output at {notify.folder} holds no run of campaign {campaign.campaign_id} "
            f"(it holds {', '.join(ids) or 'none'}): give this campaign's notify folder or file"
        )
    for run in runs:
        rows = run.get("inputs", {}).get("classified_rows")
        if run.get("campaign", {}).get("wave") == 1 and rows is not None and rows != scan.classified.num_rows:
            raise UserError(
                f"wave 1 of {campaign.campaign_id} was planned from a scan of {rows:,} lines, but the scan "
                f"given has {scan.classified.num_rows:,}: give the scan the campaign started from"
            )


def unmerged(classified: pa.Table) -> pa.Table:
    """The state now when nothing was merged: every line as the scan left it (no registration)."""
    n = classified.num_rows
    return pa.table(
        {
            "line_id": classified["line_id"],
            "status": pa.nulls(n, pa.string()),
            "identity_status": pa.repeat(pa.scalar("UNMERGED"), n),
            "reasons": pa.nulls(n, pa.list_(pa.string())),
            "registered_at": pa.nulls(n, pa.timestamp("us", tz="UTC")),
            "registration_event_id": pa.nulls(n, pa.string()),
            "registration_channel": pa.nulls(n, pa.string()),
        }
    )


def write_tables(out: str, tables: dict[str, pa.Table], as_of: dt.date) -> dict:
    """Parquet (one hive partition per report date, replaced on a re-run) and CSV per table."""
    written = {}
    fs, root = filesystem(out)
    fs.create_dir(f"{root}/csv", recursive=True)
    for name, table in tables.items():
        part = f"{root}/parquet/{name}/as_of={as_of.isoformat()}"
        if fs.get_file_info(part).type != pafs.FileType.NotFound:
            fs.delete_dir(part)  # a re-run of the day replaces its partition
        fs.create_dir(part, recursive=True)
        pq.write_table(table, f"{part}/part-0.parquet", filesystem=fs)
        with fs.open_output_stream(f"{root}/csv/{name}.csv") as handle:
            pacsv.write_csv(_csv_ready(table), handle)
    written["parquet"] = os.path.join(out, "parquet")
    written["csv"] = os.path.join(out, "csv")
    return written


def _csv_ready(table: pa.Table) -> pa.Table:
    """CSV cannot hold null-typed columns: give them a string type; no cell may run as a formula."""
    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(i, field.name, pa.nulls(table.num_rows, pa.string()))
    return spreadsheet_safe(table)
