"""A bounded sample of ids for a manifest: the ``n`` smallest line ids of a PCollection of Arrow tables.

A run that touches millions of lines cannot list them in its manifest; it
writes them to a file and lists the first ``n`` (in sort order, so a re-run
lists the same ones). ``Top.Smallest`` keeps at most ``n`` per worker on any
runner. The sample travels as a counts dict (``{name: {line_id: 1, ...}}``)
so it is summed with the run's other counts (``transforms/core/metrics.py``).
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["SAMPLE", "smallest_ids", "id_sample", "sample_list"]

SAMPLE = 1_000


def smallest_ids(table: pa.Table, n: int = SAMPLE, column: str = "line_id") -> list[str]:
    """The ``n`` smallest ids of a table (a batch's share of a sample)."""
    ids = table.column(column)
    return ids.take(pc.sort_indices(ids)[:n]).to_pylist()


def _as_counts(ids: list[str], name: str) -> dict:
    return {name: {i: 1 for i in ids}}


def id_sample(pcoll, name: str, label: str, n: int = SAMPLE, column: str = "line_id"):
    """PCollection of tables -> one counts dict ``{name: {id: 1, ...}}`` of the ``n`` smallest ids."""
    return (
        pcoll
        | f"{label}Ids" >> beam.FlatMap(smallest_ids, n, column)
        | f"{label}Smallest" >> beam.combiners.Top.Smallest(n)
        | f"{label}Sample" >> beam.Map(_as_counts, name)
    )


def sample_list(counts: dict, name: str) -> list[str]:
    """The sample back from summed counts, sorted."""
    return sorted(counts.get(name) or {})
