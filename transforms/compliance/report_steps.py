"""The report's per-batch steps (Beam-free): what each input batch gives the joins, the facts and the counts.

    needed, facts, counts = scan_step(scan_batch)           # needed lines; the agents' opened lines; scan counts
    counts = base_step(base_batch)                          # base rows read
    lines, facts, counts = notices_step(history, campaign)  # the campaign's line jobs; its waves; other campaigns
    lines, counts = receipts_step(receipts, campaign)       # the campaign's receipts of line jobs
    keyed, counts = keyed_step(events_or_dead, "events")    # rows with an event id; the rest counted
    plan = hour_ranks(facts)                                # the ranks the quantiles need, per hour
    time = time_to_register(picks, plan)                    # from the values picked per hour

Both ways of running the report use them, so they count alike: the Beam job
(``report_facts.py``: each step in a DoFn, the joins by Beam's shuffle) and
the in-process run (``pipelines/report_local.py``: the joins by spilled
buckets). Counts are small nested dicts, added by :func:`add_counts`.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.compliance.report import TimeToRegister
from transforms.compliance.report_agents import opened_facts
from transforms.compliance.report_groups import fact_table
from transforms.compliance.report_lines import HOUR_US, NOTICE_SCHEMA, RECEIPT_SCHEMA, needed_lines
from transforms.compliance.report_quantiles import first_ranks, pick, quantile_hours, ranks

__all__ = [
    "scan_step",
    "base_step",
    "notices_step",
    "receipts_step",
    "keyed_step",
    "timed_hours",
    "hour_ranks",
    "wanted_hours",
    "pick_hour",
    "merge_picks",
    "time_to_register",
    "add_counts",
]


def add_counts(into: dict, other: dict) -> dict:
    """Add ``other`` into ``into`` (numbers add, dicts merge recursively), as ``metrics.SumCounts`` does."""
    for key, value in other.items():
        if isinstance(value, dict):
            add_counts(into.setdefault(key, {}), value)
        else:
            into[key] = into.get(key, 0) + value
    return into


def scan_step(scan: pa.Table) -> tuple[pa.Table, dict, dict]:
    """A scan batch -> its needed lines, the agents' opened lines (a partial fact), the scan's counts."""
    needed = needed_lines(scan)
    counts = {
        "scan_lines": {"read": scan.num_rows, "needed": needed.num_rows, "not_needed": scan.num_rows - needed.num_rows}
    }
    return needed, {"agent_opened": opened_facts(scan)}, counts


def base_step(base: pa.Table) -> dict:
    return {"base_rows": {"read": base.num_rows}}


def _history_facts(mine: pa.Table) -> dict:
    """The campaign's notices per wave (any line), and its announcements (jobs without a line) per wave."""
    waves = pc.value_counts(mine["wave"])
    regional = mine.filter(pc.is_null(mine["line_id"])).select(["wave", "channel"])
    ones = pa.array(np.ones(regional.num_rows, np.int64))
    announced = (
        regional.append_column("n", ones).group_by(["wave", "channel"], use_threads=False).aggregate([("n", "sum")])
    )
    zeros = [0] * announced.num_rows
    columns = {"wave": announced["wave"], "channel": announced["channel"], "sent": announced["n_sum"]}
    return {
        "history_waves": fact_table("history_waves", {"wave": waves.field(0), "notices": waves.field(1)}),
        "wave_channel": fact_table(
            "wave_channel",
            {**columns, **{c: zeros for c in ("delivered", "failed", "fell_back_to_call", "registered_after")}},
        ),
    }


def notices_step(history: pa.Table, campaign_id: str | None) -> tuple[pa.Table, dict | None, dict]:
    """A history batch -> this campaign's line jobs (``NOTICE_SCHEMA``), its waves (None: no notice of it),
    the counts (other campaigns, jobs without a line)."""
    if campaign_id is None:
        mine = history.slice(0, 0)
    else:
        mine = history.filter(pc.fill_null(pc.equal(history["campaign_id"], campaign_id), False))
    facts = _history_facts(mine) if mine.num_rows else None
    lines = mine.filter(pc.is_valid(mine["line_id"])).select(NOTICE_SCHEMA.names).cast(NOTICE_SCHEMA)
    counts = {
        "read": history.num_rows,
        "other_campaigns": history.num_rows - mine.num_rows,
        "without_line": mine.num_rows - lines.num_rows,
    }
    return lines, facts, {"notices": counts}


def receipts_step(receipts: pa.Table, campaign_id: str | None) -> tuple[pa.Table, dict]:
    """A receipt batch -> this campaign's receipts of line jobs (``RECEIPT_SCHEMA``); the rest counted."""
    mine = receipts.filter(pc.fill_null(pc.equal(receipts["campaign_id"], campaign_id or ""), False))
    lines = mine.filter(pc.is_valid(mine["line_id"])).select(RECEIPT_SCHEMA.names).cast(RECEIPT_SCHEMA)
    read, other = receipts.num_rows, receipts.num_rows - mine.num_rows
    return lines, {"receipts": {"read": read, "other_campaigns": other, "without_line": mine.num_rows - lines.num_rows}}


def keyed_step(table: pa.Table, side: str) -> tuple[pa.Table, dict]:
    """Events or dead letters -> the rows with an event id; the rows without one counted (``side``'s counts)."""
    keyed = table.filter(pc.is_valid(table["event_id"]))
    return keyed, {side: {"read": table.num_rows, "without_event_id": table.num_rows - keyed.num_rows}}


def timed_hours(timed: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The times to register (microseconds, >= 0) and the whole hour of each (int32)."""
    return timed, pc.divide(timed, HOUR_US).cast(pa.int32())  # integer division: the times are >= 0


def hour_ranks(facts: dict) -> dict:
    """From the facts: how many times were measured, the rank of each hour's first value, the ranks wanted."""
    hours = facts.get("hours_to_register")
    per_hour = dict(zip(*(hours[c].to_pylist() for c in ("hour", "registrations")))) if hours is not None else {}
    n = sum(per_hour.values())
    return {"n": n, "first": first_ranks(per_hour), "wanted": ranks(n)}


def wanted_hours(plan: dict) -> set[int]:
    """The hours holding a rank the quantiles need (at most four)."""
    first = sorted(plan["first"].items())
    out = set()
    for rank in plan["wanted"]:
        out.add(max(hour for hour, start in first if start <= rank))
    return out


def pick_hour(hour: int, values: np.ndarray, plan: dict) -> dict:
    """The wanted order statistics among every value of one hour: {rank: microseconds}."""
    return pick(values, plan["first"].get(hour, 0), plan["wanted"])


def merge_picks(picks: Iterable[dict]) -> dict:
    out: dict = {}
    for found in picks:
        out.update(found)
    return out


def time_to_register(picked: dict, plan: dict) -> TimeToRegister:
    median, p90 = quantile_hours(plan["n"], picked)
    return TimeToRegister(median, p90, plan["n"])
