"""A GroupByKey of Arrow tables by bucket, that can spill its payload to files.

``{tag: PCollection[pa.Table]}`` (each table with an int ``_bucket`` column)
becomes ``PCollection[(bucket, {tag: pa.Table})]``: every row of a bucket,
from every input, in one element. It is a real Beam GroupByKey either way:

* ``spill_dir=None``: the sub-tables themselves go through the shuffle. Right
  for Dataflow, whose shuffle service keeps data on disk.
* ``spill_dir=PATH``: each input batch is written once, sorted by bucket, as
  an Arrow IPC file (one record batch per bucket) under ``PATH``, and only
  ``(tag, file, batch index)`` references go through the GroupByKey. The local
  runners keep every shuffled element in memory; with references, memory is
  bounded by the largest bucket, not by the base (issue: 10 million lines in
  under 1 GB). Paths go through Beam's FileSystems, so ``gs://`` works too.

:func:`with_bucket` gives a table its ``_bucket`` column (the stable bucket
of a key column, :func:`transforms.scan.crossrecord.bucket_of`).
"""

from __future__ import annotations

import uuid
from typing import Iterable

import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.scan.crossrecord import bucket_of

__all__ = ["ArrowGroupByBucket", "BUCKET", "with_bucket"]

BUCKET = "_bucket"


def with_bucket(table: pa.Table, values, n_buckets: int) -> pa.Table:
    """``table`` with its ``_bucket`` column set (replaced if present) to the bucket of each of ``values``."""
    buckets = pa.array(bucket_of(values, n_buckets), pa.int32())
    if BUCKET in table.column_names:
        return table.set_column(table.schema.get_field_index(BUCKET), BUCKET, buckets)
    return table.append_column(BUCKET, buckets)


def _split_by_bucket(table: pa.Table) -> Iterable[tuple[int, pa.Table]]:
    if table.num_rows == 0:
        return
    buckets = table.column(BUCKET).to_numpy()
    if buckets.min() == buckets.max():  # one batch, one bucket: no sort needed
        yield int(buckets[0]), table
        return
    order = np.argsort(buckets, kind="stable")
    table = table.take(pa.array(order))
    buckets = buckets[order]
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(buckets)]
    for start, end in zip(starts, ends):
        yield int(buckets[start]), table.slice(start, end - start)


@beam.typehints.with_input_types(pa.Table)
@beam.typehints.with_output_types(typing.Tuple[int, typing.Tuple[str, pa.Table]])
class _InlineFn(beam.DoFn):
    def __init__(self, tag: str):
        self._tag = tag

    def process(self, table: pa.Table):
        for bucket, part in _split_by_bucket(table):
            yield bucket, (self._tag, part)


@beam.typehints.with_input_types(pa.Table)
@beam.typehints.with_output_types(typing.Tuple[int, typing.Tuple[str, str, int]])
class _SpillFn(beam.DoFn):
    """Write one batch as an IPC file of per-bucket record batches."""

    def __init__(self, tag: str, spill_dir: str):
        self._tag = tag
        self._dir = spill_dir

    def process(self, table: pa.Table):
        parts = list(_split_by_bucket(table))
        if not parts:
            return
        path = FileSystems.join(self._dir, self._tag, f"{uuid.uuid4().hex}.arrow")
        schema = parts[0][1].schema
        with FileSystems.create(path) as handle:
            with pa.ipc.new_file(handle, schema) as writer:
                for _, part in parts:
                    writer.write_table(part, max_chunksize=max(part.num_rows, 1))
        # One record batch per bucket, in order: batch i is parts[i].
        for index, (bucket, _) in enumerate(parts):
            yield bucket, (self._tag, path, index)


def _read_batch(path: str, index: int) -> pa.Table:
    if "://" not in path:
        with pa.memory_map(path) as source:
            return pa.Table.from_batches([pa.ipc.open_file(source).get_batch(index)])
    with FileSystems.open(path) as handle:
        data = handle.read()
    return pa.Table.from_batches([pa.ipc.open_file(pa.BufferReader(data)).get_batch(index)])


def _gather(element, spilled: bool):
    bucket, values = element
    parts: dict[str, list[pa.Table]] = {}
    for value in values:
        if spilled:
            tag, path, index = value
            part = _read_batch(path, index)
        else:
            tag, part = value
        parts.setdefault(tag, []).append(part)
    merged = {}
    for tag, tables in parts.items():
        # Deterministic order whatever order the shuffle delivered them in.
        merged[tag] = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
    yield bucket, merged


class ArrowGroupByBucket(beam.PTransform):
    """Group Arrow tables from several inputs by their ``_bucket`` column."""

    def __init__(self, spill_dir: str | None = None, label: str | None = None):
        super().__init__(label)
        self._spill_dir = spill_dir

    def expand(self, inputs: dict):
        keyed = []
        for tag, pcoll in sorted(inputs.items()):
            if self._spill_dir:
                fn = _SpillFn(tag, FileSystems.join(self._spill_dir, self.label.replace("/", "_")))
            else:
                fn = _InlineFn(tag)
            keyed.append(pcoll | f"Key{tag.title()}" >> beam.ParDo(fn))
        spilled = bool(self._spill_dir)
        return (
            tuple(keyed)
            | "FlattenInputs" >> beam.Flatten()
            | "GroupByBucket" >> beam.GroupByKey()
            | "Gather"
            >> beam.FlatMap(_gather, spilled).with_output_types(typing.Tuple[int, typing.Dict[str, pa.Table]])
        )
