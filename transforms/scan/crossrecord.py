"""Cross-record checks over Arrow tables (Beam-free).

The scan never shuffles whole rows for these checks. Each classified batch
gets a ``_batch`` id and each row an ``_index``; a narrow **key table** (line
id, update time, source, document and name keys) is what travels:

* by line_id bucket to :func:`deduplicate`: one row per line_id, the latest
  ``updated_at`` wins (ties: the later file and row); the others become
  DUPLICATE_LINE_ID dead letters and "drop" exceptions;
* by document-key bucket to :func:`document_flags`: DOC_NAME_CONFLICT (one
  document number, two or more names) and DOC_LINE_LIMIT (one person's
  document on more than N lines that are not TERMINATED) become "flag"
  exceptions;
* exceptions go back to their batch (:func:`apply_exceptions`).

Document and name keys are keyed hashes of the normalised values
(:func:`transforms.scan.keyed_hash.keyed_hash`): no plaintext in any shuffle.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.scan.classify import FLAG_BIT
from transforms.core.deadletter import DeadLetterContext, dead_letter_table
from transforms.scan.keyed_hash import keyed_hash

__all__ = [
    "bucket_of",
    "batch_id",
    "key_table",
    "deduplicate",
    "document_flags",
    "apply_exceptions",
    "EXCEPTIONS_SCHEMA",
]

# A fixed, public key: line_ids are not identity values, and bucket numbers
# must agree across workers, processes and runs (unlike Python's hash()).
_BUCKET_KEY = b"subreg-buckets-1"

EXCEPTIONS_SCHEMA = pa.schema(
    [
        ("_batch", pa.int64()),
        ("_index", pa.int32()),
        ("_drop", pa.bool_()),
        ("_flag_bits", pa.uint8()),
    ]
)


def bucket_of(values: pa.Array, n_buckets: int) -> np.ndarray:
    """Stable bucket (0..n-1) of each value (string, or a keyed-hash key)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_fixed_size_binary(values.type):
        values = keyed_hash(pc.fill_null(values, ""), _BUCKET_KEY)
    # A keyed-hash tag is uniform: its first 8 bytes pick the bucket.
    width = values.type.byte_width
    raw = np.frombuffer(values.buffers()[1], np.uint8)
    start = values.offset * width
    rows = raw[start : start + len(values) * width].reshape(-1, width)
    hashed = rows[:, :8].copy().view(np.uint64).ravel()
    return (hashed % np.uint64(n_buckets)).astype(np.int32)


