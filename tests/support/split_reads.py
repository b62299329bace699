"""Reading files in byte ranges for the tests: every range of a file scanned, numbered and read, as the pipeline
does it (pipelines/io/ranges.py) but in this process; and a ReadSplitFn that counts its splits per worker."""

from __future__ import annotations

import dataclasses
import os

import apache_beam as beam
import pyarrow as pa

from pipelines.io.base_files import ReadSplitFn, read_split
from pipelines.io.planning import Split, plan_splits
from pipelines.io.ranges import RangeScan, number_ranges, scan_range
from transforms.core.rows import BASE, Contract

COUNTER_NAMESPACE = "split_reads_test"


def planned(path: str, encoding: str = "utf-8", contract: Contract = BASE) -> Split:
    """The one split plan_splits makes of a whole CSV or Avro file (with its size)."""
    (split,), _ = plan_splits([path], encoding=encoding, contract=contract)
    return split


def ranges_at(split: Split, cuts: list[int]) -> list[Split]:
    """The split cut at these byte offsets, as cut_ranges cuts it at its own."""
    edges = [0, *sorted(set(c for c in cuts if 0 < c < split.size)), split.size]
    return [dataclasses.replace(split, byte_range=(a, b)) for a, b in zip(edges[:-1], edges[1:])]


def resolved(split: Split, cuts: list[int], encoding: str = "utf-8", limit: int | None = None) -> list[Split]:
    """The splits the pipeline reads for a file cut at ``cuts``: each range scanned, then all numbered."""
    kw = {} if limit is None else {"limit": limit}
    return number_ranges([RangeScan(r, scan_range(r, encoding, **kw)) for r in ranges_at(split, cuts)])


def read(splits: list[Split], encoding: str = "utf-8", batch_size: int = 7) -> tuple[pa.Table, list[tuple]]:
    """(every raw row, every bad row as (row, file, field, detail)) of these splits, in split order."""
    tables, bad = [], []
    for split in splits:
        for raw, rows in read_split(split, encoding, batch_size=batch_size):
            tables.append(raw)
            bad += [(b.source_row, b.source_file, b.field, b.detail) for b in rows]
    return (pa.concat_tables(tables) if tables else splits[0].contract.schema.empty_table()), sorted(bad)


class CountingReadFn(ReadSplitFn):
    """ReadSplitFn that also counts the splits it reads, one Beam counter per worker process (``pid-N``)."""

    def process(self, split: Split):
        beam.metrics.Metrics.counter(COUNTER_NAMESPACE, f"pid-{os.getpid()}").inc()
        yield from super().process(split)
