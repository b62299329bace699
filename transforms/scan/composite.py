"""ClassifyRegistrationCompleteness: the scan's composite transform (no I/O).

    raw batches -> Classify --rows (by batch)---------------------------+
                     |                                                    |
                     +--keys--> ShuffleByLine -> Deduplicate --drops------+
                                                   |                      |
                                                   +--doc keys--> ShuffleByDocument
                                                                  -> DocumentFlags --flags--+
                                                                                            |
                          JoinExceptions (by batch) <----------------------------------------+
                          -> Finalize -> classified batches; dead letters and counts beside

Every step moves Arrow tables. Only narrow key tables go through the line
and document shuffles; their findings come back to each batch as small
"exception" tables, so whole rows are shuffled once, by batch. The shuffles
are Beam GroupByKeys on bucket numbers (:mod:`transforms.core.shuffle`): a worker
holds one bucket or one batch at a time, whatever the size of the base.

The document and name hashes that meet in ``ShuffleByDocument`` are keyed by
a salt that exists only for the run. Every classifier must use the same one,
on every worker, and none may be in the job graph (a staged Dataflow job can
be read): ``DrawRunSalt`` draws it on a worker and each ``Classify`` takes it
as a side input. The launcher never sees it and no file holds it.
"""

from __future__ import annotations

import datetime as dt
import typing

import apache_beam as beam
import pyarrow as pa

from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.scan.classify import classify_batch, finalize
from transforms.scan.crossrecord import (
    apply_exceptions,
    batch_id,
    deduplicate,
    document_flags,
    document_keys,
    key_table,
)
from transforms.core.deadletter import DeadLetterContext
from transforms.core.metrics import SumCounts, counter
from transforms.scan.batch_steps import batch_counts, checked_salt, dead_counts, rows_for_finalize, to_batches
from transforms.scan.policy import Policy
from transforms.core.shuffle import BUCKET, ArrowGroupByBucket, with_bucket
from transforms.core.tags import COUNTS, DEAD_LETTER, KEYS, ROWS

__all__ = ["ClassifyRegistrationCompleteness", "ScanOutputs", "rows_for_finalize", "draw_run_salt"]


class ScanOutputs(typing.NamedTuple):
    classified: beam.PCollection  # pa.Table batches of the classified-line contract
    dead_letter: beam.PCollection  # pa.Table batches of the dead-letter schema
    counts: beam.PCollection  # one dict: the run's tallies


def draw_run_salt(_) -> str:
    """The run's salt, drawn on a worker by the job's own first step (see ClassifyRegistrationCompleteness)."""
    import secrets

    return secrets.token_hex(16)


@beam.typehints.with_output_types(dict, dead_letter=pa.Table, rows=pa.Table, keys=pa.Table)
class _ClassifyFn(beam.DoFn):
    """One raw batch -> counts, dead letters, rows for Finalize and the narrow key table of the shuffles.

    ``salt`` is None when the run's salt comes as the side input ``run_salt`` (what launchers do): then
    this object, and so the job graph, never holds it."""

    def __init__(self, policy: Policy, as_of: dt.date, ctx: DeadLetterContext, salt: str | None, n_buckets: int):
        self._policy, self._as_of, self._ctx = policy, as_of, ctx
        self._salt, self._n = salt, n_buckets
        self._rows = counter("rows_classified")

    def process(self, raw: pa.Table, run_salt: str | None = None):
        salt = checked_salt(self._salt if self._salt is not None else run_salt)
        result = classify_batch(raw, self._policy, self._as_of, self._ctx, salt)
        self._rows.inc(result.classified.num_rows)
        yield {"rows_in": result.rows_in}
        if result.dead_letter.num_rows:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, result.dead_letter)
        table = result.classified
        if table.num_rows:
            batch = batch_id(table.column("_src_file")[0].as_py(), table.column("_src_row")[0].as_py())
            yield beam.pvalue.TaggedOutput(ROWS, rows_for_finalize(table, batch))
            keys = key_table(table, batch)
            yield beam.pvalue.TaggedOutput(KEYS, with_bucket(keys, keys.column("line_id"), self._n))


@beam.typehints.with_output_types(pa.Table, dead_letter=pa.Table, doc_keys=pa.Table)
class _DedupFn(beam.DoFn):
    def __init__(self, ctx: DeadLetterContext, n_buckets: int):
        self._ctx, self._n = ctx, n_buckets

    def process(self, element):
        _, tables = element
        kept, drops, dead = deduplicate(tables["keys"], self._ctx)
        if dead.num_rows:
            counter("dead_letter_DUPLICATE_LINE_ID").inc(dead.num_rows)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead)
        docs = document_keys(kept)
        if docs.num_rows:
            docs = docs.drop_columns([BUCKET])
            yield beam.pvalue.TaggedOutput("doc_keys", with_bucket(docs, docs.column("_doc_key"), self._n))
        if drops.num_rows:
            yield to_batches(drops)


