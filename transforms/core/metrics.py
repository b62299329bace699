"""One metrics namespace for every step, and the run's count tallies.

Counts travel as small nested dicts (``{"identity_status": {"COMPLETE": 3}}``)
merged by :class:`SumCounts`; Beam counters in :data:`NAMESPACE` mirror them
for runners' dashboards. :func:`value_counts` makes one such dict of a column.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pyarrow.compute as pc

__all__ = ["NAMESPACE", "merge_counts", "value_counts", "SumCounts", "counter"]

NAMESPACE = "subreg"


def counter(name: str):
    return beam.metrics.Metrics.counter(NAMESPACE, name)


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


class SumCounts(beam.CombineFn):
    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, acc: dict, counts: dict) -> dict:
        return merge_counts(acc, counts)

    def merge_accumulators(self, accs) -> dict:
        out: dict[str, Any] = {}
        for acc in accs:
            merge_counts(out, acc)
        return out

    def extract_output(self, acc: dict) -> dict:
        return acc
