"""Incident scope (Decree 25 Art. 13): which lines a leak touches, and what of them.

Beam-free and vectorised over Arrow tables; the Beam pass that applies it is
``transforms/compliance/incident_scope.py``. Only field *names*, key
versions, regions and line_ids come out, never a token, mask or value (the
affected lines' document tokens leave only to be counted, distinct).

A scope is either a key version or a list of line_ids:

* ``jN`` (a join key): the lines whose tokens are under it
  (``join_key_version``): with the key, tokens of low-entropy values (document
  numbers, names) can be matched by trying candidates;
* ``vN`` (a vault key): the lines whose data key the vault's key table wraps
  with it, or that the base records under it (``vault_key_version``, as of the
  merge that wrote the base);
* a line list: those lines; listed ids the base does not know are counted apart.

The work is done in two places:

* per base batch, :func:`candidates`: each row reduced to what the report
  needs (id, region, key versions, document token, and the identity field
  groups it holds as a bit set), and whether a key version puts it in scope as
  far as the base alone can tell;
* per line bucket, :func:`scope_bucket`: one bucket's candidate rows meet the
  vault key rows and the listed ids of the same bucket (a line list, a vault
  key version, and the vault facts of every affected line need that join).

:func:`describe` turns chosen candidates into the affected-lines rows and
:func:`tally` counts a batch of them (by region, field, key version).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.scan.normalize import contiguous

__all__ = [
    "AFFECTED",
    "CANDIDATES",
    "FIELD_GROUPS",
    "KEY_VERSION",
    "VAULT_KEYS",
    "Scope",
    "candidates",
    "describe",
    "field_lists",
    "scope_bucket",
    "shipped",
    "tally",
]

KEY_VERSION = re.compile(r"^[jv][1-9][0-9]{0,5}$")
# The identity a line may hold in the base, by field group: present when any of its columns is.
FIELD_GROUPS = {
    "doc": ("doc_token", "doc_mask"),
    "name": ("name_token", "name_mask"),
    "address": ("address_token", "address_mask"),
    "handler": ("handler_doc_token", "handler_doc_mask", "handler_name_token", "handler_name_mask"),
}
_LIST = pa.list_(pa.string())
# A base row as the scope carries it: ``fields`` is a bit set (bit j: FIELD_GROUPS' j-th group present).
CANDIDATES = pa.schema(
    [
        ("line_id", pa.string()),
        ("region", pa.string()),
        ("join_key_version", pa.string()),
        ("vault_key_version", pa.string()),
        ("doc_token", pa.string()),
        ("fields", pa.int8()),
        ("in_scope", pa.bool_()),
    ]
)
# What the scope needs of a vault key row: the version wrapping the line's data key, the fields sealed.
VAULT_KEYS = pa.schema([("line_id", pa.string()), ("vault_key_version", pa.string()), ("sealed_fields", _LIST)])
# One affected line, as the affected-lines file shows it (before ``shredded``, which the writer adds).
AFFECTED = pa.schema(
    [
        ("line_id", pa.string()),
        ("region", pa.string()),
        ("fields", _LIST),
        ("join_key_version", pa.string()),
        ("vault_key_version", pa.string()),
        ("vault_fields", _LIST),
        ("shreddable", pa.bool_()),
    ]
)


@dataclasses.dataclass(frozen=True)
class Scope:
    """What an incident covers: a key version (``jN``/``vN``) or, with ``key_version`` None, a line list.

    ``vault``: the vault's key table is read (which lines have a data key, under which version, and
    which fields are sealed)."""

    key_version: str | None = None
    vault: bool = False

    def __post_init__(self):
        if self.key_version is not None and not KEY_VERSION.match(self.key_version):
            raise ValueError(f"{self.key_version!r} is not a key version: jN (join key) or vN (vault key)")

    @property
    def kind(self) -> str:
        return "lines" if self.key_version is None else "key_version"

    @property
    def purpose(self) -> str | None:
        """``join`` or ``vault`` for a key version; None for a line list."""
        return None if self.key_version is None else ("join" if self.key_version.startswith("j") else "vault")

    @property
    def joined(self) -> bool:
        """Whether base rows must meet other rows of their line (a line list, or the vault's key table)."""
        return self.key_version is None or self.vault


def _column(table: pa.Table, name: str, type_: pa.DataType) -> pa.Array:
    if name in table.column_names:
        return contiguous(table.column(name)).cast(type_)
    return pa.nulls(table.num_rows, type_)


def candidates(base: pa.Table, scope: Scope) -> pa.Table:
    """A batch of the merged base reduced to :data:`CANDIDATES` rows (no mask or token but the document's)."""
    n = base.num_rows
    bits = np.zeros(n, np.int8)
    for j, group in enumerate(FIELD_GROUPS.values()):
        present = np.zeros(n, bool)
        for name in group:
            present |= pc.is_valid(_column(base, name, pa.string())).to_numpy(zero_copy_only=False)
        bits |= present.astype(np.int8) << j
    versions = {v: _column(base, v, pa.string()) for v in ("join_key_version", "vault_key_version")}
    if scope.key_version is None:
        in_scope = pa.array(np.zeros(n, bool))
    else:
        mine = versions["join_key_version" if scope.purpose == "join" else "vault_key_version"]
        in_scope = pc.fill_null(pc.equal(mine, scope.key_version), False)
    return pa.table(
        [
            _column(base, "line_id", pa.string()),
            _column(base, "region", pa.string()),
            versions["join_key_version"],
            versions["vault_key_version"],
            _column(base, "doc_token", pa.string()),
            pa.array(bits, pa.int8()),
            in_scope,
        ],
        schema=CANDIDATES,
    )


def shipped(rows: pa.Table, scope: Scope) -> pa.Array:
    """The candidate rows that must go to their line bucket: those that may be in scope there.

    All of them for a line list, or for a vault key version with the vault given (its key table may wrap any
    line); for a join key version only those under it (a vault join then only adds the vault facts)."""
    if scope.key_version is None or scope.purpose == "vault":
        return pa.array(np.ones(rows.num_rows, bool))
    return contiguous(rows.column("in_scope"))


def field_lists(bits) -> pa.ListArray:
    """The ``fields`` bit sets as lists of group names, in FIELD_GROUPS order."""
    names = list(FIELD_GROUPS)
    values = contiguous(bits).to_numpy(zero_copy_only=False).astype(np.int16)
    present = ((values[:, None] >> np.arange(len(names))) & 1).astype(bool)
    flat = np.flatnonzero(present.ravel())
    items = pa.array(np.array(names, object)[flat % len(names)], pa.string())
    offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), items)


