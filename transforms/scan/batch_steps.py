"""The scan's per-batch and per-bucket steps around classification (Beam-free).

The Beam job (:mod:`transforms.scan.composite`) and the in-process scan
(``pipelines/scan_tasks.py``) call the same functions, so both engines give
the same rows, the same exceptions and the same counts:

* :func:`rows_for_finalize`: a classified batch as the exception join takes it;
* :func:`to_batches`: exceptions bucketed by the batch they go back to;
* :func:`batch_counts` and :func:`dead_counts`: the tallies of summary.json;
* :func:`checked_salt`: the run's salt of the cross-record hashes, checked.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.counts import value_counts
from transforms.core.spill_files import BUCKET
from transforms.scan.classify import CLASSIFIED_SCHEMA

__all__ = ["batch_bucket", "rows_for_finalize", "to_batches", "batch_counts", "dead_counts", "checked_salt"]


def batch_bucket(batch) -> int | np.ndarray:
    """The bucket of a batch id in the exception join (the id itself, folded into int32)."""
    return batch % 2_000_000_000


def rows_for_finalize(classified: pa.Table, batch: int) -> pa.Table:
    """One classified batch as the exception join takes it: the contract's columns and
    ``_flag_bits``, plus ``_batch``, ``_index`` (row in the batch) and the batch's ``_bucket``."""
    keep = [c for c in CLASSIFIED_SCHEMA.names if c in classified.column_names] + ["_flag_bits"]
    rows = classified.select(keep)
    n = rows.num_rows
    rows = rows.append_column("_batch", pa.array(np.full(n, batch, np.int64)))
    rows = rows.append_column("_index", pa.array(np.arange(n, dtype=np.int32)))
    return rows.append_column(BUCKET, pa.array(np.full(n, batch_bucket(batch), np.int32)))


def to_batches(exceptions: pa.Table) -> pa.Table:
    """Exceptions with the ``_bucket`` of the batch each goes back to."""
    buckets = batch_bucket(exceptions.column("_batch").to_numpy()).astype(np.int32)
    return exceptions.append_column(BUCKET, pa.array(buckets))


def batch_counts(table: pa.Table) -> dict:
    """Tallies of one finalised batch, for summary.json."""
    reasons = pc.list_flatten(table.column("reasons"))
    flags = pc.list_flatten(table.column("flags"))
    return {
        "classified": table.num_rows,
        "identity_status": value_counts(table.column("identity_status")),
        "reasons": value_counts(reasons) if len(reasons) else {},
        "flags": value_counts(flags) if len(flags) else {},
        "needs_registration": int(pc.sum(table.column("needs_registration").cast(pa.int64())).as_py() or 0),
        "needs_review": int(pc.sum(table.column("needs_review").cast(pa.int64())).as_py() or 0),
        "line_type": value_counts(table.column("line_type")),
        "subscriber_kind": value_counts(table.column("subscriber_kind")),
        "status": value_counts(table.column("status")),
    }


def dead_counts(table: pa.Table) -> dict:
    """Tallies of one table of dead letters."""
    return {"dead_letters": table.num_rows, "dead_letter_reasons": value_counts(table.column("reason"))}


def checked_salt(salt) -> str:
    """The run's salt, refused unless it is 32 lowercase hex characters."""
    if not isinstance(salt, str) or len(salt) != 32 or any(c not in "0123456789abcdef" for c in salt):
        raise ValueError("the run salt must be 32 lowercase hex characters")
    return salt
