"""Re-tokenize a merged base under the primary join key, from the vault's originals.

After ``backfill keys rotate --join-key`` the base's tokens are under an older join
key; a token cannot be re-keyed without its value, so each value is opened
from the vault (``Vault.open_many``: one data-key unwrap per line, one AES-GCM
per value) and tokenized again. Masks do not change.

:func:`retokenize_bucket` does one line bucket (Beam-free):

* lines without tokens, and lines already under the primary version, are kept;
* every other line gets new tokens and ``join_key_version``, provided every
  token it holds can be re-made: the vault has the value, it opens, and (when
  the old join key is still enabled) it gives the old token back; otherwise
  the line keeps its row as it was and is reported, with a reason
  (``VAULT_VALUE_MISSING``, ``VAULT_AUTH_FAILED``, ``TOKEN_MISMATCH``).

:class:`RetokenizeBase` is the composite: a shuffle of base and vault rows by
line_id bucket (:class:`transforms.core.shuffle.ArrowGroupByBucket`), then the
bucket function in a DoFn that loads the keyset in ``setup()``.
"""

from __future__ import annotations

import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import arrow_schema
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.scan.crossrecord import bucket_of
from transforms.core.deadletter import DeadLetterContext, dead_letter_table
from transforms.merge.bucket import MERGED_SCHEMA, TOKENIZED, value_counts
from transforms.core.metrics import SumCounts
from transforms.core.shuffle import BUCKET, ArrowGroupByBucket
from transforms.crypto.vault import VaultError
from transforms.core.tags import COUNTS, DEAD_LETTER

__all__ = ["retokenize_bucket", "RetokenizeBase", "RetokenizeOutputs", "REASONS"]

REASONS = {
    "VAULT_VALUE_MISSING": "a token of the line has no value in the vault (or the line's data key is gone)",
    "VAULT_AUTH_FAILED": "a vault record of the line failed authentication (tampered, truncated or moved)",
    "TOKEN_MISMATCH": "the vault's value does not give the line's old token back",
}


def _open(ids: pa.Array, keys: pa.Table, values: pa.Table, vault) -> tuple[pa.Table, dict[str, str]]:
    """(line_id, field, value) of the lines, and line -> failure reason for lines that do not open."""
    fields = list(TOKENIZED)
    keys = keys.filter(pc.is_in(keys.column("line_id"), ids))
    values = values.filter(pc.is_in(values.column("line_id"), ids))
    try:
        return vault.open_many(keys, values, fields), {}
    except VaultError:  # find the culprits one line at a time (slow path, only after a failure)
        opened, failed = [], {}
        for line_id in keys.column("line_id").to_pylist():

            def one(t):
                return t.filter(pc.equal(t.column("line_id"), line_id))

            try:
                opened.append(vault.open_many(one(keys), one(values), fields))
            except VaultError:
                failed[line_id] = "VAULT_AUTH_FAILED"
        empty = pa.schema([("line_id", pa.string()), ("field", pa.string()), ("value", pa.string())]).empty_table()
        return pa.concat_tables([empty, *opened]), failed


def retokenize_bucket(
    base: pa.Table, keys: pa.Table | None, values: pa.Table | None, tokenizer, vault, keyset
) -> tuple[pa.Table, pa.Table, dict]:
    """(new base rows in MERGED_SCHEMA, failures: line_id + reason + field, counts) of one bucket."""
    version = tokenizer.version
    jkv = base.column("join_key_version")
    with_tokens = pc.is_valid(jkv)
    todo = pc.and_(with_tokens, pc.fill_null(pc.not_equal(jkv, version), False))
    lines = base.filter(todo)
    ids = lines.column("line_id").combine_chunks()
    opened, failed = _open(
        ids,
        keys if keys is not None else arrow_schema("vault_key").empty_table(),
        values if values is not None else arrow_schema("vault_value").empty_table(),
        vault,
    )
    failures = _Failures(len(ids))
    failures.unopened(ids, failed)
    new = _new_tokens(ids, lines, opened, failures, tokenizer, keyset)
    bad = failures.bad
    replaced = _replaced(lines, new, pa.array(~bad), version)
    out = pa.concat_tables(
        [
            base.filter(pc.invert(todo)).select(MERGED_SCHEMA.names).cast(MERGED_SCHEMA),
            replaced.select(MERGED_SCHEMA.names).cast(MERGED_SCHEMA),
        ]
    )
    rows = failures.table(ids)
    n_with = int(pc.sum(with_tokens.cast(pa.int64())).as_py() or 0)
    counts = {
        "lines": base.num_rows,
        "with_tokens": n_with,
        "already_current": n_with - len(ids),
        "retokenized": int((~bad).sum()),
        "failed": int(bad.sum()),
        "failed_reasons": value_counts(rows.column("reason")) if rows.num_rows else {},
    }
    return out, rows, counts


class _Failures:
    """Of each line to re-tokenize: whether it failed, the reason and the field."""

    def __init__(self, n: int):
        self.bad = np.zeros(n, bool)
        self.reason = np.full(n, None, object)
        self.field = np.full(n, None, object)

    def fail(self, mask: np.ndarray, why: str, field: str | None) -> None:
        self.reason[mask], self.field[mask] = why, field
        self.bad = self.bad | mask

    def unopened(self, ids: pa.Array, failed: dict[str, str]) -> None:
        """The lines whose vault rows did not open (``_open``)."""
        if failed:
            for why in set(failed.values()):
                self.fail(
                    pc.is_in(ids, pa.array([k for k, v in failed.items() if v == why], pa.string())).to_numpy(
                        zero_copy_only=False
                    ),
                    why,
                    None,
                )

    def table(self, ids: pa.Array) -> pa.Table:
        """line_id + reason + field of the failed lines."""
        bad = self.bad
        return pa.table(
            {
                "line_id": ids.filter(pa.array(bad)),
                "reason": pa.array(list(self.reason[bad]), pa.string()),
                "field": pa.array(list(self.field[bad]), pa.string()),
            }
        )


