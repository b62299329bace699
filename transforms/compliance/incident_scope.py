"""ScopeIncident: the incident's Beam pass (no I/O): merged-base batches in, affected lines and counts out.

    base batches --SelectLines--> (key version, no vault) affected lines ----------------------+
         |                                                                                     |
         '--> candidates --+                                                                   +--> affected
    listed ids --KeyListed-+--> JoinByLine --ScopeBuckets--> affected lines, tokens ------------+
    vault keys --KeyVault--+                                        |
                                tokens --ShuffleByDocument--CountSubscribers--> counts

A key version is a per-row filter: without the vault each base batch is
scoped where it is read. A line list (which may hold millions of ids) and the
vault's key table are joined to the base by line bucket through
:class:`transforms.core.shuffle.ArrowGroupByBucket`, as the merge joins,
never as a side input: a worker holds one bucket. The affected lines'
distinct document tokens (subscribers) are counted through a second
bucketed shuffle, by token. Counts leave as small dicts (by region, field,
key version), to be summed with :class:`transforms.core.metrics.SumCounts`.

    outputs = {"base": batches, "listed": ids, "vault_keys": keys} | ScopeIncident(Scope(None, vault=True), 8)
    outputs.affected, outputs.tallies
"""

from __future__ import annotations

import contextlib
import typing

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from transforms.compliance.incident import (
    CANDIDATES,
    VAULT_KEYS,
    Scope,
    candidates,
    describe,
    scope_bucket,
    shipped,
    tally,
)
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.metrics import counter
from transforms.core.shuffle import BUCKET, ArrowGroupByBucket, with_bucket
from transforms.core.tags import COUNTS
from transforms.scan.normalize import contiguous

__all__ = ["ScopeIncident", "IncidentOutputs"]

_TOKENS = pa.schema([("doc_token", pa.string())])


class IncidentOutputs(typing.NamedTuple):
    affected: beam.PCollection  # pa.Table batches of transforms.compliance.incident.AFFECTED
    tallies: beam.PCollection  # dicts, to be summed (SumCounts)


@contextlib.contextmanager
def _value_free(step: str):
    """Arrow's error texts may quote a value: only the type leaves these DoFns."""
    try:
        yield
    except Exception as exc:
        raise RuntimeError(
            f"{step} failed ({type(exc).__name__}; its text is withheld: it may quote identity values)"
        ) from None


def _tokens(tokens, n_buckets: int) -> pa.Table:
    """The distinct non-null document tokens of a batch, bucketed by token."""
    distinct = pc.unique(contiguous(tokens).drop_null())
    return with_bucket(pa.table([distinct], schema=_TOKENS), distinct, n_buckets)


@beam.typehints.with_output_types(pa.Table, candidates=pa.Table, tokens=pa.Table, counts=dict)
class _SelectLinesFn(beam.DoFn):
    """A base batch -> its affected lines (a key version without the vault) or the candidates to join."""

    def __init__(self, scope: Scope, n_buckets: int):
        self._scope, self._n = scope, n_buckets
        self._read = counter("incident_base_lines_read")

    def process(self, table: pa.Table):
        scope, n = self._scope, table.num_rows
        self._read.inc(n)
        with _value_free("SelectLines"):
            rows = candidates(table, scope)
            sent = rows.filter(shipped(rows, scope) if scope.joined else rows.column("in_scope"))
        base = {"rows_in": n, "not_affected": n - sent.num_rows}
        if scope.joined:
            if sent.num_rows:
                yield beam.pvalue.TaggedOutput("candidates", with_bucket(sent, sent.column("line_id"), self._n))
        elif sent.num_rows:
            with _value_free("SelectLines"):
                lines, tokens = describe(sent, None), _tokens(sent.column("doc_token"), self._n)
            yield lines
            yield beam.pvalue.TaggedOutput("tokens", tokens)
        if not scope.joined:
            base["affected"] = sent.num_rows
        yield beam.pvalue.TaggedOutput(COUNTS, {"base": base})


@beam.typehints.with_output_types(pa.Table)
class _KeyListedFn(beam.DoFn):
    """Listed line_ids -> bucketed by line_id."""

    def __init__(self, n_buckets: int):
        self._n = n_buckets

    def process(self, table: pa.Table):
        if table.num_rows:
            yield with_bucket(table.select(["line_id"]), table.column("line_id"), self._n)


@beam.typehints.with_output_types(pa.Table, counts=dict)
class _KeyVaultFn(beam.DoFn):
    """Vault key rows -> :data:`VAULT_KEYS` rows bucketed by line_id; rows of another keyset counted."""

    def __init__(self, n_buckets: int, keyset_id: str | None):
        self._n, self._keyset_id = n_buckets, keyset_id

    def process(self, table: pa.Table):
        if not table.num_rows:
            return
        counts = {"key_rows": table.num_rows}
        if self._keyset_id is not None:
            ids = contiguous(table.column("keyset_id"))
            foreign = pc.value_counts(ids.filter(pc.not_equal(ids, self._keyset_id)))
            if len(foreign):
                counts["foreign_keysets"] = dict(
                    zip(foreign.field("values").to_pylist(), foreign.field("counts").to_pylist())
                )
        yield beam.pvalue.TaggedOutput(COUNTS, {"vault": counts})
        keys = table.select(VAULT_KEYS.names).cast(VAULT_KEYS)
        yield with_bucket(keys, keys.column("line_id"), self._n)


