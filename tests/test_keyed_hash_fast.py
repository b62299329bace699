"""keyed_hash's vectorised paths against two references: the implementation they replaced (kept here as an
oracle: every value sorted by length and laid out in a 64-byte matrix) and a per-value CBC-MAC written out
block by block (AES from ``cryptography``, BLAKE2b for values of 64 bytes or more), over random columns of
every shape: one length and many, the lengths around the block edges, empty strings, nulls, CJK text,
binary bytes (zeros, 0x80), large offsets, chunked and sliced arrays."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from transforms.scan.keyed_hash import TAG_BYTES, keyed_hash

EDGE_LENGTHS = [0, 1, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 100]
TYPES = [pa.string(), pa.binary(), pa.large_string(), pa.large_binary()]
KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")


def oracle_keyed_hash(values: pa.Array, key: bytes) -> pa.Array:
    """keyed_hash before its fast paths (its code, with the constants and the BLAKE2b helper inlined)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    n = len(values)
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.binary_length(values), 0).to_numpy().astype(np.int64)
    short = valid & (lengths < 64)
    tags = np.zeros((n, 16), np.uint8)
    rows = np.flatnonzero(short)
    if len(rows):
        order = rows[np.argsort(lengths[rows], kind="stable")]
        chosen = values.take(pa.array(order)).cast(pa.binary())
        offsets = np.frombuffer(chosen.buffers()[1], np.int32)[chosen.offset : chosen.offset + len(order) + 1]
        data = chosen.buffers()[2]
        buf = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
        matrix = np.zeros((len(order), 64), np.uint8)
        group_len = lengths[order]
        edges = np.flatnonzero(np.r_[True, group_len[1:] != group_len[:-1], True])
        for start, end in zip(edges[:-1], edges[1:]):
            width = int(group_len[start])
            if width:
                block = buf[offsets[start] : offsets[end]].reshape(end - start, width)
                matrix[start:end, :width] = block
            matrix[start:end, width] = 0x80
        encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        chain = np.zeros((len(order), 16), np.uint8)
        for block in range(4):
            mixed = chain ^ matrix[:, block * 16 : (block + 1) * 16]
            chain = np.frombuffer(encryptor.update(mixed.tobytes()), np.uint8).reshape(-1, 16)
        tags[order] = chain
    long_rows = np.flatnonzero(valid & ~short)
    if len(long_rows):
        long_values = values.take(pa.array(long_rows)).cast(pa.binary()).to_pylist()
        digests = [hashlib.blake2b(v, digest_size=16, key=key, person=b"subreg-long").digest() for v in long_values]
        tags[long_rows] = np.frombuffer(b"".join(digests), np.uint8).reshape(-1, 16)
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), n, [pa.array(valid).buffers()[1], pa.py_buffer(tags.tobytes())]
    )


def reference_tag(value: bytes | str | None, key: bytes) -> bytes | None:
    """One value's tag, the construction written out: ISO 9797-1 padding method 2 to 64 bytes, CBC-MAC."""
    if value is None:
        return None
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) >= 64:
        return hashlib.blake2b(raw, digest_size=16, key=key, person=b"subreg-long").digest()
    message = raw + b"\x80" + bytes(63 - len(raw))
    aes = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    chain = bytes(16)
    for start in range(0, 64, 16):
        chain = aes.update(bytes(a ^ b for a, b in zip(chain, message[start : start + 16])))
    return chain


