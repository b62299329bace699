"""Completion analytics over the scan, notify and merge outputs: Arrow tables in, Arrow tables out.

    inputs = ReportInputs(classified=..., merged=..., history=..., events=..., dead_letters=...)
    tables = completion_tables(inputs, Campaign facts, as_of, agent thresholds)

Every figure the report shows is one of these tables; ``pipelines/report.py``
reads the inputs (projected columns only, never an identity value) and writes
the tables as Parquet, CSV and HTML. The definitions:

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
  lines registered after a notice (median and 90th percentile, in hours).
- **backlog**: needed lines not COMPLETE now, by the reasons the merged base
  holds for them (a line with several reasons counts under each).
- **past the deadline**: after the campaign's deadline, once its last wave has
  started, the backlog lines that are not TERMINATED, by region.
- **agents** (Art. 14): per agent, registrations taken (distinct events with
  its agent_id), how many failed the policy or came back as dead letters, the
  lines it opened (``agent_id`` of the scan) and how many carry a cross-record
  flag; agents over the policy's thresholds are listed with that evidence
  (``report_agents.py``; the group counts all tables share: ``report_groups.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.compliance.report_agents import POLICY_FAILURES, agents_table
from transforms.compliance.report_groups import count_true, first_per_key, group_sums, ratio

__all__ = ["ReportInputs", "CampaignFacts", "completion_tables", "first_per_key", "TABLES", "POLICY_FAILURES"]

NO_WAVE = 0

# name -> one line saying what the table holds (docs/report.md "The tables" and the HTML use these)
TABLES = {
    "completion": "the campaign's headline figures (one row)",
    "by_region": "needed, complete, registered, remaining and past-deadline lines per region",
    "by_line_type": "needed, complete and remaining lines per line type",
    "by_channel": "registrations of needed lines per registration channel",
    "by_wave": "the wave funnel: lines notified per wave and the registrations credited to it",
    "by_day": "registrations per day and the completion curve",
    "backlog_by_reason": "needed lines not COMPLETE now, per reason",
    "agents": "per agent: registrations taken and failed, lines opened and flagged, over a threshold or not",
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
    ]
)


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


@dataclasses.dataclass
class ReportInputs:
    classified: pa.Table  # line_id, region, line_type, agent_id, needs_registration, flags
    merged: pa.Table  # line_id, status, identity_status, reasons, registered_at, registration_*
    history: pa.Table | None = None  # line_id, wave, sent_at (this campaign's line jobs)
    events: pa.Table | None = None  # event_id, agent_id (distinct events)
    dead_letters: pa.Table | None = None  # event_id, reason (the merge's event dead letters)


def _lines(inputs: ReportInputs) -> tuple[pa.Table, int]:
    """The needed lines with their state now; and how many of them the merged base does not hold."""
    scan = inputs.classified
    needed = scan.filter(pc.fill_null(scan["needs_registration"], False)).select(["line_id", "region", "line_type"])
    merged = inputs.merged.select(
        [
            "line_id",
            "status",
            "identity_status",
            "reasons",
            "registered_at",
            "registration_event_id",
            "registration_channel",
        ]
    )
    # Narrow the merged base to the needed lines first (a hash of the smaller side), then align: two small
    # hashes instead of one over every line of the base. line_id is unique in the merged base.
    merged = merged.filter(pc.is_in(merged["line_id"], value_set=needed["line_id"]))
    now = merged.take(pc.index_in(needed["line_id"], value_set=merged["line_id"]))
    lines = needed
    for name in now.column_names[1:]:
        lines = lines.append_column(name, now[name])
    missing = lines["identity_status"].null_count
    complete = pc.fill_null(pc.equal(lines["identity_status"], "COMPLETE"), False)
    registered = pc.and_(complete, pc.is_valid(lines["registration_event_id"]))
    lines = lines.append_column("complete", complete).append_column("registered", registered)
    return lines, missing


def _notices(lines: pa.Table, history: pa.Table | None) -> tuple[pa.Table, pa.Table]:
    """Per (line, wave) notified, restricted to needed lines; per line its first notice and credited wave."""
    empty_waves = pa.table(
        {
            "line_id": pa.array([], pa.string()),
            "wave": pa.array([], pa.int32()),
            "sent_at": pa.array([], pa.timestamp("us", tz="UTC")),
        }
    )
    if history is None or history.num_rows == 0:
        per_wave = empty_waves
    else:
        h = history.filter(pc.is_valid(history["line_id"])).select(["line_id", "wave", "sent_at"])
        h = h.cast(empty_waves.schema)
        per_wave = (
            h.group_by(["line_id", "wave"])
            .aggregate([("sent_at", "min")])
            .rename_columns(["line_id", "wave", "sent_at"])
            .select(["line_id", "wave", "sent_at"])
        )
        per_wave = per_wave.join(lines.select(["line_id"]), "line_id", join_type="inner")
    reg = lines.filter(lines["registered"]).select(["line_id", "registered_at"])
    pairs = per_wave.join(reg, "line_id", join_type="inner")
    before = pairs.filter(pc.less_equal(pairs["sent_at"], pairs["registered_at"]))
    credited = (
        before.group_by("line_id")
        .aggregate([("wave", "max"), ("sent_at", "min")])
        .rename_columns(["line_id", "credited_wave", "first_notice_at"])
    )
    return per_wave, credited


def _local_days(stamps: pa.Array, timezone: str) -> pa.Array:
    if len(stamps) == 0:
        return pa.array([], pa.date32())
    local = pc.local_timestamp(pc.cast(stamps, pa.timestamp("us", tz=timezone)))
    return pc.cast(local, pa.date32())


def _by_region(lines: pa.Table, past: pa.Table) -> pa.Table:
    table = lines.append_column("past_deadline", pc.is_in(lines["line_id"], value_set=past["line_id"]))
    grouped = group_sums(table, "region", ["complete", "registered", "past_deadline"])
    grouped = grouped.rename_columns(["region", "needed", "complete", "registered", "past_deadline"])
    grouped = grouped.append_column("remaining", pc.subtract(grouped["needed"], grouped["complete"]))
    grouped = grouped.append_column("completion_rate", ratio(grouped["complete"], grouped["needed"]))
    return grouped.select(
        ["region", "needed", "complete", "registered", "remaining", "completion_rate", "past_deadline"]
    ).sort_by([("region", "ascending")])


def _by_line_type(lines: pa.Table) -> pa.Table:
    grouped = group_sums(lines, "line_type", ["complete", "registered"]).rename_columns(
        ["line_type", "needed", "complete", "registered"]
    )
    grouped = grouped.append_column("remaining", pc.subtract(grouped["needed"], grouped["complete"]))
    grouped = grouped.append_column("completion_rate", ratio(grouped["complete"], grouped["needed"]))
    return grouped.sort_by([("line_type", "ascending")])


def _by_channel(lines: pa.Table) -> pa.Table:
    reg = lines.filter(lines["registered"])
    channel = pc.fill_null(reg["registration_channel"], "UNKNOWN")
    grouped = (
        pa.table({"channel": channel, "n": pa.array(np.ones(reg.num_rows, np.int64))})
        .group_by("channel")
        .aggregate([("n", "sum")])
        .rename_columns(["channel", "registrations"])
    )
    total = reg.num_rows
    share = ratio(grouped["registrations"], pa.array(np.full(grouped.num_rows, total, np.int64)))
    return grouped.append_column("share", share).sort_by([("registrations", "descending"), ("channel", "ascending")])


def _by_wave(per_wave: pa.Table, credited: pa.Table, lines: pa.Table, waves) -> pa.Table:
    notified = per_wave.group_by("wave").aggregate([("line_id", "count")]).to_pydict()
    notified = dict(zip(notified["wave"], notified["line_id_count"]))
    reg = lines.filter(lines["registered"]).select(["line_id"]).join(credited, "line_id", join_type="left outer")
    wave_of = pc.fill_null(reg["credited_wave"], NO_WAVE).to_numpy(zero_copy_only=False)
    numbers = sorted({w for w, _ in waves} | set(notified) | set(int(w) for w in np.unique(wave_of)))
    registered = [int(np.sum(wave_of == w)) for w in numbers]
    notified_n = [int(notified.get(w, 0)) for w in numbers]
    table = pa.table(
        {
            "wave": pa.array(numbers, pa.int32()),
            "notified": pa.array(notified_n, pa.int64()),
            "registered_after": pa.array(registered, pa.int64()),
        }
    )
    return table.append_column("conversion", ratio(table["registered_after"], table["notified"]))


def _by_day(lines: pa.Table, facts: CampaignFacts, as_of: dt.date) -> pa.Table:
    reg = lines.filter(lines["registered"])
    days = _local_days(reg["registered_at"], facts.timezone)
    counted = (
        pa.table({"day": days, "n": pa.array(np.ones(len(days), np.int64))})
        .group_by("day")
        .aggregate([("n", "sum")])
        .to_pydict()
    )
    per_day = dict(zip(counted["day"], counted["n_sum"]))
    without_event = count_true(pc.and_(lines["complete"], pc.invert(lines["registered"])))
    first = min([facts.first_day, *per_day]) if per_day else facts.first_day
    last = max([as_of, *per_day]) if per_day else as_of
    span = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    registrations = np.array([per_day.get(d, 0) for d in span], np.int64)
    cumulative = np.cumsum(registrations) + without_event
    needed = lines.num_rows
    rate = cumulative / needed if needed else np.full(len(span), np.nan)
    return pa.table(
        {
            "day": pa.array(span, pa.date32()),
            "registrations": registrations,
            "complete": cumulative,
            "completion_rate": pa.array(np.round(rate, 6), mask=np.isnan(rate)),
        }
    )


def _backlog(lines: pa.Table) -> pa.Table:
    left = lines.filter(pc.invert(lines["complete"]))
    reasons = pc.list_flatten(pc.fill_null(left["reasons"], pa.scalar([], pa.list_(pa.string()))))
    status = pc.fill_null(left["identity_status"], "NOT_IN_MERGE")
    rows = [
        pa.table({"kind": pa.repeat(pa.scalar("reason"), len(reasons)), "code": reasons}),
        pa.table({"kind": pa.repeat(pa.scalar("identity_status"), len(status)), "code": status}),
    ]
    both = pa.concat_tables(rows)
    counted = (
        both.append_column("lines", pa.array(np.ones(both.num_rows, np.int64)))
        .group_by(["kind", "code"])
        .aggregate([("lines", "sum")])
        .rename_columns(["kind", "code", "lines"])
    )
    return counted.sort_by([("kind", "ascending"), ("lines", "descending"), ("code", "ascending")])


def _past_deadline(lines: pa.Table, per_wave: pa.Table, facts: CampaignFacts, as_of: dt.date) -> pa.Table:
    schema = pa.schema(
        [
            ("line_id", pa.string()),
            ("region", pa.string()),
            ("line_type", pa.string()),
            ("identity_status", pa.string()),
            ("last_wave", pa.int32()),
            ("last_notice_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    if not facts.past_deadline(as_of):
        return schema.empty_table()
    left = lines.filter(
        pc.and_(pc.invert(lines["complete"]), pc.invert(pc.fill_null(pc.equal(lines["status"], "TERMINATED"), False)))
    )
    last = (
        per_wave.group_by("line_id")
        .aggregate([("wave", "max"), ("sent_at", "max")])
        .rename_columns(["line_id", "last_wave", "last_notice_at"])
    )
    out = left.select(["line_id", "region", "line_type", "identity_status"]).join(
        last, "line_id", join_type="left outer"
    )
    out = out.set_column(3, "identity_status", pc.fill_null(out["identity_status"], "NOT_IN_MERGE"))
    return out.cast(schema).sort_by([("region", "ascending"), ("line_id", "ascending")])


def _quantiles_hours(lines: pa.Table, credited: pa.Table) -> tuple[float | None, float | None, int]:
    reg = (
        lines.filter(lines["registered"])
        .select(["line_id", "registered_at"])
        .join(credited, "line_id", join_type="inner")
    )
    if reg.num_rows == 0:
        return None, None, 0
    delta = pc.subtract(reg["registered_at"], reg["first_notice_at"])
    hours = pc.divide(pc.cast(pc.cast(delta, pa.duration("us")), pa.int64()), 3_600_000_000.0)
    median, p90 = np.quantile(hours.to_numpy(zero_copy_only=False), [0.5, 0.9])
    return round(float(median), 3), round(float(p90), 3), reg.num_rows


def completion_tables(
    inputs: ReportInputs, facts: CampaignFacts, as_of: dt.date, agent_thresholds: Mapping[str, float]
) -> tuple[dict[str, pa.Table], dict]:
    """Every table of the report, and the notes on what was found missing (``not_in_merge`` ...)."""
    lines, missing = _lines(inputs)
    per_wave, credited = _notices(lines, inputs.history)
    past = _past_deadline(lines, per_wave, facts, as_of)
    median, p90, timed = _quantiles_hours(lines, credited)
    needed = lines.num_rows
    complete = count_true(lines["complete"])
    registered = count_true(lines["registered"])
    headline = {
        "campaign_id": facts.campaign_id,
        "report_date": as_of,
        "needed": needed,
        "complete": complete,
        "completion_rate": round(complete / needed, 6) if needed else None,
        "registered": registered,
        "complete_without_event": complete - registered,
        "remaining": needed - complete,
        "not_in_merge": missing,
        "notified": int(pc.count_distinct(per_wave["line_id"]).as_py()) if per_wave.num_rows else 0,
        "hours_to_register_median": median,
        "hours_to_register_p90": p90,
        "registrations_timed": timed,
        "deadline": facts.deadline,
        "past_deadline": past.num_rows,
    }
    tables = {
        "completion": pa.Table.from_pylist([headline], schema=HEADLINE_SCHEMA),
        "by_region": _by_region(lines, past),
        "by_line_type": _by_line_type(lines),
        "by_channel": _by_channel(lines),
        "by_wave": _by_wave(per_wave, credited, lines, facts.waves),
        "by_day": _by_day(lines, facts, as_of),
        "backlog_by_reason": _backlog(lines),
        "agents": agents_table(inputs, agent_thresholds),
        "past_deadline": past,
    }
    return tables, {"not_in_merge": missing}
