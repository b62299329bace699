"""A GroupByKey of Arrow tables by bucket, that can spill its payload to files.

``{tag: PCollection[pa.Table]}`` (each table with an int ``_bucket`` column)
becomes ``PCollection[(bucket, {tag: pa.Table})]``: every row of a bucket,
from every input, in one element. It is a real Beam GroupByKey either way:

* ``spill_dir=None``: the sub-tables themselves go through the shuffle. Right
  for Dataflow, whose shuffle service keeps data on disk.
* ``spill_dir=PATH``: each input batch is written once, sorted by bucket, as
  one spill file under ``PATH`` (one sealed Arrow IPC stream per bucket), and
  only ``(tag, file, index, offset, length)`` references go through the
  GroupByKey. The local runners keep every shuffled element in memory; with
  references, memory is bounded by the largest bucket, not by the base
  (issue: 10 million lines in under 1 GB).

Spills hold whatever the shuffle carries (the merge's raw rows and events:
names, document numbers, addresses), so nothing is spilled in the clear:
each bucket's IPC stream is sealed with ``transforms.crypto.envelope.Envelope``
(AES-256-GCM under a fresh data key) and bound to its file name and index. The
data keys are wrapped by a **per-run spill key** that exists only in memory:
the launcher draws it (:func:`spill_area`) and hands it to the worker
processes in the environment variable ``BACKFILL_SPILL_KEY``, never in the
pickled job graph (which Beam may write to disk or send to a service). Why not
``Envelope.ephemeral()``, a key per process: with ``--direct_running_mode
multi_processing`` a batch is spilled by one worker process and read back by
another, and Beam starts those workers with the launcher's environment, so an
environment key is one key for exactly the launcher and its workers. After a
crash (SIGKILL included) the spill files are ciphertext under a key that died
with the processes. A spill therefore needs a local runner (remote workers do
not get the key); the launchers refuse ``--spill on`` elsewhere.

:func:`spill_area` gives a run its private spill folder
``$TMPDIR/backfill-spill-STEP-*`` (mode 0700) holding a ``.lock`` file the run
keeps flock'ed; at its start it removes the spill folders of dead runs (lock
free, or no lock file and older than ten minutes) and never a live run's; at
its end it removes its own folder and drops the key.

:func:`with_bucket` gives a table its ``_bucket`` column (the stable bucket
of a key column, :func:`transforms.scan.crossrecord.bucket_of`).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from typing import Iterable, Iterator

import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.scan.crossrecord import bucket_of

__all__ = ["ArrowGroupByBucket", "BUCKET", "with_bucket", "spill_area", "remove_dead_spills", "SPILL_KEY_ENV"]

BUCKET = "_bucket"
SPILL_KEY_ENV = "BACKFILL_SPILL_KEY"
SPILL_PREFIX = "backfill-spill-"
_LOCK = ".lock"
_UNLOCKED_GRACE_SECONDS = 600  # a folder without its lock file yet: a run between mkdtemp and its lock


def with_bucket(table: pa.Table, values, n_buckets: int) -> pa.Table:
    """``table`` with its ``_bucket`` column set (replaced if present) to the bucket of each of ``values``."""
    buckets = pa.array(bucket_of(values, n_buckets), pa.int32())
    if BUCKET in table.column_names:
        return table.set_column(table.schema.get_field_index(BUCKET), BUCKET, buckets)
    return table.append_column(BUCKET, buckets)


def _split_by_bucket(table: pa.Table) -> Iterable[tuple[int, pa.Table]]:
    if table.num_rows == 0:
        return
    buckets = table.column(BUCKET).to_numpy()
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


@beam.typehints.with_input_types(pa.Table)
@beam.typehints.with_output_types(typing.Tuple[int, typing.Tuple[str, pa.Table]])
class _InlineFn(beam.DoFn):
    def __init__(self, tag: str):
        self._tag = tag

    def process(self, table: pa.Table):
        for bucket, part in _split_by_bucket(table):
            yield bucket, (self._tag, part)


def ensure_spill_key() -> None:
    """Draw a spill key for this process and the workers it will start, unless one is set."""
    if not os.environ.get(SPILL_KEY_ENV):
        os.environ[SPILL_KEY_ENV] = base64.b64encode(os.urandom(32)).decode("ascii")


_ENVELOPES: dict[str, object] = {}


def _spill_envelope():
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


@beam.typehints.with_input_types(pa.Table)
@beam.typehints.with_output_types(typing.Tuple[int, typing.Tuple[str, str, int, int, int]])
class _SpillFn(beam.DoFn):
    """Write one batch as a spill file: per bucket, one sealed Arrow IPC stream, one after the other."""

    def __init__(self, tag: str, spill_dir: str):
        self._tag = tag
        self._dir = spill_dir

    def process(self, table: pa.Table):
        parts = list(_split_by_bucket(table))
        if not parts:
            return
        envelope = _spill_envelope()
        name = f"{uuid.uuid4().hex}.spill"
        path = FileSystems.join(self._dir, self._tag, name)
        refs, offset = [], 0
        with FileSystems.create(path) as handle:
            for index, (bucket, part) in enumerate(parts):
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, part.schema) as writer:
                    writer.write_table(part, max_chunksize=max(part.num_rows, 1))
                blob = envelope.seal(sink.getvalue().to_pybytes(), name, str(index))
                handle.write(blob)
                refs.append((bucket, index, offset, len(blob)))
                offset += len(blob)
        for bucket, index, start, length in refs:
            yield bucket, (self._tag, path, index, start, length)


def _read_part(path: str, index: int, offset: int, length: int) -> pa.Table:
    if "://" not in path:
        with open(path, "rb") as handle:
            handle.seek(offset)
            blob = handle.read(length)
    else:
        with FileSystems.open(path) as handle:
            handle.seek(offset)
            blob = handle.read(length)
    plain = _spill_envelope().open(blob, os.path.basename(path), str(index))
    return pa.ipc.open_stream(pa.BufferReader(plain)).read_all()


def _gather(element, spilled: bool):
    bucket, values = element
    parts: dict[str, list[pa.Table]] = {}
    for value in values:
        if spilled:
            tag, path, index, offset, length = value
            part = _read_part(path, index, offset, length)
        else:
            tag, part = value
        parts.setdefault(tag, []).append(part)
    merged = {}
    for tag, tables in parts.items():
        # Deterministic order whatever order the shuffle delivered them in.
        merged[tag] = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
    yield bucket, merged


class ArrowGroupByBucket(beam.PTransform):
    """Group Arrow tables from several inputs by their ``_bucket`` column."""

    def __init__(self, spill_dir: str | None = None, label: str | None = None):
        super().__init__(label)
        self._spill_dir = spill_dir

    def expand(self, inputs: dict):
        if self._spill_dir:
            ensure_spill_key()  # here, before the runner starts the workers that inherit it
        keyed = []
        for tag, pcoll in sorted(inputs.items()):
            if self._spill_dir:
                fn = _SpillFn(tag, FileSystems.join(self._spill_dir, self.label.replace("/", "_")))
            else:
                fn = _InlineFn(tag)
            keyed.append(pcoll | f"Key{tag.title()}" >> beam.ParDo(fn))
        spilled = bool(self._spill_dir)
        return (
            tuple(keyed)
            | "FlattenInputs" >> beam.Flatten()
            | "GroupByBucket" >> beam.GroupByKey()
            | "Gather"
            >> beam.FlatMap(_gather, spilled).with_output_types(typing.Tuple[int, typing.Dict[str, pa.Table]])
        )


def _is_dead(folder: str) -> bool:
    """A spill folder no live run holds: its lock is free, or it has none and is older than the grace period."""
    lock = os.path.join(folder, _LOCK)
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        try:
            return time.time() - os.stat(folder).st_mtime > _UNLOCKED_GRACE_SECONDS
        except OSError:
            return False
    except OSError:
        return False  # another user's, or unreadable: not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: a live run
    finally:
        os.close(fd)
    return True


def remove_dead_spills(root: str | None = None) -> list[str]:
    """Remove the spill folders of dead runs under ``root`` (default: the temp folder); returns them."""
    root = root or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in sorted(names):
        folder = os.path.join(root, name)
        if not name.startswith(SPILL_PREFIX) or os.path.islink(folder) or not os.path.isdir(folder):
            continue
        try:
            if os.stat(folder).st_uid != os.getuid():
                continue
        except OSError:
            continue
        if _is_dead(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextlib.contextmanager
def spill_area(step: str) -> Iterator[str]:
    """A private local spill folder for one run, its lock and its spill key (see the module docstring).

    Yields the folder (``$TMPDIR/backfill-spill-STEP-XXXX``, mode 0700); removes the spill folders of dead
    runs first, and its own folder and key at the end, whatever happens.
    """
    remove_dead_spills()
    folder = tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{step}-")  # 0700
    lock = os.open(os.path.join(folder, _LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.write(lock, f"{os.getpid()}\n".encode("ascii"))
    previous = os.environ.get(SPILL_KEY_ENV)
    os.environ[SPILL_KEY_ENV] = base64.b64encode(os.urandom(32)).decode("ascii")
    try:
        yield folder
    finally:
        _ENVELOPES.pop(os.environ.get(SPILL_KEY_ENV, ""), None)
        if previous is None:
            os.environ.pop(SPILL_KEY_ENV, None)
        else:
            os.environ[SPILL_KEY_ENV] = previous
        shutil.rmtree(folder, ignore_errors=True)
        os.close(lock)
