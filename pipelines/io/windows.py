"""Files of the streaming merge and of ``backfill compact``: the base, committed windows, recovery.

A window is committed as one folder ``OUT/deltas/w-NNNNNN/`` (local runs;
``w-YYYYMMDDTHHMMSS-HASH`` from Dataflow), written under
``OUT/deltas/.tmp-*`` and renamed into place in one step::

    delta.parquet                      merged-line rows of the lines registered in the window (tokens, masks)
    vault/keys/keys-g000001-00000-of-00001.parquet, vault/values/...   their vault rows (backfill reveal --vault)
    dead_letter.jsonl                  the window's dead letters (shared schema, no values)
    counters.json                      registrations by region, channel and agent
    seen.parquet                       the Pub/Sub message ids processed (not redeliveries) and their publish times
    ids.parquet                        the event ids taken in the window and the digest of the copy that took each
    window.json                        counts, the landed files it consumed, times (written last)

Everything a restart needs is in committed windows: the message ids seen
(every ``seen.parquet``), the ids held (every ``ids.parquet``), the lines'
current registrations (every ``delta.parquet``) and which landed files are
done (every ``window.json``). The local merge's line store
(``pipelines/io/line_store.py``) is rebuilt from them when it is behind
(:func:`replay`). A window folder without ``window.json`` is not committed
(on Dataflow, where a folder rename is not atomic, ``window.json`` is the
commit marker).
"""

from __future__ import annotations

import json
import re
import os
import shutil
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.common import UserError
from pipelines.io.landing import fsync_dir as fsync_path  # a file or a folder: os.fsync on it
from pipelines.io.merged_base import read_merged_split, base_kind, plan_merged_splits
from pipelines.io.base_files import read_split
from pipelines.io.planning import plan_splits
from pipelines.io.publish import make_private_dirs as _private_dirs  # new folders 0700, whatever the umask
from transforms.core.rows import malformed_table
from schemas import arrow_schema
from transforms.core.deadletter import DeadLetterContext, dead_letter_table
from transforms.merge.bucket import MERGED_SCHEMA
from transforms.merge.stream import IDS_SCHEMA, SEEN_SCHEMA, LineIndex, WindowResult
from pipelines.io.vault_files import shard_prefix

__all__ = [
    "read_base",
    "load_index",
    "write_window",
    "committed_windows",
    "read_windows",
    "recover",
    "replay",
    "SEEN_SCHEMA",
    "IDS_SCHEMA",
    "window_files",
    "read_window_info",
]

_TS = pa.timestamp("us", tz="UTC")
_REGISTRATION = ("line_id", "registered_at", "registration_event_id")


def read_base(paths: list[str], encoding: str, ctx: DeadLetterContext) -> tuple[str, pa.Table, pa.Table, list[str]]:
    """(kind, the whole base as one table, the readers' dead letters, files): raw rows or merged rows."""
    kind = base_kind(paths)
    if kind == "raw":
        splits, info = plan_splits(paths, encoding=encoding)
        tables, bad = [], []
        for split in splits:
            for raw, rows in read_split(split, encoding):
                tables.append(raw)
                bad += rows
        dead = malformed_table(ctx, bad) if bad else dead_letter_table(ctx, [])
    else:
        splits, info = plan_merged_splits(paths)
        tables = [t for split in splits for t in read_merged_split(split, 262_144)]
        dead = dead_letter_table(ctx, [])
    if not tables:
        raise UserError(f"--base {' '.join(paths)}: no rows")
    return kind, pa.concat_tables(tables), dead, info.files


def load_index(
    paths: list[str], encoding: str, policy, as_of, ctx: DeadLetterContext, salt: str
) -> tuple[LineIndex, dict]:
    """The base's line index (no identity values kept) and a summary of the base."""
    kind, table, dead, files = read_base(paths, encoding, ctx)
    if kind == "raw":
        index, more = LineIndex.from_raw(table, policy, as_of, ctx, salt)
    else:
        index, more = LineIndex.from_merged(table, ctx)
    del table
    return index, {
        "kind": kind,
        "files": files,
        "lines": index.lines.num_rows,
        "dead_letters": dead.num_rows + more.num_rows,
    }


