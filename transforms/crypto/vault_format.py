"""The byte and table format of vault records (``transforms/crypto/vault.py``): the seal's, the
associated data's and a line record's bytes, and the Arrow rows of the ``vault_key`` and ``vault_value`` tables.

The associated data of a line's record, of a (format 2) value and of a wrapped data key (``lp`` = 4-byte
big-endian length, then the bytes)::

    seal      = reg lp(lp(field_1) lp(field_2) ...)       the sealed fields, sorted by name
    reg       = 0x00 (no registration: a base's identity) | 0x01 lp(registration_event_id)
    ad(line)  = lp("subscriber-backfill/vault-line/3") lp(keyset_id) lp(line_id) lp(dek_id) seal
    ad(value) = lp("subscriber-backfill/vault-value/2") lp(keyset_id) lp(line_id) lp(dek_id) seal lp(field)
    ad(dek)   = lp("subscriber-backfill/vault-dek/2") lp(keyset_id) lp(line_id) lp(dek_id) lp(vault_key_version) seal

A line's record (format 3, the only one written) is its sealed fields and values, sorted by field name::

    record    = lp(field_1) lp(value_1) lp(field_2) lp(value_2) ...

and its value row's ``field`` is :data:`RECORD`. A format 2 vault has one value row per field instead
(``ad(value)``); it is still read, line by line, never written.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import arrow_schema

_AD_LINE = b"subscriber-backfill/vault-line/3"
_AD_VALUE = b"subscriber-backfill/vault-value/2"
RECORD = "*"  # the ``field`` of a line's record row: every sealed field of the line in one ciphertext
_AD_DEK = b"subscriber-backfill/vault-dek/2"
_NONCE, _DEK, _DEK_ID = 12, 32, 8
_KEY_COLS = [
    "line_id",
    "dek_id",
    "keyset_id",
    "vault_key_version",
    "wrapped_dek",
    "registration_event_id",
    "sealed_fields",
]
_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _lp1(text: str) -> bytes:
    """One length-prefixed part (the hot path's shortcut of ``length_prefixed``)."""
    raw = text.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


def _reg_part(registration: str | None) -> bytes:
    return b"\x00" if registration is None else b"\x01" + _lp1(registration)


def _fields_part(fields) -> bytes:
    return _lp1_bytes(b"".join(_lp1(f) for f in sorted(fields)))


def _lp1_bytes(raw: bytes) -> bytes:
    return len(raw).to_bytes(4, "big") + raw


def _record_fields(record: bytes) -> list[tuple[str, str]]:
    """The (field, value) pairs of a line's record, in order; ValueError when the bytes are not a record."""
    pairs, at, end = [], 0, len(record)
    while at < end:
        parts = []
        for _ in range(2):
            if at + 4 > end:
                raise ValueError("truncated record")
            size = int.from_bytes(record[at : at + 4], "big")
            at += 4
            if at + size > end:
                raise ValueError("truncated record")
            parts.append(record[at : at + size].decode("utf-8"))
            at += size
        pairs.append((parts[0], parts[1]))
    return pairs


def _seal_part(registration: str | None, fields) -> bytes:
    """The seal's associated-data bytes: the registration and the sorted sealed fields."""
    return _reg_part(registration) + _fields_part(fields)


def _seal_parts(keys: pa.Table) -> list[bytes]:
    """The seal bytes of every key row, built once per distinct field set."""
    if not keys.num_rows:
        return []
    joined = pc.binary_join(keys["sealed_fields"].combine_chunks(), "\x1f").dictionary_encode()
    sets = [_fields_part(s.split("\x1f") if s else ()) for s in joined.dictionary.to_pylist()]
    regs = keys["registration_event_id"].to_pylist()
    return [(b"\x00" if r is None else b"\x01" + _lp1(r)) + sets[c] for r, c in zip(regs, joined.indices.to_pylist())]


def _stamps(when: dt.datetime | None, n: int) -> pa.Array:
    """``n`` copies of a UTC time (default: now)."""
    when = when or dt.datetime.now(dt.timezone.utc)
    micros = (when - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)
    return pa.array(np.full(n, micros, np.int64)).cast(_TIMESTAMP)


def _field_sets(fields: list[str], present: list[np.ndarray], n: int) -> tuple[list[list[str]], np.ndarray]:
    """The sealed field set of each line: one sorted set per distinct pattern of present fields, and
    each line's pattern index."""
    bits = np.zeros(n, np.int64)
    for j, here in enumerate(present):
        bits |= here.astype(np.int64) << j
    patterns, inverse = np.unique(bits, return_inverse=True)
    sets = [sorted(f for j, f in enumerate(fields) if int(p) >> j & 1) for p in patterns]
    return sets, inverse


def _created_at(ids_array: pa.Array, old: pa.Table | None, stamps: pa.Array) -> pa.Array:
    """A line's first ``created_at`` when it is already in the vault (``old``: its key rows), else now."""
    if old is not None and old.num_rows:
        at = pc.index_in(ids_array, value_set=old["line_id"])
        return pc.coalesce(old["created_at"].combine_chunks().cast(_TIMESTAMP).take(at), stamps)
    return stamps


def _key_table(
    ids_array: pa.Array,
    dek_ids: pa.Array,
    keyset_id: str,
    version: str,
    wrapped: pa.Array,
    created: pa.Array,
    stamps: pa.Array,
    regs: pa.Array,
    sets: list[list[str]],
    inverse: np.ndarray,
) -> pa.Table:
    """The key rows of a sealed batch: one per line."""
    n = len(ids_array)
    return pa.table(
        [
            ids_array,
            dek_ids,
            pa.array([keyset_id] * n, pa.string()),
            pa.array([version] * n, pa.string()),
            wrapped,
            created,
            stamps,
            regs,
            pa.array(sets, pa.list_(pa.string())).take(pa.array(inverse.reshape(-1))),
        ],
        schema=arrow_schema("vault_key"),
    )
