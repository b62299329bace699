"""The campaign funnel per wave and channel, and per template variant (Beam-free).

    facts = funnel_facts(jobs, receipts, credited)        # one bucket of line ids: partial facts
    table = funnel_table(facts, sends)                    # the report's ``funnel`` table, from the summed facts

Per bucket of line ids (``report_lines.bucket_facts`` calls it), over this
campaign's line jobs on the bucket's needed lines:

- **sent**: lines with a job of the wave and channel in the notify history (a job
  recorded twice counts once);
- **delivered** / **failed**: the job's latest delivery receipt (by time; DELIVERED
  wins a tie, as notify reads them); **no receipt** is the rest;
- **fell back to a call**: lines whose SMS of the wave FAILED and that got a call
  of a later wave of the campaign;
- **registered after**: lines whose registration is credited to the wave (the
  latest wave whose notice came at or before it, ``report.py``) and that had a
  job of that channel in it;
- per **variant** (A/B templates): lines with a job of the wave carrying the
  variant, and those of them whose registration is credited to the wave.

Announcements reach regions, not lines: their row counts the announcement jobs
(regions) and has no receipt, fallback or conversion. **targeted** (the lines the
wave planned for the channel), **segments** and **cost** (SMS) come from the
manifests of the notify runs that sent the wave (``pipelines/io/report_notify.py``).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.compliance.report_groups import empty_fact, fact_table, first_per_key

__all__ = ["funnel_facts", "funnel_table", "wave_totals", "CHANNELS", "FUNNEL_SCHEMA"]

CHANNELS = ("sms", "call", "announcement")
_COUNTS = ("sent", "delivered", "failed", "fell_back_to_call", "registered_after")
FUNNEL_SCHEMA = pa.schema(
    [
        ("wave", pa.int32()),
        ("channel", pa.string()),
        ("targeted", pa.int64()),
        ("sent", pa.int64()),
        ("delivered", pa.int64()),
        ("failed", pa.int64()),
        ("no_receipt", pa.int64()),
        ("fell_back_to_call", pa.int64()),
        ("registered_after", pa.int64()),
        ("conversion", pa.float64()),
        ("segments", pa.int64()),
        ("cost", pa.float64()),
        ("cost_per_registration", pa.float64()),
    ]
)


def _looked_up(keys: pa.Array, table: pa.Table, key: str, column: str) -> pa.Array:
    """``table[column]`` of the row whose ``key`` equals each of ``keys`` (null when none)."""
    return table[column].take(pc.index_in(keys, value_set=table[key]))


def _statuses(jobs: pa.Table, receipts: pa.Table | None) -> tuple[pa.Array, pa.Array]:
    """Per job: delivered, failed (its latest receipt); both false without a receipt."""
    if receipts is None or receipts.num_rows == 0:
        status = None
    else:
        from transforms.notify.planner import latest_status  # notify's rule; its modules only when receipts exist

        status = latest_status(receipts)
    if status is None or jobs.num_rows == 0:
        none = pa.array(np.zeros(jobs.num_rows, bool))
        return none, none
    latest = _looked_up(jobs["job_id"], status, "job_id", "status")
    return pc.fill_null(pc.equal(latest, "DELIVERED"), False), pc.fill_null(pc.equal(latest, "FAILED"), False)


def _later_call(jobs: pa.Table) -> pa.Array:
    """Per job: the line got a call in a later wave."""
    calls = jobs.filter(pc.fill_null(pc.equal(jobs["channel"], "call"), False))
    last = calls.group_by("line_id", use_threads=False).aggregate([("wave", "max")])
    last_wave = _looked_up(jobs["line_id"], last, "line_id", "wave_max")
    return pc.fill_null(pc.greater(last_wave, jobs["wave"]), False)


def _counted(table: pa.Table, keys: list[str], columns: tuple[str, ...]) -> pa.Table:
    """Per key: the sum of each boolean column (as int64)."""
    ints = table.select(keys)
    for name in columns:
        ints = ints.append_column(name, pc.cast(table[name], pa.int64()))
    summed = ints.group_by(keys, use_threads=False).aggregate([(c, "sum") for c in columns])
    return summed.rename_columns([n.removesuffix("_sum") for n in summed.column_names])


def funnel_facts(jobs: pa.Table, receipts: pa.Table | None, credited: pa.Table) -> dict[str, pa.Table]:
    """Partial ``wave_channel`` and ``wave_variant`` facts of one bucket.

    ``jobs``: this campaign's line jobs on needed lines (line_id, wave, channel, job_id, variant);
    ``receipts``: this campaign's receipts (job_id, status, at); ``credited``: line_id, credited_wave."""
    if jobs.num_rows == 0:
        return {"wave_channel": empty_fact("wave_channel"), "wave_variant": empty_fact("wave_variant")}
    known = pc.is_valid(jobs["job_id"])
    jobs = pa.concat_tables([first_per_key(jobs.filter(known), "job_id"), jobs.filter(pc.invert(known))])
    delivered, failed = _statuses(jobs, receipts)
    sms = pc.fill_null(pc.equal(jobs["channel"], "sms"), False)
    credited_wave = _looked_up(jobs["line_id"], credited, "line_id", "credited_wave")
    flags = jobs.select(["line_id", "wave", "channel", "variant"]).append_column(
        "sent", pa.array(np.ones(jobs.num_rows, bool))
    )
    for name, values in (
        ("delivered", delivered),
        ("failed", failed),
        ("fell_back_to_call", pc.and_(pc.and_(sms, failed), _later_call(jobs))),
        ("registered_after", pc.fill_null(pc.equal(credited_wave, jobs["wave"]), False)),
    ):
        flags = flags.append_column(name, values)
    channel = _counted(flags, ["wave", "channel"], _COUNTS)
    # a line counts once per wave and variant, whatever channels carried it
    varied = flags.filter(pc.is_valid(flags["variant"]))
    per_line = _counted(varied, ["line_id", "wave", "variant"], ("registered_after",))
    per_line = per_line.append_column("sent", pa.array(np.ones(per_line.num_rows, bool))).set_column(
        3, "registered_after", pc.greater(per_line["registered_after"], 0)
    )
    variant = _counted(per_line, ["wave", "variant"], ("sent", "registered_after"))
    return {
        "wave_channel": fact_table("wave_channel", {k: channel[k] for k in ("wave", "channel", *_COUNTS)}),
        "wave_variant": fact_table(
            "wave_variant", {k: variant[k] for k in ("wave", "variant", "sent", "registered_after")}
        ),
    }


