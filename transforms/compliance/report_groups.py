"""Counting over Arrow columns, shared by the completion report's tables (``report.py``, ``report_agents.py``).

Dictionary codes and ``numpy.bincount`` stand in for hash aggregations over the few,
low-cardinality keys the report groups by (region, line type, agent)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["count_true", "ratio", "group_sums", "first_per_key"]


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
    """The first row of each distinct ``key`` (events repeated by redelivery count once)."""
    codes, _ = _codes(table[key])
    _, first = np.unique(codes, return_index=True)
    return table.take(pa.array(np.sort(first)))
