"""The previous report of the campaign, for the change since then: its headline row (the ``completion`` table).

    previous = previous_headline("out/report", as_of, "rn-2026-q4", given=None)   # a dict, or None

Looked for in this order, the first place holding an earlier day wins:

1. ``--previous DIR``: a report folder named by the user;
2. OUT's own Parquet history (daily reports into one folder): its latest report date before this one;
3. the report folders beside OUT (the campaign DAG writes one a day, ``report/<day>/``): the latest day
   before this one.

Only a day of the same campaign counts, and only its one-row ``completion`` partition is read.
"""

from __future__ import annotations

import datetime as dt

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.common import UserError
from pipelines.io.report_files import filesystem

__all__ = ["previous_headline"]

_PART = "as_of="


def _days(report: str) -> list[tuple[dt.date, str]]:
    """(report date, partition folder) of each day of a report folder's ``completion`` table."""
    fs, root = filesystem(report)
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{root.rstrip('/')}/parquet/completion"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    days = []
    for info in infos:
        if info.type == pafs.FileType.Directory and info.base_name.startswith(_PART):
            try:
                days.append((dt.date.fromisoformat(info.base_name[len(_PART) :]), info.path))
            except ValueError:
                continue
    return days


def _siblings(out: str) -> list[str]:
    """The folders beside ``out`` (other days' reports in the DAG's layout)."""
    fs, root = filesystem(out)
    parent = root.rstrip("/").rsplit("/", 1)[0] if "/" in root.rstrip("/") else "."
    try:
        infos = fs.get_file_info(pafs.FileSelector(parent))
    except (FileNotFoundError, NotADirectoryError):
        return []
    scheme = out.split("://", 1)[0] + "://" if "://" in out else ""
    return [scheme + i.path for i in infos if i.type == pafs.FileType.Directory and i.path != root.rstrip("/")]


def _row(report: str, partition: str) -> dict | None:
    fs, _ = filesystem(report)
    try:
        table = pq.read_table(partition, filesystem=fs)
    except (OSError, ValueError):
        return None  # a partition being written or not a report's: no previous day from it
    return table.to_pylist()[0] if table.num_rows else None


def _latest(reports: list[str], as_of: dt.date, campaign_id: str | None) -> dict | None:
    days = sorted(((day, report, part) for report in reports for day, part in _days(report)), reverse=True)
    for day, report, part in days:
        if day >= as_of:
            continue
        row = _row(report, part)
        if row is not None and row.get("campaign_id") == campaign_id:
            return {**row, "report_date": day}
    return None


def previous_headline(out: str, as_of: dt.date, campaign_id: str | None, given: str | None = None) -> dict | None:
    """The headline of the campaign's latest report before ``as_of`` (None when there is none)."""
    if given:
        if not _days(given):  # a mistyped --previous would silently give no change since then
            raise UserError(f"--previous {given} holds no report (no parquet/completion/as_of=... in it)")
        return _latest([given], as_of, campaign_id)
    return _latest([out], as_of, campaign_id) or _latest(_siblings(out), as_of, campaign_id)
