"""Run-local keyed hashes of identity values: the keys of the cross-record shuffles.

A document number or a name must never travel through a shuffle in
plaintext (docs/architecture.md "Principle 4"), yet equal values must meet in one bucket. Each
value becomes a 128-bit pseudo-random tag under a key that exists only for
the run (generated at launch, never stored): equal values give equal tags,
and a tag means nothing outside its run.

Construction: AES-128 CBC-MAC (ISO/IEC 9797-1 MAC algorithm 1, padding
method 2: the value, one 0x80 byte, zeros) over messages all padded to the
same length, 64 bytes. CBC-MAC on messages of one fixed length is a secure
PRF; AES comes from ``cryptography``. Values of 64 bytes or more (rare:
names over 21 Chinese characters, junk) take keyed BLAKE2b one by one.

It is vectorised: the values of one byte length form one matrix. When all
values have the same length (line ids) it is a zero-copy view of the Arrow
buffer; otherwise one radix sort puts the rows in length order and each
length's values are gathered as fixed-width items. Each of the four 16-byte
block columns of a length group goes through AES-ECB in one call, chained
with 64-bit XORs. Only the blocks a length reaches are built: a block past
the 0x80 byte is all zeros, so the chain enters the cipher as it is (the
cipher call itself is never skipped).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["keyed_hash", "bucket_of", "TAG_BYTES"]

TAG_BYTES = 16
_WIDTH = 64  # padded message length: four AES blocks
_TAG = np.dtype(f"V{TAG_BYTES}")  # one tag as one numpy item: a scatter moves 16 bytes at once
_OFFSETS = {pa.string(): np.int32, pa.binary(): np.int32, pa.large_string(): np.int64, pa.large_binary(): np.int64}


def _blake(value: bytes, key: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=TAG_BYTES, key=key, person=b"subreg-long").digest()


def _layout(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data): the n + 1 offsets of the values into their data buffer, and that buffer's bytes."""
    offset_type = _OFFSETS[values.type]
    offsets = np.frombuffer(values.buffers()[1], offset_type)[values.offset : values.offset + len(values) + 1]
    data = values.buffers()[2]
    return offsets.astype(np.int64), np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)


def _room(k: int) -> np.ndarray:
    """A buffer for ``update_into``'s output of k blocks (it asks for one block of spare room)."""
    return np.empty(k * TAG_BYTES + TAG_BYTES - 1, np.uint8)


def _mac(encryptor, matrix: np.ndarray, out: memoryview, scratch: tuple[np.ndarray, np.ndarray]) -> None:
    """CBC-MAC of each row of ``matrix`` (k values of one length < 64, padded to 64 bytes) into ``out``
    (16 k + 15 bytes or more), through two ``_room`` buffers of at least k blocks: the chain and the next input."""
    k, length = matrix.shape
    chain, mixed = scratch  # whole buffers (room for update_into); their first k blocks as (k, 16) views:
    chain_rows, mixed_rows = (buffer[: k * TAG_BYTES].reshape(k, TAG_BYTES) for buffer in scratch)
    last = _WIDTH // TAG_BYTES - 1
    for block in range(last + 1):
        lo = block * TAG_BYTES
        if lo > length:  # an all-zero block: chain XOR 0 is the chain, which goes through AES as it is
            chain, mixed, chain_rows, mixed_rows = mixed, chain, mixed_rows, chain_rows
        else:
            width = min(length - lo, TAG_BYTES)
            mixed_rows[:, :width] = matrix[:, lo : lo + width]
            if width < TAG_BYTES:
                mixed_rows[:, width] = 0x80
                mixed_rows[:, width + 1 :] = 0
            if block:  # the first block's chain is the zero IV
                words = mixed_rows.view(np.uint64)
                np.bitwise_xor(words, chain_rows.view(np.uint64), out=words)
        encryptor.update_into(mixed_rows, out if block == last else chain)