def _dead_letter_lines(table: pa.Table) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist()).encode("utf-8")


def _seen_and_taken(result, seen_times: pa.Array | None) -> tuple[pa.Table, pa.Table]:
    """The window's message ids with their publish times, and the ids it took. A result with no ``seen`` table
    names its message ids in ``new_keys`` (publish times: ``seen_times``)."""
    seen = getattr(result, "seen", None)
    if seen is None:
        ids = result.new_keys if isinstance(result.new_keys, pa.Array) else pa.array(result.new_keys, pa.string())
        times = seen_times if seen_times is not None else pa.nulls(len(ids), _TS)
        seen = pa.table([ids, times.cast(_TS)], schema=SEEN_SCHEMA)
    taken = getattr(result, "taken", None)
    return seen.cast(SEEN_SCHEMA), (IDS_SCHEMA.empty_table() if taken is None else taken.cast(IDS_SCHEMA))


def window_files(result: WindowResult, seen_times: pa.Array | None, info: dict) -> list[tuple[str, bytes]]:
    """The files of one window, (relative path, bytes), ``window.json`` last: it is the commit marker."""

    def parquet(table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return sink.getvalue().to_pybytes()

    def vault(kind: str) -> str:
        return shard_prefix("vault", kind) + "-00000-of-00001.parquet"

    seen, taken = _seen_and_taken(result, seen_times)
    return [
        ("delta.parquet", parquet(result.delta.cast(MERGED_SCHEMA))),
        (vault("keys"), parquet(result.vault_keys.cast(arrow_schema("vault_key")))),
        (vault("values"), parquet(result.vault_values.cast(arrow_schema("vault_value")))),
        ("seen.parquet", parquet(seen)),
        ("ids.parquet", parquet(taken)),
        ("dead_letter.jsonl", _dead_letter_lines(result.dead_letter)),
        ("counters.json", json.dumps(result.counters, ensure_ascii=False, indent=1).encode("utf-8")),
        ("window.json", json.dumps(info, ensure_ascii=False, indent=1, default=str).encode("utf-8")),
    ]


def write_window(deltas_dir: str, name: str, result: WindowResult, seen_times: pa.Array | None, info: dict) -> str:
    """Write one window's files and commit them together (``seen_times``: None, or the publish times of a
    result that names its message ids in ``new_keys`` only).

    Local folders: into a temporary folder, each file fsync'd, then the folder
    renamed into place (the commit). The files hold tokens, masks, sealed
    values and message ids: created 0600 in folders 0700, whatever the umask.
    Object stores (gs://, s3://) through Beam
    FileSystems: each file written whole, ``window.json`` last, so a reader that
    sees ``window.json`` sees the rest; a retried bundle rewrites the same
    files under the same name."""
    files = window_files(result, seen_times, info)
    if "://" in deltas_dir:
        folder = FileSystems.join(deltas_dir, name)
        for rel, payload in files:
            with FileSystems.create(FileSystems.join(folder, rel)) as handle:
                handle.write(payload)
        return folder
    _private_dirs(deltas_dir)
    tmp = os.path.join(deltas_dir, f".tmp-{name}-{os.urandom(4).hex()}")
    for rel, payload in files:
        path = os.path.join(tmp, rel)
        _private_dirs(os.path.dirname(path))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        fsync_path(path)
    for sub in ("vault/keys", "vault/values", "vault", ""):
        fsync_path(os.path.join(tmp, sub))
    final = os.path.join(deltas_dir, name)
    os.rename(tmp, final)  # the commit: the window's delta, vault, dead letters, ids and message ids appear together
    fsync_path(deltas_dir)
    return final


def committed_windows(deltas_dir: str) -> list[str]:
    """Paths of the committed window folders, in window order (local or gs://): their names with each run of
    digits compared as a number, so ``w-1000000`` comes after ``w-999999`` and pane ``p10`` after ``p9``."""
    pattern = FileSystems.join(deltas_dir, "w-*", "window.json")
    found = FileSystems.match([pattern])[0].metadata_list
    return sorted((FileSystems.split(m.path)[0] for m in found), key=_window_order)


def _window_order(path: str) -> list:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]


