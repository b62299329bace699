"""Sealing a batch of lines into vault rows (``transforms/crypto/vault.py`` ``Vault.seal``), in bulk.

The record format is ``transforms/crypto/vault_format.py``'s; this module only makes it fast:

* every associated-data string (one per wrapped data key, one per value) is built by Arrow kernels over
  the whole batch (``lp`` of the line ids and dek ids, the seal of each line, the field suffixes), not
  by Python string work per line;
* random bytes come from one ``os.urandom`` call per batch: DEKs and dek ids of the new lines, one
  wrap nonce per line and one nonce per value, each slice used once (a nonce is never reused);
* the AES-GCM calls run in C-level ``map`` loops: all wraps under the vault key in one ``map``; the
  values line by line in chunks of :data:`CHUNK` lines, one ``AESGCM`` object per line's data key (its
  key schedule is made once per line) and one ``encrypt`` per value. A chunk bounds the AESGCM objects
  alive at once (each holds about 2.4 KB of key schedule).

Value rows come out line by line (a line's fields in the order the columns were given).
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from transforms.crypto.vault_format import _DEK, _DEK_ID, _NONCE, _fields_part, _lp1

__all__ = [
    "CHUNK",
    "lp_array",
    "random_deks",
    "line_deks",
    "line_seals",
    "value_order",
    "encrypt_values",
    "field_suffixes",
    "set_parts",
    "nonce_buffers",
    "nonce_array",
]

CHUNK = 1_024  # lines whose AESGCM objects are alive at once
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


def value_order(present: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(line, field) of every present value, line by line (a line's fields in column order)."""
    if not present:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lines = np.concatenate([np.flatnonzero(p) for p in present])
    fields = np.concatenate([np.full(int(p.sum()), j, np.int64) for j, p in enumerate(present)])
    order = np.argsort(lines, kind="stable")
    return lines[order], fields[order]


def encrypt_values(deks: list[bytes], line_of: np.ndarray, nonces: list, plains: list, ads: list) -> list[bytes]:
    """Ciphertexts (+ tag) of the values, in order: value ``k`` under the DEK of line ``line_of[k]``.

    ``line_of`` is non-decreasing (values line by line)."""
    starts = np.searchsorted(line_of, np.arange(0, len(deks) + CHUNK, CHUNK)).tolist()
    sealed: list[bytes] = []
    encrypt = AESGCM.encrypt
    for chunk, first in enumerate(range(0, len(deks), CHUNK)):
        lo, hi = starts[chunk], starts[chunk + 1]
        if lo == hi:
            continue
        aeads = list(map(AESGCM, deks[first : first + CHUNK]))
        per_value = list(map(aeads.__getitem__, (line_of[lo:hi] - first).tolist()))
        sealed.extend(map(encrypt, per_value, nonces[lo:hi], plains[lo:hi], ads[lo:hi]))
    return sealed


def field_suffixes(fields: list[str]) -> pa.Array:
    """``lp(field)`` of each field, as a binary array indexed by field position."""
    return pa.array([_lp1(f) for f in fields], pa.binary())


def set_parts(sets: list[list[str]]) -> list[bytes]:
    return [_fields_part(s) for s in sets]


def nonce_buffers(n_wraps: int, n_values: int) -> tuple[bytes, bytes]:
    """The wrap nonces (one per line) and the value nonces (one per value), 12 bytes each, from one urandom
    call: every nonce is used once."""
    buffer = os.urandom(_NONCE * (n_wraps + n_values))
    return buffer[: _NONCE * n_wraps], buffer[_NONCE * n_wraps :]


def nonce_array(buffer: bytes) -> pa.Array:
    """The 12-byte nonces of a buffer as a binary array (no copy)."""
    return _binary_slices(buffer, _NONCE, len(buffer) // _NONCE)