@beam.typehints.with_output_types(pa.Table)
class _FlagFn(beam.DoFn):
    def __init__(self, line_limit: int):
        self._limit = line_limit

    def process(self, element):
        _, tables = element
        flags = document_flags(tables["keys"], self._limit)
        if flags.num_rows:
            yield to_batches(flags)


@beam.typehints.with_output_types(pa.Table, counts=dict)
class _FinalizeFn(beam.DoFn):
    def process(self, element):
        _, tables = element
        rows = tables.get("rows")
        if rows is None or rows.num_rows == 0:
            return
        found = [t for t in (tables.get("drops"), tables.get("flags")) if t is not None]
        exceptions = pa.concat_tables(found) if found else None
        table = finalize(apply_exceptions(rows, exceptions))
        yield beam.pvalue.TaggedOutput(COUNTS, batch_counts(table))
        yield table


class ClassifyRegistrationCompleteness(beam.PTransform):
    """Raw base batches in; classified batches, dead letters and counts out.

    Args:
      policy: the compiled identity policy.
      as_of: the date the checks are made against (birth dates, void documents).
      ctx: run-level fields of dead letters.
      salt: None (what launchers pass): the run-local key of the document and name hashes is drawn
        on a worker by the job's first step (``DrawRunSalt``) and reaches every classifier as a side
        input, so no worker disagrees and the key is in no job graph, file or launcher; or a fixed
        key of 32 hex characters (tests: it travels in the graph).
      n_buckets: buckets of each shuffle; each must fit one worker's memory.
      spill_dir: where shuffles spill their payload (local runners); None to
        shuffle the tables themselves (Dataflow).
      reader_dead_letter: dead letters from reading, to count and pass on.
    """

    def __init__(self, policy, as_of, ctx, salt, n_buckets, spill_dir=None, reader_dead_letter=None):
        super().__init__()
        self._policy, self._as_of, self._ctx = policy, as_of, ctx
        self._salt = None if salt is None else checked_salt(salt)
        self._n, self._spill = max(1, int(n_buckets)), spill_dir
        self._reader_dead = reader_dead_letter

    def expand(self, raw) -> ScanOutputs:
        n = self._n
        side = {}
        if self._salt is None:
            drawn = (
                beam.pvalue.PBegin(raw.pipeline)
                | "DrawRunSalt" >> beam.Impulse()
                | "RunSalt" >> beam.Map(draw_run_salt)
            )
            side["run_salt"] = beam.pvalue.AsSingleton(drawn)
        classified = raw | "Classify" >> beam.ParDo(
            _ClassifyFn(self._policy, self._as_of, self._ctx, self._salt, n), **side
        ).with_outputs(DEAD_LETTER, ROWS, KEYS, main=COUNTS)
        deduped = (
            {"keys": classified.keys}
            | "ShuffleByLine" >> ArrowGroupByBucket(self._spill, label="ShuffleByLine")
            | "Deduplicate" >> beam.ParDo(_DedupFn(self._ctx, n)).with_outputs(DEAD_LETTER, "doc_keys", main="drops")
        )
        flags = (
            {"keys": deduped.doc_keys}
            | "ShuffleByDocument" >> ArrowGroupByBucket(self._spill, label="ShuffleByDocument")
            | "DocumentFlags" >> beam.ParDo(_FlagFn(self._policy.doc_line_limit))
        )
        final = (
            {"rows": classified.rows, "drops": deduped.drops, "flags": flags}
            | "JoinExceptions" >> ArrowGroupByBucket(self._spill, label="JoinExceptions")
            | "Finalize" >> beam.ParDo(_FinalizeFn()).with_outputs(COUNTS, main="classified")
        )
        dead_inputs = [classified.dead_letter, deduped.dead_letter]
        if self._reader_dead is not None:
            dead_inputs.append(self._reader_dead)
        dead = tuple(dead_inputs) | "FlattenDeadLetters" >> beam.Flatten().with_output_types(pa.Table)
        counts = (
            (classified.counts, final.counts, dead | "CountDeadLetters" >> beam.Map(dead_counts))
            | "FlattenCounts" >> beam.Flatten()
            | "SumCounts" >> beam.CombineGlobally(SumCounts())
        )
        return ScanOutputs(final.classified, dead, counts)
