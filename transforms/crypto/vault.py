"""The identity vault: envelope encryption of original values, per line.

Each line gets a random 256-bit data key (DEK, with a random ``dek_id``).
Its values are sealed together, as one *record* (each sealed field and its
value, sorted by field name), with AES-256-GCM under the DEK, a fresh 96-bit
random nonce, and associated data binding keyset, line, DEK and the *seal*::

    seal      = reg lp(lp(field_1) lp(field_2) ...)       the sealed fields, sorted by name
    reg       = 0x00 (no registration: a base's identity) | 0x01 lp(registration_event_id)
    record    = lp(field_1) lp(value_1) lp(field_2) lp(value_2) ...
    ad(line)  = lp("subscriber-backfill/vault-line/3") lp(keyset_id) lp(line_id) lp(dek_id) seal
    ad(dek)   = lp("subscriber-backfill/vault-dek/2") lp(keyset_id) lp(line_id) lp(dek_id) lp(vault_key_version) seal

(``lp`` = 4-byte big-endian length, then the UTF-8 bytes: unambiguous), so
a record moved to another line fails to open, and a value cannot move to
another field: field names are inside the authenticated record. The DEK is
stored wrapped (AES-256-GCM, ``nonce || ciphertext || tag``) by the primary
vault key version, and the key row states the seal (``registration_event_id``,
``sealed_fields``): the wrap authenticates it, so it cannot be edited. Two
Arrow tables hold a vault (schemas ``vault_key`` and ``vault_value``, one key
row per line, one value row per line with a value, its ``field`` ``*``)::

    vault_key:   L0001 | 3fa1c2d4e5f60718 | ks_9f2c... | v1 | <60 bytes> | created_at | wrapped_at | E123 | [address, name]
    vault_value: L0001 | * | 3fa1c2d4e5f60718 | <12-byte nonce> | <ciphertext + tag>

A line keeps its DEK when it registers again, but its seal changes: a record
of an older registration swapped back fails authentication, and
:meth:`Vault.open` requires exactly one record per line with a value (its
fields exactly the seal's), so a dropped or added row fails too
(``AuthenticationFailed``). A whole line (key and value rows together) copied
back from an older copy is not detectable here: the base's
``registration_event_id`` says which registration is current.

Format 3 (one record per line) is what seal writes; format 2 (one value row
per field, ``ad(value)`` in ``vault_format.py``) still opens, line by line, and
a line is re-sealed as format 3 when it registers again; format 1 (before the
seal) does not open. Rotation (``rewrap``) re-wraps DEKs, never values.
Shredding drops a line's key row (``pipelines/keys.py``). Sealing is done in
bulk (``vault_seal.py``: per line one key schedule, one wrap, one encryption);
``pipelines.io.vault_files`` reads and writes a vault folder.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from transforms.crypto.envelope import length_prefixed
from transforms.crypto.keyset import Keyset, KeysetError
from transforms.crypto.vault_format import RECORD, _AD_DEK, _AD_LINE, _AD_VALUE, _KEY_COLS, _NONCE, _created_at
from transforms.crypto.vault_format import (
    _field_sets,
    _key_table,
    _lp1,
    _record_fields,
    _seal_part,
    _seal_parts,
    _stamps,
)
from transforms.crypto.vault_seal import encrypt_records, line_deks, line_records, line_seals
from transforms.crypto.vault_seal import lp_array, nonce_array, nonce_buffers, set_parts
from schemas import arrow_schema
from transforms.scan.normalize import as_strings

__all__ = ["Vault", "VaultError", "UnknownLine", "AuthenticationFailed", "VaultUnreadable", "drop_lines"]


class VaultError(Exception):
    """A vault problem; ``str()`` is one line, names lines and fields, never values."""


class UnknownLine(VaultError):
    pass


class AuthenticationFailed(VaultError):
    pass


class VaultUnreadable(VaultError):
    """No vault there, a file that cannot be read (truncated, not Parquet), or an older vault format."""


_lp = length_prefixed


def drop_lines(table: pa.Table, line_ids: Iterable[str]) -> pa.Table:
    """The rows of ``table`` whose line_id is not in ``line_ids``."""
    return table.filter(pc.invert(pc.is_in(table["line_id"], pa.array(list(line_ids), pa.string()))))


class Vault:
    """Seal, open, re-wrap and shred vault records under a keyset.

    Args:
        keyset: a loaded :class:`~transforms.crypto.keyset.Keyset` (build the Vault in
            ``setup()``; it cannot be pickled).
    """

    def __init__(self, keyset: Keyset):
        self._keyset = keyset
        self._keks: dict[str, AESGCM] = {}
        self._dek_head = _lp(_AD_DEK, keyset.keyset_id)
        self._line_head = _lp(_AD_LINE, keyset.keyset_id)
        self._value_head = _lp(_AD_VALUE, keyset.keyset_id)

    def __reduce__(self):
        raise TypeError("a Vault cannot be pickled: build it from the keyset path in DoFn.setup()")

    def _kek(self, version: str) -> AESGCM:
        if version not in self._keks:
            self._keks[version] = self._keyset.vault_kek(version)
        return self._keks[version]

    def _unwrap(self, row: dict, seal: bytes | None = None) -> bytes:
        line_id, version = row["line_id"], row["vault_key_version"]
        if row["keyset_id"] != self._keyset.keyset_id:
            raise VaultError(
                f"the data key of line {line_id} belongs to keyset {row['keyset_id']}, not {self._keyset.keyset_id}"
            )
        try:
            kek = self._kek(version)
        except KeysetError as exc:
            raise VaultError(f"the data key of line {line_id} cannot be unwrapped: {exc}") from None
        wrapped = row["wrapped_dek"]
        if seal is None:
            seal = _seal_part(row["registration_event_id"], row["sealed_fields"] or ())
        ad = self._dek_head + _lp1(line_id) + _lp1(row["dek_id"]) + _lp1(version) + seal
        try:
            return kek.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], ad)
        except (InvalidTag, ValueError):
            raise AuthenticationFailed(
                f"the data key of line {line_id} failed authentication (tampered, truncated or moved)"
            ) from None

    def seal(
        self,
        line_ids,
        columns: Mapping[str, object],
        existing_keys: pa.Table | None = None,
        *,
        registrations=None,
        now: dt.datetime | None = None,
    ) -> tuple[pa.Table, pa.Table]:
        """Encrypt a batch of lines' values.

        Args:
            line_ids: one per row, unique within the batch.
            columns: field name -> values aligned with ``line_ids`` (nulls are
                not sealed: an absent value has no vault row).
            existing_keys: key rows of lines already in the vault; their DEK
                (``dek_id``, ``created_at``) is reused, the rest get new DEKs.
            registrations: the registration the values come from, aligned with
                ``line_ids`` (a ``registration_event_id``; null for a base's own
                identity; default all null). With the fields sealed for the line
                it is the *seal* bound into every value (module docstring).

        Returns:
            ``(keys, values)``: a key row for every line of the batch (wrapped
            anew: the seal is part of the wrap's associated data) and a value
            row (the line's record, ``field`` ``*``) for every line with a
            non-null value.
        """
        ids_array, fields, arrays = self._batch(line_ids, columns)
        n = len(ids_array)
        regs = self._registrations(registrations, n)
        present = [a.is_valid().to_numpy(zero_copy_only=False) for a in arrays]
        # the sealed field set of each line: one set (and its bytes) per distinct pattern of present fields
        sets, inverse = _field_sets(fields, present, n)
        version = self._keyset.primary_vault_version
        known, old = self._known(existing_keys, ids_array)
        deks, dek_ids = line_deks(ids_array, known)
        line_lp, dek_lp = lp_array(ids_array), lp_array(dek_ids)
        seals = line_seals(regs, set_parts(sets), inverse)
        with_value = np.logical_or.reduce(present) if present else np.zeros(n, bool)
        wrap_nonces, record_nonces = nonce_buffers(n, int(with_value.sum()))
        wrapped = self._wrap(deks, wrap_nonces, line_lp, dek_lp, seals, version)
        pick = None if with_value.all() else pa.array(with_value)

        def kept(values: pa.Array) -> pa.Array:
            return values if pick is None else values.filter(pick)

        ads = pc.binary_join_element_wise(pa.scalar(self._line_head), kept(line_lp), kept(dek_lp), kept(seals), b"")
        nonces = nonce_array(record_nonces)
        records = kept(line_records(fields, arrays, n))
        line_deks_ = deks if pick is None else list(itertools.compress(deks, with_value.tolist()))
        sealed = encrypt_records(line_deks_, nonces.to_pylist(), records.to_pylist(), ads.to_pylist())
        stamps = _stamps(now, n)
        created = _created_at(ids_array, old, stamps)
        keys = _key_table(
            ids_array, dek_ids, self._keyset.keyset_id, version, wrapped, created, stamps, regs, sets, inverse
        )
        m = len(sealed)
        values = pa.table(
            [
                kept(ids_array),
                pa.repeat(pa.scalar(RECORD), m),
                kept(dek_ids),
                nonces,
                pa.array(sealed, pa.binary()),
            ],
            schema=arrow_schema("vault_value"),
        )
        return keys, values

    @staticmethod
    def _registrations(registrations, n: int) -> pa.Array:
        if registrations is None:
            return pa.nulls(n, pa.string())
        regs = as_strings(registrations)
        if len(regs) != n:
            raise VaultError("seal: registrations needs one value per line_id")
        return regs

    @staticmethod
    def _batch(line_ids, columns: Mapping[str, object]) -> tuple[pa.Array, list[str], list[pa.Array]]:
        """(line ids, field names, the values of each field as strings), checked."""
        ids_array = as_strings(line_ids)
        n = len(ids_array)
        if ids_array.null_count or pc.count_distinct(ids_array).as_py() != n:
            raise VaultError("seal: line_ids must be non-null and unique within a batch")
        fields = list(columns)
        arrays = [as_strings(columns[f]) for f in fields]
        if any(len(a) != n for a in arrays):
            raise VaultError("seal: every column needs one value per line_id")
        return ids_array, fields, arrays

    def _known(self, existing_keys: pa.Table | None, ids_array: pa.Array) -> tuple[dict, pa.Table | None]:
        """line_id -> (DEK, dek_id) of the batch's lines already in the vault, and their key rows."""
        if existing_keys is None or not existing_keys.num_rows:
            return {}, None
        old = existing_keys.filter(pc.is_in(existing_keys["line_id"], ids_array))
        rows = old.select(_KEY_COLS[:5]).to_pylist()
        known = {row["line_id"]: (self._unwrap(row, seal), row["dek_id"]) for row, seal in zip(rows, _seal_parts(old))}
        return known, old

    def _wrap(
        self, deks: list[bytes], nonces: bytes, line_lp: pa.Array, dek_lp: pa.Array, seals: pa.Array, version: str
    ) -> pa.Array:
        """Every line's DEK wrapped by the vault key ``version``: ``nonce || ciphertext || tag``."""
        ads = pc.binary_join_element_wise(
            pa.scalar(self._dek_head), line_lp, dek_lp, pa.scalar(_lp1(version)), seals, b""
        )
        nonce_column = nonce_array(nonces)
        wrapped = list(map(self._kek(version).encrypt, nonce_column.to_pylist(), deks, ads.to_pylist()))
        return pc.binary_join_element_wise(nonce_column, pa.array(wrapped, pa.binary()), b"")

    def open(
        self, keys: pa.Table, values: pa.Table, line_id: str, fields: Iterable[str] | None = None
    ) -> dict[str, str]:
        """The plaintext values of one line, field -> value (only fields that have one).

        Every value row of the line is checked against its seal (one row per sealed field, none else),
        whichever ``fields`` are asked for: a dropped, added or rolled-back row fails authentication."""
        keys = keys.filter(pc.equal(keys["line_id"], line_id))
        values = values.filter(pc.equal(values["line_id"], line_id))
        if keys.num_rows == 0:
            why = "its data key is gone (shredded)" if values.num_rows else "it is not in the vault"
            raise UnknownLine(f"line {line_id} cannot be revealed: {why}")
        if keys.num_rows > 1:
            raise VaultError(f"line {line_id} has {keys.num_rows} data keys in the vault's key table")
        opened = self.open_many(keys, values, fields)
        return dict(zip(opened["field"].to_pylist(), opened["value"].to_pylist()))

    @staticmethod
    def check_seals(keys: pa.Table, values: pa.Table) -> None:
        """Raise AuthenticationFailed unless the value rows of the lines in ``keys`` are what each line's key
        row says was sealed: one record (format 3) or one row per sealed field (format 2), never both (a
        dropped, added, repeated or rolled-in row)."""
        values = values.filter(pc.is_in(values["line_id"], keys["line_id"]))
        ids = keys["line_id"].combine_chunks()
        sealed = keys["sealed_fields"].combine_chunks()
        record_lines = values.filter(pc.equal(values["field"], RECORD))["line_id"]
        # a line with a record expects that record alone; a line without, a row per sealed field
        as_record = pc.and_(pc.is_in(ids, value_set=record_lines), pc.greater(pc.list_value_length(sealed), 0))
        as_rows = pc.invert(as_record)
        by_field = sealed.filter(as_rows)
        expected = pa.concat_arrays(
            [
                pc.binary_join_element_wise(ids.filter(as_record), pa.scalar(RECORD), "\x1f"),
                pc.binary_join_element_wise(
                    ids.filter(as_rows).take(pc.list_parent_indices(by_field)), pc.list_flatten(by_field), "\x1f"
                ),
            ]
        )
        got = pc.binary_join_element_wise(values["line_id"], values["field"], "\x1f")
        if len(got) == len(expected) and pc.count_distinct(got).as_py() == len(got):
            if pc.all(pc.is_in(got, value_set=expected)).as_py() in (True, None):
                return
        missing = expected.filter(pc.invert(pc.is_in(expected, value_set=got))).to_pylist()
        extra = got.filter(pc.invert(pc.is_in(got, value_set=expected))).to_pylist()
        counts = pc.value_counts(got)
        twice = counts.field("values").filter(pc.greater(counts.field("counts"), 1)).to_pylist()
        for what, found in (("is missing", missing), ("was not sealed with it", extra), ("is there twice", twice)):
            if found:
                line_id, field = sorted(found)[0].split("\x1f", 1)
                row = "its record" if field == RECORD else f"field {field}"
                if what == "is missing" and not pc.any(pc.equal(values["line_id"], line_id)).as_py():
                    row = "its record"  # no row at all: a record dropped (or every row of a format 2 line)
                raise AuthenticationFailed(
                    f"vault records of line {line_id} do not match its seal: {row} {what} "
                    "(a record dropped, added or rolled back)"
                )
        raise AuthenticationFailed("the vault's records do not match their lines' seals (a key row repeated?)")

    def open_many(self, keys: pa.Table, values: pa.Table, fields: Iterable[str] | None = None) -> pa.Table:
        """Every value of the lines in ``keys``, as a table (line_id, field, value), lines in line_id order.

        For re-tokenizing: one DEK unwrap per line, one AES-GCM per record (per value in a format 2 line).
        The lines' value rows are checked against their seals first (:meth:`check_seals`). Value rows of
        lines without a key row (shredded) are skipped.
        """
        values = values.filter(pc.is_in(values["line_id"], keys["line_id"]))
        self.check_seals(keys, values)
        wanted = None if fields is None else set(fields)
        if wanted is not None:
            values = values.filter(pc.is_in(values["field"], pa.array([*wanted, RECORD], pa.string())))
        values = values.take(pc.sort_indices(values, [("line_id", "ascending")]))
        rows = keys.select(_KEY_COLS).to_pylist()
        by_line = {row["line_id"]: (row, seal) for row, seal in zip(rows, _seal_parts(keys))}
        out_lines, out_fields, plain, current = [], [], [], None
        columns = [values[c].to_pylist() for c in ("line_id", "field", "dek_id", "nonce", "ciphertext")]
        for line_id, field, dek_id, nonce, sealed in zip(*columns):
            if line_id != current:  # one AESGCM per line, one alive at a time
                (row, seal), current = by_line[line_id], line_id
                expected, decrypt = row["dek_id"], AESGCM(self._unwrap(row, seal)).decrypt
                head = _lp1(line_id) + _lp1(expected) + seal
            try:
                if dek_id != expected:  # sealed under another line's or an older DEK
                    raise InvalidTag
                if field == RECORD:
                    pairs = _record_fields(decrypt(nonce, sealed, self._line_head + head))
                    if [f for f, _ in pairs] != sorted(row["sealed_fields"] or ()):
                        raise InvalidTag  # authenticated, so not an attack on this row: a record of another seal
                else:
                    pairs = [(field, decrypt(nonce, sealed, self._value_head + head + _lp1(field)).decode("utf-8"))]
            except (InvalidTag, ValueError):
                raise AuthenticationFailed(
                    f"vault record of line {line_id}"
                    + ("" if field == RECORD else f", field {field}")
                    + " failed authentication (tampered, truncated or moved)"
                ) from None
            for name, value in pairs:
                if wanted is None or name in wanted:
                    out_lines.append(line_id)
                    out_fields.append(name)
                    plain.append(value)
        return pa.table(
            {
                "line_id": pa.array(out_lines, pa.string()),
                "field": pa.array(out_fields, pa.string()),
                "value": pa.array(plain, pa.string()),
            }
        )

    def key_info(self, keys: pa.Table, line_id: str) -> dict | None:
        """The line's key row without the wrapped key (for audit records), or None."""
        rows = keys.filter(pc.equal(keys["line_id"], line_id)).drop_columns(["wrapped_dek"]).to_pylist()
        return rows[0] if len(rows) == 1 else None

    def rewrap(self, keys: pa.Table, *, now: dt.datetime | None = None) -> pa.Table:
        """Every DEK wrapped by the primary vault key version; values are untouched."""
        primary = self._keyset.primary_vault_version
        wrap, tail = self._kek(primary).encrypt, _lp1(primary)
        foreign = keys.filter(pc.not_equal(keys["keyset_id"], self._keyset.keyset_id)).select(_KEY_COLS)
        if foreign.num_rows:
            self._unwrap(foreign.slice(0, 1).to_pylist()[0])  # raises: a key of another keyset
        stale = pc.not_equal(keys["vault_key_version"], primary)
        todo, done = keys.filter(stale), keys.filter(pc.invert(stale))
        nonces, wrapped = os.urandom(todo.num_rows * _NONCE), []
        rows = todo.select(_KEY_COLS[:5]).to_pylist()
        for at, row, seal in zip(range(0, len(nonces), _NONCE), rows, _seal_parts(todo)):
            nonce = nonces[at : at + _NONCE]
            ad = self._dek_head + _lp1(row["line_id"]) + _lp1(row["dek_id"]) + tail + seal
            wrapped.append(nonce + wrap(nonce, self._unwrap(row, seal), ad))
        m = todo.num_rows
        for name, column in (
            ("vault_key_version", pa.array([primary] * m, pa.string())),
            ("wrapped_dek", pa.array(wrapped, pa.binary())),
            ("wrapped_at", _stamps(now, m)),
        ):
            todo = todo.set_column(todo.schema.get_field_index(name), name, column)
        return pa.concat_tables([done, todo.cast(done.schema)])

    def shred(self, keys: pa.Table, line_ids: Iterable[str]) -> pa.Table:
        """The key table without these lines' DEKs: their values can never be opened again."""
        return drop_lines(keys, line_ids)
