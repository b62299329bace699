"""A GroupByKey of Arrow tables by bucket, that can spill its payload to files.

``{tag: PCollection[pa.Table]}`` (each table with an int ``_bucket`` column)
becomes ``PCollection[(bucket, {tag: pa.Table})]``: every row of a bucket,
from every input, in one element. It is a real Beam GroupByKey either way:

* ``spill_dir=None``: the sub-tables themselves go through the shuffle. Right
  for Dataflow, whose shuffle service keeps data on disk.
* ``spill_dir=PATH``: each input batch is written once, sorted by bucket, as
  one spill file under ``PATH`` (one sealed Arrow IPC stream per bucket), and
  only ``(tag, file, index, offset, length)`` references go through the
  GroupByKey. The local runners keep every shuffled element in memory; with
  references, memory is bounded by the largest bucket, not by the base
  (issue: 10 million lines in under 1 GB).

Spills hold whatever the shuffle carries (the merge's raw rows and events:
names, document numbers, addresses), so nothing is spilled in the clear:
each bucket's IPC stream is sealed with ``transforms.crypto.envelope.Envelope``
(AES-256-GCM under a fresh data key) and bound to its file name and index. The
data keys are wrapped by a **per-run spill key** that exists only in memory:
the launcher draws it (:func:`spill_area`) and hands it to the worker
processes in the environment variable ``BACKFILL_SPILL_KEY``, never in the
pickled job graph (which Beam may write to disk or send to a service). Why not
``Envelope.ephemeral()``, a key per process: with ``--direct_running_mode
multi_processing`` a batch is spilled by one worker process and read back by
another, and Beam starts those workers with the launcher's environment, so an
environment key is one key for exactly the launcher and its workers. After a
crash (SIGKILL included) the spill files are ciphertext under a key that died
with the processes. A spill therefore needs a local runner (remote workers do
not get the key); the launchers refuse ``--spill on`` elsewhere.

:func:`spill_area` (Beam-free, :mod:`transforms.core.spill_folders`, re-exported
here) gives a run its private spill folder ``$TMPDIR/backfill-spill-STEP-*``
(mode 0700, flock'ed while the run lives, removed at its end with the key); it
removes the spill folders of dead runs, never a live run's.

:func:`with_bucket` gives a table its ``_bucket`` column (the stable bucket
of a key column, :func:`transforms.scan.crossrecord.bucket_of`).
"""

from __future__ import annotations

import typing
import uuid

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.spill_files import BUCKET, SPILL_KEY_ENV, ensure_spill_key, read_part
from transforms.core.spill_files import split_by_bucket, write_parts
from transforms.core.spill_folders import SPILL_PREFIX, remove_dead_spills, spill_area
from transforms.scan.crossrecord import bucket_of

__all__ = [
    "ArrowGroupByBucket",
    "BUCKET",
    "with_bucket",
    "spill_area",
    "remove_dead_spills",
    "SPILL_PREFIX",
    "SPILL_KEY_ENV",
    "ensure_spill_key",
]


def with_bucket(table: pa.Table, values, n_buckets: int) -> pa.Table:
    """``table`` with its ``_bucket`` column set (replaced if present) to the bucket of each of ``values``."""
    buckets = pa.array(bucket_of(values, n_buckets), pa.int32())
    if BUCKET in table.column_names:
        return table.set_column(table.schema.get_field_index(BUCKET), BUCKET, buckets)
    return table.append_column(BUCKET, buckets)


@beam.typehints.with_input_types(pa.Table)
@beam.typehints.with_output_types(typing.Tuple[int, typing.Tuple[str, pa.Table]])
class _InlineFn(beam.DoFn):
    def __init__(self, tag: str):
        self._tag = tag

    def process(self, table: pa.Table):
        for bucket, part in split_by_bucket(table):
            yield bucket, (self._tag, part)


@beam.typehints.with_input_types(pa.Table)
@beam.typehints.with_output_types(typing.Tuple[int, typing.Tuple[str, str, int, int, int]])
class _SpillFn(beam.DoFn):
    """Write one batch as a spill file: per bucket, one sealed Arrow IPC stream, one after the other."""

    def __init__(self, tag: str, spill_dir: str):
        self._tag = tag
        self._dir = spill_dir

    def process(self, table: pa.Table):
        parts = list(split_by_bucket(table))
        if not parts:
            return
        name = f"{uuid.uuid4().hex}.spill"
        path = FileSystems.join(self._dir, self._tag, name)
        with FileSystems.create(path) as handle:
            refs = write_parts(handle, name, parts)
        for bucket, index, start, length in refs:
            yield bucket, (self._tag, path, index, start, length)


def _gather(element, spilled: bool):
    bucket, values = element
    parts: dict[str, list[pa.Table]] = {}
    for value in values:
        if spilled:
            tag, path, index, offset, length = value
            part = read_part(path, index, offset, length)
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
        if self._spill_dir:
            ensure_spill_key()  # here, before the runner starts the workers that inherit it
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