def _text(rng: np.random.Generator, length: int) -> str:
    """A str of exactly ``length`` UTF-8 bytes: CJK (3 bytes each) then ASCII."""
    cjk = rng.integers(0, length // 3 + 1)
    han = "".join(chr(int(c)) for c in rng.integers(0x4E00, 0x9FA5, cjk))
    return han + "".join(chr(int(c)) for c in rng.integers(0x21, 0x7F, length - 3 * cjk))


def _bytes(rng: np.random.Generator, length: int) -> bytes:
    """Random bytes weighted to zeros and 0x80 (the padding's own bytes)."""
    pool = np.array([0, 0x80, 0xFF, 0x01], np.uint8)
    raw = np.where(rng.random(length) < 0.3, pool[rng.integers(0, 4, length)], rng.integers(0, 256, length))
    return raw.astype(np.uint8).tobytes()


def random_values(rng: np.random.Generator, kind: pa.DataType, n: int, lengths, null_share: float) -> list:
    textual = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    make = _text if textual else _bytes
    out = [make(rng, int(length)) for length in rng.choice(lengths, n)]
    return [None if rng.random() < null_share else value for value in out]


def check(values: pa.Array | pa.ChunkedArray, key: bytes = KEY) -> None:
    tags = keyed_hash(values, key)
    oracle = oracle_keyed_hash(values, key)
    assert tags.type == pa.binary(TAG_BYTES)
    assert len(tags) == len(values)
    assert tags.equals(oracle)
    # Byte for byte, null slots (zeros) included.
    assert tags.null_count == oracle.null_count
    width = len(values) * TAG_BYTES
    assert bytes(tags.buffers()[1])[:width] == bytes(oracle.buffers()[1])[:width]
    assert tags.to_pylist() == [reference_tag(v, key) for v in values.to_pylist()]


@pytest.mark.parametrize("kind", TYPES, ids=str)
@pytest.mark.parametrize("seed", range(3))
def test_mixed_lengths_nulls_and_edges(kind, seed):
    rng = np.random.default_rng(seed)
    values = random_values(rng, kind, 1500, EDGE_LENGTHS + list(range(0, 70, 3)), null_share=0.1)
    check(pa.array(values, kind))


@pytest.mark.parametrize("kind", TYPES, ids=str)
@pytest.mark.parametrize("length", EDGE_LENGTHS)
def test_one_length_for_every_value(kind, length):
    rng = np.random.default_rng(length)
    values = random_values(rng, kind, 300, [length], null_share=0.0)
    check(pa.array(values, kind))
    values[7] = None  # the same lengths with one null
    check(pa.array(values, kind))


@pytest.mark.parametrize("kind", TYPES, ids=str)
def test_small_and_degenerate_columns(kind):
    rng = np.random.default_rng(11)
    for length in EDGE_LENGTHS:
        check(pa.array(random_values(rng, kind, 1, [length], 0.0), kind))
    check(pa.array([], kind))
    check(pa.array([None], kind))
    check(pa.array([None] * 40, kind))
    check(pa.nulls(5, kind))
    check(pa.array([""] * 9, kind))
    check(pa.array([None, "", None, ""], kind))


def test_equal_values_equal_tags_and_keys_matter():
    values = pa.array(["440101199001011234", "张三", "440101199001011234", "张三", "张 三"])
    tags = keyed_hash(values, KEY).to_pylist()
    assert tags[0] == tags[2] and tags[1] == tags[3] and len(set(tags)) == 3
    other = keyed_hash(values, bytes(16)).to_pylist()
    assert not set(tags) & set(other)


@pytest.mark.parametrize("kind", TYPES, ids=str)
def test_sliced_and_chunked_arrays(kind):
    rng = np.random.default_rng(5)
    whole = pa.array(random_values(rng, kind, 2000, EDGE_LENGTHS, null_share=0.15), kind)
    check(whole.slice(333, 1000))
    check(whole.slice(1999))
    check(whole.slice(50, 0))
    same = pa.array(random_values(rng, kind, 900, [18], null_share=0.0), kind)
    check(same.slice(101, 700))  # one length, offsets not starting at zero
    check(pa.chunked_array([whole.slice(0, 700), same, whole.slice(700)]))
    check(pa.chunked_array([same.slice(0, 300), same.slice(300)]))
    check(pa.chunked_array([], type=kind))


def test_null_slots_holding_bytes_are_ignored():
    """A null slot may still span bytes of the data buffer (Arrow allows it): they take no part."""
    data = b"abc" + b"x" * 70 + b"hello"
    offsets = np.array([0, 3, 73, 78], np.int32).tobytes()
    validity = pa.array([True, False, True]).buffers()[1]
    values = pa.Array.from_buffers(pa.binary(), 3, [validity, pa.py_buffer(offsets), pa.py_buffer(data)])
    check(values)
    equal = pa.Array.from_buffers(
        pa.string(), 3, [validity, pa.py_buffer(np.array([0, 5, 10, 15], np.int32).tobytes()), pa.py_buffer(b"x" * 15)]
    )
    check(equal)


def test_fixed_size_binary_input():
    values = pa.array([b"abcd", None, b"\x00\x80\x00\x00"], pa.binary(4))
    check(values)
