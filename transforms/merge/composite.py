"""MergeCompletedRegistrations: the batch merge's composite transform (no I/O).

    events --EventsByLine (transforms/merge/event_stages.py)--+
    base ----KeyBaseByLine--------------------------------------+--> JoinByLine --TokenizeAndSeal--> merged lines
    vault keys / values (optional) --KeyVault*ByLine------------+        |--> vault_keys, vault_values
                                                                          '--> dead_letter, counts

A previous merge's base and vault files cut by line bucket (``files``) are
not inputs: each bucket's step reads its own file of them (no shuffle). Every
bucket fires (``EveryBucket``), and the ``buckets`` output gives each bucket's
merged lines and vault rows together, for a writer that cuts files by bucket
(``pipelines/io/bucket_sink.py``).

``EventsByLine`` checks every copy of every event, then decides who holds each
event_id (docs/contract.md "Registration events": the first *valid* copy in
file, row order) and sends one copy per id to the line join. Every shuffle is
a :class:`transforms.core.shuffle.ArrowGroupByBucket` (a Beam GroupByKey of
Arrow tables by a hash bucket of event_id or line_id), so no side has to fit
in memory; a worker holds one bucket. The per-bucket work is
:func:`transforms.merge.bucket.merge_bucket`. The keyset is loaded from its
path in ``setup()``: keys never travel in the pipeline graph.

    outputs = ({"base": base_batches, "events": event_batches}
               | MergeCompletedRegistrations(policy, as_of, ctx, "keys.json", n_buckets=8))
    outputs.base, outputs.vault_keys, outputs.vault_values, outputs.dead_letter, outputs.counts
"""

from __future__ import annotations

import datetime as dt
import secrets
import typing

import apache_beam as beam
import pyarrow as pa

from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.deadletter import DeadLetterContext
from schemas import arrow_schema
from transforms.merge.bucket import MERGED_SCHEMA, merge_bucket, value_counts
from transforms.merge.event_stages import EventsByLine
from transforms.merge.event_steps import line_keys
from transforms.merge.value_free import value_free
from transforms.core.metrics import SumCounts, counter
from transforms.scan.policy import Policy
from transforms.core.shuffle import BUCKET, ArrowGroupByBucket, with_bucket
from transforms.core.tags import COUNTS, DEAD_LETTER

__all__ = [
    "MergeCompletedRegistrations",
    "MergeOutputs",
    "LineBucket",
    "BUCKETS",
    "every_bucket",
    "key_by_line",
    "bucket_tables",
    "empty_bucket",
    "KeyByLineFn",
    "TokenizeAndSealFn",
    "reader_dead_counts",
    "value_free",
]


BUCKETS = "buckets"
LineBucket = typing.Tuple[int, pa.Table, pa.Table, pa.Table]  # (bucket, merged lines, vault keys, vault values)


class MergeOutputs(typing.NamedTuple):
    base: beam.PCollection  # pa.Table batches of the merged-line contract
    vault_keys: beam.PCollection  # pa.Table batches of vault_key rows
    vault_values: beam.PCollection  # pa.Table batches of vault_value rows
    dead_letter: beam.PCollection  # pa.Table batches of the dead-letter schema
    counts: beam.PCollection  # one dict: the run's tallies
    # one LineBucket per line bucket, every bucket (empty tables for an empty one); None from compaction
    buckets: beam.PCollection | None = None


@beam.typehints.with_output_types(pa.Table)
class KeyByLineFn(beam.DoFn):
    """Bucket of each row's line_id (cleaned as the scan cleans it, so ' L1' meets 'L1')."""

    def __init__(self, n_buckets: int, clean: bool):
        self._n, self._clean = n_buckets, clean

    def process(self, table: pa.Table):
        if table.num_rows == 0:
            return
        yield with_bucket(table, line_keys(table, self._clean), self._n)