def _sorted_lists(lists: pa.ListArray) -> pa.ListArray:
    """Each list's items sorted (the sealed field names, in a stable order)."""
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists)
    order = pc.sort_indices(pa.table({"p": parents, "v": flat}), [("p", "ascending"), ("v", "ascending")])
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), flat.take(order))


def describe(chosen: pa.Table, vault_keys: pa.Table | None) -> pa.Table:
    """Chosen candidate rows as :data:`AFFECTED` rows.

    With the vault's key rows of the same lines (``vault_keys``), ``vault_key_version`` is the vault's,
    ``shreddable`` whether the vault holds the line's data key and ``vault_fields`` the fields its key row
    says are sealed; without them the base's version, and null."""
    ids = contiguous(chosen.column("line_id"))
    if vault_keys is not None:
        at = pc.index_in(ids, value_set=contiguous(vault_keys.column("line_id")))
        version = contiguous(vault_keys.column("vault_key_version")).take(at)
        sealed = pc.fill_null(contiguous(vault_keys.column("sealed_fields")).take(at), pa.scalar([], _LIST))
        vault_fields, shreddable = _sorted_lists(sealed), pc.is_valid(at)
    else:
        version = contiguous(chosen.column("vault_key_version"))
        vault_fields, shreddable = pa.nulls(len(ids), _LIST), pa.nulls(len(ids), pa.bool_())
    columns = [
        ids,
        contiguous(chosen.column("region")),
        field_lists(chosen.column("fields")),
        contiguous(chosen.column("join_key_version")),
        version,
        vault_fields,
        shreddable,
    ]
    return pa.table(columns, schema=AFFECTED)


def scope_bucket(
    rows: pa.Table, listed: pa.Table | None, vault_keys: pa.Table | None, scope: Scope
) -> tuple[pa.Table, pa.Array, dict]:
    """One line bucket: ``(affected lines, their document tokens, counts)``.

    ``rows``: the bucket's :data:`CANDIDATES` rows; ``listed``: its listed ids (a line list, repeats
    included); ``vault_keys``: its :data:`VAULT_KEYS` rows (when the vault is read)."""
    ids = contiguous(rows.column("line_id"))
    counts: dict = {}
    if scope.key_version is None:
        given = pc.unique(contiguous(listed.column("line_id")))
        chosen = pc.is_in(ids, value_set=given)
        found = _count(pc.is_in(given, value_set=ids))
        counts["listed"] = {
            "rows_joined": listed.num_rows,
            "distinct": len(given),
            "found": found,
            "unknown": len(given) - found,
        }
    else:
        chosen = contiguous(rows.column("in_scope"))
        if scope.purpose == "vault" and vault_keys is not None:
            versions = contiguous(vault_keys.column("vault_key_version"))
            wrapped = contiguous(vault_keys.column("line_id")).filter(pc.equal(versions, scope.key_version))
            chosen = pc.or_(chosen, pc.is_in(ids, value_set=wrapped))
            counts["vault"] = {"wrapped_not_in_base": _count(pc.invert(pc.is_in(wrapped, value_set=ids)))}
    picked = rows.filter(chosen)
    counts["base"] = {"affected": picked.num_rows, "not_affected": rows.num_rows - picked.num_rows}
    lines = describe(picked, vault_keys if scope.vault else None)
    return lines, contiguous(picked.column("doc_token")), counts


def _count(mask) -> int:
    return pc.sum(pc.cast(mask, pa.int64())).as_py() or 0


def _by(column) -> dict:
    """``{value: count}`` of a column, ``(none)`` for null (counts merge by key across batches)."""
    got = pc.value_counts(contiguous(column))
    pairs = zip(got.field("values").to_pylist(), got.field("counts").to_pylist())
    return {("(none)" if k is None else k): v for k, v in pairs}


def tally(lines: pa.Table) -> dict:
    """The counts of a batch of :data:`AFFECTED` rows: lines, by region, identity field, key version."""
    fields = pc.list_flatten(lines.column("fields"))
    vault_fields = pc.list_flatten(pc.fill_null(lines.column("vault_fields"), pa.scalar([], _LIST)))
    shreddable = lines.column("shreddable")
    block = {
        "lines": lines.num_rows,
        "lines_with_identity": _count(pc.greater(pc.list_value_length(lines.column("fields")), 0)),
        "region": _by(lines.column("region")),
        "field": _by(fields) if len(fields) else {},
        "vault_field": _by(vault_fields) if len(vault_fields) else {},
        "join_key_version": _by(lines.column("join_key_version")),
        "vault_key_version": _by(lines.column("vault_key_version")),
    }
    if shreddable.null_count < lines.num_rows:  # a vault was read
        block["shreddable"] = _count(pc.fill_null(shreddable, False))
    return {"affected": block}