def batch_id(source_file: str, first_row: int) -> int:
    """A stable id of a classified batch (same input, same id; retries agree)."""
    digest = hashlib.blake2b(f"{source_file}\x00{first_row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2  # non-negative int64


def key_table(classified: pa.Table, batch: int) -> pa.Table:
    """The narrow table the shuffles carry for one classified batch."""
    n = classified.num_rows
    return pa.table(
        {
            "line_id": classified.column("line_id"),
            "_updated_at": classified.column("_updated_at"),
            "_src_file": classified.column("_src_file"),
            "_src_row": classified.column("_src_row"),
            "_doc_key": classified.column("_doc_key"),
            "_name_key": classified.column("_name_key"),
            "_active_person": pc.and_(
                pc.not_equal(classified.column("status"), "TERMINATED"),
                pc.equal(classified.column("subscriber_kind"), "INDIVIDUAL"),
            ),
            "_batch": pa.array(np.full(n, batch, np.int64)),
            "_index": pa.array(np.arange(n, dtype=np.int32)),
        }
    )


def _exceptions(keys: pa.Table, drop: bool, bits) -> pa.Table:
    n = keys.num_rows
    flag_bits = bits if isinstance(bits, np.ndarray) else np.full(n, bits, np.uint8)
    return pa.table(
        {
            "_batch": keys.column("_batch"),
            "_index": keys.column("_index"),
            "_drop": pa.array(np.full(n, drop)),
            "_flag_bits": pa.array(flag_bits.astype(np.uint8), pa.uint8()),
        },
        schema=EXCEPTIONS_SCHEMA,
    )


def deduplicate(keys: pa.Table, ctx: DeadLetterContext) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(kept keys, drop exceptions, DUPLICATE_LINE_ID dead letters) of one bucket."""
    if keys.num_rows == 0:
        return keys, EXCEPTIONS_SCHEMA.empty_table(), dead_letter_table(ctx, [])
    ts = pc.fill_null(keys.column("_updated_at").cast(pa.int64()), np.iinfo(np.int64).min)
    order = pc.sort_indices(
        pa.table(
            {
                "line_id": keys.column("line_id"),
                "ts": ts,
                "file": keys.column("_src_file"),
                "row": keys.column("_src_row"),
            }
        ),
        sort_keys=[("line_id", "ascending"), ("ts", "ascending"), ("file", "ascending"), ("row", "ascending")],
    )
    ids = keys.column("line_id").combine_chunks().take(order)
    # The last row of each run of equal line_ids is the one to keep.
    loser = np.zeros(keys.num_rows, bool)
    if keys.num_rows > 1:
        loser[:-1] = pc.equal(ids.slice(0, len(ids) - 1), ids.slice(1)).to_numpy(zero_copy_only=False)
    if not loser.any():
        return keys, EXCEPTIONS_SCHEMA.empty_table(), dead_letter_table(ctx, [])
    order = order.to_numpy()
    losers = keys.take(pa.array(np.sort(order[loser])))
    kept = keys.take(pa.array(np.sort(order[~loser])))
    dead = dead_letter_table(
        ctx,
        ["DUPLICATE_LINE_ID"] * losers.num_rows,
        source_file=losers.column("_src_file"),
        source_row=losers.column("_src_row"),
        line_id=losers.column("line_id"),
        field="line_id",
        detail="a later row of the same line_id was kept (latest updated_at)",
    )
    return kept, _exceptions(losers, True, 0), dead


def document_keys(keys: pa.Table) -> pa.Table:
    """The kept keys that carry a document number."""
    return keys.filter(keys.column("_doc_key").is_valid())


def document_flags(keys: pa.Table, line_limit: int) -> pa.Table:
    """Flag exceptions of the lines with a cross-record finding (one doc bucket)."""
    if keys.num_rows == 0:
        return EXCEPTIONS_SCHEMA.empty_table()
    per_doc = keys.group_by("_doc_key").aggregate(
        [
            ("_name_key", "count_distinct", pc.CountOptions(mode="only_valid")),
            ("_active_person", "sum"),
        ]
    )
    conflict = pc.greater(per_doc.column("_name_key_count_distinct"), 1)
    over = pc.greater(pc.fill_null(per_doc.column("_active_person_sum"), 0), line_limit)
    findings = per_doc.filter(pc.or_(conflict, over))
    if findings.num_rows == 0:
        return EXCEPTIONS_SCHEMA.empty_table()
    findings = pa.table(
        {
            "_doc_key": findings.column("_doc_key"),
            "_conflict": pc.greater(findings.column("_name_key_count_distinct"), 1),
            "_over": pc.greater(pc.fill_null(findings.column("_active_person_sum"), 0), line_limit),
        }
    )
    joined = keys.join(findings, "_doc_key", join_type="inner")
    conflict_bit = np.where(joined.column("_conflict").to_numpy(), FLAG_BIT["DOC_NAME_CONFLICT"], 0)
    # The limit flag goes on the lines that count towards it.
    over_bit = np.where(
        joined.column("_over").to_numpy() & joined.column("_active_person").to_numpy(zero_copy_only=False),
        FLAG_BIT["DOC_LINE_LIMIT"],
        0,
    )
    bits = (conflict_bit | over_bit).astype(np.uint8)
    keep = bits != 0
    return _exceptions(joined.filter(pa.array(keep)), False, bits[keep])


def apply_exceptions(rows: pa.Table, exceptions: pa.Table | None) -> pa.Table:
    """Drop the duplicate rows and OR the flag bits into ``_flag_bits``.

    ``rows`` carry ``_batch`` and ``_index``; a group may hold several batches.
    """
    if exceptions is None or exceptions.num_rows == 0 or rows.num_rows == 0:
        return rows
    # Rows arrive as whole batches, each contiguous and in _index order, so a
    # row's position is its batch's offset plus its _index.
    batches = rows.column("_batch").to_numpy()
    index = rows.column("_index").to_numpy().astype(np.int64)
    starts = np.flatnonzero(np.r_[True, batches[1:] != batches[:-1]])
    run_batches = batches[starts]
    order = np.argsort(run_batches)
    sorted_batches = run_batches[order]
    offsets = (starts - index[starts])[order]
    exc_batches = exceptions.column("_batch").to_numpy()
    slot = np.clip(np.searchsorted(sorted_batches, exc_batches), 0, len(sorted_batches) - 1)
    if not np.array_equal(sorted_batches[slot], exc_batches):
        # A finding whose batch is not here would silently lose a drop or a flag.
        raise RuntimeError("cross-record exception for a batch that is not in its group")
    target = offsets[slot] + exceptions.column("_index").to_numpy().astype(np.int64)
    drop = np.zeros(rows.num_rows, bool)
    drop[target[exceptions.column("_drop").to_numpy(zero_copy_only=False)]] = True
    bits = rows.column("_flag_bits").to_numpy().copy()
    np.bitwise_or.at(bits, target, exceptions.column("_flag_bits").to_numpy())
    rows = rows.set_column(rows.schema.get_field_index("_flag_bits"), "_flag_bits", pa.array(bits, pa.uint8()))
    return rows.filter(pa.array(~drop)) if drop.any() else rows
