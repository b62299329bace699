"""Arrow column helpers of the classifier (Beam-free): lookups and work done once per distinct value.

Split from :mod:`transforms.scan.classify`, which re-exports ``lookup``,
``per_distinct`` and ``bits_to_lists``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _column(table: pa.Table, name: str) -> pa.Array:
    return table.column(name).combine_chunks()


def _np(mask) -> np.ndarray:
    if isinstance(mask, np.ndarray):
        return mask
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def lookup(values: pa.Array, table: Mapping[str, str]) -> pa.Array:
    """Map each value through ``table`` (missing -> null), once per distinct value."""
    encoded = pc.dictionary_encode(values)
    mapped = pa.array([table.get(v) for v in encoded.dictionary.to_pylist()], pa.string())
    return mapped.take(encoded.indices)


def per_distinct(values: pa.Array, fn):
    """Apply ``fn`` to the distinct values only, then spread the result back.

    For low-cardinality columns (labels, enums, dates, regions, agents) this
    turns a per-row pass into a per-distinct-value one. ``fn`` returns an
    Arrow array, or a tuple whose items are Arrow arrays or numpy arrays.
    """
    encoded = pc.dictionary_encode(values)
    indices = encoded.indices
    result = fn(encoded.dictionary)

    def spread(item):
        if isinstance(item, np.ndarray):
            out = np.zeros(len(values), item.dtype)
            valid = indices.is_valid().to_numpy(zero_copy_only=False)
            out[valid] = item[indices.to_numpy(zero_copy_only=False)[valid].astype(np.int64)]
            return out
        return item.take(indices)

    if isinstance(result, tuple):
        return tuple(spread(item) for item in result)
    return spread(result)


def bits_to_lists(bits: np.ndarray, codes: tuple[str, ...]) -> pa.Array:
    """list<string> of the set bits, in catalogue order, built without a Python loop per row.

    Few distinct bit sets occur in a batch: the lists are built once per distinct set and taken."""
    encoded = pc.dictionary_encode(pa.array(bits))
    return _lists(encoded.dictionary.to_numpy(), codes).take(encoded.indices)


def _lists(bits: np.ndarray, codes: tuple[str, ...]) -> pa.Array:
    width = len(codes)
    matrix = ((bits[:, None] >> np.arange(width, dtype=bits.dtype)) & 1).astype(bool)
    rows, cols = np.nonzero(matrix)  # row-major: each row's codes in catalogue order
    offsets = np.zeros(len(bits) + 1, np.int32)
    np.cumsum(matrix.sum(axis=1), out=offsets[1:])
    values = pa.array(codes, pa.string()).take(pa.array(cols.astype(np.int32)))
    return pa.ListArray.from_arrays(pa.array(offsets), values)