def _part(tables: dict, tag: str, schema: pa.Schema) -> pa.Table:
    if tag in tables:
        return tables[tag].drop_columns([BUCKET])
    return schema.empty_table()


@beam.typehints.with_output_types(pa.Table, tokens=pa.Table, counts=dict)
class _ScopeBucketFn(beam.DoFn):
    """One line bucket (candidates, listed ids, vault key rows) -> affected lines, tokens, counts."""

    def __init__(self, scope: Scope, n_buckets: int):
        self._scope, self._n = scope, n_buckets
        self._affected = counter("incident_lines_affected")

    def process(self, element):
        _, tables = element
        scope = self._scope
        with _value_free("ScopeBuckets"):
            rows = _part(tables, "candidates", CANDIDATES)
            listed = _part(tables, "listed", pa.schema([("line_id", pa.string())])) if scope.kind == "lines" else None
            keys = _part(tables, "vault_keys", VAULT_KEYS) if scope.vault else None
            lines, tokens, counts = scope_bucket(rows, listed, keys, scope)
            lines = lines.take(pc.sort_indices(lines, [("line_id", "ascending")]))
            tokens = _tokens(tokens, self._n)
        self._affected.inc(lines.num_rows)
        if lines.num_rows:
            yield lines
            yield beam.pvalue.TaggedOutput("tokens", tokens)
        yield beam.pvalue.TaggedOutput(COUNTS, counts)


def _count_subscribers(element) -> dict:
    _, tables = element
    return {"subscribers_by_document": len(pc.unique(tables["tokens"].column("doc_token")))}


def _tally(lines: pa.Table) -> dict:
    with _value_free("TallyAffected"):
        return tally(lines)


class ScopeIncident(beam.PTransform):
    """Merged-base batches (and listed ids, vault key rows) in; affected lines and counts out.

    Apply to a dict of PCollections of Arrow tables: ``base`` (``ReadMergedBase`` batches), ``listed``
    (tables with a ``line_id`` column, for a line list) and ``vault_keys`` (``ReadVaultTable`` batches of
    the key table, when ``scope.vault``).

    Args:
      scope: what the incident covers (:class:`transforms.compliance.incident.Scope`).
      n_buckets: buckets of both shuffles; each bucket must fit a worker.
      spill_dir: where the shuffles spill their payload (local runners); None to shuffle the tables.
      keyset_id: the keyset the vault must have been made under (rows of another are counted); None: unchecked.
    """

    def __init__(self, scope: Scope, n_buckets: int, spill_dir: str | None = None, keyset_id: str | None = None):
        super().__init__()
        self._scope, self._n, self._spill, self._keyset_id = scope, max(1, int(n_buckets)), spill_dir, keyset_id

    def expand(self, inputs: dict) -> IncidentOutputs:
        scope, n = self._scope, self._n
        selected = inputs["base"] | "SelectLines" >> beam.ParDo(_SelectLinesFn(scope, n)).with_outputs(
            "candidates", "tokens", COUNTS, main="affected"
        )
        # One source of lines and of tokens, never a Flatten of them: the local runner holds a Flatten's output
        # whole in memory between stages, where lines and tokens must stream into the writes and the shuffle.
        lines, tokens, tallies = selected.affected, selected.tokens, [selected.counts]
        if scope.joined:
            join = {"candidates": selected.candidates}
            if scope.kind == "lines":
                join["listed"] = inputs["listed"] | "KeyListedByLine" >> beam.ParDo(_KeyListedFn(n))
            if scope.vault:
                keyed = inputs["vault_keys"] | "KeyVaultKeysByLine" >> beam.ParDo(
                    _KeyVaultFn(n, self._keyset_id)
                ).with_outputs(COUNTS, main="rows")
                join["vault_keys"] = keyed.rows
                tallies.append(keyed.counts)
            scoped = (
                join
                | "JoinByLine" >> ArrowGroupByBucket(self._spill, label="JoinByLine")
                | "ScopeBuckets" >> beam.ParDo(_ScopeBucketFn(scope, n)).with_outputs("tokens", COUNTS, main="affected")
            )
            lines, tokens = scoped.affected, scoped.tokens
            tallies.append(scoped.counts)
        subscribers = (
            {"tokens": tokens}
            | "ShuffleByDocument" >> ArrowGroupByBucket(self._spill, label="ShuffleByDocument")
            | "CountSubscribers" >> beam.Map(_count_subscribers)
        )
        tallies += [lines | "TallyAffected" >> beam.Map(_tally), subscribers]
        return IncidentOutputs(lines, tuple(tallies) | "FlattenCounts" >> beam.Flatten())
