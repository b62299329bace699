"""What the Dataflow streaming merge writes (through Beam FileSystems): its window folders and the base's dead
letters.

* :class:`WriteWindowFn` -- one folder's contents (``transforms.merge.stream_windows``) ->
  ``OUT/deltas/<name>/`` by ``pipelines.io.windows.write_window`` (``window.json`` last: the commit
  marker that ``backfill compact`` looks for). The name is the window's start, pane and shard, so a
  retried bundle rewrites the same files and never adds a second folder;
* :class:`WriteDeadLettersFn` -- a dead-letter table -> one JSON Lines file named by a digest of its
  content, so a retry rewrites the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from pipelines.io.publish import make_private_dirs
from transforms.core.metrics import counter
from transforms.merge.stream_windows import balanced

__all__ = ["WriteWindowFn", "WriteDeadLettersFn", "window_info"]

_TS = pa.timestamp("us", tz="UTC")
_IDS = pa.schema([pa.field("event_id", pa.string()), pa.field("digest", pa.string())])
_SEEN = pa.schema([pa.field("message_id", pa.string()), pa.field("publish_time", _TS)])


class _Folder:
    """A folder's contents seen as the window result ``write_window`` takes."""

    def __init__(self, folder: dict):
        self.delta, self.vault_keys, self.vault_values = folder["delta"], folder["vault_keys"], folder["vault_values"]
        self.dead_letter, self.counts = folder["dead_letter"], folder["counts"]
        from transforms.merge.stream import window_counters

        self.counters = window_counters(self.delta)
        # Redeliveries are Dataflow's to drop (by message id): no message id is kept here.
        self.seen = _SEEN.empty_table()
        self.taken = pa.table(
            [pa.array(folder["keys"], pa.string()), pa.array(folder["digests"], pa.string())], schema=_IDS
        )
        self.new_keys = self.taken.column("event_id")


def window_info(folder: dict) -> dict:
    """The folder's ``window.json``: its window, pane and shard, and its counts (balanced or not)."""
    return {
        "window": list(folder["window"]),
        "pane": folder["pane"],
        "shard": folder["shard"],
        "shards": folder["shards"],
        "counts": folder["counts"],
        "balanced": balanced(folder["counts"]),
        "events_taken": len(folder["keys"]),
        "committed_at": time.time(),
    }


class WriteWindowFn(beam.DoFn):
    """One folder's contents -> ``DELTAS/<name>/`` (see the module docstring); yields the folder's path.

    On a local folder (the local runners) a folder committed before under the same name is left as it is:
    the same (window, pane, shard) holds the same messages, and its delta the same rows."""

    def __init__(self, deltas_dir: str):
        self._dir = deltas_dir
        self._written = counter("stream_folders_written")

    def process(self, folder: dict):
        from pipelines.io.windows import write_window

        name = folder["name"]
        if "://" not in self._dir and os.path.exists(os.path.join(self._dir, name, "window.json")):
            yield os.path.join(self._dir, name)
            return
        path = write_window(self._dir, name, _Folder(folder), None, window_info(folder))
        self._written.inc()
        yield path


class WriteDeadLettersFn(beam.DoFn):
    """A dead-letter table -> ``FOLDER/dead-letter-<digest>.jsonl`` (no values: ids, sources, reasons)."""

    def __init__(self, folder: str):
        self._folder = folder

    def process(self, table: pa.Table):
        if table.num_rows == 0:
            return
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in table.to_pylist()).encode("utf-8")
        name = f"dead-letter-{hashlib.sha256(payload).hexdigest()[:24]}.jsonl"
        if "://" in self._folder:
            path = FileSystems.join(self._folder, name)
            with FileSystems.create(path) as handle:
                handle.write(payload)
        else:
            make_private_dirs(self._folder)
            path = os.path.join(self._folder, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
        yield path
