"""The retention purge's Beam transforms; the per-batch and per-bucket logic is in ``retention.py`` beside this.

    base batches --FindDue-------------------+
    vault key rows --KeyIdsByLine------------+--JoinByLine--PurgeBucket--> value rows kept, lines to shred,
    vault value rows --KeyValuesByLine-------+                             lines purged, counts
    base batches --RewriteBase--> the base with the due lines blanked, counts          (a Map: no shuffle)

:class:`PurgeVault` finds the due lines batch by batch and joins them with the
vault by line bucket through :class:`transforms.core.shuffle.ArrowGroupByBucket`
(the merge's bucketed Arrow shuffle): the due lines of a 300-million-line base
can be millions, so they are never collected into one process or a side
input; a worker holds one bucket. Only ``line_id`` (and the key version and
keyset, counted on the way) of the key table travels: the key table itself is
rewritten by the crypto-shred (``pipelines/keys_shred.py``). :class:`RewriteBase`
needs no join: whether a line is due is a function of its own row, and the
new ``vault_key_version`` a function of the old one (``move_versions``).

Counts travel as small dicts (``transforms/core/metrics.py``), each side
counted where it is read and again where it is joined or written, so the
launcher's ``summarise`` can check every balance inside the job.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import typing

import apache_beam as beam
import pyarrow as pa

from transforms.compliance.retention import due_lines, purge_batch, purge_bucket
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.metrics import SumCounts, counter, value_counts
from transforms.core.samples import id_sample
from transforms.core.shuffle import BUCKET, ArrowGroupByBucket, with_bucket
from transforms.core.tags import COUNTS

__all__ = ["PurgeVault", "PurgeOutputs", "RewriteBase", "RewriteOutputs"]

SHRED, PURGED = "shred", "purged"


@contextlib.contextmanager
def _value_free(step: str):
    """Errors leave these DoFns without their text (Arrow's may quote a token or mask): the type only."""
    try:
        yield
    except Exception as exc:
        raise RuntimeError(f"{step} failed ({type(exc).__name__}; its text is withheld)") from None


@beam.typehints.with_output_types(pa.Table, counts=dict)
class _FindDueFn(beam.DoFn):
    """A base batch -> its due lines (line_id, with_identity) bucketed by line_id; its line counts."""

    def __init__(self, cutoff: dt.date, n_buckets: int):
        self._cutoff, self._n = cutoff, n_buckets

    def process(self, table: pa.Table):
        with _value_free("FindDue"):
            due, counts = due_lines(table, self._cutoff)
        counter("retention_lines_read").inc(table.num_rows)
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
        if due.num_rows:
            yield with_bucket(due, due.column("line_id"), self._n)


@beam.typehints.with_output_types(pa.Table, counts=dict)
class _KeyIdsFn(beam.DoFn):
    """A key-table batch -> its line ids bucketed; counted with its key versions and keysets."""

    def __init__(self, n_buckets: int):
        self._n = n_buckets

    def process(self, table: pa.Table):
        vault = {
            "keys_in": table.num_rows,
            "keys_by_version": value_counts(table.column("vault_key_version")),
            "keys_by_keyset": value_counts(table.column("keyset_id")),
        }
        yield beam.pvalue.TaggedOutput(COUNTS, {"vault": vault})
        if table.num_rows:
            ids = table.select(["line_id"])
            yield with_bucket(ids, ids.column("line_id"), self._n)


@beam.typehints.with_output_types(pa.Table, counts=dict)
class _KeyValuesFn(beam.DoFn):
    """A value-table batch -> bucketed by line_id; counted."""

    def __init__(self, n_buckets: int):
        self._n = n_buckets

    def process(self, table: pa.Table):
        yield beam.pvalue.TaggedOutput(COUNTS, {"vault": {"values_in": table.num_rows}})
        if table.num_rows:
            yield with_bucket(table, table.column("line_id"), self._n)


@beam.typehints.with_output_types(pa.Table, shred=pa.Table, purged=pa.Table, counts=dict)
class _PurgeBucketFn(beam.DoFn):
    """One line bucket -> the value rows kept, the lines to shred, the lines purged, the counts."""

    def process(self, element):
        _, tables = element

        def part(tag):
            return tables[tag].drop_columns([BUCKET]) if tag in tables else None

        with _value_free("PurgeBucket"):
            result = purge_bucket(part("due"), part("keys"), part("values"))
        counter("retention_values_dropped").inc(result.counts["vault"]["values_dropped"])
        yield beam.pvalue.TaggedOutput(COUNTS, result.counts)
        for tag, table in ((SHRED, result.shred), (PURGED, result.purged)):
            if table.num_rows:
                yield beam.pvalue.TaggedOutput(tag, table)
        if result.values is not None and result.values.num_rows:
            yield result.values


class PurgeOutputs(typing.NamedTuple):
    values: beam.PCollection  # value rows kept (schemas/vault_value)
    shred: beam.PCollection  # tables of line_id: the due lines that have a data key
    purged: beam.PCollection  # tables of line_id: the due lines purged
    counts: beam.PCollection  # one dict: base, purge and vault counts, and the purged lines' sample


class PurgeVault(beam.PTransform):
    """``{"base": base batches (line_id, status, terminated_on and the identity columns at least),
    "keys": key-table batches, "values": value-table batches}`` -> :class:`PurgeOutputs`.

    Args:
      cutoff: the last ``terminated_on`` whose retention period is over (``last_purged_date``).
      n_buckets: buckets of the join by line; each bucket must fit a worker.
      spill_dir: where the shuffle spills its payload (local runners); None on a distributed runner.
    """

    def __init__(self, cutoff: dt.date, n_buckets: int, spill_dir: str | None = None):
        super().__init__()
        self._cutoff, self._n, self._spill = cutoff, max(1, int(n_buckets)), spill_dir

    def expand(self, inputs: dict) -> PurgeOutputs:
        due = inputs["base"] | "FindDue" >> beam.ParDo(_FindDueFn(self._cutoff, self._n)).with_outputs(
            COUNTS, main="due"
        )
        keys = inputs["keys"] | "KeyIdsByLine" >> beam.ParDo(_KeyIdsFn(self._n)).with_outputs(COUNTS, main="ids")
        values = inputs["values"] | "KeyValuesByLine" >> beam.ParDo(_KeyValuesFn(self._n)).with_outputs(
            COUNTS, main="rows"
        )
        purged = (
            {"due": due.due, "keys": keys.ids, "values": values.rows}
            | "JoinByLine" >> ArrowGroupByBucket(self._spill, label="JoinByLine")
            | "PurgeBucket" >> beam.ParDo(_PurgeBucketFn()).with_outputs(SHRED, PURGED, COUNTS, main="values")
        )
        sample = id_sample(purged.purged, "purged_sample", "Purged")
        counts = (
            (due.counts, keys.counts, values.counts, purged.counts, sample)
            | "FlattenCounts" >> beam.Flatten()
            | "SumCounts" >> beam.CombineGlobally(SumCounts())
        )
        return PurgeOutputs(purged.values, purged.shred, purged.purged, counts)


@beam.typehints.with_output_types(pa.Table, counts=dict)
class _RewriteFn(beam.DoFn):
    """A base batch -> the same lines, the due ones blanked, versions moved (``purge_batch``); counts."""

    def __init__(self, cutoff: dt.date, moved: dict[str, str], drop: tuple[str, ...]):
        self._cutoff, self._moved, self._drop = cutoff, dict(moved), tuple(drop)

    def process(self, table: pa.Table):
        table = table.drop_columns([c for c in self._drop if c in table.column_names])
        with _value_free("RewriteBase"):
            out, counts = purge_batch(table, self._cutoff, self._moved)
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
        yield out


def _written(table: pa.Table) -> dict:
    return {"rewrite": {"lines_out": table.num_rows}}


class RewriteOutputs(typing.NamedTuple):
    base: beam.PCollection  # rewritten batches (schemas/merged_line)
    counts: beam.PCollection  # count dicts (not summed: the launcher adds its own before SumCounts)


class RewriteBase(beam.PTransform):
    """Base batches -> :class:`RewriteOutputs`; ``moved`` maps old vault key versions to new ones.

    ``drop``: reader columns that are not part of the base (``_src_file``, ``_src_row``)."""

    def __init__(self, cutoff: dt.date, moved: dict[str, str], drop: tuple[str, ...] = ("_src_file", "_src_row")):
        super().__init__()
        self._fn = _RewriteFn(cutoff, moved, drop)

    def expand(self, base) -> RewriteOutputs:
        rewritten = base | "Blank" >> beam.ParDo(self._fn).with_outputs(COUNTS, main="base")
        out = rewritten.base | "CountWritten" >> beam.Map(_written)
        return RewriteOutputs(rewritten.base, (rewritten.counts, out) | "FlattenCounts" >> beam.Flatten())
