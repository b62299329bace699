"""The report's ``agents`` table (Art. 14): per agent, the registrations it took and the lines it opened.

    table = agents_table(inputs, agent thresholds)

- **taken**: distinct registration events with the agent's ``agent_id``; how many came
  back as dead letters, and how many of those failed the policy (a reason of
  :data:`POLICY_FAILURES`), with the reasons counted as evidence text.
- **opened**: lines of the scan with the agent's ``agent_id``; how many carry a
  cross-record flag and how many need a registration.
- **over a threshold**: an agent with at least ``min_registrations`` registrations whose
  failed share is over ``max_failed_share``, or with at least ``min_lines_opened`` lines
  whose flagged share is over ``max_flagged_share``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.compliance.report_groups import group_sums, ratio
from transforms.core.reasons import LINE_REASONS

if TYPE_CHECKING:
    from transforms.compliance.report import ReportInputs

__all__ = ["agents_table", "POLICY_FAILURES", "AGENT_COLUMNS"]

# The dead-letter reasons that mean "failed the policy" (the rest: unknown line, terminated, unparseable).
POLICY_FAILURES = frozenset(LINE_REASONS)

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
    "dead_letter_reasons",
]


def agents_table(inputs: ReportInputs, thresholds: Mapping[str, float]) -> pa.Table:
    """One row per agent that opened a line or took a registration; the agents over a threshold first."""
    table = _opened_by_agent(inputs.classified).join(
        _taken_by_agent(inputs.events, inputs.dead_letters), "agent_id", join_type="full outer"
    )
    for name in _COUNTS:
        table = table.set_column(table.schema.get_field_index(name), name, pc.fill_null(table[name], 0))
    table = _with_thresholds(table, thresholds)
    table = _with_reason_text(table)
    return table.select(AGENT_COLUMNS).sort_by([("over_threshold", "descending"), ("agent_id", "ascending")])


def _opened_by_agent(scan: pa.Table) -> pa.Table:
    """Per agent of the scan: the lines it opened, how many carry a cross-record flag, how many need registration."""
    opened = scan.filter(pc.is_valid(scan["agent_id"]))
    flagged = pc.greater(pc.fill_null(pc.list_value_length(opened["flags"]), 0), 0)
    opened = pa.table(
        {
            "agent_id": opened["agent_id"],
            "flagged": flagged,
            "needed": pc.fill_null(opened["needs_registration"], False),
        }
    )
    return group_sums(opened, "agent_id", ["flagged", "needed"]).rename_columns(
        ["agent_id", "lines_opened", "opened_flagged", "opened_needing_registration"]
    )


def _taken_by_agent(events: pa.Table | None, dead_letters: pa.Table | None) -> pa.Table:
    """Per agent of the events: registrations, dead letters, policy failures and the dead-letter reasons."""
    if events is None or events.num_rows == 0:
        return pa.table(
            {
                "agent_id": pa.array([], pa.string()),
                "registrations": pa.array([], pa.int64()),
                "dead_letters": pa.array([], pa.int64()),
                "failed_policy": pa.array([], pa.int64()),
                "dead_letter_reasons": pa.array([], pa.string()),
            }
        )
    ev = events.filter(pc.is_valid(events["agent_id"])).select(["event_id", "agent_id"])
    ev = ev.join(_reason_per_event(dead_letters), "event_id", join_type="left outer")
    is_dead = pc.is_valid(ev["reason"])
    failed = pc.fill_null(pc.is_in(ev["reason"], value_set=pa.array(sorted(POLICY_FAILURES))), False)
    taken = group_sums(
        pa.table({"agent_id": ev["agent_id"], "dead": is_dead, "failed": failed}), "agent_id", ["dead", "failed"]
    ).rename_columns(["agent_id", "registrations", "dead_letters", "failed_policy"])
    evidence = _reason_lists(ev.filter(is_dead))
    return taken.join(evidence, "agent_id", join_type="left outer")


def _reason_per_event(dead_letters: pa.Table | None) -> pa.Table:
    """One dead-letter reason per event (the least, when an event was dead-lettered more than once)."""
    dead = (
        dead_letters
        if dead_letters is not None
        else pa.table({"event_id": pa.array([], pa.string()), "reason": pa.array([], pa.string())})
    )
    dead = dead.filter(pc.is_valid(dead["event_id"])).select(["event_id", "reason"])
    return dead.group_by("event_id").aggregate([("reason", "min")]).rename_columns(["event_id", "reason"])


def _reason_lists(dead: pa.Table) -> pa.Table:
    """Per agent, its dead-letter reasons as evidence text: 'NAME_PLACEHOLDER 3, UNKNOWN_LINE 1'."""
    counted = (
        dead.append_column("n", pa.array(np.ones(dead.num_rows, np.int64)))
        .group_by(["agent_id", "reason"])
        .aggregate([("n", "sum")])
        .sort_by([("agent_id", "ascending"), ("n_sum", "descending"), ("reason", "ascending")])
        .to_pydict()
    )
    text: dict[str, list[str]] = {}
    for agent, reason, n in zip(counted["agent_id"], counted["reason"], counted["n_sum"]):
        text.setdefault(agent, []).append(f"{reason} {n}")
    return pa.table(
        {
            "agent_id": pa.array(list(text), pa.string()),
            "dead_letter_reasons": pa.array([", ".join(v) for v in text.values()], pa.string()),
        }
    )


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
    )


def _with_reason_text(table: pa.Table) -> pa.Table:
    """The dead-letter reasons as text, empty for an agent without dead letters."""
    if "dead_letter_reasons" not in table.column_names:
        table = table.append_column("dead_letter_reasons", pa.nulls(table.num_rows, pa.string()))
    return table.set_column(
        table.schema.get_field_index("dead_letter_reasons"),
        "dead_letter_reasons",
        pc.fill_null(table["dead_letter_reasons"], ""),
    )
