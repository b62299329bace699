"""The report's per-line work on one bucket of line ids (Beam-free): needed lines, their state now, their notices.

    part = bucket_facts(needed, base, notices, merged=True, timezone="Asia/Shanghai", past_on=False)
    part.facts    # partial facts (report_groups.FACTS): region, line type, channel, wave, day, backlog...
    part.past     # the bucket's past-deadline rows (PAST_DEADLINE_SCHEMA), sorted by region and line id
    part.timed    # int64 microseconds from the first notice to the registration, per timed line
    (with receipts: bucket_facts(..., receipts=...) adds the funnel per wave, channel and variant)
    part.counts   # the balance: needed lines joined or not in the merge, base rows and notices matched

Every row of one line id is in the same bucket (the scan's needed lines,
the merged base's rows, the notify history's line jobs), so what a bucket
computes for its lines is exactly what one pass over every line computes;
the partial facts add up (``report_groups.add_facts``). The definitions are
those of ``transforms/compliance/report.py``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.compliance.report_funnel import funnel_facts
from transforms.compliance.report_groups import count_true, fact_table, group_sums, tally

__all__ = [
    "NEEDED_SCHEMA",
    "BASE_SCHEMA",
    "base_schema",
    "NOTICE_SCHEMA",
    "RECEIPT_SCHEMA",
    "PAST_DEADLINE_SCHEMA",
    "NO_WAVE",
    "HOUR_US",
    "LineFacts",
    "bucket_facts",
    "needed_lines",
]

NO_WAVE = 0
HOUR_US = 3_600_000_000
NEEDED_SCHEMA = pa.schema([("line_id", pa.string()), ("region", pa.string()), ("line_type", pa.string())])
BASE_SCHEMA = pa.schema(
    [
        ("line_id", pa.string()),
        ("status", pa.string()),
        ("identity_status", pa.string()),
        ("reasons", pa.list_(pa.string())),
        ("registered_at", pa.timestamp("us", tz="UTC")),
        ("registration_event_id", pa.string()),
        ("registration_channel", pa.string()),
    ]
)
NOTICE_SCHEMA = pa.schema(
    [
        ("line_id", pa.string()),
        ("wave", pa.int32()),
        ("sent_at", pa.timestamp("us", tz="UTC")),
        ("channel", pa.string()),
        ("job_id", pa.string()),
        ("variant", pa.string()),  # the job's A/B template variant (null: the wave has none)
    ]
)
RECEIPT_SCHEMA = pa.schema(
    [("line_id", pa.string()), ("job_id", pa.string()), ("status", pa.string()), ("at", pa.timestamp("us", tz="UTC"))]
)
PAST_DEADLINE_SCHEMA = pa.schema(
    [
        ("line_id", pa.string()),
        ("region", pa.string()),
        ("line_type", pa.string()),
        ("identity_status", pa.string()),
        ("last_wave", pa.int32()),
        ("last_notice_at", pa.timestamp("us", tz="UTC")),
    ]
)


def base_schema(past_on: bool) -> pa.Schema:
    """The merged base's columns a bucket reads: ``status`` only for the past-deadline list (TERMINATED lines are
    left off it), so before the deadline that column is not decoded, bucketed nor spilled."""
    return BASE_SCHEMA if past_on else BASE_SCHEMA.remove(BASE_SCHEMA.get_field_index("status"))


class LineFacts(NamedTuple):
    facts: dict[str, pa.Table]
    past: pa.Table
    timed: pa.Array
    counts: dict


def needed_lines(scan: pa.Table) -> pa.Table:
    """The lines a scan batch found needing registration: line_id, region, line_type."""
    return scan.select(NEEDED_SCHEMA.names).filter(pc.fill_null(scan["needs_registration"], False))


def _unmerged(needed: pa.Table) -> pa.Table:
    """The state now when nothing was merged: every line as the scan left it (no registration)."""
    n = needed.num_rows
    columns = {name: pa.nulls(n, field.type) for name, field in zip(BASE_SCHEMA.names, BASE_SCHEMA)}
    columns["line_id"] = needed["line_id"]
    columns["identity_status"] = pa.repeat(pa.scalar("UNMERGED"), n)
    return pa.table(columns, schema=BASE_SCHEMA)


def _lines(needed: pa.Table, base: pa.Table, coded: bool) -> tuple[pa.Table, int, int]:
    """The needed lines with their state now; how many the base lacks; how many base rows matched a line.
    ``coded``: the line ids are :func:`_coded` (a base row of no needed line has none)."""
    if coded:  # each needed line's first base row, found by its code; the rows with a code are the matched ones
        now = base.take(pc.index_in(needed["line_id"], value_set=base["line_id"]))
        matched = base.num_rows - base["line_id"].null_count
    else:  # line_id is unique in the merged base: narrow it to the needed lines, then align
        merged = base.filter(pc.is_in(base["line_id"], value_set=needed["line_id"]))
        now = merged.take(pc.index_in(needed["line_id"], value_set=merged["line_id"]))
        matched = merged.num_rows
    lines = needed
    for name in now.column_names[1:]:
        lines = lines.append_column(name, now[name])
    missing = lines["identity_status"].null_count
    complete = pc.fill_null(pc.equal(lines["identity_status"], "COMPLETE"), False)
    registered = pc.and_(complete, pc.is_valid(lines["registration_event_id"]))
    lines = lines.append_column("complete", complete).append_column("registered", registered)
    return lines, missing, matched


def _notices(lines: pa.Table, history: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Per (line, wave) notified, restricted to needed lines; per line its first notice and credited wave."""
    per_wave = (
        history.group_by(["line_id", "wave"], use_threads=False)
        .aggregate([("sent_at", "min")])
        .rename_columns(["line_id", "wave", "sent_at"])
        .select(["line_id", "wave", "sent_at"])
    )
    per_wave = per_wave.join(lines.select(["line_id"]), "line_id", join_type="inner", use_threads=False)
    reg = lines.filter(lines["registered"]).select(["line_id", "registered_at"])
    pairs = per_wave.join(reg, "line_id", join_type="inner", use_threads=False)
    before = pairs.filter(pc.less_equal(pairs["sent_at"], pairs["registered_at"]))
    credited = (
        before.group_by("line_id", use_threads=False)
        .aggregate([("wave", "max"), ("sent_at", "min")])
        .rename_columns(["line_id", "credited_wave", "first_notice_at"])
    )
    return per_wave, credited


