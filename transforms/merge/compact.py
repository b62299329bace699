"""CompactDeltas: ``backfill compact``'s composite transform (no I/O): base + committed windows -> a new base.

    base ------------KeyBaseByLine-----------------+
    vault keys / values (a merged base) --Key*-----+--> JoinByLine --FoldBucket--> merged lines
    deltas, their vault keys and values --Key*-----+        (per bucket)       |--> vault_keys, vault_values
                                                                               '--> dead_letter, counts

One shuffle (:class:`transforms.core.shuffle.ArrowGroupByBucket`, a Beam
GroupByKey of Arrow tables by the bucket of ``line_id``) brings every row of a
line together: its base row, its previous vault rows and every window's delta
row and vault rows. A worker holds one bucket, never the base. A merged base
and vault cut by line bucket (``files``) are not shuffled: each bucket reads
its own file of them; every bucket fires, and the ``buckets`` output gives
each bucket's three tables together for a writer that cuts files by bucket
(as the batch merge's, ``transforms/merge/composite.py``). Per bucket
(:func:`compact_bucket`):

1. the base is what the batch merge makes of it without events
   (:func:`transforms.merge.bucket.merge_bucket`): a raw base is classified,
   de-duplicated, tokenized and sealed; a merged base is de-duplicated and
   carried with its vault rows;
2. :func:`transforms.merge.stream.fold_deltas`: per line the latest
   registration wins (``registered_at``, a tie to the larger event_id) over
   the base and every window, and a winning delta row brings its window's
   vault rows for its line, replacing the base's.

So the result is the batch merge's base for the same events. The keyset is
loaded from its path in ``FoldBucketFn.setup()``: keys never travel in the
pipeline graph.

    outputs = ({"base": base, "delta": deltas, "delta_keys": keys, "delta_values": values}
               | CompactDeltas(policy, as_of, ctx, "keys.json", n_buckets=8, base_kind="raw"))
    outputs.base, outputs.vault_keys, outputs.vault_values, outputs.dead_letter, outputs.counts
"""

from __future__ import annotations

import datetime as dt
import secrets

import apache_beam as beam
import pyarrow as pa

from schemas import arrow_schema
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.deadletter import DeadLetterContext
from transforms.core.metrics import SumCounts, counter
from transforms.core.shuffle import ArrowGroupByBucket
from transforms.core.tags import COUNTS, DEAD_LETTER
from transforms.merge.bucket import MERGED_SCHEMA, BucketResult, merge_bucket
from transforms.merge.composite import BUCKETS, LineBucket, MergeOutputs, bucket_tables, empty_bucket, every_bucket
from transforms.merge.composite import key_by_line, reader_dead_counts, value_free
from transforms.merge.stream import fold_deltas
from transforms.scan.policy import Policy

__all__ = ["CompactDeltas", "FoldBucketFn", "compact_bucket", "WINDOW", "DELTA_SCHEMAS"]

WINDOW = "_window"  # the position of the window a delta row or delta vault row came from (int64)
_WINDOW_FIELD = pa.field(WINDOW, pa.int64())
DELTA_SCHEMAS = {
    "delta": pa.schema(list(MERGED_SCHEMA) + [_WINDOW_FIELD]),
    "delta_keys": pa.schema(list(arrow_schema("vault_key")) + [_WINDOW_FIELD]),
    "delta_values": pa.schema(list(arrow_schema("vault_value")) + [_WINDOW_FIELD]),
}


def _deltas(tables: dict, tag: str) -> pa.Table:
    """A bucket's delta rows of one kind, in window order (a tie between windows goes to the earlier)."""
    table = tables.get(tag)
    if table is None or table.num_rows == 0:
        return DELTA_SCHEMAS[tag].empty_table()
    return table.select(DELTA_SCHEMAS[tag].names).cast(DELTA_SCHEMAS[tag]).sort_by(WINDOW)


def compact_bucket(
    tables: dict,
    base_kind: str,
    *,
    tokenizer,
    vault,
    policy: Policy,
    as_of: dt.date,
    ctx: DeadLetterContext,
    salt: str,
) -> BucketResult:
    """Compact one line bucket (see the module docstring).

    ``tables``: tag -> the bucket's rows: ``base`` (raw rows, or a merged base's MERGED_ROWS),
    ``vault_keys`` / ``vault_values`` (a merged base's vault), ``delta``, ``delta_keys``,
    ``delta_values`` (with :data:`WINDOW`); any may be absent.
    """
    base = merge_bucket(
        tables.get("base"),
        base_kind,
        None,
        tables.get("vault_keys"),
        tables.get("vault_values"),
        tokenizer=tokenizer,
        vault=vault,
        policy=policy,
        as_of=as_of,
        ctx=ctx,
        salt=salt,
    )
    merged, keys, values, folded = fold_deltas(
        base.base,
        base.vault_keys,
        base.vault_values,
        _deltas(tables, "delta"),
        _deltas(tables, "delta_keys"),
        _deltas(tables, "delta_values"),
    )
    counts = dict(base.counts)
    counts["deltas"] = {k: folded[k] for k in ("delta_rows", "lines_registered", "superseded_or_unknown")}
    counts["vault"] = {**counts.get("vault", {}), "keys": keys.num_rows, "values": values.num_rows}
    return BucketResult(merged, keys, values, base.dead_letter, counts)


