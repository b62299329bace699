"""Retention (Decree 25 Art. 11): which lines' identity is due for purging, and the purge itself.

Beam-free and vectorised over Arrow tables of the merged base
(``schemas/merged_line.avsc``): what one record batch or one line bucket of
the purge needs. ``transforms/compliance/retention_beam.py`` wires them into
the purge's Beam jobs; ``pipelines/retention.py`` does the I/O and the
crypto-shred.

* :func:`due_lines`: a base batch's due lines (line_id, whether the base
  still holds identity for them) and its line counts;
* :func:`purge_bucket`: one line bucket of the due lines, the vault's key
  ids and value rows: the value rows kept, the lines whose data key is to be
  shredded, the lines purged, and the counts that must balance;
* :func:`purge_batch`: a base batch rewritten, the due lines blanked and
  ``vault_key_version`` moved as the shred moved the vault (:func:`move_versions`).

**The boundary.** Identity is kept while the line serves the user and N years
(the policy's ``retention.years_after_termination``) after it ends. A
TERMINATED line is purged when ``as_of > terminated_on + N years``: the
anniversary day itself is still inside the retention period. N years after
29 February is 28 February when that year has no 29 February (the period is
never longer than N calendar years and never shorter than N*365 days). The
anniversary is monotone in ``terminated_on``, so the rule is one cut-off
date: purge when ``terminated_on <= last_purged_date(as_of, N)``.

A TERMINATED line without ``terminated_on`` is never purged: when its service
ended is unknown, so its retention period cannot be shown to be over
(counted as ``terminated_without_date``).

**What a purge blanks** (``IDENTITY_COLUMNS``): the tokens and masks of the
document number, name and address, the handler's, and the document type
codes (docs/compliance.md "Retention" counts the document type as part of identity, and the vault
holds its original label). ``join_key_version`` becomes null (no tokens are
left). Everything else stays: the line's own facts (line_id, msisdn, type,
kind, status, dates, region, agent), the registration's evidence (when, which
channel and agent, how verified) and the identity status computed then.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.scan.normalize import contiguous

__all__ = [
    "IDENTITY_COLUMNS",
    "anniversary",
    "last_purged_date",
    "due_mask",
    "has_identity",
    "blank_identity",
    "due_lines",
    "BucketPurge",
    "purge_bucket",
    "move_versions",
    "purge_batch",
]

IDENTITY_COLUMNS = (
    "doc_type",
    "doc_token",
    "doc_mask",
    "name_token",
    "name_mask",
    "address_token",
    "address_mask",
    "handler_doc_type",
    "handler_doc_token",
    "handler_doc_mask",
    "handler_name_token",
    "handler_name_mask",
)
# Columns whose value is identity (token or mask): a line with none of them has nothing left to purge.
_VALUE_COLUMNS = tuple(c for c in IDENTITY_COLUMNS if not c.endswith("doc_type"))


def anniversary(dates: np.ndarray, years: int) -> np.ndarray:
    """``dates`` (datetime64[D]) plus ``years`` calendar years; 29 Feb -> 28 Feb in a year without one."""
    dates = np.asarray(dates, "datetime64[D]")
    month = dates.astype("datetime64[M]")
    day = (dates - month.astype("datetime64[D]")).astype(np.int64)  # 0-based day of month
    target = month + np.timedelta64(12 * years, "M")
    length = ((target + np.timedelta64(1, "M")).astype("datetime64[D]") - target.astype("datetime64[D]")).astype(
        np.int64
    )
    return target.astype("datetime64[D]") + np.minimum(day, length - 1).astype("timedelta64[D]")


def last_purged_date(as_of: dt.date, years: int) -> dt.date:
    """The latest ``terminated_on`` whose retention period is over on ``as_of``."""

    def ann(day: dt.date) -> dt.date:
        return anniversary(np.array([day], "datetime64[D]"), years)[0].astype(dt.date)

    guess = as_of.replace(day=28) if (as_of.month, as_of.day) == (2, 29) else as_of
    day = guess.replace(year=guess.year - years)
    while ann(day) >= as_of:
        day -= dt.timedelta(days=1)
    while ann(day + dt.timedelta(days=1)) < as_of:
        day += dt.timedelta(days=1)
    return day


def due_mask(table: pa.Table, cutoff: dt.date) -> tuple[pa.Array, pa.Array, pa.Array]:
    """``(due, terminated, terminated_without_date)`` boolean arrays, no nulls.

    ``due``: TERMINATED with ``terminated_on <= cutoff`` (see ``last_purged_date``).
    """
    terminated = pc.fill_null(pc.equal(table.column("status"), "TERMINATED"), False)
    on = table.column("terminated_on")
    no_date = pc.and_(terminated, pc.is_null(on))
    due = pc.and_(terminated, pc.fill_null(pc.less_equal(on, pa.scalar(cutoff, pa.date32())), False))
    return contiguous(due), contiguous(terminated), contiguous(no_date)


def has_identity(table: pa.Table) -> pa.Array:
    """True where any token or mask is present."""
    present = None
    for name in _VALUE_COLUMNS:
        valid = pc.is_valid(table.column(name))
        present = valid if present is None else pc.or_(present, valid)
    return contiguous(present)


def blank_identity(table: pa.Table, purge: pa.Array, vault_key_version: pa.Array) -> tuple[pa.Table, dict[str, int]]:
    """The table with ``IDENTITY_COLUMNS`` and ``join_key_version`` null where ``purge``.

    ``vault_key_version`` (aligned with the rows) replaces the column: the
    version wrapping each line's data key after the shred, null without one.
    Returns the table and, per column, how many values were blanked.
    """
    blanked: dict[str, int] = {}
    for name in (*IDENTITY_COLUMNS, "join_key_version"):
        column = contiguous(table.column(name))
        blanked[name] = pc.sum(pc.and_(purge, pc.is_valid(column)).cast(pa.int64())).as_py() or 0
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pc.if_else(purge, pa.scalar(None, column.type), column))
    index = table.schema.get_field_index("vault_key_version")
    table = table.set_column(index, "vault_key_version", vault_key_version.cast(pa.string()))
    return table, blanked


def _count(mask: pa.Array) -> int:
    return pc.sum(mask.cast(pa.int64())).as_py() or 0


_NO_IDS = pa.array([], pa.string())


def due_lines(table: pa.Table, cutoff: dt.date) -> tuple[pa.Table, dict]:
    """A base batch's due lines ``(line_id, with_identity)`` and its counts (``{"base": {...}}``)."""
    due, terminated, no_date = due_mask(table, cutoff)
    present = pc.and_(due, has_identity(table))
    counts = {
        "lines_in": table.num_rows,
        "terminated": _count(terminated),
        "terminated_without_date": _count(no_date),
        "due": _count(due),
        "due_with_identity": _count(present),
    }
    ids = contiguous(table.column("line_id")).filter(due)
    return pa.table({"line_id": ids, "with_identity": present.filter(due)}), {"base": counts}