def _local_days(stamps: pa.Array, timezone: str) -> pa.Array:
    if len(stamps) == 0:
        return pa.array([], pa.date32())
    local = pc.local_timestamp(pc.cast(stamps, pa.timestamp("us", tz=timezone)))
    return pc.cast(local, pa.date32())


def _past_deadline(lines: pa.Table, per_wave: pa.Table, past_on: bool) -> pa.Table | None:
    """After the deadline and the last wave: the lines not complete and not TERMINATED, with their last notice
    (their ids as ``lines`` has them; :func:`_past_rows` makes the list). None: no list yet."""
    if not past_on or lines.num_rows == 0:
        return None
    terminated = pc.fill_null(pc.equal(lines["status"], "TERMINATED"), False)
    left = lines.filter(pc.and_(pc.invert(lines["complete"]), pc.invert(terminated)))
    last = (
        per_wave.group_by("line_id", use_threads=False)
        .aggregate([("wave", "max"), ("sent_at", "max")])
        .rename_columns(["line_id", "last_wave", "last_notice_at"])
    )
    out = left.select(["line_id", "region", "line_type", "identity_status"]).join(
        last, "line_id", join_type="left outer", use_threads=False
    )
    return out.set_column(3, "identity_status", pc.fill_null(out["identity_status"], "NOT_IN_MERGE"))


