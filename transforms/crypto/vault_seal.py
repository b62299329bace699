"""Sealing a batch of lines into vault rows (``transforms/crypto/vault.py`` ``Vault.seal``), in bulk.

The record format is ``transforms/crypto/vault_format.py``'s; this module only makes it fast:

* every line's record (its sealed fields and values, length-prefixed, sorted by field) and every
  associated-data string (one per wrapped data key, one per record: ``lp`` of the line ids and dek ids,
  the seal of each line) is built by Arrow kernels over the whole batch, not by Python string work per line;
* random bytes come from one ``os.urandom`` call per batch: DEKs and dek ids of the new lines, one
  wrap nonce per line and one nonce per record, each slice used once (a nonce is never reused);
* the AES-GCM calls run in C-level ``map`` loops: all wraps under the vault key in one ``map``; the
  records in another, one ``AESGCM`` object per line's data key made as its record is sealed and
  dropped after it (one alive at a time).

A line's values are one AEAD call, not one per field: the cost of a line is one key schedule, one wrap
and one encryption whatever its number of fields.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from transforms.crypto.vault_format import _DEK, _DEK_ID, _NONCE, _fields_part, _lp1

__all__ = [
    "lp_array",
    "random_deks",
    "line_deks",
    "line_seals",
    "line_records",
    "encrypt_records",
    "set_parts",
    "nonce_buffers",
    "nonce_array",
]

_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def _binary_slices(buffer: bytes, width: int, n: int) -> pa.Array:
    """n fixed-width slices of one buffer as a binary array, without copies."""
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(buffer)])


def lp_array(values: pa.Array) -> pa.Array:
    """``lp`` of every value (4-byte big-endian length, then the UTF-8 bytes), as a binary array; no nulls."""
    raw = values.cast(pa.binary())
    lengths = pc.binary_length(raw).to_numpy(zero_copy_only=False).astype(">u4")
    prefix = pa.Array.from_buffers(pa.binary(4), len(raw), [None, pa.py_buffer(lengths.tobytes())])
    return pc.binary_join_element_wise(prefix.cast(pa.binary()), raw, b"")


def random_deks(n: int) -> tuple[list[bytes], pa.Array]:
    """``n`` fresh data keys (32 bytes each) and their dek ids (8 random bytes, hex), from one urandom call."""
    fresh = np.frombuffer(os.urandom((_DEK + _DEK_ID) * n), np.uint8).reshape(n, _DEK + _DEK_ID)
    deks = _binary_slices(np.ascontiguousarray(fresh[:, :_DEK]).tobytes(), _DEK, n).to_pylist()
    raw = fresh[:, _DEK:]
    text = np.empty((n, 2 * _DEK_ID), np.uint8)
    text[:, 0::2], text[:, 1::2] = _HEX[raw >> 4], _HEX[raw & 15]
    offsets = np.arange(0, (n + 1) * 2 * _DEK_ID, 2 * _DEK_ID, dtype=np.int32)
    return deks, pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text.tobytes()))


def line_deks(ids_array: pa.Array, known: dict) -> tuple[list[bytes], pa.Array]:
    """Each line's DEK and dek id: the vault's own (``known``: line_id -> (DEK, dek id)) for a line already
    in it, fresh ones for the rest."""
    deks, dek_ids = random_deks(len(ids_array))
    if not known:
        return deks, dek_ids
    ids = dek_ids.to_pylist()
    for i, line_id in enumerate(ids_array.to_pylist()):
        hit = known.get(line_id)
        if hit is not None:
            deks[i], ids[i] = hit
    return deks, pa.array(ids, pa.string())


def line_seals(regs: pa.Array, set_parts: list[bytes], inverse: np.ndarray) -> pa.Array:
    """Each line's seal bytes: ``reg`` (0x00, or 0x01 lp(registration)) then its field set's part."""
    tagged = pc.binary_join_element_wise(pa.scalar(b"\x01"), lp_array(pc.fill_null(regs, "")), b"")
    reg = pc.if_else(regs.is_valid(), tagged, pa.scalar(b"\x00"))
    return pc.binary_join_element_wise(reg, pa.array(set_parts, pa.binary()).take(pa.array(inverse)), b"")


def line_records(fields: list[str], arrays: list[pa.Array], n: int) -> pa.Array:
    """Each of the ``n`` lines' record: ``lp(field) lp(value)`` of its present fields, sorted by field name
    (empty when none is present); ``arrays`` are strings aligned with ``fields``."""
    parts = []
    for field, values in sorted(zip(fields, arrays), key=lambda pair: pair[0]):
        pair = pc.binary_join_element_wise(pa.scalar(_lp1(field)), lp_array(pc.fill_null(values, "")), b"")
        parts.append(pc.if_else(values.is_valid(), pair, pa.scalar(b"")))
    if not parts:
        return pa.array([b""] * n, pa.binary())
    return pc.binary_join_element_wise(*parts, b"") if len(parts) > 1 else parts[0]


def encrypt_records(deks: list[bytes], nonces: list, records: list, ads: list) -> list[bytes]:
    """Ciphertexts (+ tag) of the records, in order: record ``k`` under ``deks[k]``, its own nonce and
    associated data; one AESGCM object alive at a time."""
    return list(map(AESGCM.encrypt, map(AESGCM, deks), nonces, records, ads))


def set_parts(sets: list[list[str]]) -> list[bytes]:
    return [_fields_part(s) for s in sets]


def nonce_buffers(n_wraps: int, n_records: int) -> tuple[bytes, bytes]:
    """The wrap nonces (one per line) and the record nonces (one per record), 12 bytes each, from one urandom
    call: every nonce is used once."""
    buffer = os.urandom(_NONCE * (n_wraps + n_records))
    return buffer[: _NONCE * n_wraps], buffer[_NONCE * n_wraps :]


def nonce_array(buffer: bytes) -> pa.Array:
    """The 12-byte nonces of a buffer as a binary array (no copy)."""
    return _binary_slices(buffer, _NONCE, len(buffer) // _NONCE)
