"""The notification planner: which line gets which notice in a wave (no Beam).

Input: Arrow batches of classified lines (``schemas/classified_line.avsc``;
only line_id, msisdn, line_type, region and needs_registration are read), and
for the same lines, when there are any: lines registered since the scan, the
notification history, delivery receipts, and the do-not-SMS numbers.

Every targeted line (``needs_registration``) gets exactly one outcome, checked
in this order, so the counts add up to the lines targeted:

====================  ==================================================================
REGISTERED            COMPLETE in the merged base given with ``--registered``
ALREADY_SENT          a job of this campaign and wave already went to the line
RECENTLY_NOTIFIED     a job of any other campaign or wave reached it within
                      ``min_days_between`` days of this wave's first send day
SMS                   MOBILE and DATA_CARD lines with a valid number
CALL                  FIXED lines with a valid number; MOBILE lines whose SMS
                      failed before (a receipt) or that are on the do-not-SMS list,
                      when the wave makes calls (route SMS_FAILED / SMS_SUPPRESSED)
INVALID_NUMBER        no valid number for the channel: counted in the announcement
SUPPRESSED            on the do-not-SMS list and no call possible: announcement
SMS_FAILED            its SMS failed before and no call possible: announcement
CALL_FAILED           its call failed before: announcement
NOT_IN_WAVE           the wave does not use the line's channel: announcement
====================  ==================================================================

Numbers are validated here, vectorised (docs/regulation.md §3): mobile
``^1[3-9]\\d{9}$``; data cards also the 13-digit IoT numbers (``14x``,
``106x``), which phone libraries reject; fixed lines ``0`` + area code +
7-8 digits. The scan removes ``+86`` and with it a fixed line's trunk ``0``
(E.164 drops it); the planner puts the ``0`` back for FIXED lines.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.notify.schedule import EPOCH

__all__ = [
    "PlanContext",
    "Plan",
    "plan_lines",
    "latest_status",
    "normalise_numbers",
    "OUTCOMES",
    "MOBILE_RE",
    "DATA_CARD_RE",
    "FIXED_RE",
    "PLAN_COLUMNS",
    "ANNOUNCED",
]

MOBILE_RE = r"^1[3-9]\d{9}$"
DATA_CARD_RE = r"^(?:1[3-9]\d{9}|1(?:4\d|06)\d{10})$"
FIXED_RE = r"^0(?:10|2\d|[3-9]\d{2})\d{7,8}$"
PLAN_COLUMNS = ("line_id", "msisdn", "line_type", "region", "needs_registration")

OUTCOMES = (
    "PENDING",
    "REGISTERED",
    "ALREADY_SENT",
    "RECENTLY_NOTIFIED",
    "SMS",
    "CALL",
    "INVALID_NUMBER",
    "SUPPRESSED",
    "SMS_FAILED",
    "CALL_FAILED",
    "NOT_IN_WAVE",
)
_O = {name: np.int8(i) for i, name in enumerate(OUTCOMES)}
_CHANNELS = pa.array(["call", "sms"], pa.string())  # by outcome == SMS
_ROUTES = pa.array(["PRIMARY", "SMS_FAILED", "SMS_SUPPRESSED"], pa.string())
ANNOUNCED = ("INVALID_NUMBER", "SUPPRESSED", "SMS_FAILED", "CALL_FAILED", "NOT_IN_WAVE")


@dataclasses.dataclass(frozen=True)
class PlanContext:
    """What the planner needs from the campaign and the command line."""

    campaign_id: str
    wave: int
    channels: tuple[str, ...]
    first_day: dt.date  # the wave's first send day: max(wave start, as-of)
    min_days_between: int


@dataclasses.dataclass
class Plan:
    jobs: pa.Table  # line jobs: line_id, msisdn, line_type, region, channel, route
    regions: pa.Table  # region, lines, unreachable, sms, call
    counts: dict


def _in(values: pa.Array, members) -> np.ndarray:
    if members is None or len(members) == 0:
        return np.zeros(len(values), bool)
    return pc.fill_null(pc.is_in(values, value_set=members), False).to_numpy(zero_copy_only=False)


def _matches(values: pa.Array, pattern: str) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(values, pattern), False).to_numpy(zero_copy_only=False)


def normalise_numbers(msisdn: pa.Array, line_type: pa.Array) -> pa.Array:
    """Restore the trunk ``0`` of FIXED numbers that arrived in E.164 form."""
    fixed = pc.fill_null(pc.equal(line_type, "FIXED"), False)
    trunk = pc.binary_join_element_wise("0", msisdn, "")
    restore = pc.and_(
        pc.and_(fixed, pc.invert(pc.fill_null(pc.starts_with(msisdn, "0"), True))),
        pc.fill_null(pc.match_substring_regex(trunk, FIXED_RE), False),
    )
    return pc.if_else(restore, trunk, msisdn)


def latest_status(receipts: pa.Table | None) -> pa.Table | None:
    """The status of each job: its latest receipt by ``at``; DELIVERED wins a tie."""
    if receipts is None or receipts.num_rows == 0:
        return None
    delivered = pc.equal(receipts.column("status"), "DELIVERED").cast(pa.int8())
    ranked = receipts.select(["job_id", "status", "at"]).append_column("_rank", delivered)
    ranked = ranked.sort_by([("job_id", "ascending"), ("at", "ascending"), ("_rank", "ascending")])
    ids = ranked.column("job_id").to_numpy(zero_copy_only=False)
    last = np.r_[ids[1:] != ids[:-1], True] if len(ids) else np.zeros(0, bool)
    return ranked.filter(pa.array(last)).select(["job_id", "status"])


def _history_sets(ctx: PlanContext, history: pa.Table | None, receipts: pa.Table | None):
    """(already sent, recently notified, sms failed, call failed) line-id sets from the history."""
    if history is None or history.num_rows == 0:
        return None, None, None, None
    history = history.filter(pc.is_valid(history.column("line_id")))
    status = latest_status(receipts)
    failed = np.zeros(history.num_rows, bool)
    if status is not None:
        failed_ids = status.filter(pc.equal(status.column("status"), "FAILED")).column("job_id")
        failed = _in(history.column("job_id"), failed_ids)
    campaign = pc.equal(history.column("campaign_id"), ctx.campaign_id).to_numpy(zero_copy_only=False)
    this_wave = campaign & pc.equal(history.column("wave"), ctx.wave).to_numpy(zero_copy_only=False)
    days = history.column("send_day").cast(pa.int32()).to_numpy(zero_copy_only=False)
    first = (ctx.first_day - EPOCH).days
    recent = ~this_wave & ~failed & (np.abs(days - first) < ctx.min_days_between)
    line_ids = history.column("line_id")
    channel = history.column("channel")

    def ids(mask):
        return pc.unique(line_ids.filter(pa.array(mask)))

    sms_failed = campaign & failed & pc.equal(channel, "sms").to_numpy(zero_copy_only=False)
    call_failed = campaign & failed & pc.equal(channel, "call").to_numpy(zero_copy_only=False)
    return ids(this_wave), ids(recent), ids(sms_failed), ids(call_failed)


def _settle(outcome: np.ndarray, mask: np.ndarray, name: str) -> None:
    """Give ``name`` to the lines of ``mask`` that have no outcome yet (the first outcome wins)."""
    outcome[(outcome == 0) & mask] = _O[name]


def _settle_channels(
    outcome: np.ndarray,
    ctx: PlanContext,
    line_id: pa.Array,
    line_type: pa.Array,
    msisdn: pa.Array,
    sms_failed,
    call_failed,
    suppressed,
) -> tuple[np.ndarray, np.ndarray]:
    """The channel outcomes (SMS, CALL and the announcement's reasons) of the lines still open.

    Returns the route of each line (0 PRIMARY, 1 SMS_FAILED, 2 SMS_SUPPRESSED) and
    whether its number is on the do-not-SMS list.
    """
    lt = line_type.to_numpy(zero_copy_only=False)
    mobile, data, fixed = lt == "MOBILE", lt == "DATA_CARD", lt == "FIXED"
    valid_mobile = _matches(msisdn, MOBILE_RE)
    valid_sms = np.where(data, _matches(msisdn, DATA_CARD_RE), valid_mobile)
    valid_fixed = _matches(msisdn, FIXED_RE)
    failed_sms, failed_call = _in(line_id, sms_failed), _in(line_id, call_failed)
    on_list = _in(msisdn, suppressed) & (mobile | data)
    can_sms, can_call = "sms" in ctx.channels, "call" in ctx.channels
    route = np.zeros(len(outcome), np.int8)  # 0 PRIMARY, 1 SMS_FAILED, 2 SMS_SUPPRESSED

    # FIXED lines: a call, unless their last call failed.
    _settle(outcome, fixed & failed_call, "CALL_FAILED")
    _settle(outcome, fixed & (not can_call), "NOT_IN_WAVE")
    _settle(outcome, fixed & valid_fixed, "CALL")
    # MOBILE and DATA_CARD lines that cannot have an SMS fall to a call (MOBILE) or the announcement.
    no_sms = (mobile | data) & (failed_sms | on_list)
    fallback_call = no_sms & mobile & can_call & ~failed_call & valid_mobile & (outcome == 0)
    route[fallback_call] = np.where(failed_sms[fallback_call], 1, 2)
    _settle(outcome, fallback_call, "CALL")
    _settle(outcome, no_sms & failed_sms, "SMS_FAILED")
    _settle(outcome, no_sms, "SUPPRESSED")
    _settle(outcome, (mobile | data) & (not can_sms), "NOT_IN_WAVE")
    _settle(outcome, (mobile | data) & valid_sms, "SMS")
    _settle(outcome, np.ones(len(outcome), bool), "INVALID_NUMBER")  # whatever is left, unknown line types included
    return route, on_list


def _line_jobs(lines: pa.Table, msisdn: pa.Array, outcome: np.ndarray, route: np.ndarray) -> pa.Table:
    """One job per line whose outcome is SMS or CALL: its channel and route."""
    jobs_mask = (outcome == _O["SMS"]) | (outcome == _O["CALL"])
    picked = pa.array(jobs_mask)
    channel = _CHANNELS.take(pa.array((outcome[jobs_mask] == _O["SMS"]).astype(np.int8)))
    route_names = _ROUTES.take(pa.array(route[jobs_mask]))
    return pa.table(
        {
            "line_id": lines.column("line_id").filter(picked),
            "msisdn": msisdn.filter(picked),
            "line_type": lines.column("line_type").filter(picked),
            "region": lines.column("region").filter(picked),
            "channel": channel,
            "route": route_names,
        }
    )


def plan_lines(
    lines: pa.Table,
    ctx: PlanContext,
    *,
    registered: pa.Array | None = None,
    history: pa.Table | None = None,
    receipts: pa.Table | None = None,
    suppressed: pa.Array | None = None,
) -> Plan:
    """Decide every targeted line's outcome; returns the line jobs, region tallies and counts.

    Args:
      lines: classified lines (at least PLAN_COLUMNS).
      ctx: the campaign, wave and dates.
      registered: line ids registered since the scan.
      history: jobs already handed over (``schemas/notify_history.avsc``).
      receipts: delivery receipts of those jobs (``schemas/notify_receipt.avsc``).
      suppressed: do-not-SMS numbers, normalised like ``msisdn``.
    """
    if "needs_registration" in lines.column_names:
        lines = lines.filter(pc.fill_null(lines.column("needs_registration"), False))
    n = lines.num_rows
    line_id, line_type = lines.column("line_id"), lines.column("line_type")
    msisdn = normalise_numbers(lines.column("msisdn"), line_type)
    outcome = np.zeros(n, np.int8)
    _settle(outcome, _in(line_id, registered), "REGISTERED")
    already, recent, sms_failed, call_failed = _history_sets(ctx, history, receipts)
    _settle(outcome, _in(line_id, already), "ALREADY_SENT")
    _settle(outcome, _in(line_id, recent), "RECENTLY_NOTIFIED")
    route, on_list = _settle_channels(outcome, ctx, line_id, line_type, msisdn, sms_failed, call_failed, suppressed)
    jobs = _line_jobs(lines, msisdn, outcome, route)
    counts = _counts(outcome, on_list, route, n)
    return Plan(jobs, _regions(lines.column("region"), outcome), counts)


def _counts(outcome: np.ndarray, on_list: np.ndarray, route: np.ndarray, n: int) -> dict:
    tally = np.bincount(outcome, minlength=len(OUTCOMES))
    named = {name.lower(): int(tally[i]) for i, name in enumerate(OUTCOMES) if i}
    calls = outcome == _O["CALL"]
    return {
        "targeted": n,
        "outcomes": named,
        "suppressed_lines": int(on_list.sum()),
        "call_fallback": {
            "SMS_FAILED": int((calls & (route == 1)).sum()),
            "SMS_SUPPRESSED": int((calls & (route == 2)).sum()),
        },
        "to_announcement": int(sum(named[a.lower()] for a in ANNOUNCED)),
    }


def _regions(region: pa.Array, outcome: np.ndarray) -> pa.Table:
    """Per region: lines still to register, of which unreachable this wave, SMS and calls."""
    keep = outcome != _O["REGISTERED"]
    codes = np.array([_O[a] for a in ANNOUNCED])
    table = pa.table(
        {
            "region": region,
            "lines": pa.array(keep.astype(np.int64)),
            "unreachable": pa.array(np.isin(outcome, codes).astype(np.int64)),
            "sms": pa.array((outcome == _O["SMS"]).astype(np.int64)),
            "call": pa.array((outcome == _O["CALL"]).astype(np.int64)),
        }
    ).filter(pa.array(keep))
    return sum_regions(table)


def sum_regions(table: pa.Table) -> pa.Table:
    """Add up region tallies (rows with the same region, null included)."""
    cols = ["lines", "unreachable", "sms", "call"]
    if table.num_rows == 0:
        return pa.table({"region": pa.array([], pa.string()), **{c: pa.array([], pa.int64()) for c in cols}})
    grouped = table.group_by("region", use_threads=False).aggregate([(c, "sum") for c in cols])
    return pa.table({"region": grouped.column("region"), **{c: grouped.column(f"{c}_sum") for c in cols}})