def _past_rows(past: pa.Table | None, ids: pa.ChunkedArray | None) -> pa.Table:
    """The past-deadline list (``PAST_DEADLINE_SCHEMA``, by region and line id); ``ids``: the needed lines' ids
    when ``past`` holds their codes."""
    if past is None:
        return PAST_DEADLINE_SCHEMA.empty_table()
    if ids is not None:
        past = past.set_column(0, "line_id", ids.take(past["line_id"]))
    return past.cast(PAST_DEADLINE_SCHEMA).sort_by([("region", "ascending"), ("line_id", "ascending")])


def _coded(tables: list[pa.Table], ids: pa.ChunkedArray) -> list[pa.Table]:
    """``tables`` with each line id replaced by the position of the first needed line with that id (int32; null:
    not a needed line). Every join and group of the bucket is on line ids: on codes they hash integers, not strings,
    and match exactly as the ids would (every needed line has an id; no other line reaches the facts). One lookup
    for every table: the needed ids are hashed once."""
    chunks = [chunk for table in tables for chunk in table["line_id"].chunks]
    codes = pc.index_in(pa.chunked_array(chunks, pa.string()), value_set=ids)
    out, start = [], 0
    for table in tables:
        where = table.schema.get_field_index("line_id")
        out.append(table.set_column(where, "line_id", codes.slice(start, table.num_rows)))
        start += table.num_rows
    return out


def _falses(n: int) -> pa.Array:
    return pa.array(np.zeros(n, bool))


def _ones(n: int) -> pa.Array:
    return pa.array(np.ones(n, np.int64))


def _counted(table: pa.Table, keys: list[str]) -> pa.Table:
    """Rows per key: ``keys`` + ``n``."""
    both = table.select(keys).append_column("n", _ones(table.num_rows))
    return both.group_by(keys, use_threads=False).aggregate([("n", "sum")]).rename_columns([*keys, "n"])


def _group_facts(lines: pa.Table, past: pa.Table | None) -> dict[str, pa.Table]:
    """Needed, complete, registered (and past-deadline) lines per region and per line type."""
    on_list = pc.is_in(lines["line_id"], value_set=past["line_id"]) if past is not None else _falses(lines.num_rows)
    with_past = lines.append_column("past", on_list)
    region = group_sums(with_past, "region", ["complete", "registered", "past"])
    line_type = group_sums(lines, "line_type", ["complete", "registered"])
    return {
        "region": fact_table(
            "region",
            {
                "region": region["region"],
                "needed": region["lines"],
                "complete": region["complete"],
                "registered": region["registered"],
                "past_deadline": region["past"],
            },
        ),
        "line_type": fact_table(
            "line_type",
            {
                "line_type": line_type["line_type"],
                "needed": line_type["lines"],
                "complete": line_type["complete"],
                "registered": line_type["registered"],
            },
        ),
    }


def _registration_facts(lines: pa.Table, credited: pa.Table, timezone: str) -> tuple[dict[str, pa.Table], pa.Array]:
    """Registrations per channel, per day, per credited wave; hours to register; the timed microseconds."""
    reg = lines.filter(lines["registered"])
    channel = pc.fill_null(reg["registration_channel"], "UNKNOWN")
    days = _local_days(reg["registered_at"], timezone)
    with_wave = reg.select(["line_id", "registered_at"]).join(
        credited, "line_id", join_type="left outer", use_threads=False
    )
    waves = pc.fill_null(with_wave["credited_wave"], NO_WAVE)
    timed = with_wave.filter(pc.is_valid(with_wave["first_notice_at"]))
    delta = pc.subtract(timed["registered_at"], timed["first_notice_at"])
    micros = pc.cast(pc.cast(delta, pa.duration("us")), pa.int64()).combine_chunks()
    hours = pa.array(np.floor_divide(micros.to_numpy(zero_copy_only=False), HOUR_US), pa.int64())
    facts = {}
    for name, key, values, count in (
        ("channel", "channel", channel, "registrations"),
        ("day", "day", days, "registrations"),
        ("wave_registered", "wave", waves, "registered_after"),
        ("hours_to_register", "hour", hours, "registrations"),
    ):
        counted = _counted(pa.table({key: values}), [key])
        facts[name] = fact_table(name, {key: counted[key], count: counted["n"]})
    return facts, micros


