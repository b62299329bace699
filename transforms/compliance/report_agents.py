"""The report's ``agents`` table (Art. 14): per agent, the registrations it took and the lines it opened.

    opened_facts(scan_batch)                 # partial fact per batch of the scan
    taken_facts(events, dead_letters)        # partial facts per bucket of event ids
    table = agents_table(facts, thresholds)  # the table, from the added-up facts

- **taken**: distinct registration events with the agent's ``agent_id``; how many came
  back as dead letters, and how many of those failed the policy (a reason of
  :data:`POLICY_FAILURES`), with the reasons counted as evidence text. An event
  repeated (redelivered, or read by two merges) counts once, with the agent of its
  first copy (the order of the files the merges recorded, then the row).
- **opened**: lines of the scan with the agent's ``agent_id``; how many carry a
  cross-record flag and how many need a registration.
- **over a threshold**: an agent with at least ``min_registrations`` registrations whose
  failed share is over ``max_failed_share``, or with at least ``min_lines_opened`` lines
  whose flagged share is over ``max_flagged_share``.
- **attention**: how surely an agent's shares exceed the thresholds, judged from however
  many cases it has: the lower end of the 95 % Wilson interval of its failed share divided
  by ``max_failed_share``, or of its flagged share divided by ``max_flagged_share``, the
  larger (1 or more: over a threshold with 95 % confidence; 0: no dead letter and no
  flagged line). One failure in one registration is not yet one in five. The table lists
  what needs attention first: the agents over a threshold, then by attention, then by dead
  letters and flagged lines, then by id.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.compliance.report_groups import empty_fact, fact_table, first_per_key, group_sums, ratio
from transforms.compliance.report_variants import wilson_low
from transforms.core.reasons import LINE_REASONS

__all__ = [
    "agents_table",
    "opened_facts",
    "taken_facts",
    "event_agents",
    "EVENT_AGENT_SCHEMA",
    "DEAD_LETTER_SCHEMA",
    "POLICY_FAILURES",
    "AGENT_COLUMNS",
]

# The dead-letter reasons that mean "failed the policy" (the rest: unknown line, terminated, unparseable).
POLICY_FAILURES = frozenset(LINE_REASONS)

# An event as the report reads it: its id, its agent, and its place in the files (earlier first).
EVENT_AGENT_SCHEMA = pa.schema([("event_id", pa.string()), ("agent_id", pa.string()), ("order", pa.int64())])
DEAD_LETTER_SCHEMA = pa.schema([("event_id", pa.string()), ("reason", pa.string())])

# The count columns: an agent that only opened lines, or only took registrations, has 0 in the others.
_COUNTS = (
    "lines_opened",
    "opened_flagged",
    "opened_needing_registration",
    "registrations",
    "dead_letters",
    "failed_policy",
)

AGENT_COLUMNS = [
    "agent_id",
    "registrations",
    "dead_letters",
    "failed_policy",
    "failed_share",
    "lines_opened",
    "opened_flagged",
    "flagged_share",
    "opened_needing_registration",
    "over_failed_threshold",
    "over_flagged_threshold",
    "over_threshold",
    "attention",
    "dead_letter_reasons",
]


def opened_facts(scan: pa.Table) -> pa.Table:
    """Per agent of a scan batch: the lines it opened, how many carry a cross-record flag, how many need
    registration (partial ``agent_opened``)."""
    flagged = pc.greater(pc.fill_null(pc.list_value_length(scan["flags"]), 0), 0)
    opened = pa.table(
        {
            "agent_id": scan["agent_id"],
            "flagged": flagged,
            "needed": pc.fill_null(scan["needs_registration"], False),
        }
    ).filter(pc.is_valid(scan["agent_id"]))  # the three columns filtered, not the batch's every column
    sums = group_sums(opened, "agent_id", ["flagged", "needed"])
    return fact_table(
        "agent_opened",
        {
            "agent_id": sums["agent_id"],
            "lines_opened": sums["lines"],
            "opened_flagged": sums["flagged"],
            "opened_needing_registration": sums["needed"],
        },
    )


def event_agents(raw: pa.Table, order: pa.Array) -> pa.Table:
    """event_id and agent_id of a batch of registration events (a blank agent_id is none), with their order."""
    agent = raw["agent_id"].cast(pa.string())
    agent = pc.if_else(pc.equal(pc.utf8_trim_whitespace(agent), ""), None, agent)
    table = pa.table({"event_id": raw["event_id"].cast(pa.string()), "agent_id": agent, "order": order})
    return table.cast(EVENT_AGENT_SCHEMA)


def _first_copies(events: pa.Table) -> pa.Table:
    """One row per event_id: its first copy in the files' order (rows put in that order, then the first row
    of each event id: dictionary codes, not a sort of the ids)."""
    if events.num_rows == 0:
        return events
    order = events["order"].to_numpy()
    if np.any(order[1:] <= order[:-1]):
        events = events.take(pa.array(np.argsort(order, kind="stable")))
    return first_per_key(events, "event_id")


def _reason_per_event(dead_letters: pa.Table) -> pa.Table:
    """One dead-letter reason per event (the least, when an event was dead-lettered more than once)."""
    dead = dead_letters.filter(pc.is_valid(dead_letters["event_id"])).select(["event_id", "reason"])
    return (
        dead.group_by("event_id", use_threads=False)
        .aggregate([("reason", "min")])
        .rename_columns(["event_id", "reason"])
    )


def taken_facts(events: pa.Table | None, dead_letters: pa.Table | None) -> tuple[dict[str, pa.Table], dict]:
    """One bucket of event ids: per agent, registrations, dead letters, policy failures (``agent_taken``) and
    the dead-letter reasons (``agent_reasons``); and the bucket's counts."""
    events = events if events is not None else EVENT_AGENT_SCHEMA.empty_table()
    dead = _reason_per_event(dead_letters if dead_letters is not None else DEAD_LETTER_SCHEMA.empty_table())
    first = _first_copies(events)
    of_events = int(pc.sum(pc.cast(pc.is_in(dead["event_id"], value_set=first["event_id"]), pa.int64())).as_py() or 0)
    dead_rows = dead_letters.num_rows if dead_letters is not None else 0
    counts = {
        "events": {"distinct": first.num_rows, "repeated": events.num_rows - first.num_rows},
        "dead_letters": {"with_event_id": dead_rows, "events_dead_lettered": of_events},
    }
    ev = first.filter(pc.is_valid(first["agent_id"])).select(["event_id", "agent_id"])
    ev = ev.join(dead, "event_id", join_type="left outer", use_threads=False)
    is_dead = pc.is_valid(ev["reason"])
    failed = pc.fill_null(pc.is_in(ev["reason"], value_set=pa.array(sorted(POLICY_FAILURES))), False)
    taken = group_sums(
        pa.table({"agent_id": ev["agent_id"], "dead": is_dead, "failed": failed}), "agent_id", ["dead", "failed"]
    )
    gone = ev.filter(is_dead)
    reasons = (
        gone.select(["agent_id", "reason"])
        .append_column("n", pa.array(np.ones(gone.num_rows, np.int64)))
        .group_by(["agent_id", "reason"], use_threads=False)
        .aggregate([("n", "sum")])
        .rename_columns(["agent_id", "reason", "n"])
    )
    facts = {
        "agent_taken": fact_table(
            "agent_taken",
            {
                "agent_id": taken["agent_id"],
                "registrations": taken["lines"],
                "dead_letters": taken["dead"],
                "failed_policy": taken["failed"],
            },
        ),
        "agent_reasons": fact_table("agent_reasons", {k: reasons[k] for k in ("agent_id", "reason", "n")}),
    }
    return facts, counts


