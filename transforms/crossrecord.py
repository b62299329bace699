"""Cross-record checks over Arrow tables (Beam-free): one bucket at a time.

The pipeline routes rows so that every row of one line_id, or of one
document key, lands in the same bucket (:func:`bucket_of`); the functions
here then work on one bucket's table:

* :func:`deduplicate`: one row per line_id, the latest ``updated_at`` wins
  (ties: the later file and row), the others are DUPLICATE_LINE_ID dead letters;
* :func:`document_flags`: DOC_NAME_CONFLICT (one document number, two or more
  names) and DOC_LINE_LIMIT (one person's document on more than N lines that
  are not TERMINATED), keyed by the keyed hash of the normalised number.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.classify import FLAG_BIT
from transforms.deadletter import DeadLetterContext, dead_letter_table

__all__ = ["bucket_of", "deduplicate", "document_keys", "document_flags", "apply_flags"]

# A fixed, public key: line_ids are not identity values, and bucket numbers
# must agree across workers, processes and runs (unlike Python's hash()).
_BUCKET_KEY = "subreg-buckets-1"


def bucket_of(values: pa.Array, n_buckets: int) -> np.ndarray:
    """Stable bucket (0..n-1) of each value (string or fixed-size binary)."""
    import pandas as pd

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_fixed_size_binary(values.type):
        # Already a uniform keyed hash: its first 8 bytes are the bucket.
        raw = np.frombuffer(values.buffers()[1], np.uint64)
        start = values.offset * (values.type.byte_width // 8)
        words = raw[start : start + len(values) * (values.type.byte_width // 8)]
        hashed = words[:: values.type.byte_width // 8]
    else:
        objects = pc.fill_null(values, "").to_numpy(zero_copy_only=False)
        hashed = pd.util.hash_array(objects, hash_key=_BUCKET_KEY, categorize=False)
    return (hashed % np.uint64(n_buckets)).astype(np.int32)


def deduplicate(table: pa.Table, ctx: DeadLetterContext) -> tuple[pa.Table, pa.Table]:
    """(kept rows, DUPLICATE_LINE_ID dead letters) of one bucket."""
    if table.num_rows == 0:
        return table, dead_letter_table(ctx, [])
    ts = pc.fill_null(table.column("_updated_at").cast(pa.int64()), np.iinfo(np.int64).min)
    order = pc.sort_indices(
        pa.table({
            "line_id": table.column("line_id"),
            "ts": ts,
            "file": table.column("_src_file"),
            "row": table.column("_src_row"),
        }),
        sort_keys=[("line_id", "ascending"), ("ts", "ascending"), ("file", "ascending"), ("row", "ascending")],
    )
    table = table.take(order)
    ids = table.column("line_id").combine_chunks()
    # The last row of each run of equal line_ids is the one to keep.
    same_as_next = np.zeros(table.num_rows, bool)
    if table.num_rows > 1:
        same_as_next[:-1] = pc.equal(ids.slice(0, len(ids) - 1), ids.slice(1)).to_numpy(
            zero_copy_only=False
        )
    if not same_as_next.any():
        return table, dead_letter_table(ctx, [])
    losers = table.filter(pa.array(same_as_next))
    dead = dead_letter_table(
        ctx,
        ["DUPLICATE_LINE_ID"] * losers.num_rows,
        source_file=losers.column("_src_file"),
        source_row=losers.column("_src_row"),
        line_id=losers.column("line_id"),
        field="line_id",
        detail="a later row of the same line_id was kept (latest updated_at)",
    )
    return table.filter(pa.array(~same_as_next)), dead


def document_keys(table: pa.Table) -> pa.Table:
    """The small table the document shuffle needs: no identity values, only keys."""
    has_doc = table.column("_doc_key").is_valid()
    keys = table.filter(has_doc)
    active_person = pc.and_(
        pc.not_equal(keys.column("status"), "TERMINATED"),
        pc.equal(keys.column("subscriber_kind"), "INDIVIDUAL"),
    )
    return pa.table({
        "line_id": keys.column("line_id"),
        "_doc_key": keys.column("_doc_key"),
        "_name_key": keys.column("_name_key"),
        "_active_person": active_person,
    })


def document_flags(keys: pa.Table, line_limit: int) -> pa.Table:
    """line_id and ``_flag_bits`` of the lines with a cross-record finding."""
    empty = pa.table({"line_id": pa.array([], pa.string()), "_flag_bits": pa.array([], pa.uint8())})
    if keys.num_rows == 0:
        return empty
    per_doc = keys.group_by("_doc_key").aggregate([
        ("_name_key", "count_distinct", pc.CountOptions(mode="only_valid")),
        ("_active_person", "sum"),
    ])
    conflict = pc.greater(per_doc.column("_name_key_count_distinct"), 1)
    over = pc.greater(pc.fill_null(per_doc.column("_active_person_sum"), 0), line_limit)
    findings = per_doc.filter(pc.or_(conflict, over))
    if findings.num_rows == 0:
        return empty
    findings = pa.table({
        "_doc_key": findings.column("_doc_key"),
        "_conflict": pc.greater(findings.column("_name_key_count_distinct"), 1),
        "_over": pc.greater(pc.fill_null(findings.column("_active_person_sum"), 0), line_limit),
    })
    joined = keys.join(findings, "_doc_key", join_type="inner")
    conflict_bit = np.where(joined.column("_conflict").to_numpy(), FLAG_BIT["DOC_NAME_CONFLICT"], 0)
    # The limit flag goes on the lines that count towards it.
    over_bit = np.where(
        joined.column("_over").to_numpy() & joined.column("_active_person").to_numpy(),
        FLAG_BIT["DOC_LINE_LIMIT"],
        0,
    )
    bits = (conflict_bit | over_bit).astype(np.uint8)
    flagged = pa.table({"line_id": joined.column("line_id"), "_flag_bits": pa.array(bits, pa.uint8())})
    return flagged.filter(pc.not_equal(flagged.column("_flag_bits"), 0))


def apply_flags(rows: pa.Table, flags: pa.Table | None) -> pa.Table:
    """OR the cross-record flag bits into the rows' ``_flag_bits``."""
    if flags is None or flags.num_rows == 0 or rows.num_rows == 0:
        return rows
    # Each kept line carries one document, so it has at most one flags row.
    index = pc.index_in(rows.column("line_id"), value_set=flags.column("line_id"))
    valid = index.is_valid().to_numpy(zero_copy_only=False)
    extra = np.zeros(rows.num_rows, np.uint8)
    if valid.any():
        positions = index.to_numpy(zero_copy_only=False)[valid].astype(np.int64)
        extra[valid] = flags.column("_flag_bits").to_numpy()[positions]
    current = rows.column("_flag_bits").to_numpy()
    position = rows.schema.get_field_index("_flag_bits")
    return rows.set_column(position, "_flag_bits", pa.array(current | extra, pa.uint8()))
