"""The identity vault: envelope encryption of original values, per line.

Each line gets a random 256-bit data key (DEK, with a random ``dek_id``).
Its values are sealed with AES-256-GCM under the DEK, a fresh 96-bit random
nonce each, and associated data binding keyset, line, DEK and field::

    ad(value) = lp("subscriber-backfill/vault-value/1") lp(keyset_id) lp(line_id) lp(dek_id) lp(field)
    ad(dek)   = lp("subscriber-backfill/vault-dek/1") lp(keyset_id) lp(line_id) lp(dek_id) lp(vault_key_version)

(``lp`` = 4-byte big-endian length, then the UTF-8 bytes: unambiguous), so
a ciphertext moved to another line or field fails to open. The DEK is stored
wrapped (AES-256-GCM, ``nonce || ciphertext || tag``) by the primary vault key
version. Two Arrow tables hold a vault (schemas ``vault_key`` and
``vault_value``, one key row per line, one value row per line and field)::

    vault_key:   L0001 | 3fa1c2d4e5f60718 | ks_9f2c... | v1 | <60 bytes> | created_at | wrapped_at
    vault_value: L0001 | name | 3fa1c2d4e5f60718 | <12-byte nonce> | <ciphertext + tag>

Rotation (``rewrap``) re-wraps DEKs, never values. Shredding drops a line's key
row; an older copy of the values then has no key to open with, and the
``keys shred`` command also retires the vault key versions that wrapped older
copies of the key table (see ``pipelines/keys.py``).

AES-GCM runs once per value in a Python loop (the ``cryptography`` API has no
batch call): one AESGCM object per line, nonces from one ``os.urandom`` call
per batch. ``pipelines.io.vault_files`` reads and writes a vault folder.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas import arrow_schema
from transforms.crypto.envelope import length_prefixed
from transforms.crypto.keyset import Keyset, KeysetError
from transforms.scan.normalize import as_strings

__all__ = ["Vault", "VaultError", "UnknownLine", "AuthenticationFailed", "drop_lines"]

_AD_VALUE = b"subscriber-backfill/vault-value/1"
_AD_DEK = b"subscriber-backfill/vault-dek/1"
_NONCE, _DEK, _DEK_ID = 12, 32, 8
_FRESH = _DEK + _DEK_ID + _NONCE  # random bytes per new line: DEK, dek_id, wrap nonce
_KEY_COLS = ["line_id", "dek_id", "keyset_id", "vault_key_version", "wrapped_dek"]
_TIMESTAMP = pa.timestamp("us", tz="UTC")


class VaultError(Exception):
    """A vault problem; ``str()`` is one line, names lines and fields, never values."""


class UnknownLine(VaultError):
    pass


class AuthenticationFailed(VaultError):
    pass


def _lp1(text: str) -> bytes:
    """One length-prefixed part (the hot path's shortcut of ``length_prefixed``)."""
    raw = text.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


_lp = length_prefixed


def _stamps(when: dt.datetime | None, n: int) -> pa.Array:
    """``n`` copies of a UTC time (default: now)."""
    when = when or dt.datetime.now(dt.timezone.utc)
    micros = (when - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)
    return pa.array(np.full(n, micros, np.int64)).cast(_TIMESTAMP)


def _binary_from(buffer: bytes, width: int, n: int) -> pa.Array:
    """n fixed-width slices of one buffer as a binary array, without copies."""
    offsets = pa.array(range(0, (n + 1) * width, width), pa.int32()).buffers()[1]
    return pa.Array.from_buffers(pa.binary(), n, [None, offsets, pa.py_buffer(buffer)])


def drop_lines(table: pa.Table, line_ids: Iterable[str]) -> pa.Table:
    """The rows of ``table`` whose line_id is not in ``line_ids``."""
    return table.filter(pc.invert(pc.is_in(table["line_id"], pa.array(list(line_ids), pa.string()))))


def _value_table(ids_array: pa.Array, fields: list[str], specs: list, nonces: bytes, dek_ids: list[str]) -> pa.Table:
    """The value rows of a sealed batch: one per non-null value, in field order."""
    dek_array, value_parts = pa.array(dek_ids, pa.string()), []
    for field, (_, _, sealed, rows, base) in zip(fields, specs):
        rows, k = pa.array(rows, pa.int64()), len(sealed)
        nonce_column = _binary_from(nonces[base : base + _NONCE * k], _NONCE, k)
        value_parts.append(
            pa.table(
                [
                    pc.take(ids_array, rows),
                    pa.array([field] * k, pa.string()),
                    pc.take(dek_array, rows),
                    nonce_column,
                    pa.array(sealed, pa.binary()),
                ],
                schema=arrow_schema("vault_value"),
            )
        )
    return pa.concat_tables(value_parts) if value_parts else arrow_schema("vault_value").empty_table()


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
        self._value_head = _lp(_AD_VALUE, keyset.keyset_id)

    def __reduce__(self):
        raise TypeError("a Vault cannot be pickled: build it from the keyset path in DoFn.setup()")

    def _kek(self, version: str) -> AESGCM:
        if version not in self._keks:
            self._keks[version] = self._keyset.vault_kek(version)
        return self._keks[version]

    def _unwrap(self, row: dict) -> bytes:
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
        ad = self._dek_head + _lp1(line_id) + _lp1(row["dek_id"]) + _lp1(version)
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
        now: dt.datetime | None = None,
    ) -> tuple[pa.Table, pa.Table]:
        """Encrypt a batch of lines' values.

        Args:
            line_ids: one per row, unique within the batch.
            columns: field name -> values aligned with ``line_ids`` (nulls are
                not sealed: an absent value has no vault row).
            existing_keys: key rows of lines already in the vault; their DEK is
                reused (and their row returned unchanged), the rest get new DEKs.

        Returns:
            ``(keys, values)``: a key row for every line of the batch and a
            value row for every non-null value.
        """
        ids_array, fields, plains = self._batch(line_ids, columns)
        counts = [len(p) - p.count(None) for p in plains]
        nonces = os.urandom(_NONCE * sum(counts))
        bases = [_NONCE * sum(counts[:j]) for j in range(len(fields))]
        # per field: (ad suffix, plaintexts, ciphertexts, row indices, first nonce offset)
        specs = [(_lp1(f), p, [], [], b) for f, p, b in zip(fields, plains, bases)]
        version = self._keyset.primary_vault_version
        known, parts = self._known(existing_keys, ids_array)
        new_ids, new_dek_ids, wrapped, dek_ids = self._seal_lines(ids_array, known, specs, nonces, version)
        m, schema = len(new_ids), arrow_schema("vault_key")
        stamps = _stamps(now, m)
        parts.insert(
            0,
            pa.table(
                [new_ids, new_dek_ids, [self._keyset.keyset_id] * m, [version] * m, wrapped, stamps, stamps],
                schema=schema,
            ),
        )
        keys = pa.concat_tables([p.cast(schema) for p in parts])
        return keys, _value_table(ids_array, fields, specs, nonces, dek_ids)

    @staticmethod
    def _batch(line_ids, columns: Mapping[str, object]) -> tuple[pa.Array, list[str], list[list]]:
        """(line ids, field names, plaintexts per field as bytes or None), checked."""
        ids_array = as_strings(line_ids)
        n = len(ids_array)
        if ids_array.null_count or pc.count_distinct(ids_array).as_py() != n:
            raise VaultError("seal: line_ids must be non-null and unique within a batch")
        fields = list(columns)
        plains = [as_strings(columns[f]).cast(pa.binary()).to_pylist() for f in fields]
        if any(len(p) != n for p in plains):
            raise VaultError("seal: every column needs one value per line_id")
        return ids_array, fields, plains

    def _known(self, existing_keys: pa.Table | None, ids_array: pa.Array) -> tuple[dict, list[pa.Table]]:
        """line_id -> (DEK, dek_id) of the batch's lines already in the vault, and their key rows."""
        if existing_keys is None or not existing_keys.num_rows:
            return {}, []
        old = existing_keys.filter(pc.is_in(existing_keys["line_id"], ids_array))
        known = {row["line_id"]: (self._unwrap(row), row["dek_id"]) for row in old.select(_KEY_COLS).to_pylist()}
        return known, [old]

    def _seal_lines(self, ids_array: pa.Array, known: dict, specs: list, nonces: bytes, version: str):
        """Seal every value line by line; (new line ids, their dek ids, wrapped DEKs, every line's dek id)."""
        wrap, dek_tail = self._kek(version).encrypt, _lp1(version)
        rnd = os.urandom((len(ids_array) - len(known)) * _FRESH)
        at, new_ids, new_dek_ids, wrapped, dek_ids = 0, [], [], [], []
        # One line at a time: one AESGCM object alive (thousands alive cost GC time).
        for i, line_id in enumerate(ids_array.to_pylist()):
            line_lp = _lp1(line_id)
            hit = known.get(line_id)
            if hit is None:
                chunk, at = rnd[at : at + _FRESH], at + _FRESH
                dek, dek_id, nonce = chunk[:_DEK], chunk[_DEK : _DEK + _DEK_ID].hex(), chunk[_DEK + _DEK_ID :]
                dek_lp = _lp1(dek_id)
                wrapped.append(nonce + wrap(nonce, dek, self._dek_head + line_lp + dek_lp + dek_tail))
                new_ids.append(line_id)
                new_dek_ids.append(dek_id)
            else:
                dek, dek_id = hit
                dek_lp = _lp1(dek_id)
            dek_ids.append(dek_id)
            encrypt, prefix = AESGCM(dek).encrypt, self._value_head + line_lp + dek_lp
            for field_ad, plain, sealed, rows, base in specs:
                value = plain[i]
                if value is not None:
                    k = base + _NONCE * len(sealed)
                    sealed.append(encrypt(nonces[k : k + _NONCE], value, prefix + field_ad))
                    rows.append(i)
        return new_ids, new_dek_ids, wrapped, dek_ids

    def open(
        self, keys: pa.Table, values: pa.Table, line_id: str, fields: Iterable[str] | None = None
    ) -> dict[str, str]:
        """The plaintext values of one line, field -> value (only fields that have one)."""
        keys = keys.filter(pc.equal(keys["line_id"], line_id))
        values = values.filter(pc.equal(values["line_id"], line_id))
        if keys.num_rows == 0:
            why = "its data key is gone (shredded)" if values.num_rows else "it is not in the vault"
            raise UnknownLine(f"line {line_id} cannot be revealed: {why}")
        if keys.num_rows > 1:
            raise VaultError(f"line {line_id} has {keys.num_rows} data keys in the vault's key table")
        opened = self.open_many(keys, values, fields)
        fields_seen = opened["field"].to_pylist()
        if len(set(fields_seen)) != len(fields_seen):
            raise VaultError(f"line {line_id} has more than one vault record for a field")
        return dict(zip(fields_seen, opened["value"].to_pylist()))

    def open_many(self, keys: pa.Table, values: pa.Table, fields: Iterable[str] | None = None) -> pa.Table:
        """Every value of the lines in ``keys``, as a table (line_id, field, value).

        For re-tokenizing: one DEK unwrap per line, one AES-GCM per value.
        Value rows of lines without a key row (shredded) are skipped.
        """
        if fields is not None:
            values = values.filter(pc.is_in(values["field"], pa.array(list(fields), pa.string())))
        values = values.filter(pc.is_in(values["line_id"], keys["line_id"]))
        values = values.take(pc.sort_indices(values, [("line_id", "ascending")]))
        by_line = {row["line_id"]: row for row in keys.select(_KEY_COLS).to_pylist()}
        plain, current = [], None
        columns = [values[c].to_pylist() for c in ("line_id", "field", "dek_id", "nonce", "ciphertext")]
        for line_id, field, dek_id, nonce, sealed in zip(*columns):
            if line_id != current:  # one AESGCM per line, one alive at a time
                row, current = by_line[line_id], line_id
                expected, decrypt = row["dek_id"], AESGCM(self._unwrap(row)).decrypt
                prefix = self._value_head + _lp1(line_id) + _lp1(expected)
            try:
                if dek_id != expected:  # sealed under another line's or an older DEK
                    raise InvalidTag
                plain.append(decrypt(nonce, sealed, prefix + _lp1(field)).decode("utf-8"))
            except (InvalidTag, ValueError):
                raise AuthenticationFailed(
                    f"vault record of line {line_id}, field {field} failed authentication "
                    "(tampered, truncated or moved)"
                ) from None
        return pa.table({"line_id": values["line_id"], "field": values["field"], "value": pa.array(plain, pa.string())})

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
        for at, row in zip(range(0, len(nonces), _NONCE), todo.select(_KEY_COLS).to_pylist()):
            nonce, ad = nonces[at : at + _NONCE], self._dek_head + _lp1(row["line_id"]) + _lp1(row["dek_id"]) + tail
            wrapped.append(nonce + wrap(nonce, self._unwrap(row), ad))
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