def _backlog(lines: pa.Table) -> pa.Table:
    """Needed lines not complete, per reason held in the merged base and per identity status."""
    left = lines.filter(pc.invert(lines["complete"]))
    reasons = pc.list_flatten(pc.fill_null(left["reasons"], pa.scalar([], pa.list_(pa.string()))))
    status = pc.fill_null(left["identity_status"], "NOT_IN_MERGE")
    both = pa.concat_tables(
        [
            pa.table({"kind": pa.repeat(pa.scalar("reason"), len(reasons)), "code": reasons.cast(pa.string())}),
            pa.table({"kind": pa.repeat(pa.scalar("identity_status"), len(status)), "code": status}),
        ]
    )
    counted = _counted(both, ["kind", "code"])
    return fact_table("backlog", {"kind": counted["kind"], "code": counted["code"], "lines": counted["n"]})


def bucket_facts(
    needed: pa.Table | None,
    base: pa.Table | None,
    history: pa.Table | None,
    *,
    merged: bool,
    timezone: str,
    past_on: bool,
    receipts: pa.Table | None = None,
) -> LineFacts:
    """One bucket's facts; ``merged`` False: no merge was given (every needed line UNMERGED)."""
    needed = needed if needed is not None else NEEDED_SCHEMA.empty_table()
    history = history if history is not None else NOTICE_SCHEMA.empty_table()
    receipts = receipts if receipts is not None else RECEIPT_SCHEMA.empty_table()
    base_rows = base.num_rows if base is not None else 0
    if not merged:
        base = _unmerged(needed)
    base = base if base is not None else BASE_SCHEMA.empty_table()
    ids = needed["line_id"] if needed["line_id"].null_count == 0 else None  # None: the ids themselves are joined
    if ids is not None:
        needed, base, history = _coded([needed, base, history], ids)
    lines, missing, matched = _lines(needed, base, ids is not None)
    per_wave, credited = _notices(lines, history)
    listed = _past_deadline(lines, per_wave, past_on)
    facts = _group_facts(lines, listed)
    past = _past_rows(listed, ids)
    registrations, timed = _registration_facts(lines, credited, timezone)
    facts.update(registrations)
    facts["backlog"] = _backlog(lines)
    of_needed = pc.is_in(history["line_id"], value_set=needed["line_id"])  # this campaign's jobs on needed lines
    jobs = history.filter(of_needed)
    facts.update(funnel_facts(jobs, receipts, credited))
    notified = _counted(per_wave, ["wave"])
    facts["wave_notified"] = fact_table("wave_notified", {"wave": notified["wave"], "notified": notified["n"]})
    complete, registered = count_true(lines["complete"]), count_true(lines["registered"])
    facts["headline"] = tally(
        "headline",
        needed=lines.num_rows,
        complete=complete,
        registered=registered,
        not_in_merge=missing,
        notified=pc.count_distinct(per_wave["line_id"]).as_py() if per_wave.num_rows else 0,
        past_deadline=past.num_rows,
    )
    on_needed = jobs.num_rows
    counts = {"needed_lines": {"joined": lines.num_rows - missing, "not_in_merge": missing}}
    if merged:
        counts["base_rows"] = {"needed_lines": matched, "other_lines": base_rows - matched}
    if history.num_rows:
        counts["notices"] = {"needed_lines": on_needed, "other_lines": history.num_rows - on_needed}
    if receipts.num_rows:
        of_needed = count_true(pc.is_in(receipts["line_id"], value_set=ids if ids is not None else needed["line_id"]))
        counts["receipts"] = {"needed_lines": of_needed, "other_lines": receipts.num_rows - of_needed}
    return LineFacts(facts, past, timed, counts)
