"""Avro files by byte range: the blocks a range holds, counted without decoding them, and read through fastavro.

An Avro object container file is a header (magic, metadata, a 16-byte sync
marker) followed by blocks: a record count, a byte size, the (compressed)
records, and the sync marker again. A block belongs to the byte range its
first byte falls in, so a range finds its first block by searching the sync
marker from 16 bytes before its start, then hops from block to block reading
only their counts and sizes (each hop checks the marker that must follow).
A range is read by handing fastavro the header followed by the range's
blocks, as if they were a file of their own: the hot path stays fastavro's.
"""

from __future__ import annotations

import io

from pipelines.io.csv_lines import LineScan
from pipelines.io.planning import InputError

__all__ = ["RangeStream", "avro_header", "scan_blocks"]

_MAGIC = b"Obj\x01"
_SYNC = 16
_PIECE = 1 << 20


def _long(f) -> int:
    """One zig-zag varint long from ``f``; EOFError at the end of the file."""
    shift = value = 0
    while True:
        byte = f.read(1)
        if not byte:
            raise EOFError
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return (value >> 1) ^ -(value & 1)
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def avro_header(f, path: str) -> tuple[int, bytes]:
    """(the offset of the first block, the sync marker) of the file ``f`` (read from its start)."""
    try:
        if f.read(4) != _MAGIC:
            raise ValueError("not an Avro object container file")
        while True:  # the metadata: a map of blocks of (key string, value bytes)
            count = _long(f)
            if count == 0:
                break
            if count < 0:
                count = -count
                _long(f)  # the block's byte size
            for _ in range(2 * count):
                length = _long(f)
                if length < 0 or len(f.read(length)) != length:
                    raise ValueError("truncated header")
        sync = f.read(_SYNC)
        if len(sync) != _SYNC:
            raise ValueError("truncated header")
        return f.tell(), sync
    except (EOFError, ValueError) as e:
        raise InputError(f"{path}: not a readable avro file ({type(e).__name__})") from None


def _first_block(f, at: int, size: int, sync: bytes) -> int:
    """The first block starting at or after ``at``: just after a sync marker found from ``at - 16``."""
    pos = max(at - _SYNC, 0)
    f.seek(pos)
    data = b""
    while pos + len(data) < size:
        chunk = f.read(_PIECE)
        if not chunk:
            break
        data += chunk
        hit = data.find(sync)
        if hit >= 0:
            return pos + hit + _SYNC
        pos, data = pos + len(data) - (_SYNC - 1), data[-(_SYNC - 1) :]
    return size


def scan_blocks(f, path: str, start: int, stop: int, size: int, header_end: int, sync: bytes) -> LineScan:
    """The blocks starting in [start, stop) of the file ``f``: ``starts`` holds the first block start (records
    before it: 0), ``rows`` their records, ``end`` the first block start at or after ``stop`` (or the file's end)."""
    block = header_end if start <= header_end else _first_block(f, start, size, sync)
    first, rows = block, 0
    while block < stop and block < size:
        f.seek(block)
        try:
            count, length = _long(f), _long(f)
        except (EOFError, ValueError):
            raise InputError(f"{path}: corrupt Avro block at byte {block}") from None
        after = f.tell() + length
        f.seek(after)
        if count < 0 or length < 0 or f.read(_SYNC) != sync:
            raise InputError(f"{path}: corrupt Avro block at byte {block}")
        rows += count
        block = after + _SYNC
    return LineScan(((first, 0),), rows, min(block, size))


class RangeStream(io.RawIOBase):
    """``head`` (bytes), then bytes [start, end) of the file ``f``: a range read as a file of its own."""

    def __init__(self, head: bytes, f, start: int, end: int):
        super().__init__()
        self._head, self._f, self._left = head, f, end - start
        f.seek(start)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = len(buffer)
        if self._head:
            part, self._head = self._head[:n], self._head[n:]
        else:
            part = self._f.read(min(n, self._left)) if self._left > 0 else b""
            self._left -= len(part)
        buffer[: len(part)] = part
        return len(part)
