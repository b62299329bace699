"""Run-local keyed hashes of identity values: the keys of the cross-record shuffles.

A document number or a name must never travel through a shuffle in
plaintext (docs/architecture.md "Principle 4"), yet equal values must meet in one bucket. Each
value becomes a 128-bit pseudo-random tag under a key that exists only for
the run (generated at launch, never stored): equal values give equal tags,
and a tag means nothing outside its run.

Construction: AES-128 CBC-MAC (ISO/IEC 9797-1 MAC algorithm 1, padding
method 2: the value, one 0x80 byte, zeros) over messages all padded to the
same length, 64 bytes. CBC-MAC on messages of one fixed length is a secure
PRF; AES comes from ``cryptography``. It is vectorised: the values are laid
out as a byte matrix (sorted by length, so each length group is a zero-copy
view of the Arrow buffer) and each 16-byte block column goes through AES-ECB
in one call, chained with numpy XORs. Values of 64 bytes or more (rare:
names over 21 Chinese characters, junk) take keyed BLAKE2b one by one.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["keyed_hash", "TAG_BYTES"]

TAG_BYTES = 16
_WIDTH = 64  # padded message length: four AES blocks


def _blake(value: bytes, key: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=TAG_BYTES, key=key, person=b"subreg-long").digest()


def keyed_hash(values: pa.Array, key: bytes) -> pa.Array:
    """A 16-byte tag per value under the 16-byte ``key``; nulls stay null."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    n = len(values)
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.binary_length(values), 0).to_numpy().astype(np.int64)
    short = valid & (lengths < _WIDTH)
    tags = np.zeros((n, TAG_BYTES), np.uint8)
    rows = np.flatnonzero(short)
    if len(rows):
        order = rows[np.argsort(lengths[rows], kind="stable")]
        chosen = values.take(pa.array(order)).cast(pa.binary())
        offsets = np.frombuffer(chosen.buffers()[1], np.int32)[chosen.offset : chosen.offset + len(order) + 1]
        data = chosen.buffers()[2]
        buf = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
        matrix = np.zeros((len(order), _WIDTH), np.uint8)
        group_len = lengths[order]
        edges = np.flatnonzero(np.r_[True, group_len[1:] != group_len[:-1], True])
        for start, end in zip(edges[:-1], edges[1:]):
            width = int(group_len[start])
            if width:
                block = buf[offsets[start] : offsets[end]].reshape(end - start, width)
                matrix[start:end, :width] = block
            matrix[start:end, width] = 0x80
        encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        chain = np.zeros((len(order), TAG_BYTES), np.uint8)
        for block in range(_WIDTH // TAG_BYTES):
            mixed = chain ^ matrix[:, block * TAG_BYTES : (block + 1) * TAG_BYTES]
            chain = np.frombuffer(encryptor.update(mixed.tobytes()), np.uint8).reshape(-1, TAG_BYTES)
        tags[order] = chain
    long_rows = np.flatnonzero(valid & ~short)
    if len(long_rows):
        long_values = values.take(pa.array(long_rows)).cast(pa.binary()).to_pylist()
        tags[long_rows] = np.frombuffer(b"".join(_blake(v, key) for v in long_values), np.uint8).reshape(-1, TAG_BYTES)
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(TAG_BYTES), n, [pa.array(valid).buffers()[1], pa.py_buffer(tags.tobytes())]
    )
