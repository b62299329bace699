"""The base lines of one merge bucket (Beam-free): raw or merged base rows -> kept lines.

A raw base is classified by the scan's policy (``classify_batch``) and
de-duplicated exactly as the scan does (latest ``updated_at`` wins;
``DUPLICATE_LINE_ID``); a merged base is only de-duplicated (latest
``registered_at`` wins). Used by :func:`transforms.merge.bucket.merge_bucket`
and by the streaming merge's :class:`transforms.merge.stream.LineIndex`.
"""

from __future__ import annotations

import datetime as dt

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.crypto.tokenize import normalize
from transforms.scan.classify import bits_to_lists, classify_batch
from transforms.scan.crossrecord import deduplicate
from transforms.core.deadletter import DeadLetterContext, dead_letter_table
from transforms.core.counts import value_counts
from transforms.scan.policy import Policy
from transforms.core.reasons import FLAGS

__all__ = ["IDENTITY_FIELDS", "NORMALIZED_FIELDS", "Normalized", "base_lines", "raw_lines", "merged_lines"]

IDENTITY_FIELDS = (
    "doc_type",
    "doc_number",
    "name",
    "address",
    "handler_doc_type",
    "handler_doc_number",
    "handler_name",
)


# The identity fields whose normalised values a raw base's kept lines carry (``_norm_FIELD``) when asked for.
NORMALIZED_FIELDS = ("doc_number", "name", "address")


class Normalized(NamedTuple):
    """A raw base's identity values as its classification normalised them (``_norm_FIELD`` columns of the kept
    lines), and the rows whose identity is another's (a winning registration's: normalised anew)."""

    columns: dict[str, pa.Array]
    other: np.ndarray  # bool, one per line

    @classmethod
    def of_lines(cls, lines: pa.Table, other: np.ndarray) -> "Normalized":
        """From kept lines that carry ``_norm_FIELD`` (``base_lines(..., normalized=True)``); ``other``: the lines
        whose identity is another's."""
        return cls({f: lines.column(f"_norm_{f}").combine_chunks() for f in NORMALIZED_FIELDS}, other)

    def of(self, kind: str, field: str, originals: dict) -> pa.Array:
        """``normalize(kind, originals[field])``, the base's own rows taken from the classification."""
        known = self.columns.get(field)
        if known is None:
            return normalize(kind, originals[field])
        if not self.other.any():
            return known
        other = pa.array(self.other)
        return pc.replace_with_mask(known, other, normalize(kind, originals[field].filter(other)))


def base_lines(
    base: pa.Table | None,
    base_kind: str,
    policy: Policy,
    as_of: dt.date,
    ctx: DeadLetterContext,
    salt: str,
    *,
    normalized: bool = False,
) -> tuple[pa.Table | None, pa.Table, dict]:
    """(kept lines or None when the bucket has no base row, base dead letters, counts); ``normalized``: a raw
    base's lines keep their normalised identity values (``_norm_FIELD``, :data:`NORMALIZED_FIELDS`)."""
    if base is not None and base.num_rows and base_kind == "raw":
        return raw_lines(base, policy, as_of, ctx, salt, normalized=normalized)
    if base is not None and base.num_rows:
        return merged_lines(base, ctx)
    return None, dead_letter_table(ctx, []), {}


def raw_lines(
    raw: pa.Table, policy: Policy, as_of: dt.date, ctx: DeadLetterContext, salt: str, *, normalized: bool = False
) -> tuple[pa.Table, pa.Table, dict]:
    """A raw base bucket -> (kept lines: classified columns + originals, dead letters, counts)."""
    n = raw.num_rows
    source_rows = raw.column("_src_row").combine_chunks()
    # classify_batch keeps row order and drops its dead rows: a position in
    # place of the row number finds each kept row's originals.
    positioned = raw.set_column(raw.schema.get_field_index("_src_row"), "_src_row", pa.array(np.arange(n)))
    verdict = classify_batch(positioned, policy, as_of, ctx, salt, normalized=normalized)
    dead = verdict.dead_letter
    dead = dead.set_column(
        dead.schema.get_field_index("source_row"), "source_row", source_rows.take(dead.column("source_row"))
    )
    classified = verdict.classified
    position = classified.column("_src_row")
    keys = pa.table(
        {
            "line_id": classified.column("line_id"),
            "_updated_at": classified.column("_updated_at"),
            "_src_file": classified.column("_src_file"),
            "_src_row": source_rows.take(position),
            "_pos": pa.array(np.arange(classified.num_rows)),
        }
    )
    kept, _, duplicates = deduplicate(_with_batch(keys), ctx)
    lines = classified.take(kept.column("_pos"))
    originals = raw.take(lines.column("_src_row"))
    lines = lines.set_column(lines.schema.get_field_index("_src_row"), "_src_row", kept.column("_src_row"))
    for field in IDENTITY_FIELDS:
        lines = lines.append_column(f"_orig_{field}", originals.column(field))
    lines = lines.append_column("flags", bits_to_lists(lines.column("_flag_bits").to_numpy(), FLAGS))
    for name, typ in (("registered_at", pa.timestamp("us", tz="UTC")), ("registration_event_id", pa.string())):
        lines = lines.append_column(name, pa.nulls(lines.num_rows, typ))
    dead = pa.concat_tables([dead, duplicates])
    return lines, dead, {"base": {"rows_in": n, "dead_letters": value_counts(dead.column("reason"))}}


def _with_batch(keys: pa.Table) -> pa.Table:
    """The scan's de-duplication also names each row by batch and index (unused here)."""
    n = keys.num_rows
    return keys.append_column("_batch", pa.array(np.zeros(n, np.int64))).append_column(
        "_index", pa.array(np.arange(n, dtype=np.int32))
    )


def merged_lines(rows: pa.Table, ctx: DeadLetterContext) -> tuple[pa.Table, pa.Table, dict]:
    """A merged base bucket -> (kept lines, DUPLICATE_LINE_ID dead letters, counts)."""
    n = rows.num_rows
    keys = pa.table(
        {
            "line_id": rows.column("line_id"),
            "_updated_at": rows.column("registered_at"),
            "_src_file": rows.column("_src_file"),
            "_src_row": rows.column("_src_row"),
            "_pos": pa.array(np.arange(n)),
        }
    )
    kept, _, dead = deduplicate(_with_batch(keys), ctx)
    lines = rows.take(kept.column("_pos")) if dead.num_rows else rows
    return lines, dead, {"base": {"rows_in": n, "dead_letters": value_counts(dead.column("reason"))}}
