"""One metrics namespace for every step, and the run's count tallies summed in a Beam job.

Counts travel as small nested dicts (``{"identity_status": {"COMPLETE": 3}}``)
merged by :class:`SumCounts`; Beam counters in :data:`NAMESPACE` mirror them
for runners' dashboards. :func:`merge_counts` and :func:`value_counts` live in
the Beam-free :mod:`transforms.core.counts` (re-exported here).
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from transforms.core.counts import merge_counts, value_counts

__all__ = ["NAMESPACE", "merge_counts", "value_counts", "SumCounts", "counter"]

NAMESPACE = "subreg"


def counter(name: str):
    return beam.metrics.Metrics.counter(NAMESPACE, name)


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