def _reason_lists(reasons: pa.Table) -> pa.Table:
    """Per agent, its dead-letter reasons as evidence text: 'NAME_PLACEHOLDER 3, UNKNOWN_LINE 1'."""
    counted = reasons.sort_by([("agent_id", "ascending"), ("n", "descending"), ("reason", "ascending")]).to_pydict()
    text: dict[str, list[str]] = {}
    for agent, reason, n in zip(counted["agent_id"], counted["reason"], counted["n"]):
        text.setdefault(agent, []).append(f"{reason} {n}")
    return pa.table(
        {
            "agent_id": pa.array(list(text), pa.string()),
            "dead_letter_reasons": pa.array([", ".join(v) for v in text.values()], pa.string()),
        }
    )


def agents_table(facts: Mapping[str, pa.Table], thresholds: Mapping[str, float]) -> pa.Table:
    """One row per agent that opened a line or took a registration; the agents over a threshold first."""
    opened = facts.get("agent_opened", empty_fact("agent_opened"))
    taken = facts.get("agent_taken", empty_fact("agent_taken"))
    taken = taken.join(
        _reason_lists(facts.get("agent_reasons", empty_fact("agent_reasons"))), "agent_id", join_type="left outer"
    )
    table = opened.join(taken, "agent_id", join_type="full outer")
    for name in _COUNTS:
        table = table.set_column(table.schema.get_field_index(name), name, pc.fill_null(table[name], 0))
    table = _with_thresholds(table, thresholds)
    table = table.set_column(
        table.schema.get_field_index("dead_letter_reasons"),
        "dead_letter_reasons",
        pc.fill_null(table["dead_letter_reasons"], ""),
    )
    issues = pc.add(table["dead_letters"], table["opened_flagged"])
    order = table.append_column("_issues", issues).sort_by(
        [
            ("over_threshold", "descending"),
            ("attention", "descending"),
            ("_issues", "descending"),
            ("agent_id", "ascending"),
        ]
    )
    return order.select(AGENT_COLUMNS)