@dataclasses.dataclass
class BucketPurge:
    """One line bucket purged: the vault's value rows kept, the lines to shred and to report, the counts."""

    values: pa.Table  # value rows of lines that are not due (schemas/vault_value)
    shred: pa.Table  # line_id: due lines that have a data key
    purged: pa.Table  # line_id: due lines with anything to purge (identity in the base, a data key, values)
    counts: dict


def _ids(table: pa.Table | None) -> pa.Array:
    return _NO_IDS if table is None or not table.num_rows else contiguous(table.column("line_id")).cast(pa.string())


def purge_bucket(due: pa.Table | None, key_ids: pa.Table | None, values: pa.Table | None) -> BucketPurge:
    """One line bucket: ``due`` (line_id, with_identity) from the base, the vault's key rows (``line_id``
    at least) and value rows. A due line is *purged* when the base still holds identity for it, or the vault
    a data key or a value; otherwise it has ``nothing_to_purge``."""
    due_ids = pc.unique(_ids(due))
    with_identity = _NO_IDS if due is None else _ids(due).filter(contiguous(due.column("with_identity")))
    keyed = _ids(key_ids)
    shred = pc.unique(keyed.filter(pc.is_in(keyed, value_set=due_ids)))
    value_ids = _ids(values)
    drop = pc.is_in(value_ids, value_set=due_ids)
    valued = pc.unique(value_ids.filter(drop))
    touched = pc.unique(pa.concat_arrays([pc.unique(with_identity), shred, valued]))
    kept = values.filter(pc.invert(drop)) if values is not None else None
    nothing = _count(pc.invert(pc.is_in(due_ids, value_set=touched)))
    counts = {
        "purge": {"due": len(due_ids), "purged": len(touched), "nothing_to_purge": nothing},
        "vault": {
            "keys_joined": len(keyed),
            "keys_to_shred": len(shred),
            "values_joined": len(value_ids),
            "values_dropped": _count(drop),
            "values_kept": 0 if kept is None else kept.num_rows,
        },
    }
    return BucketPurge(kept, pa.table({"line_id": shred}), pa.table({"line_id": touched}), counts)


def move_versions(versions: pa.Array, moved: dict[str, str]) -> pa.Array:
    """``vault_key_version`` values replaced as ``moved`` says (old -> new); others and nulls stay."""
    versions = contiguous(versions).cast(pa.string())
    if not moved:
        return versions
    at = pc.index_in(versions, value_set=pa.array(list(moved), pa.string()))
    return pc.coalesce(pa.array(list(moved.values()), pa.string()).take(at), versions)


def purge_batch(table: pa.Table, cutoff: dt.date, moved: dict[str, str]) -> tuple[pa.Table, dict]:
    """A base batch with its due lines blanked (:func:`blank_identity`) and every other line's
        ``vault_key_version`` moved (:func:`move_versions`); returns it and ``{"rewrite": {...}}`` counts (the
    lines written are counted where they are written)."""
    due = due_mask(table, cutoff)[0]
    versions = pc.if_else(due, pa.scalar(None, pa.string()), move_versions(table.column("vault_key_version"), moved))
    out, blanked = blank_identity(table, due, versions)
    return out, {"rewrite": {"lines_read": table.num_rows, "due": _count(due), "blanked": blanked}}
