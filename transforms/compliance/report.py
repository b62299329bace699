"""Completion analytics over the scan, notify and merge outputs: the report's tables, from its facts.

    facts = ...the job's added-up facts (report_groups.FACTS)...
    tables = report_tables(facts, CampaignFacts, as_of, agent thresholds, TimeToRegister(...))

The per-line work (joining the needed lines with the merged base and the
notices, by bucket of line ids) is ``report_lines.py`` and
``report_agents.py``, run by the Beam job of ``report_facts.py``; it leaves
small tables of counts (the facts) from which this module makes every table
the report shows but the past-deadline list, which the job writes line by
line. The definitions:

- **needed**: lines with ``needs_registration`` at the campaign's first scan.
- **complete**: needed lines whose ``identity_status`` in the merged base is
  COMPLETE now; the completion rate is complete / needed.
- **registered**: needed lines the merge applied a registration event to
  (``registration_event_id``); the day is ``registered_at`` in the campaign's
  time zone. A needed line that is COMPLETE without an event (the operator
  fixed the base) counts as complete on the first day of the curve.
- **notified in wave w**: needed lines with a line job (SMS or call) of wave w
  in the notify history of this campaign; announcements reach regions, not lines.
- **conversion**: a registration is credited to the latest wave whose notice
  was sent at or before ``registered_at``; earlier registrations are credited
  to no wave (wave 0, "before any notice").
- **time to register**: ``registered_at`` minus the line's first notice, for
  lines registered after a notice (median and 90th percentile, in hours, exact:
  ``report_quantiles.py``).
- **backlog**: needed lines not COMPLETE now, by the reasons the merged base
  holds for them (a line with several reasons counts under each).
- **past the deadline**: after the campaign's deadline, once its last wave has
  started, the backlog lines that are not TERMINATED, by region.
- **agents** (Art. 14): per agent, registrations taken (distinct events with
  its agent_id), how many failed the policy or came back as dead letters, the
  lines it opened (``agent_id`` of the scan) and how many carry a cross-record
  flag; agents over the policy's thresholds are listed with that evidence
  (``report_agents.py``; the facts and group counts: ``report_groups.py``).
- **funnel** per wave and channel (targeted, sent, delivered, failed, fell back
  to a call, registered; SMS segments and cost): ``report_funnel.py``; per A/B
  template **variant**, with the 95 % interval and the test: ``report_variants.py``.
- **regions** with their names, rolled up to **provinces**: ``report_regions.py``;
  the scan's **data quality**: ``report_quality.py``.
- **change since the previous report**: this report's headline figures minus
  those of the campaign's latest report before this date (``pipelines/io/report_previous.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Mapping, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.compliance.report_agents import POLICY_FAILURES, agents_table
from transforms.compliance.report_funnel import funnel_table, wave_totals
from transforms.compliance.report_groups import empty_fact, ratio
from transforms.compliance.report_lines import NO_WAVE, PAST_DEADLINE_SCHEMA
from transforms.compliance.report_quality import scan_quality
from transforms.compliance.report_regions import by_province, by_region
from transforms.compliance.report_variants import variants_table

__all__ = [
    "CampaignFacts",
    "ReportContext",
    "TimeToRegister",
    "report_tables",
    "headline_figures",
    "TABLES",
    "HEADLINE_SCHEMA",
    "PAST_DEADLINE_SCHEMA",
    "POLICY_FAILURES",
    "NO_WAVE",
]

# name -> one line saying what the table holds (docs/report.md "The tables" and the HTML use these)
TABLES = {
    "completion": "the campaign's headline figures (one row), and their change since the previous report",
    "by_region": "per region (with its name and province), largest backlog first: needed, complete, remaining...",
    "by_province": "the regions rolled up to provinces, largest backlog first",
    "by_line_type": "needed, complete and remaining lines per line type",
    "by_channel": "registrations of needed lines per registration channel",
    "by_wave": "lines notified per wave and the registrations credited to it",
    "funnel": "per wave and channel: targeted, sent, delivered, failed, fell back to a call, registered; SMS cost",
    "by_variant": "per wave and A/B template variant: sent, registered, conversion with its 95 % interval, the test",
    "by_day": "registrations per day and the completion curve",
    "backlog_by_reason": "needed lines not COMPLETE now, per reason",
    "agents": "per agent, what needs attention first: registrations taken and failed, lines opened and flagged",
    "scan_quality": "the scan's data quality: identity status, reasons, flags, dead letters by reason",
    "past_deadline": "lines still unregistered after the deadline and the last wave (the escalation list)",
}


# Typed, so that every day's partition has the same schema (a day without a figure has a null, not a null type).
# The report's date is ``report_date``: ``as_of`` is the partition key of the Parquet history.
HEADLINE_SCHEMA = pa.schema(
    [
        ("campaign_id", pa.string()),
        ("report_date", pa.date32()),
        ("needed", pa.int64()),
        ("complete", pa.int64()),
        ("completion_rate", pa.float64()),
        ("registered", pa.int64()),
        ("complete_without_event", pa.int64()),
        ("remaining", pa.int64()),
        ("not_in_merge", pa.int64()),
        ("notified", pa.int64()),
        ("hours_to_register_median", pa.float64()),
        ("hours_to_register_p90", pa.float64()),
        ("registrations_timed", pa.int64()),
        ("deadline", pa.date32()),
        ("past_deadline", pa.int64()),
        ("sms_segments", pa.int64()),
        ("sms_cost", pa.float64()),
        ("merge_as_of", pa.date32()),
        ("merge_age_days", pa.int64()),
        ("previous_report_date", pa.date32()),
        ("complete_change", pa.int64()),
        ("completion_rate_change", pa.float64()),
        ("registered_change", pa.int64()),
        ("remaining_change", pa.int64()),
        ("past_deadline_change", pa.int64()),
    ]
)
# headline figure -> its change since the previous report
CHANGES = {
    "complete": "complete_change",
    "completion_rate": "completion_rate_change",
    "registered": "registered_change",
    "remaining": "remaining_change",
    "past_deadline": "past_deadline_change",
}


@dataclasses.dataclass(frozen=True)
class CampaignFacts:
    campaign_id: str | None
    timezone: str
    deadline: dt.date | None
    waves: tuple[tuple[int, dt.date], ...]  # (wave, start)
    first_day: dt.date  # the curve's first day

    @property
    def last_wave_start(self) -> dt.date | None:
        return max((start for _, start in self.waves), default=None)

    def past_deadline(self, as_of: dt.date) -> bool:
        last = self.last_wave_start
        return self.deadline is not None and as_of > self.deadline and (last is None or as_of >= last)


@dataclasses.dataclass(frozen=True)
class ReportContext:
    """What the tables need beside the facts; small, known before the job (read from manifests and summaries)."""

    divisions: str = ""  # the policy's GB/T 2260 table (region names)
    sends: Mapping[int, Mapping] = dataclasses.field(default_factory=dict)  # per wave: report_notify.wave_sends
    scan_summary: Mapping = dataclasses.field(default_factory=dict)  # the scan's summary.json
    previous: Mapping | None = None  # the previous report's headline row
    merge_as_of: dt.date | None = None


class TimeToRegister(NamedTuple):
    median: float | None  # hours, rounded to 3 places
    p90: float | None
    timed: int  # registrations after a notice


def _fact(facts: Mapping[str, pa.Table], name: str) -> pa.Table:
    return facts.get(name, empty_fact(name))


def headline_figures(facts: Mapping[str, pa.Table]) -> dict[str, int]:
    """The headline counts of the facts (zeros when no line was counted)."""
    row = _fact(facts, "headline").to_pylist()
    keys = _fact(facts, "headline").column_names
    return {k: int(row[0][k]) if row else 0 for k in keys}


def _rated(table: pa.Table) -> pa.Table:
    table = table.append_column("remaining", pc.subtract(table["needed"], table["complete"]))
    return table.append_column("completion_rate", ratio(table["complete"], table["needed"]))


def _by_line_type(facts) -> pa.Table:
    return _rated(_fact(facts, "line_type")).sort_by([("line_type", "ascending")])


def _by_channel(facts) -> pa.Table:
    grouped = _fact(facts, "channel")
    total = int(pc.sum(grouped["registrations"]).as_py() or 0)
    share = ratio(grouped["registrations"], pa.array(np.full(grouped.num_rows, total, np.int64)))
    return grouped.append_column("share", share).sort_by([("registrations", "descending"), ("channel", "ascending")])


def _by_wave(facts, waves) -> pa.Table:
    notified = _fact(facts, "wave_notified").to_pydict()
    notified = dict(zip(notified["wave"], notified["notified"]))
    credited = _fact(facts, "wave_registered").to_pydict()
    credited = dict(zip(credited["wave"], credited["registered_after"]))
    numbers = sorted({w for w, _ in waves} | set(notified) | set(credited))
    table = pa.table(
        {
            "wave": pa.array(numbers, pa.int32()),
            "notified": pa.array([int(notified.get(w, 0)) for w in numbers], pa.int64()),
            "registered_after": pa.array([int(credited.get(w, 0)) for w in numbers], pa.int64()),
        }
    )
    return table.append_column("conversion", ratio(table["registered_after"], table["notified"]))


def _by_day(facts, head: dict, campaign: CampaignFacts, as_of: dt.date) -> pa.Table:
    counted = _fact(facts, "day").to_pydict()
    per_day = dict(zip(counted["day"], counted["registrations"]))
    without_event = head["complete"] - head["registered"]
    first = min([campaign.first_day, *per_day]) if per_day else campaign.first_day
    last = max([as_of, *per_day]) if per_day else as_of
    span = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    registrations = np.array([per_day.get(d, 0) for d in span], np.int64)
    cumulative = np.cumsum(registrations) + without_event
    needed = head["needed"]
    rate = cumulative / needed if needed else np.full(len(span), np.nan)
    return pa.table(
        {
            "day": pa.array(span, pa.date32()),
            "registrations": registrations,
            "complete": cumulative,
            "completion_rate": pa.array(np.round(rate, 6), mask=np.isnan(rate)),
        }
    )


def _backlog(facts) -> pa.Table:
    return _fact(facts, "backlog").sort_by([("kind", "ascending"), ("lines", "descending"), ("code", "ascending")])


def _change(headline: dict, previous: Mapping | None) -> dict:
    """The headline figures' change since the previous report (nulls without one)."""
    if not previous:
        return {"previous_report_date": None, **{column: None for column in CHANGES.values()}}
    out = {"previous_report_date": previous.get("report_date")}
    for figure, column in CHANGES.items():
        now, then = headline.get(figure), previous.get(figure)
        change = None if now is None or then is None else now - then
        out[column] = round(change, 6) if isinstance(change, float) else change
    return out


