"""The notify output as the report reads it: its run manifests, history files, and the campaign they sent.

    notify = read_notify("out/notify")               # runs (runs/*.json), history and receipt files
    sending_runs(notify)                             # the runs that handed notices over (never a receipts run)
    campaign_id_for(notify, campaign)                # the campaign file's id, else the latest sending run's
    wave_sends(notify, "rn-2026-q4")                 # per wave: lines targeted per channel, SMS segments, cost,
                                                     # the A/B variants and their weights

A notify folder gathers every run: the waves (``mode`` files or pubsub, a
``campaign`` block, jobs handed over) and the receipt runs (``mode``
receipts, no campaign). The campaign is taken only from runs that sent, so a
receipts run recorded after the last wave hides nothing; when the history
holds notices but no run that sent them names a campaign (its manifests gone)
and no campaign file is given, the report stops with one line rather than
credit every registration to no wave. Only manifests are read here, never a row.
"""

from __future__ import annotations

import dataclasses
import os

from pipelines.common import UserError
from pipelines.io.report_files import exists, list_files, read_json_file

__all__ = [
    "NotifyOutput",
    "read_notify",
    "sending_runs",
    "latest_campaign_run",
    "load_campaign_for",
    "campaign_id_for",
    "check_campaign_found",
    "check_notify_matches",
    "wave_sends",
]

SENDING_MODES = ("files", "pubsub")
ANNOUNCED = ("invalid_number", "suppressed", "sms_failed", "call_failed", "not_in_wave")  # left to the announcement


@dataclasses.dataclass
class NotifyOutput:
    folder: str
    history_files: list[str]
    runs: list[dict]  # every run's manifest, oldest first
    receipt_files: list[str] = dataclasses.field(default_factory=list)


def read_notify(folder: str) -> NotifyOutput:
    if not exists(folder):
        raise UserError(f"{folder} does not exist: give the notify output folder")
    runs = []
    for path in list_files(os.path.join(folder, "runs"), ".json", recursive=False) or [
        os.path.join(folder, "manifest.json")
    ]:
        if exists(path):
            runs.append(read_json_file(path))
    if not runs:
        raise UserError(f"{folder} has no notify manifests: give the notify output folder")
    history = list_files(os.path.join(folder, "history", "jobs"), ".parquet", recursive=False)
    receipts = list_files(os.path.join(folder, "history", "receipts"), ".parquet", recursive=False)
    return NotifyOutput(folder, history, runs, receipts)


def _handed_over(run: dict) -> int:
    return sum(int(n) for n in ((run.get("counts") or {}).get("handed_over") or {}).values())


def sending_runs(notify: NotifyOutput) -> list[dict]:
    """The runs that handed notices over (files written or published), oldest first."""
    return [
        r
        for r in notify.runs
        if (r.get("campaign") or {}).get("campaign_id")
        and r.get("mode", "files") in SENDING_MODES
        and _handed_over(r) > 0
    ]


def latest_campaign_run(notify: NotifyOutput) -> dict:
    """The ``campaign`` block of the latest run that sent notices ({} when none did)."""
    sent = sending_runs(notify)
    return sent[-1]["campaign"] if sent else {}


def load_campaign_for(path: str | None, notify: NotifyOutput | None):
    """The campaign file given, else the one the latest sending notify run used (if still there)."""
    from pipelines.io.report_files import read_bytes
    from transforms.notify.campaign import CampaignError, parse_campaign

    if path is None and notify is not None:
        source = latest_campaign_run(notify).get("source")
        path = source if source and exists(source) else None
    if path is None:
        return None
    if not exists(path):
        raise UserError(f"campaign {path}: no such file")
    try:
        return parse_campaign(read_bytes(path), path)
    except CampaignError as exc:
        raise UserError(str(exc)) from None


def campaign_id_for(notify: NotifyOutput | None, campaign) -> str | None:
    """The campaign whose notices count: the campaign file's, else the latest sending run's (never a mix)."""
    if campaign is not None:
        return campaign.campaign_id
    return latest_campaign_run(notify).get("campaign_id") if notify is not None else None


def check_campaign_found(notify: NotifyOutput | None, campaign_id: str | None) -> None:
    """Notices without a campaign to count them for: one line, not a report that credits them to nothing."""
    if notify is not None and notify.history_files and not campaign_id:
        raise UserError(
            f"the notify history at {notify.folder} holds notices, but no notify run there that sent them names "
            "its campaign (receipt runs name none; are runs/*.json gone?): give --campaign FILE"
        )


def check_notify_matches(notify: NotifyOutput | None, scan, campaign) -> None:
    """The notices belong to this campaign and were planned from this scan."""
    if notify is None or campaign is None:
        return
    runs = [r for r in notify.runs if (r.get("campaign") or {}).get("campaign_id") == campaign.campaign_id]
    if not runs:
        ids = sorted({(r.get("campaign") or {}).get("campaign_id") for r in notify.runs} - {None})
        raise UserError(
            f"the notify output at {notify.folder} holds no run of campaign {campaign.campaign_id} "
            f"(it holds {', '.join(ids) or 'none'}): give this campaign's notify folder or file"
        )
    for run in runs:
        rows = run.get("inputs", {}).get("classified_rows")
        if run.get("campaign", {}).get("wave") == 1 and rows is not None and rows != scan.rows:
            raise UserError(
                f"wave 1 of {campaign.campaign_id} was planned from a scan of {rows:,} lines, but the scan "
                f"given has {scan.rows:,}: give the scan the campaign started from"
            )


def _variants(run: dict) -> list[tuple[str, float]]:
    """The wave's A/B template variants as the run's manifest names them ({name, weight} each)."""
    listed = (run.get("campaign") or {}).get("variants") or (run.get("wave") or {}).get("variants") or []
    return [(str(v["name"]), float(v.get("weight", 1))) for v in listed if isinstance(v, dict) and v.get("name")]


def wave_sends(notify: NotifyOutput | None, campaign_id: str | None) -> dict[int, dict]:
    """Per wave of the campaign, over its sending runs: lines targeted per channel, SMS segments and cost
    (each run plans only lines no earlier run sent the wave to, so the runs add up), and the variants
    (the latest run's)."""
    waves: dict[int, dict] = {}
    for run in sending_runs(notify) if notify is not None else []:
        block = run["campaign"]
        if block.get("campaign_id") != campaign_id or block.get("wave") is None:
            continue
        counts, outcomes = run.get("counts") or {}, (run.get("counts") or {}).get("outcomes") or {}
        wave = waves.setdefault(int(block["wave"]), {"targeted": {}, "segments": 0, "cost": 0.0, "variants": []})
        planned = {
            "sms": outcomes.get("sms", 0),
            "call": outcomes.get("call", 0),
            "announcement": sum(outcomes.get(o, 0) for o in ANNOUNCED),
        }
        for channel, n in planned.items():
            wave["targeted"][channel] = wave["targeted"].get(channel, 0) + int(n)
        wave["segments"] += int(counts.get("segments", 0))
        wave["cost"] = round(wave["cost"] + float(counts.get("cost", 0.0)), 4)
        wave["variants"] = _variants(run) or wave["variants"]
    return waves