@beam.typehints.with_output_types(
    pa.Table, vault_keys=pa.Table, vault_values=pa.Table, dead_letter=pa.Table, counts=dict, buckets=LineBucket
)
class FoldBucketFn(beam.DoFn):
    """One line bucket -> the compacted lines, their vault rows, dead letters, counts, and the bucket's three
    tables together (as the merge's ``TokenizeAndSealFn``).

    Holds the keyset *path*; the keyset, tokenizer and vault are built in
    ``setup()`` on the worker (a Keyset refuses to be pickled). ``files``: the
    inputs already cut by line bucket, each bucket reading its own file of them.
    """

    def __init__(
        self, keys_path: str, policy: Policy, as_of: dt.date, ctx: DeadLetterContext, base_kind: str, files=None
    ):
        self._keys_path, self._policy, self._as_of, self._ctx = keys_path, policy, as_of, ctx
        self._base_kind, self._files = base_kind, files
        self._lines = counter("lines_compacted")
        self._registered = counter("lines_registered_from_deltas")

    def setup(self):
        from transforms.crypto.keyset import Keyset
        from transforms.crypto.tokenize import Tokenizer
        from transforms.crypto.vault import Vault

        keyset = Keyset.load(self._keys_path)
        self._tokenizer, self._vault = Tokenizer(keyset), Vault(keyset)
        self._salt = secrets.token_hex(16)  # run-local key of classify's (unused) shuffle hashes

    def process(self, element):
        bucket, tables = element
        parts = bucket_tables(bucket, tables, self._files)
        if not parts:  # an empty bucket: its (empty) files are written all the same
            yield beam.pvalue.TaggedOutput(BUCKETS, empty_bucket(bucket))
            return
        with value_free("FoldBucket"):
            result = compact_bucket(
                parts,
                self._base_kind,
                tokenizer=self._tokenizer,
                vault=self._vault,
                policy=self._policy,
                as_of=self._as_of,
                ctx=self._ctx,
                salt=self._salt,
            )
        self._lines.inc(result.base.num_rows)
        self._registered.inc(result.counts["deltas"]["lines_registered"])
        yield beam.pvalue.TaggedOutput(COUNTS, result.counts)
        yield beam.pvalue.TaggedOutput(BUCKETS, (bucket, result.base, result.vault_keys, result.vault_values))
        for tag, table in (
            ("vault_keys", result.vault_keys),
            ("vault_values", result.vault_values),
            (DEAD_LETTER, result.dead_letter),
        ):
            if table.num_rows:
                yield beam.pvalue.TaggedOutput(tag, table)
        if result.base.num_rows:
            yield result.base


class CompactDeltas(beam.PTransform):
    """A base and the streaming merge's committed windows in; the compacted base, its vault, dead letters and
    counts out (a :class:`transforms.merge.composite.MergeOutputs`).

    Apply to a dict of PCollections of Arrow tables: ``base`` (raw batches from
    ``ReadSubscriberBase``, or merged-line batches with ``_src_file`` and
    ``_src_row``), ``delta``, ``delta_keys``, ``delta_values`` (the windows'
    rows, each with :data:`WINDOW`), optionally ``vault_keys`` /
    ``vault_values`` (a merged base's vault) and ``base_dead_letter`` (the
    reader's dead letters, passed on and counted), and ``deltas_counts`` (the
    window reader's counts, summed with the rest).

    Args:
      policy, as_of: what a raw base is classified with (the streaming merge's).
      ctx: run-level fields of dead letters (step ``compact``).
      keys_path: the keyset file (or URI), loaded on each worker.
      n_buckets: buckets of the shuffle; each bucket must fit a worker.
      base_kind: ``raw`` (plaintext identity columns) or ``merged`` (a previous merge's base).
      spill_dir: where the shuffle spills its payload (local runners); None
        to shuffle the tables themselves (Dataflow).
      files: the inputs already cut by line bucket (a previous merge's base
        and vault, ``pipelines.io.line_buckets.BucketFiles``): not given in
        ``inputs``, each line bucket reads its own file of them.
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
        self._n, self._kind, self._spill, self._files = max(1, int(n_buckets)), base_kind, spill_dir, files

    def expand(self, inputs: dict) -> MergeOutputs:
        n = self._n
        join = {
            BUCKETS: every_bucket(inputs["delta"].pipeline, n),
            **key_by_line(inputs, ("base",), n, self._kind == "raw"),
            **key_by_line(inputs, ("vault_keys", "vault_values", "delta", "delta_keys", "delta_values"), n),
        }
        fold = FoldBucketFn(self._keys, self._policy, self._as_of, self._ctx, self._kind, self._files)
        folded = (
            join
            | "JoinByLine" >> ArrowGroupByBucket(self._spill, label="JoinByLine")
            | "FoldBucket"
            >> beam.ParDo(fold).with_outputs("vault_keys", "vault_values", DEAD_LETTER, COUNTS, BUCKETS, main="base")
        )
        dead_inputs, count_inputs = [folded.dead_letter], [folded.counts]
        if "base_dead_letter" in inputs:
            dead_inputs.append(inputs["base_dead_letter"])
            count_inputs.append(
                inputs["base_dead_letter"] | "CountBaseReaderDeadLetters" >> beam.Map(reader_dead_counts("base"))
            )
        if "deltas_counts" in inputs:
            count_inputs.append(inputs["deltas_counts"])
        dead = tuple(dead_inputs) | "FlattenDeadLetters" >> beam.Flatten().with_output_types(pa.Table)
        counts = (
            tuple(count_inputs) | "FlattenCounts" >> beam.Flatten() | "SumCounts" >> beam.CombineGlobally(SumCounts())
        )
        return MergeOutputs(folded.base, folded.vault_keys, folded.vault_values, dead, counts, folded[BUCKETS])
