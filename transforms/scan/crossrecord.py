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

Both cross-record checks look first for the values that occur more than once
(a 64-bit fingerprint of each line_id or document key, its top 32 bits
sorted; a collision only adds a row to check exactly): about 0.2 % of line
ids and 3 % of document keys repeat, so only those rows are sorted or
grouped. Outputs come in the key table's row order.

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
from transforms.scan.keyed_hash import bucket_of  # the shuffles import it from here too

__all__ = [
    "bucket_of",
    "batch_id",
    "key_table",
    "deduplicate",
    "document_flags",
    "apply_exceptions",
    "EXCEPTIONS_SCHEMA",
]

_MIX = np.uint64(0x9E3779B97F4A7C15)  # fingerprints of values (not a hash to keep: one call's candidates)

EXCEPTIONS_SCHEMA = pa.schema(
    [
        ("_batch", pa.int64()),
        ("_index", pa.int32()),
        ("_drop", pa.bool_()),
        ("_flag_bits", pa.uint8()),
    ]
)


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


def _filter(table: pa.Table, keep: np.ndarray | pa.Array) -> pa.Table:
    """``table.filter(keep)`` column by column (the same table; Table.filter costs about twice the CPU)."""
    keep = keep if isinstance(keep, (pa.Array, pa.ChunkedArray)) else pa.array(keep)
    return pa.Table.from_arrays([column.filter(keep) for column in table.columns], schema=table.schema)


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


def _words(data: np.ndarray, n: int, width: int) -> list[np.ndarray]:
    """``n`` values of ``width`` bytes laid end to end in ``data``, as columns of 64-bit words read in place
    (the last word may overlap the one before; over 64 bytes, the first 32 and the last 32 bytes)."""
    if width < 8:
        padded = np.zeros((n, 8), np.uint8)
        padded[:, :width] = data.reshape(n, width)
        return [padded.view(np.uint64).ravel()]
    starts = list(range(0, width - 7, 8)) + ([width - 8] if width % 8 else [])
    if width > 64:
        starts = [0, 8, 16, 24, width - 32, width - 24, width - 16, width - 8]
    return [np.ndarray((n,), np.uint64, buffer=data, offset=start, strides=(width,)) for start in starts]


def _mix(data: np.ndarray, n: int, width: int) -> np.ndarray:
    """A 64-bit fingerprint of each of ``n`` values of ``width`` bytes laid end to end in ``data``."""
    out = np.full(n, np.uint64(width), np.uint64)
    for word in _words(np.ascontiguousarray(data), n, width):
        out ^= word
        out *= _MIX
        out ^= out >> np.uint64(29)
    out *= _MIX
    return out


def _fingerprints(values: pa.Array) -> np.ndarray | None:
    """A fingerprint per value (equal values, equal fingerprints; a null's is anything), for binary-like
    types; None for others. Values of one length are a zero-copy matrix of the Arrow buffer."""
    kind = values.type
    n = len(values)
    if pa.types.is_fixed_size_binary(kind):
        width = kind.byte_width
        raw = np.frombuffer(values.buffers()[1], np.uint8)[values.offset * width : (values.offset + n) * width]
        return _mix(raw, n, width)
    if pa.types.is_large_string(kind) or pa.types.is_large_binary(kind):
        offset_type = np.int64
    elif pa.types.is_string(kind) or pa.types.is_binary(kind):
        offset_type = np.int32
    else:
        return None
    offsets = np.frombuffer(values.buffers()[1], offset_type)[values.offset : values.offset + n + 1].astype(np.int64)
    lengths = np.diff(offsets)
    if n == 0 or (lengths == lengths[0]).all():
        width = int(lengths[0]) if n else 0
        return _mix(_data(values)[offsets[0] : offsets[-1]], n, width)
    # Sorted by length, each length's values are one matrix (as keyed_hash lays them out).
    order = np.argsort(lengths, kind="stable")
    chosen = values.take(pa.array(order))
    offsets = np.frombuffer(chosen.buffers()[1], offset_type)[chosen.offset : chosen.offset + n + 1]
    data, lengths = _data(chosen), lengths[order]
    out = np.empty(n, np.uint64)
    edges = np.flatnonzero(np.r_[True, lengths[1:] != lengths[:-1], True])
    for start, end in zip(edges[:-1], edges[1:]):
        width = int(lengths[start])
        out[order[start:end]] = _mix(data[offsets[start] : offsets[end]], end - start, width)
    return out


def _data(values: pa.Array) -> np.ndarray:
    buffer = values.buffers()[2]
    return np.frombuffer(buffer, np.uint8) if buffer is not None else np.zeros(0, np.uint8)


