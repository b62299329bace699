"""The run's count tallies as small nested dicts (Beam-free).

Counts travel as ``{"identity_status": {"COMPLETE": 3}}``: :func:`merge_counts`
adds one into another, :func:`value_counts` makes one of a column. The Beam
job sums them with ``transforms.core.metrics.SumCounts``; the in-process scan
(``pipelines/scan_local.py``) calls these directly, without importing Beam.
"""

from __future__ import annotations

import pyarrow.compute as pc

__all__ = ["merge_counts", "value_counts"]


def merge_counts(into: dict, other: dict) -> dict:
    """Add ``other`` into ``into`` (numbers add, dicts merge recursively)."""
    for key, value in other.items():
        if isinstance(value, dict):
            merge_counts(into.setdefault(key, {}), value)
        else:
            into[key] = into.get(key, 0) + value
    return into


def value_counts(column) -> dict:
    """``{value: count}`` of an Arrow array or chunked array, nulls left out, in first-seen order."""
    counts = pc.value_counts(column)
    return {
        v: c for v, c in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()) if v is not None
    }
