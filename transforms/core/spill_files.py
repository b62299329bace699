"""Sealed spill files (Beam-free): Arrow tables by bucket, written once, read back one part at a time.

    refs = write_parts(path, parts)          # [(bucket, table)] -> [(bucket, index, offset, length)]
    table = read_part(path, index, offset, length)

A spill file holds, one after the other, one Arrow IPC stream per bucket
(its buffers LZ4-compressed: ids, codes and classified columns shrink two to
three times, so sealing, writing, reading and opening touch that many fewer
bytes; a part's length then also depends on how well its values compress,
which tells nothing useful about a file that is private to the run),
each sealed with :class:`transforms.crypto.envelope.Envelope` (AES-256-GCM
under a fresh data key, bound to the file's name and the part's index) under
the run's spill key: the key lives only in the environment of the launcher
and the worker processes it starts (``BACKFILL_SPILL_KEY``, drawn by
:func:`ensure_spill_key` or ``shuffle.spill_area``), never in a job graph or
a file. After a crash the files are ciphertext under a key that died with
the processes. Used by the Beam shuffle (:mod:`transforms.core.shuffle`) and
by the in-process scan (``pipelines/scan_local.py``).
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Iterable

import numpy as np
import pyarrow as pa

__all__ = [
    "BUCKET",
    "SPILL_KEY_ENV",
    "ensure_spill_key",
    "spill_envelope",
    "split_by_bucket",
    "write_parts",
    "read_part",
]

BUCKET = "_bucket"
SPILL_KEY_ENV = "BACKFILL_SPILL_KEY"
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")

_ENVELOPES: dict[str, object] = {}


def split_by_bucket(table: pa.Table, column: str = BUCKET) -> Iterable[tuple[int, pa.Table]]:
    """``(bucket, rows)`` for each bucket of ``column`` present, in bucket order (rows keep their order)."""
    if table.num_rows == 0:
        return
    buckets = table.column(column).to_numpy()
    if buckets.min() == buckets.max():  # one batch, one bucket: no sort needed
        yield int(buckets[0]), table
        return
    order = np.argsort(buckets, kind="stable")
    table = table.take(pa.array(order))
    buckets = buckets[order]
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(buckets)]
    for start, end in zip(starts, ends):
        yield int(buckets[start]), table.slice(start, end - start)


def ensure_spill_key() -> None:
    """Draw a spill key for this process and the workers it will start, unless one is set."""
    if not os.environ.get(SPILL_KEY_ENV):
        os.environ[SPILL_KEY_ENV] = base64.b64encode(os.urandom(32)).decode("ascii")


def forget_envelope(encoded: str) -> None:
    """Drop this process's Envelope of a spill key (the run that drew it has ended)."""
    _ENVELOPES.pop(encoded, None)


def spill_envelope():
    """The Envelope of this run's spill key (from the environment), one per process."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from transforms.crypto.envelope import Envelope

    encoded = os.environ.get(SPILL_KEY_ENV)
    if not encoded:
        raise RuntimeError(f"no spill key in this process ({SPILL_KEY_ENV}): spills need a local runner")
    envelope = _ENVELOPES.get(encoded)
    if envelope is None:
        raw = base64.b64decode(encoded)
        kek = AESGCM(raw)
        key_id = "spill-" + hashlib.sha256(b"backfill spill key id\0" + raw).hexdigest()[:16]

        def kek_for(version: str):
            if version != "s1":
                raise ValueError(f"spill key {version} is not this run's")
            return kek

        envelope = _ENVELOPES[encoded] = Envelope("spill", key_id, kek_for, "s1")
    return envelope


class SpillWriter:
    """Parts appended to one open spill file: ``add(bucket, table)`` -> ``(bucket, index, offset, length)``."""

    def __init__(self, handle, name: str):
        self._handle, self._name = handle, name
        self._envelope = spill_envelope()
        self._index = self._offset = 0

    def add(self, bucket: int, part: pa.Table) -> tuple[int, int, int, int]:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, part.schema, options=_IPC_OPTIONS) as writer:
            writer.write_table(part, max_chunksize=max(part.num_rows, 1))
        blob = self._envelope.seal(sink.getvalue().to_pybytes(), self._name, str(self._index))
        self._handle.write(blob)
        ref = (bucket, self._index, self._offset, len(blob))
        self._index, self._offset = self._index + 1, self._offset + len(blob)
        return ref


def write_parts(handle, name: str, parts: Iterable[tuple[int, pa.Table]]) -> list[tuple[int, int, int, int]]:
    """Write each ``(bucket, table)`` to the open binary ``handle`` of the file called ``name`` (its base
    name), one sealed IPC stream after the other; returns ``(bucket, index, offset, length)`` of each."""
    writer = SpillWriter(handle, name)
    return [writer.add(bucket, part) for bucket, part in parts]


def read_part(path: str, index: int, offset: int, length: int) -> pa.Table:
    """One part of a spill file, opened (its seal checked against the file's name and the part's index)."""
    if "://" not in path:
        with open(path, "rb") as handle:
            handle.seek(offset)
            blob = handle.read(length)
    else:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as handle:
            handle.seek(offset)
            blob = handle.read(length)
    plain = spill_envelope().open(blob, os.path.basename(path), str(index))
    return pa.ipc.open_stream(pa.BufferReader(plain)).read_all()