def _repeated_rows(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The rows (ascending) that may hold a value found more than once among the non-null values: every row
    of a repeated value, and the few whose fingerprint collides with another's; never a null."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    rows = np.arange(len(values)) if values.null_count == 0 else np.flatnonzero(values.is_valid().to_numpy(False))
    if len(rows) < 2:
        return rows[:0]
    fingerprints = _fingerprints(values)
    if fingerprints is None:  # not binary-like: every row is checked exactly
        return rows
    if len(rows) < len(values):
        fingerprints = fingerprints[rows]
    # 32 bits suffice to pick the candidates: a collision only adds a row to check exactly.
    short = (fingerprints >> np.uint64(32)).astype(np.uint32)
    ordered = np.sort(short)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if len(repeated) == 0:
        return rows[:0]
    # Membership by a bitmap of the top 20 bits first (a binary search per row costs more than the sort).
    bitmap = np.zeros(1 << 20, bool)
    bitmap[repeated >> np.uint32(12)] = True
    maybe = np.flatnonzero(bitmap[short >> np.uint32(12)])
    return rows[maybe[np.isin(short[maybe], repeated)]]


def _losers(keys: pa.Table) -> np.ndarray:
    """Positions in ``keys`` of the rows that lose: sorted by (line_id, updated_at with nulls first, file,
    row), stably, all but the last of each run of equal line_ids."""
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
    loser = np.zeros(keys.num_rows, bool)
    if keys.num_rows > 1:
        same = pc.equal(ids.slice(0, len(ids) - 1), ids.slice(1))
        loser[:-1] = pc.fill_null(same, False).to_numpy(zero_copy_only=False)
    return order.to_numpy()[loser]


def deduplicate(keys: pa.Table, ctx: DeadLetterContext) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(kept keys, drop exceptions, DUPLICATE_LINE_ID dead letters) of one bucket, each in the keys' order.

    Only the rows of line_ids that occur more than once (found by fingerprint; few) are sorted."""
    if keys.num_rows == 0:
        return keys, EXCEPTIONS_SCHEMA.empty_table(), dead_letter_table(ctx, [])
    candidates = _repeated_rows(keys.column("line_id"))
    lost = np.sort(candidates[_losers(keys.take(pa.array(candidates)))]) if len(candidates) else candidates
    if len(lost) == 0:
        return keys, EXCEPTIONS_SCHEMA.empty_table(), dead_letter_table(ctx, [])
    keep = np.ones(keys.num_rows, bool)
    keep[lost] = False
    losers = keys.take(pa.array(lost))
    kept = _filter(keys, keep)
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
    return _filter(keys, keys.column("_doc_key").is_valid())


def _codes(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, int]:
    """Dictionary codes of the values (-1 for a null) and the number of distinct values."""
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, len(encoded.dictionary)


def document_flags(keys: pa.Table, line_limit: int) -> pa.Table:
    """Flag exceptions of the lines with a cross-record finding (one doc bucket), in the keys' order.

    A document on one row has one name and at most one active line: with a limit of one or more, only the
    rows of repeated document keys (found by fingerprint; few) can have a finding."""
    if keys.num_rows == 0:
        return EXCEPTIONS_SCHEMA.empty_table()
    docs = keys.column("_doc_key")
    if line_limit >= 1:
        rows = _repeated_rows(docs)
    else:
        rows = np.flatnonzero(docs.is_valid().to_numpy(zero_copy_only=False))
    if len(rows) == 0:
        return EXCEPTIONS_SCHEMA.empty_table()
    found = keys.select(["_doc_key", "_name_key", "_active_person", "_batch", "_index"]).take(pa.array(rows))
    doc, n_docs = _codes(found.column("_doc_key"))
    name, n_names = _codes(found.column("_name_key"))
    named = name >= 0
    pairs = np.unique(doc[named] * max(n_names, 1) + name[named])
    conflict = np.bincount(pairs // max(n_names, 1), minlength=n_docs) > 1
    active = pc.fill_null(found.column("_active_person"), False).to_numpy(zero_copy_only=False)
    over = np.bincount(doc[active], minlength=n_docs) > line_limit
    # The limit flag goes on the lines that count towards it.
    bits = np.where(conflict[doc], FLAG_BIT["DOC_NAME_CONFLICT"], 0) | np.where(
        over[doc] & active, FLAG_BIT["DOC_LINE_LIMIT"], 0
    )
    keep = bits != 0
    return _exceptions(_filter(found, keep), False, bits[keep].astype(np.uint8))


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
    return _filter(rows, ~drop) if drop.any() else rows
