"""Retention (Decree 25 Art. 11): which lines' identity is due for purging, and the purge itself.

Beam-free and vectorised over Arrow tables of the merged base
(``schemas/merged_line.avsc``); ``pipelines/retention.py`` does the I/O and
the crypto-shred.

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

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.scan.normalize import contiguous

__all__ = ["IDENTITY_COLUMNS", "anniversary", "last_purged_date", "due_mask", "has_identity", "blank_identity"]

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