def _new_tokens(
    ids: pa.Array, lines: pa.Table, opened: pa.Table, failures: _Failures, tokenizer, keyset
) -> dict[str, pa.Array]:
    """token column -> the new tokens of the lines, from the opened values; fails the lines a value is
    missing for (VAULT_VALUE_MISSING) or, under a still enabled old key, does not give the old token (TOKEN_MISMATCH)."""
    version = tokenizer.version
    new = {}
    enabled = set(keyset.versions("join"))
    for field, (kind, token_column, _) in TOKENIZED.items():
        mine = opened.filter(pc.equal(opened.column("field"), field))
        value = mine.column("value").combine_chunks().take(pc.index_in(ids, value_set=mine.column("line_id")))
        old = lines.column(token_column).combine_chunks()
        need = old.is_valid().to_numpy(zero_copy_only=False)
        failures.fail(
            need & ~value.is_valid().to_numpy(zero_copy_only=False) & ~failures.bad, "VAULT_VALUE_MISSING", field
        )
        old_versions = set(pc.unique(lines.column("join_key_version")).to_pylist())
        for old_version in sorted(old_versions & enabled - {version}):  # a retired key cannot check
            again = tokenizer.tokens_with_version(kind, value, old_version)
            same = pc.equal(lines.column("join_key_version"), old_version).to_numpy(zero_copy_only=False)
            match = pc.fill_null(pc.equal(again, old), False).to_numpy(zero_copy_only=False)
            failures.fail(same & need & ~failures.bad & ~match, "TOKEN_MISMATCH", field)
        new[token_column] = pc.if_else(pa.array(need), tokenizer.tokens(kind, value), pa.scalar(None, pa.string()))
    return new


def _replaced(lines: pa.Table, new: dict[str, pa.Array], ok: pa.Array, version: str) -> pa.Table:
    """The lines with their new tokens and join_key_version where ``ok``; as they were elsewhere."""
    replaced = lines
    n = lines.num_rows
    for name, column in (*new.items(), ("join_key_version", pa.array(np.full(n, version, object), pa.string()))):
        current = replaced.column(name).combine_chunks()
        replaced = replaced.set_column(replaced.schema.get_field_index(name), name, pc.if_else(ok, column, current))
    return replaced


class RetokenizeOutputs(typing.NamedTuple):
    base: beam.PCollection
    dead_letter: beam.PCollection
    counts: beam.PCollection


@beam.typehints.with_output_types(pa.Table)
class _KeyFn(beam.DoFn):
    def __init__(self, n_buckets: int):
        self._n = n_buckets

    def process(self, table: pa.Table):
        if table.num_rows:
            yield table.append_column(BUCKET, pa.array(bucket_of(table.column("line_id"), self._n), pa.int32()))


@beam.typehints.with_output_types(pa.Table, dead_letter=pa.Table, counts=dict)
class _RetokenizeFn(beam.DoFn):
    def __init__(self, keys_path: str, ctx: DeadLetterContext):
        self._keys_path, self._ctx = keys_path, ctx

    def setup(self):
        from transforms.crypto.keyset import Keyset
        from transforms.crypto.tokenize import Tokenizer
        from transforms.crypto.vault import Vault

        self._keyset = Keyset.load(self._keys_path)
        self._tokenizer, self._vault = Tokenizer(self._keyset), Vault(self._keyset)

    def process(self, element):
        _, tables = element

        def part(tag):
            return tables[tag].drop_columns([BUCKET]) if tag in tables else None

        if part("base") is None:
            return
        base, failures, counts = retokenize_bucket(
            part("base"), part("vault_keys"), part("vault_values"), self._tokenizer, self._vault, self._keyset
        )
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
        if failures.num_rows:
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER,
                dead_letter_table(
                    self._ctx,
                    failures.column("reason"),
                    line_id=failures.column("line_id"),
                    field=failures.column("field"),
                    detail=[REASONS[r] for r in failures.column("reason").to_pylist()],
                ),
            )
        yield base


class RetokenizeBase(beam.PTransform):
    """``{"base", "vault_keys", "vault_values"}`` -> RetokenizeOutputs (base rows, failures as dead letters, counts)."""

    def __init__(self, keys_path: str, ctx: DeadLetterContext, n_buckets: int, spill_dir: str | None = None):
        super().__init__()
        self._keys, self._ctx, self._n, self._spill = keys_path, ctx, max(1, int(n_buckets)), spill_dir

    def expand(self, inputs: dict) -> RetokenizeOutputs:
        keyed = {
            tag: pcoll | f"Key{tag.title().replace('_', '')}" >> beam.ParDo(_KeyFn(self._n))
            for tag, pcoll in inputs.items()
        }
        out = (
            keyed
            | "JoinByLine" >> ArrowGroupByBucket(self._spill, label="RetokenizeJoinByLine")
            | "Retokenize"
            >> beam.ParDo(_RetokenizeFn(self._keys, self._ctx)).with_outputs(DEAD_LETTER, COUNTS, main="base")
        )
        counts = out.counts | "SumCounts" >> beam.CombineGlobally(SumCounts())
        return RetokenizeOutputs(out.base, out.dead_letter, counts)