@beam.typehints.with_output_types(
    pa.Table, vault_keys=pa.Table, vault_values=pa.Table, dead_letter=pa.Table, counts=dict, buckets=LineBucket
)
class TokenizeAndSealFn(beam.DoFn):
    """One line bucket -> merged lines, vault rows, dead letters, counts, and the bucket's three tables together.

    Holds the keyset *path*; the keyset, tokenizer and vault are built in
    ``setup()`` on the worker (a Keyset refuses to be pickled). ``files``: the
    inputs already cut by line bucket, each bucket reading its own file of them.
    """

    def __init__(
        self, keys_path: str, policy: Policy, as_of: dt.date, ctx: DeadLetterContext, base_kind: str, files=None
    ):
        self._keys_path, self._policy, self._as_of, self._ctx = keys_path, policy, as_of, ctx
        self._base_kind, self._files = base_kind, files
        self._lines = counter("lines_merged")
        self._applied = counter("events_applied")
        self._sealed = counter("values_sealed")

    def setup(self):
        from transforms.crypto.keyset import Keyset
        from transforms.crypto.tokenize import Tokenizer
        from transforms.crypto.vault import Vault

        keyset = Keyset.load(self._keys_path)
        self._tokenizer, self._vault = Tokenizer(keyset), Vault(keyset)
        # The key of classify's document and name hashes: the merge never compares them (not even within a
        # bucket), so each worker draws its own here, in setup(): it is in no job graph (tests/test_graph_secrets.py).
        self._salt = secrets.token_hex(16)

    def process(self, element):
        bucket, tables = element
        parts = bucket_tables(bucket, tables, self._files)
        if not parts:  # an empty bucket: its (empty) files are written all the same
            yield beam.pvalue.TaggedOutput(BUCKETS, empty_bucket(bucket))
            return
        with value_free("TokenizeAndSeal"):
            result = merge_bucket(
                parts.get("base"),
                self._base_kind,
                parts.get("events"),
                parts.get("vault_keys"),
                parts.get("vault_values"),
                tokenizer=self._tokenizer,
                vault=self._vault,
                policy=self._policy,
                as_of=self._as_of,
                ctx=self._ctx,
                salt=self._salt,
            )
        self._lines.inc(result.base.num_rows)
        self._applied.inc(result.counts.get("events", {}).get("applied", 0))
        self._sealed.inc(result.counts.get("vault", {}).get("values_sealed", 0))
        yield beam.pvalue.TaggedOutput(COUNTS, result.counts)
        yield beam.pvalue.TaggedOutput(BUCKETS, (bucket, result.base, result.vault_keys, result.vault_values))
        for tag, table in (
            ("vault_keys", result.vault_keys),
            ("vault_values", result.vault_values),
            ("dead_letter", result.dead_letter),
        ):
            if table.num_rows:
                yield beam.pvalue.TaggedOutput(tag, table)
        if result.base.num_rows:
            yield result.base


def _bucket_numbers(n: int) -> pa.Table:
    return pa.table({BUCKET: pa.array(range(n), pa.int32())})


def every_bucket(pipeline: beam.Pipeline, n: int) -> beam.PCollection:
    """One table with a row per bucket 0..n-1 (only its bucket column): joined in as :data:`BUCKETS`, every
    bucket then fires, so every bucket's files are written (and its files read, for inputs not shuffled)."""
    return (
        pipeline
        | "EveryBucket" >> beam.Create([n])
        | "BucketNumbers" >> beam.Map(_bucket_numbers).with_output_types(pa.Table)
    )


def key_by_line(inputs: dict, tags: tuple[str, ...], n: int, clean: bool = False) -> dict:
    """The PCollections of ``inputs`` among ``tags``, each row given its line bucket (``Key<Tag>ByLine``)."""
    return {
        tag: inputs[tag] | f"Key{tag.title().replace('_', '')}ByLine" >> beam.ParDo(KeyByLineFn(n, clean))
        for tag in tags
        if tag in inputs
    }


def bucket_tables(bucket: int, tables: dict, files) -> dict:
    """A joined bucket's rows by tag (the shuffled tables without their bucket column, the trigger dropped),
    with its rows of the inputs read by bucket (``files``, a ``BucketFiles``) read here; tags without rows
    are left out."""
    found = {tag: table.drop_columns([BUCKET]) for tag, table in tables.items() if tag != BUCKETS}
    for tag in files.shards if files is not None else ():
        table = files.gather(tag, bucket)
        if table is not None:
            found[tag] = table
    return found