def _with_thresholds(table: pa.Table, thresholds: Mapping[str, float]) -> pa.Table:
    """The failed and flagged shares, and whether each is over the policy's threshold."""
    failed_share = ratio(table["dead_letters"], table["registrations"])
    flagged_share = ratio(table["opened_flagged"], table["lines_opened"])
    over_failed = pc.and_(
        pc.greater_equal(table["registrations"], int(thresholds["min_registrations"])),
        pc.greater(pc.fill_null(failed_share, 0.0), float(thresholds["max_failed_share"])),
    )
    over_flagged = pc.and_(
        pc.greater_equal(table["lines_opened"], int(thresholds["min_lines_opened"])),
        pc.greater(pc.fill_null(flagged_share, 0.0), float(thresholds["max_flagged_share"])),
    )
    return (
        table.append_column("failed_share", failed_share)
        .append_column("flagged_share", flagged_share)
        .append_column("over_failed_threshold", over_failed)
        .append_column("over_flagged_threshold", over_flagged)
        .append_column("over_threshold", pc.or_(over_failed, over_flagged))
        .append_column("attention", _attention(table, thresholds))
    )


def _attention(table: pa.Table, thresholds: Mapping[str, float]) -> pa.Array:
    """Per agent: each share's 95 % lower bound over its threshold, the larger of the two."""
    parts = []
    for cases, total, limit in (
        ("dead_letters", "registrations", thresholds["max_failed_share"]),
        ("opened_flagged", "lines_opened", thresholds["max_flagged_share"]),
    ):
        low = wilson_low(table[cases].to_numpy(zero_copy_only=False), table[total].to_numpy(zero_copy_only=False))
        parts.append(low / float(limit) if float(limit) > 0 else low)
    return pa.array(np.round(np.maximum(parts[0], parts[1]), 6), pa.float64())
