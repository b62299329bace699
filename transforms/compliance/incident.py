"""Incident scope (Decree 25 Art. 13): which lines a leak touches, and what of them.

Beam-free and vectorised over Arrow tables of the merged base and the vault's
key and value tables; ``pipelines/incident.py`` does the I/O, the shred and
the report. Only field *names*, key versions, regions and line_ids come out,
never a token, mask or value.

A scope is either a key version or a list of line_ids:

* ``jN`` (a join key): the lines whose tokens are under it
  (``join_key_version``): with the key, tokens of low-entropy values (document
  numbers, names) can be matched by trying candidates;
* ``vN`` (a vault key): the lines whose data key the vault table wraps with
  it, or that the base records under it (``vault_key_version``, as of the
  merge that wrote the base);
* a line list: those lines; ids the base does not know are counted apart.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.scan.normalize import contiguous

__all__ = ["FIELD_GROUPS", "KEY_VERSION", "scope_mask", "describe_lines", "summarise"]

KEY_VERSION = re.compile(r"^[jv][1-9][0-9]{0,5}$")
# The identity a line may hold in the base, by field group: present when any of its columns is.
FIELD_GROUPS = {
    "doc": ("doc_token", "doc_mask"),
    "name": ("name_token", "name_mask"),
    "address": ("address_token", "address_mask"),
    "handler": ("handler_doc_token", "handler_doc_mask", "handler_name_token", "handler_name_mask"),
}
BASE_COLUMNS = [
    "line_id",
    "region",
    "join_key_version",
    "vault_key_version",
    *(c for cols in FIELD_GROUPS.values() for c in cols),
]


def scope_mask(
    base: pa.Table,
    *,
    key_version: str | None = None,
    line_ids: pa.Array | None = None,
    vault_keys: pa.Table | None = None,
) -> pa.Array:
    """True for the base rows in scope."""
    if line_ids is not None:
        return contiguous(pc.is_in(base.column("line_id"), value_set=line_ids))
    if key_version.startswith("j"):
        return contiguous(pc.fill_null(pc.equal(base.column("join_key_version"), key_version), False))
    mask = pc.fill_null(pc.equal(base.column("vault_key_version"), key_version), False)
    if vault_keys is not None:
        wrapped = vault_keys.filter(pc.equal(vault_keys.column("vault_key_version"), key_version)).column("line_id")
        mask = pc.or_(mask, pc.is_in(base.column("line_id"), value_set=wrapped))
    return contiguous(mask)


def describe_lines(base: pa.Table, vault_keys: pa.Table | None, vault_values: pa.Table | None) -> pa.Table:
    """One row per base line: line_id, region, fields (list of group names), key versions, vault facts.

    ``vault_key_version`` is the vault table's when a vault is given (the
    base's otherwise); ``shreddable`` is whether the vault holds the line's
    data key (null without a vault); ``vault_fields`` the field names that
    have a sealed value.
    """
    n = base.num_rows
    names = list(FIELD_GROUPS)
    present = np.zeros((n, len(names)), bool)
    for j, name in enumerate(names):
        for column in FIELD_GROUPS[name]:
            present[:, j] |= pc.is_valid(base.column(column)).to_numpy(zero_copy_only=False)
    fields = _lists(present, names)
    ids = base.column("line_id")
    if vault_keys is not None:
        at = pc.index_in(ids, value_set=vault_keys.column("line_id"))
        version = contiguous(vault_keys.column("vault_key_version")).take(at)
        shreddable = pc.is_valid(at)
    else:
        version = contiguous(base.column("vault_key_version"))
        shreddable = pa.nulls(n, pa.bool_())
    if vault_values is not None:
        sealed = vault_values.filter(pc.is_in(vault_values.column("line_id"), value_set=ids))
        grouped = sealed.group_by("line_id").aggregate([("field", "distinct")])
        at = pc.index_in(ids, value_set=grouped.column("line_id"))
        lists = contiguous(grouped.column("field_distinct")).take(at)
        vault_fields = pa.array([sorted(v) if v else [] for v in lists.to_pylist()], pa.list_(pa.string()))
    else:
        vault_fields = pa.nulls(n, pa.list_(pa.string()))
    return pa.table(
        {
            "line_id": ids,
            "region": base.column("region"),
            "fields": fields,
            "join_key_version": base.column("join_key_version"),
            "vault_key_version": version,
            "vault_fields": vault_fields,
            "shreddable": shreddable,
        }
    )


def summarise(lines: pa.Table) -> dict:
    """Counts by region, by field group and by key version of described lines."""

    def counts(column) -> dict:
        got = pc.value_counts(contiguous(column))
        pairs = zip(got.field("values").to_pylist(), got.field("counts").to_pylist())
        return {
            ("(none)" if k is None else k): v for k, v in sorted(pairs, key=lambda kv: (kv[0] is None, kv[0] or ""))
        }

    fields = pc.list_flatten(lines.column("fields"))
    vault_fields = pc.list_flatten(pc.fill_null(lines.column("vault_fields"), pa.scalar([], pa.list_(pa.string()))))
    with_identity = pc.sum(pc.greater(pc.list_value_length(lines.column("fields")), 0).cast(pa.int64())).as_py() or 0
    shreddable = lines.column("shreddable")
    return {
        "lines": lines.num_rows,
        "lines_with_identity": with_identity,
        "by_region": counts(lines.column("region")),
        "by_field": {k: v for k, v in counts(fields).items()} if len(fields) else {},
        "by_vault_field": counts(vault_fields) if len(vault_fields) else {},
        "by_join_key_version": counts(lines.column("join_key_version")),
        "by_vault_key_version": counts(lines.column("vault_key_version")),
        "shreddable": None
        if shreddable.null_count == lines.num_rows and lines.num_rows
        else pc.sum(pc.fill_null(shreddable, False).cast(pa.int64())).as_py() or 0,
    }


def _lists(present: np.ndarray, names: list[str]) -> pa.Array:
    """Rows of a boolean matrix as lists of the names that are true."""
    flat = np.flatnonzero(present.ravel())
    values = pa.array(np.array(names, object)[flat % len(names)], pa.string())
    offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)