def empty_bucket(bucket: int) -> tuple:
    """The :data:`LineBucket` of a bucket with no line: empty tables of the merged base and of the vault."""
    vault = (arrow_schema("vault_key").empty_table(), arrow_schema("vault_value").empty_table())
    return bucket, MERGED_SCHEMA.empty_table(), *vault


def reader_dead_counts(side: str):
    def count(table: pa.Table) -> dict:
        return {side: {"dead_letters": value_counts(table.column("reason"))}}

    return count


class MergeCompletedRegistrations(beam.PTransform):
    """Base lines and registration events in; merged lines, vault rows, dead letters, counts out.

    Apply to a dict of PCollections of Arrow tables: ``base`` (raw batches from
    ``ReadSubscriberBase``, or merged-line batches with ``_src_file`` and
    ``_src_row``), ``events`` (``ReadRegistrationEvents`` batches), and
    optionally ``vault_keys`` / ``vault_values`` (a previous vault) and
    ``base_dead_letter`` / ``events_dead_letter`` (the readers' dead letters,
    passed on and counted).

    Args:
      policy: the compiled identity policy.
      as_of: the date the checks are made against.
      ctx: run-level fields of dead letters (step ``merge``).
      keys_path: the keyset file, loaded on each worker.
      n_buckets: buckets of both shuffles; each bucket must fit a worker.
      base_kind: ``raw`` (plaintext identity columns) or ``merged`` (a previous merge's base).
      spill_dir: where the shuffles spill their payload (local runners); None
        to shuffle the tables themselves (Dataflow).
      files: the inputs already cut by line bucket (a previous merge's files,
        ``pipelines.io.line_buckets.BucketFiles``): not given in ``inputs``,
        each line bucket reads its own file of them.
    """

    def __init__(
        self,
        policy: Policy,
        as_of: dt.date,
        ctx: DeadLetterContext,
        keys_path: str,
        n_buckets: int,
        base_kind: str = "raw",
        spill_dir: str | None = None,
        files=None,
    ):
        super().__init__()
        if base_kind not in ("raw", "merged"):
            raise ValueError(f"base_kind must be raw or merged, not {base_kind!r}")
        self._policy, self._as_of, self._ctx, self._keys = policy, as_of, ctx, keys_path
        self._n, self._kind, self._spill = max(1, int(n_buckets)), base_kind, spill_dir
        self._files = files

    def expand(self, inputs: dict) -> MergeOutputs:
        n = self._n
        events = {tag: inputs[tag] for tag in ("events", "base") if tag in inputs} | "EventsByLine" >> EventsByLine(
            self._policy, self._as_of, self._ctx, self._keys, n, self._kind, self._spill, self._files
        )
        join = {
            "events": events.events,
            BUCKETS: every_bucket(inputs["events"].pipeline, n),
            **key_by_line(inputs, ("base",), n, self._kind == "raw"),
            **key_by_line(inputs, ("vault_keys", "vault_values"), n),
        }
        merged = (
            join
            | "JoinByLine" >> ArrowGroupByBucket(self._spill, label="JoinByLine")
            | "TokenizeAndSeal"
            >> beam.ParDo(
                TokenizeAndSealFn(self._keys, self._policy, self._as_of, self._ctx, self._kind, self._files)
            ).with_outputs("vault_keys", "vault_values", DEAD_LETTER, COUNTS, BUCKETS, main="base")
        )
        dead_inputs = [events.dead_letter, merged.dead_letter]
        count_inputs = [events.counts, merged.counts]
        for side in ("base", "events"):
            reader_dead = inputs.get(f"{side}_dead_letter")
            if reader_dead is not None:
                dead_inputs.append(reader_dead)
                count_inputs.append(
                    reader_dead | f"Count{side.title()}ReaderDeadLetters" >> beam.Map(reader_dead_counts(side))
                )
        dead = tuple(dead_inputs) | "FlattenDeadLetters" >> beam.Flatten().with_output_types(pa.Table)
        counts = (
            tuple(count_inputs) | "FlattenCounts" >> beam.Flatten() | "SumCounts" >> beam.CombineGlobally(SumCounts())
        )
        return MergeOutputs(merged.base, merged.vault_keys, merged.vault_values, dead, counts, merged[BUCKETS])
