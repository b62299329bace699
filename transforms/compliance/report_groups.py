"""Counting over Arrow columns, and the report's facts: small tables of sums that add up across buckets.

A **fact** is a table of key columns and int64 count columns (:data:`FACTS`
names them). Every bucket of lines, batch of the scan or bucket of events
gives a partial fact table; :func:`add_facts` adds partials (concatenated,
then summed per key), so the order in which workers deliver them does not
matter and the result is the same as one count over every line. Sizes grow
with regions, days, waves and agents, never with lines.

Dictionary codes and ``numpy.bincount`` stand in for hash aggregations over the few,
low-cardinality keys the report groups by (region, line type, agent)."""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "count_true",
    "ratio",
    "group_sums",
    "first_per_key",
    "FACTS",
    "fact_table",
    "empty_fact",
    "add_facts",
    "tally",
]

# fact name -> (key columns, count columns)
FACTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "headline": ((), ("needed", "complete", "registered", "not_in_merge", "notified", "past_deadline")),
    "region": (("region",), ("needed", "complete", "registered", "past_deadline")),
    "line_type": (("line_type",), ("needed", "complete", "registered")),
    "channel": (("channel",), ("registrations",)),
    "wave_notified": (("wave",), ("notified",)),
    "wave_registered": (("wave",), ("registered_after",)),
    "day": (("day",), ("registrations",)),
    "backlog": (("kind", "code"), ("lines",)),
    "hours_to_register": (("hour",), ("registrations",)),  # whole hours from the first notice
    "history_waves": (("wave",), ("notices",)),  # every notice of the campaign, any line
    "agent_opened": (("agent_id",), ("lines_opened", "opened_flagged", "opened_needing_registration")),
    "agent_taken": (("agent_id",), ("registrations", "dead_letters", "failed_policy")),
    "agent_reasons": (("agent_id", "reason"), ("n",)),
    # the funnel: needed lines with a job of the wave and channel, their receipts, fallbacks and registrations
    "wave_channel": (("wave", "channel"), ("sent", "delivered", "failed", "fell_back_to_call", "registered_after")),
    "wave_variant": (("wave", "variant"), ("sent", "registered_after")),  # A/B template variants
}
_KEY_TYPES = {
    "region": pa.string(),
    "line_type": pa.string(),
    "channel": pa.string(),
    "wave": pa.int32(),
    "day": pa.date32(),
    "kind": pa.string(),
    "code": pa.string(),
    "hour": pa.int64(),
    "agent_id": pa.string(),
    "reason": pa.string(),
    "variant": pa.string(),
}


def _schema(name: str) -> pa.Schema:
    keys, values = FACTS[name]
    return pa.schema([(k, _KEY_TYPES[k]) for k in keys] + [(v, pa.int64()) for v in values])


def empty_fact(name: str) -> pa.Table:
    return _schema(name).empty_table()


def fact_table(name: str, columns: Mapping[str, object]) -> pa.Table:
    """A partial fact from its columns (arrays or lists), typed as :data:`FACTS` says."""
    schema = _schema(name)
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in schema}, schema=schema)


def tally(name: str, **values: int) -> pa.Table:
    """A one-row fact without keys (``headline``)."""
    return fact_table(name, {k: [int(v)] for k, v in values.items()})


def _sum(name: str, tables: list[pa.Table]) -> pa.Table:
    keys, values = FACTS[name]
    schema = _schema(name)
    both = pa.concat_tables([schema.empty_table(), *(t.select(schema.names).cast(schema) for t in tables)])
    if both.num_rows == 0:
        return both
    summed = both.group_by(list(keys), use_threads=False).aggregate([(v, "sum") for v in values])
    summed = summed.rename_columns([n[: -len("_sum")] if n.endswith("_sum") else n for n in summed.column_names])
    return summed.select(schema.names).cast(schema)


def add_facts(parts: Iterable[Mapping[str, pa.Table]]) -> dict[str, pa.Table]:
    """Partial facts (each a dict name -> table) added up: one table per fact name, a row per key."""
    gathered: dict[str, list[pa.Table]] = {}
    for part in parts:
        for name, table in part.items():
            gathered.setdefault(name, []).append(table)
    return {name: _sum(name, tables) for name, tables in gathered.items()}


def count_true(values) -> int:
    return int(pc.sum(pc.cast(values, pa.int64())).as_py() or 0)


def ratio(num: pa.Array, den: pa.Array) -> pa.Array:
    """``num / den`` per row, rounded to 6 places; null where ``den`` is not positive."""
    num = np.asarray(num.to_numpy(zero_copy_only=False), dtype=np.float64)
    den = np.asarray(den.to_numpy(zero_copy_only=False), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    return pa.array(np.round(out, 6), mask=~(den > 0))


def _codes(keys) -> tuple[np.ndarray, pa.Array]:
    """Dense group codes of ``keys`` (null is a group of its own) and the key of each code."""
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    encoded = pc.dictionary_encode(keys)
    dictionary = encoded.dictionary
    codes = pc.fill_null(encoded.indices, len(dictionary)).to_numpy(zero_copy_only=False)
    if encoded.null_count:
        dictionary = pa.concat_arrays([dictionary, pa.nulls(1, dictionary.type)])
    return codes, dictionary


def group_sums(table: pa.Table, key: str, columns: list[str]) -> pa.Table:
    """Per ``key``: the number of rows and the count of true values in each boolean column.

    Dictionary codes and ``numpy.bincount``: several times faster than a hash
    aggregation over strings for these few, low-cardinality keys."""
    codes, groups = _codes(table[key])
    out = {key: groups, "lines": np.bincount(codes, minlength=len(groups)).astype(np.int64)}
    for name in columns:
        flags = pc.fill_null(table[name], False).to_numpy(zero_copy_only=False)
        out[name] = np.bincount(codes, weights=flags, minlength=len(groups)).astype(np.int64)
    return pa.table(out)


def first_per_key(table: pa.Table, key: str) -> pa.Table:
    """The first row of each distinct ``key`` (events repeated by redelivery count once), in the table's order."""
    codes, groups = _codes(table[key])
    if len(groups) == len(codes):  # every key once: the table as it is
        return table
    null = len(groups) - 1 if table[key].null_count else None
    return table.take(pa.array(_first_rows(codes, len(groups), null)))


def _first_rows(codes: np.ndarray, n_groups: int, null: int | None) -> np.ndarray:
    """The smallest row number of each code (``null``: the null group's code), in row order.

    A row whose code exceeds every code before it is the first of its code (the null group aside); Arrow numbers
    a dictionary's values in the order they first occur, so those rows are every value's first. Should there be
    fewer (another order), the general way."""
    valued = codes.astype(np.int64)
    is_null = valued == null if null is not None else None
    if is_null is not None:
        valued[is_null] = -1
    before = np.maximum.accumulate(np.r_[np.int64(-1), valued[:-1]])
    first = valued > before
    if is_null is not None:
        first[np.argmax(is_null)] = True
    rows = np.flatnonzero(first)
    if len(rows) == n_groups:  # distinct codes, one row each: every group's first row
        return rows
    least = np.full(n_groups, len(codes), np.int64)  # every code occurs: its smallest row number
    np.minimum.at(least, codes, np.arange(len(codes), dtype=np.int64))
    return np.sort(least)