def _rows_of_width(data: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes at each of ``starts`` in ``data`` as a (k, width) matrix: one gather of
    ``width``-byte items from a view whose item i is the bytes i .. i + width - 1 (items overlap)."""
    if width == 0:
        return np.empty((len(starts), 0), np.uint8)
    windows = np.ndarray((len(data) - width + 1,), np.dtype(f"V{width}"), buffer=data, strides=(1,))
    return windows[starts].view(np.uint8).reshape(len(starts), width)


def _mac_by_length(offsets, data, rows, lengths, encryptor) -> tuple[np.ndarray, np.ndarray]:
    """(rows in length order, their tags): the tags of the values at ``rows`` (all shorter than 64 bytes)."""
    order = rows[np.argsort(lengths[rows].astype(np.uint8), kind="stable")]  # small integers: a radix sort
    starts, group_len = offsets[order], lengths[order]
    edges = np.flatnonzero(np.r_[True, group_len[1:] != group_len[:-1], True])
    tags = _room(len(order))
    view, most = memoryview(tags), int(np.diff(edges).max())
    scratch = (_room(most), _room(most))
    for start, end in zip(edges[:-1], edges[1:]):
        matrix = _rows_of_width(data, starts[start:end], int(group_len[start]))
        _mac(encryptor, matrix, view[start * TAG_BYTES :], scratch)
    return order, tags[: len(order) * TAG_BYTES].view(_TAG)


def keyed_hash(values: pa.Array, key: bytes) -> pa.Array:
    """A 16-byte tag per value under the 16-byte ``key``; nulls stay null."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.type not in _OFFSETS:
        values = values.cast(pa.binary())
    n = len(values)
    if n == 0:
        return pa.array([], pa.binary(TAG_BYTES))
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    offsets, data = _layout(values)
    lengths = np.diff(offsets)
    valid = values.is_valid().to_numpy(zero_copy_only=False) if values.null_count else None
    if valid is None and lengths[0] < _WIDTH and (lengths == lengths[0]).all():
        tags = _room(n)
        matrix = data[offsets[0] : offsets[-1]].reshape(n, int(lengths[0]))
        _mac(encryptor, matrix, memoryview(tags), (_room(n), _room(n)))
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(TAG_BYTES), n, [None, pa.py_buffer(tags)])
    kept = np.ones(n, bool) if valid is None else valid
    short = kept & (lengths < _WIDTH)
    tags = np.zeros(n, _TAG)
    rows = np.flatnonzero(short)
    if len(rows):
        order, sorted_tags = _mac_by_length(offsets, data, rows, lengths, encryptor)
        tags[order] = sorted_tags
    long_rows = np.flatnonzero(kept & ~short)
    if len(long_rows):
        long_values = [bytes(data[offsets[i] : offsets[i + 1]]) for i in long_rows]
        tags[long_rows] = np.frombuffer(b"".join(_blake(v, key) for v in long_values), _TAG)
    validity = None if valid is None else pa.array(valid).buffers()[1]
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(TAG_BYTES), n, [validity, pa.py_buffer(tags)])


# A fixed, public key: line_ids are not identity values, and bucket numbers
# must agree across workers, processes and runs (unlike Python's hash()).
_BUCKET_KEY = b"subreg-buckets-1"


def bucket_of(values: pa.Array | pa.ChunkedArray, n_buckets: int) -> np.ndarray:
    """Stable bucket (0..n-1) of each value (string, or a keyed-hash key): every shuffle's, the in-process
    engines' and the report's buckets (here, beside the hash, so a process that only buckets imports no
    classifier)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_fixed_size_binary(values.type):
        values = keyed_hash(pc.fill_null(values, ""), _BUCKET_KEY)
    # A keyed-hash tag is uniform: its first 8 bytes pick the bucket.
    width = values.type.byte_width
    raw = np.frombuffer(values.buffers()[1], np.uint8)
    start = values.offset * width
    rows = raw[start : start + len(values) * width].reshape(-1, width)
    hashed = rows[:, :8].copy().view(np.uint64).ravel()
    return (hashed % np.uint64(n_buckets)).astype(np.int32)