def _headline(head: dict, campaign: CampaignFacts, as_of: dt.date, timing: TimeToRegister, context) -> dict:
    needed, complete, registered = head["needed"], head["complete"], head["registered"]
    merge_as_of = context.merge_as_of
    headline = {
        "campaign_id": campaign.campaign_id,
        "report_date": as_of,
        "needed": needed,
        "complete": complete,
        "completion_rate": round(complete / needed, 6) if needed else None,
        "registered": registered,
        "complete_without_event": complete - registered,
        "remaining": needed - complete,
        "not_in_merge": head["not_in_merge"],
        "notified": head["notified"],
        "hours_to_register_median": timing.median,
        "hours_to_register_p90": timing.p90,
        "registrations_timed": timing.timed,
        "deadline": campaign.deadline,
        "past_deadline": head["past_deadline"],
        "merge_as_of": merge_as_of,
        "merge_age_days": (as_of - merge_as_of).days if merge_as_of else None,
    }
    return {**headline, **_change(headline, context.previous)}


def report_tables(
    facts: Mapping[str, pa.Table],
    campaign: CampaignFacts,
    as_of: dt.date,
    agent_thresholds: Mapping[str, float],
    timing: TimeToRegister,
    context: ReportContext | None = None,
) -> dict[str, pa.Table]:
    """Every table of the report but the past-deadline list (written by the job), from the facts."""
    context = context or ReportContext()
    head = headline_figures(facts)
    funnel = funnel_table(_fact(facts, "wave_channel"), context.sends)
    headline = {**_headline(head, campaign, as_of, timing, context), **wave_totals(funnel)}
    regions = by_region(_fact(facts, "region"), context.divisions)
    planned = {wave: send.get("variants") or () for wave, send in context.sends.items()}
    return {
        "completion": pa.Table.from_pylist([headline], schema=HEADLINE_SCHEMA),
        "by_region": regions,
        "by_province": by_province(regions, context.divisions),
        "by_line_type": _by_line_type(facts),
        "by_channel": _by_channel(facts),
        "by_wave": _by_wave(facts, campaign.waves),
        "funnel": funnel,
        "by_variant": variants_table(_fact(facts, "wave_variant"), planned),
        "by_day": _by_day(facts, head, campaign, as_of),
        "backlog_by_reason": _backlog(facts),
        "agents": agents_table(facts, agent_thresholds),
        "scan_quality": scan_quality(context.scan_summary),
    }
