"""What ``backfill report`` knows before its job: the inputs listed and checked, the campaign, the small context.

    read = read_inputs(args)                       # scan, live state, notify output, campaign (one-line errors)
    facts = campaign_facts(read.campaign, read.scan.as_of)
    check_dates(read, as_of, facts, args)          # inputs that do not belong together: refused
    warnings = stale_warnings(read.merge, as_of)   # a stale merge; an --earlier-merges pattern matching none
    context = report_context(read, policy, previous)

Only manifests, summaries and Parquet footers are read here (``pipelines/io/report_files.py``,
``report_notify.py``, ``report_previous.py``); the rows are the job's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, NamedTuple

from pipelines.common import UserError
from pipelines.io import report_files, report_notify
from pipelines.io.lineage import check_same_base
from transforms.compliance.report import CampaignFacts, ReportContext

if TYPE_CHECKING:
    from transforms.notify.campaign import Campaign
    from transforms.scan.policy import Policy

__all__ = [
    "ReportPlan",
    "ReportInputs",
    "read_inputs",
    "campaign_facts",
    "check_dates",
    "stale_warnings",
    "report_context",
]

STALE_AFTER_DAYS = 1  # a merge older than the report date by more than this is said on the page and at exit
MAX_REPORT_DAYS = 3660  # ten years from the scan: the daily table and curve hold a row per day


@dataclasses.dataclass(frozen=True)
class ReportPlan:
    """The inputs as listed by the launcher, and how the joins are cut (the Beam job's and the in-process run's)."""

    scan: report_files.ScanOutput
    merge: report_files.MergeOutput | None
    notify: report_notify.NotifyOutput | None
    campaign_id: str | None
    timezone: str
    past_on: bool
    n_buckets: int


class ReportInputs(NamedTuple):
    """The inputs as listed: the outputs of scan, merge (compact, retention) and notify, and the campaign."""

    scan: report_files.ScanOutput
    merge: report_files.MergeOutput | None
    notify: report_notify.NotifyOutput | None
    campaign: Campaign | None
    campaign_id: str | None
    scan_summary: dict


def read_inputs(args) -> ReportInputs:
    """List the scan, live state and notify outputs, load the campaign; refuse notices of another base or
    campaign, and notices whose campaign cannot be found."""
    scan = report_files.read_scan(args.scan)
    merge = report_files.read_merge(args.merge, args.earlier_merges) if args.merge else None
    if merge is not None:  # a merge of another base: its lines counted complete, or not, by line id alone
        check_same_base("report", args.scan, args.merge, changed=args.base_changed)
    notify = report_notify.read_notify(args.notify) if args.notify else None
    campaign = report_notify.load_campaign_for(args.campaign, notify)
    report_notify.check_notify_matches(notify, scan, campaign)
    campaign_id = report_notify.campaign_id_for(notify, campaign)
    report_notify.check_campaign_found(notify, campaign_id)
    return ReportInputs(scan, merge, notify, campaign, campaign_id, report_files.read_scan_summary(args.scan))


def campaign_facts(campaign: Campaign | None, scan_as_of: dt.date) -> CampaignFacts | None:
    """The campaign's time zone, deadline and waves (None without a campaign file: the job finds the waves)."""
    if campaign is None:
        return None
    waves = tuple((w.wave, w.start) for w in sorted(campaign.waves.values(), key=lambda w: w.wave))
    return CampaignFacts(
        campaign.campaign_id,
        campaign.timezone,
        campaign.deadline,
        waves,
        min([scan_as_of, *(start for _, start in waves)]),
    )


def check_dates(read: ReportInputs, as_of: dt.date, facts: CampaignFacts | None, args) -> None:
    scan_as_of, merge_as_of = read.scan.as_of, read.merge.as_of if read.merge else None
    first_wave = min((start for _, start in facts.waves), default=None) if facts else None
    if first_wave is not None and facts.campaign_id and scan_as_of > first_wave:
        raise UserError(
            f"the scan at {args.scan} is as of {scan_as_of}, after wave 1 of {facts.campaign_id} started "
            f"({first_wave}): give the campaign's first scan"
        )
    if merge_as_of is not None and merge_as_of < scan_as_of:
        raise UserError(
            f"the merge at {args.merge} is as of {merge_as_of}, before the scan ({scan_as_of}): "
            "give the latest merge of this campaign"
        )
    if merge_as_of is not None and as_of < merge_as_of:
        raise UserError(f"--as-of {as_of} is before the merge's as-of date {merge_as_of}")
    if (as_of - scan_as_of).days > MAX_REPORT_DAYS:
        # by_day holds a row per day from the scan on: 9999-12-31 (a typo) took over 11 GB and never ended
        which = "--as-of" if args.as_of else "the merge's as-of date"
        raise UserError(
            f"{which} {as_of} is {(as_of - scan_as_of).days:,} days after the scan ({scan_as_of}): a report covers "
            f"at most {MAX_REPORT_DAYS:,} days from the campaign's first scan; check the date"
        )


def stale_warnings(merge: report_files.MergeOutput | None, as_of: dt.date) -> tuple[str, ...]:
    """The warnings about the merges read: the live state older than the report date by more than a day; an
    ``--earlier-merges`` pattern that found no merge before it."""
    if merge is None:
        return ()
    unmatched = tuple(
        f"--earlier-merges {pattern} matches no merge output: earlier days' registrations and dead letters are "
        "not in the agents' tables; check the pattern."
        for pattern in merge.unmatched
    )
    if (as_of - merge.as_of).days <= STALE_AFTER_DAYS:
        return unmatched
    days = (as_of - merge.as_of).days
    return (
        f"The {merge.step} output at {merge.folder} is as of {merge.as_of}, {days:,} days before the report date "
        f"({as_of}): registrations since then are not counted; give the latest merge.",
        *unmatched,
    )


def report_context(read: ReportInputs, policy: Policy, previous: dict | None) -> ReportContext:
    """The small facts the tables need beside the job's: region names, what the waves sent, the scan's
    data quality, the previous report's headline."""
    return ReportContext(
        divisions=policy.code_tables.divisions,
        sends=report_notify.wave_sends(read.notify, read.campaign_id),
        scan_summary=read.scan_summary,
        previous=previous,
        merge_as_of=read.merge.as_of if read.merge else None,
    )