def _order(channel: str | None) -> int:
    return CHANNELS.index(channel) if channel in CHANNELS else len(CHANNELS)


def _row(wave: int, channel: str, counted: Mapping[str, int], send: Mapping) -> dict:
    """One funnel row; ``send``: what the notify runs that sent the wave planned (targeted, segments, cost)."""
    sent, registered = counted.get("sent", 0), counted.get("registered_after", 0)
    line_jobs = channel != "announcement"
    sms = channel == "sms"
    cost = send.get("cost") if sms else None
    return {
        "wave": wave,
        "channel": channel,
        "targeted": (send.get("targeted") or {}).get(channel),
        "sent": sent,
        "delivered": counted.get("delivered", 0) if line_jobs else None,
        "failed": counted.get("failed", 0) if line_jobs else None,
        "no_receipt": sent - counted.get("delivered", 0) - counted.get("failed", 0) if line_jobs else None,
        "fell_back_to_call": counted.get("fell_back_to_call", 0) if sms else None,
        "registered_after": registered if line_jobs else None,
        "conversion": round(registered / sent, 6) if line_jobs and sent else None,
        "segments": send.get("segments") if sms else None,
        "cost": cost,
        "cost_per_registration": round(cost / registered, 4) if cost is not None and registered else None,
    }


def funnel_table(fact: pa.Table, sends: Mapping[int, Mapping]) -> pa.Table:
    """The ``funnel`` table: a row per wave and channel that was planned or sent, waves in order."""
    counted: dict[tuple, dict] = {}
    for r in fact.to_pylist():
        counted[(r["wave"], r["channel"])] = r
    for wave, send in sends.items():
        for channel, n in (send.get("targeted") or {}).items():
            if n:
                counted.setdefault((int(wave), channel), {})
    keys = sorted(counted, key=lambda k: (k[0], _order(k[1]), k[1] or ""))
    rows = [_row(w, c, counted[(w, c)], sends.get(w, {})) for w, c in keys]
    return pa.Table.from_pylist(rows, schema=FUNNEL_SCHEMA)


def wave_totals(funnel: pa.Table) -> dict[str, float | int]:
    """The SMS segments and cost over every wave (the headline's)."""
    sms = funnel.filter(pc.equal(funnel["channel"], "sms"))
    return {
        "sms_segments": int(pc.sum(sms["segments"]).as_py() or 0),
        "sms_cost": round(float(pc.sum(sms["cost"]).as_py() or 0.0), 4),
    }
