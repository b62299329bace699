"""The vault value row that holds a line's value, to pick, drop or forge in tests, whichever the vault's format.

A format 3 vault (``transforms/crypto/vault.py``, what ``Vault.seal`` writes) has one value row per line
with a value: the line's *record*, its ``field`` :data:`RECORD` (``*``), every sealed field in one
ciphertext. A format 2 vault (still read) has one row per sealed field, its ``field`` the field's name.
``holder(values, line, field)`` is the ``field`` column of the row that holds ``field`` of ``line``: the
line's record when it has one, else its row of ``field``; the other helpers work on that row.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.io.vault_files import read_table, write_table
from transforms.crypto.vault_format import RECORD

__all__ = ["RECORD", "holder", "is_row", "value_row", "without_row", "replace_row", "rewrite_values", "flip_first"]


def holder(values: pa.Table, line_id: str, field: str | None = None) -> str:
    """RECORD when the line has a record row (or no ``field`` is named), else ``field``: a format 2 line's
    row of that field."""
    of_line = values.filter(pc.equal(values["line_id"], line_id))
    if RECORD in of_line["field"].to_pylist() or field is None:
        return RECORD
    return field


def is_row(values: pa.Table, line_id: str, field: str | None = None) -> pa.ChunkedArray:
    """Which rows of ``values`` are the row that holds ``field`` of ``line_id`` (a boolean mask)."""
    return pc.and_(pc.equal(values["line_id"], line_id), pc.equal(values["field"], holder(values, line_id, field)))


def value_row(values: pa.Table, line_id: str, field: str | None = None) -> pa.Table:
    """The row that holds ``field`` of ``line_id`` (one row, or none when the vault has none)."""
    return values.filter(is_row(values, line_id, field))


def without_row(values: pa.Table, line_id: str, field: str | None = None) -> pa.Table:
    """``values`` without the row that holds ``field`` of ``line_id``: a dropped row."""
    return values.filter(pc.invert(is_row(values, line_id, field)))


def replace_row(values: pa.Table, line_id: str, field: str | None = None, /, **changes) -> pa.Table:
    """``values`` with the row that holds ``field`` of ``line_id`` changed (any column): a forged row."""
    hits = is_row(values, line_id, field).to_pylist()
    rows = values.to_pylist()
    for row, hit in zip(rows, hits):
        if hit:
            row.update(changes)
    return pa.Table.from_pylist(rows, schema=values.schema)


def flip_first(data: bytes) -> bytes:
    """``data`` with one bit of its first byte flipped: a tampered ciphertext or nonce."""
    return bytes([data[0] ^ 1]) + data[1:]


def rewrite_values(vault_dir: str, change) -> None:
    """Rewrite a vault folder's value table as ``change(table)`` (a new generation, as an attacker would)."""
    write_table(vault_dir, "values", change(read_table(vault_dir, "values")))