def _read_parquet(path: str, columns=None) -> pa.Table:
    with FileSystems.open(path) as handle:
        return pq.ParquetFile(handle).read(columns=columns)  # no dataset scanner: see receipts.py


def read_window_info(window: str) -> dict:
    with FileSystems.open(FileSystems.join(window, "window.json")) as handle:
        return json.loads(handle.read().decode("utf-8"))


def read_windows(windows: list[str], columns=None) -> Iterator[tuple[int, str, pa.Table, pa.Table, pa.Table]]:
    """(position, path, delta, vault keys, vault values) of each committed window."""
    from pipelines.io.vault_files import table_files

    for i, window in enumerate(windows):
        delta = _read_parquet(FileSystems.join(window, "delta.parquet"), columns)
        vault = FileSystems.join(window, "vault")
        parts = {}
        for kind, schema in (("keys", "vault_key"), ("values", "vault_value")):
            shards = table_files(vault, kind)
            parts[kind] = (
                pa.concat_tables([_read_parquet(s) for s in shards]).cast(arrow_schema(schema))
                if shards
                else arrow_schema(schema).empty_table()
            )
        yield i, window, delta, parts["keys"], parts["values"]


def recover(out: str, zone) -> dict:
    """A restart's view of the committed windows; removes uncommitted window folders and the landed files that
    committed windows already consumed. Returns next_seq, windows (their folders, in order), removed_landed,
    totals (their counts summed)."""
    from transforms.merge.stream import add_counts

    deltas_dir = os.path.join(out, "deltas")
    _private_dirs(deltas_dir)
    zone.clean()
    for name in os.listdir(deltas_dir):
        if name.startswith(".tmp-"):  # a window that crashed before its commit: its landed files are still there
            shutil.rmtree(os.path.join(deltas_dir, name), ignore_errors=True)
    windows = committed_windows(deltas_dir)
    consumed, totals = [], {}
    next_seq = 1
    for window in windows:
        info = read_window_info(window)
        consumed += info.get("landed_files", [])
        add_counts(totals, info["counts"])
        next_seq = max(next_seq, int(info.get("seq", 0)) + 1)
    done = set(consumed) & set(zone.pending())
    zone.remove(sorted(done))  # committed, then crashed before they were removed
    return {"next_seq": next_seq, "windows": windows, "removed_landed": len(done), "totals": totals}


def _window_table(window: str, name: str, schema: pa.Schema) -> pa.Table:
    path = FileSystems.join(window, name)
    if not FileSystems.exists(path):
        return schema.empty_table()
    table = _read_parquet(path)
    if not set(schema.names) <= set(table.column_names):  # a window written before ids and message ids were kept
        return schema.empty_table()
    return table.select(schema.names).cast(schema)


def replay(store, windows: list[str]) -> int:
    """Apply to the line store the committed windows it has not applied yet (seq after ``store.last_seq``), in
    order; one window in memory at a time. Returns how many were applied."""
    applied = 0
    # by number, not by name: w-1000000 sorts before w-100001, and a window before it would look applied already
    for seq, window in sorted((int(read_window_info(w).get("seq", 0)), w) for w in windows):
        if seq <= store.last_seq:
            continue
        delta = _read_parquet(FileSystems.join(window, "delta.parquet"), list(_REGISTRATION))
        taken = _window_table(window, "ids.parquet", IDS_SCHEMA)
        seen = _window_table(window, "seen.parquet", SEEN_SCHEMA)
        applied += store.apply(delta, seq, taken=taken, seen=seen)
    return applied
