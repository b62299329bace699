"""A vault on disk: a folder of two Parquet tables (a local one listed and read without Beam; written, and
read on object stores, through Beam's FileSystems).

    VAULT/keys/keys-g000002-00000-of-00001.parquet       (schema vault_key)
    VAULT/values/values-g000001-00000-of-00004.parquet   (schema vault_value)

Each rewrite of a table is a new *generation* ``gNNNNNN`` of shards
``SSSSS-of-TTTTT``; every shard is written under a temporary name and renamed
into place, and readers take the newest generation whose shards are all
there, so a reader never sees half a rewrite and a crash leaves the previous
generation in force. Older generations are deleted after a rewrite. Files
that do not follow the naming are ignored. Works on local paths and gs://.

A Beam job rewrites a table through a *staged* generation
(:func:`staged_generation`): its shards are written under
``VAULT/keys/_staged-RUN_ID/`` (which readers never list), the job checks
its counts there, and :func:`publish_staged` renames them into place as the
newest generation only when the caller says so (a shred publishes every
vault's key table only once every one is written and the shred is recorded).
A killed job leaves the previous generation in force and a staging folder
that the next key change removes (:func:`remove_staged`, under the keyset's
lock). Nothing here holds a whole table for a job: :func:`check_table` reads
footers only, :func:`column_values` one column one row group at a time.

A file that cannot be read (truncated, not Parquet) is a ``VaultError`` naming
the file, never a traceback: ``backfill reveal`` records the attempt with
outcome ``vault_unreadable``. A key table without the seal columns
(``registration_event_id``, ``sealed_fields``: vault format 2, see
``transforms/crypto/vault.py``) was written before them and is refused with
one line: such a vault cannot be opened; merge again from the raw base.

    keys, values = read_vault("out/merge/vault", line_ids=["L0001"])
    write_table("out/merge/vault", "keys", new_keys)
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.io.paths import is_uri, join_path, match_path
from pipelines.io.publish_guards import delete, exists
from schemas import arrow_schema
from transforms.crypto.vault import VaultUnreadable

__all__ = [
    "read_vault",
    "write_vault",
    "read_table",
    "write_table",
    "table_files",
    "shard_prefix",
    "check_table",
    "table_rows",
    "column_values",
    "copy_table",
    "staged_generation",
    "publish_staged",
    "remove_staged",
]

_FILE = re.compile(r"^(?P<kind>keys|values)-g(?P<gen>\d{6})-(?P<shard>\d{5})-of-(?P<of>\d{5})\.parquet$")
_SCHEMA = {"keys": "vault_key", "values": "vault_value"}
_STAGED = "_staged-"


def _fs():
    """Beam's FileSystems, imported when a vault is written, copied or moved (reading a local vault needs no
    Beam: the in-process merge does not start it)."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _open(path: str):
    """A binary read handle on a shard, never decompressed (Beam's ``UNCOMPRESSED``)."""
    if not is_uri(path):
        return open(path, "rb")
    from apache_beam.io.filesystem import CompressionTypes

    return _fs().open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _name(path: str) -> str:
    return posixpath.basename(path)


def _generations(vault_dir: str, kind: str) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """``(complete, every)``: generation -> shard paths of ``kind`` files."""
    found: dict[int, dict[int, str]] = {}
    totals: dict[int, int] = {}
    every: dict[int, list[str]] = {}
    for path, _ in match_path(join_path(vault_dir, kind, "*.parquet")):
        m = _FILE.match(_name(path))
        if m and m["kind"] == kind:
            gen = int(m["gen"])
            every.setdefault(gen, []).append(path)
            if totals.setdefault(gen, int(m["of"])) == int(m["of"]):
                found.setdefault(gen, {})[int(m["shard"])] = path
    complete = {g: [s[i] for i in sorted(s)] for g, s in found.items() if sorted(s) == list(range(totals[g]))}
    return complete, every


def _complete(vault_dir: str, kind: str) -> dict[int, list[str]]:
    """The complete generations of a table for a reader; files of the table none of which make a whole
    generation (a shard lost in a copy, a deleted file) are an error, never read as an empty table."""
    complete, every = _generations(vault_dir, kind)
    if every and not complete:
        gen = max(every)
        have = {int(_FILE.match(_name(p))["shard"]) for p in every[gen]}
        total = int(_FILE.match(_name(every[gen][0]))["of"])
        lost = min(set(range(total)) - have, default=0)
        raise VaultUnreadable(
            f"vault {vault_dir}: its {kind} table is incomplete (shard {lost:05d} of {total:05d} of generation "
            f"g{gen:06d} is missing: a partial copy or a deleted file); restore it from where it was copied"
        )
    return complete


def table_files(vault_dir: str, kind: str) -> list[str]:
    """The shards of the newest complete ``keys`` or ``values`` generation (for pipelines that read them in parallel).

    A key table of an older vault format is refused (its first shard's footer is read)."""
    gens = _complete(vault_dir, kind)
    files = gens[max(gens)] if gens else []
    if files and kind == "keys":
        try:
            with _open(files[0]) as handle:
                names = pq.read_schema(handle).names
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise VaultUnreadable(
                f"vault file {files[0]} cannot be read ({type(exc).__name__}: damaged or truncated)"
            ) from None
        _check_format(vault_dir, kind, names)
    return files


def _check_format(vault_dir: str, kind: str, names: list[str]) -> None:
    missing = [n for n in arrow_schema(_SCHEMA[kind]).names if n not in names]
    if missing:
        raise VaultUnreadable(
            f"vault {vault_dir} was written in an older format (its {kind} table has no {missing[0]} column): "
            "it cannot be opened; merge again from the raw base"
        )


def shard_prefix(vault_dir: str, kind: str, generation: int = 1) -> str:
    """The path prefix a pipeline writes a generation under: add ``-SSSSS-of-TTTTT.parquet``."""
    return join_path(vault_dir, kind, f"{kind}-g{generation:06d}")


def read_table(vault_dir: str, kind: str, line_ids: Iterable[str] | None = None) -> pa.Table:
    """The newest complete ``keys`` or ``values`` table, optionally only some lines."""
    schema = arrow_schema(_SCHEMA[kind])
    gens = _complete(vault_dir, kind)
    if not gens:
        if kind == "keys":
            raise VaultUnreadable(f"no vault at {vault_dir} (no complete keys/ table)")
        return schema.empty_table()
    filters = None if line_ids is None else [("line_id", "in", list(line_ids))]
    parts = []
    for path in gens[max(gens)]:
        try:
            with _open(path) as handle:
                table = pq.read_table(handle, filters=filters)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise VaultUnreadable(
                f"vault file {path} cannot be read ({type(exc).__name__}: damaged or truncated)"
            ) from None
        _check_format(vault_dir, kind, table.column_names)
        parts.append(table.select(schema.names).cast(schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def write_table(vault_dir: str, kind: str, table: pa.Table, *, rows_per_file: int = 1_000_000) -> list[str]:
    """Write ``table`` as the next generation (sorted by line_id), then drop older ones."""
    folder = join_path(vault_dir, kind)
    old = _generations(vault_dir, kind)[1]  # incomplete ones too: a crashed write is replaced
    gen = max(old, default=0) + 1
    table = table.select(arrow_schema(_SCHEMA[kind]).names).cast(arrow_schema(_SCHEMA[kind]))
    table = table.take(pc.sort_indices(table, [("line_id", "ascending")]))
    shards = max(1, -(-table.num_rows // rows_per_file))
    paths = []
    for shard in range(shards):
        path = join_path(folder, f"{kind}-g{gen:06d}-{shard:05d}-of-{shards:05d}.parquet")
        tmp = join_path(folder, f"_tmp-{os.urandom(6).hex()}.parquet")
        with _fs().create(tmp) as handle:
            pq.write_table(table.slice(shard * rows_per_file, rows_per_file), handle, row_group_size=65_536)
        _fs().rename([tmp], [path])  # a shard appears whole, or not at all
        paths.append(path)
    stale = [p for ps in old.values() for p in ps]
    if stale:
        _fs().delete(stale)
    return paths


def read_vault(vault_dir: str, line_ids: Iterable[str] | None = None) -> tuple[pa.Table, pa.Table]:
    """``(keys, values)`` of a vault folder; ``line_ids`` reads only those lines."""
    line_ids = None if line_ids is None else list(line_ids)
    return read_table(vault_dir, "keys", line_ids), read_table(vault_dir, "values", line_ids)


def write_vault(vault_dir: str, keys: pa.Table, values: pa.Table) -> None:
    """Write both tables (values first: the keys table is what makes them readable)."""
    write_table(vault_dir, "values", values)
    write_table(vault_dir, "keys", keys)


def _footer(path: str):
    """A shard's Parquet footer; a file that cannot be read is a VaultUnreadable naming it."""
    try:
        with _open(path) as handle:
            return pq.read_metadata(handle)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise VaultUnreadable(
            f"vault file {path} cannot be read ({type(exc).__name__}: damaged or truncated)"
        ) from None


def check_table(vault_dir: str, kind: str) -> list[str]:
    """The newest complete generation's shards, every footer read and the columns checked (no rows read)."""
    files = table_files(vault_dir, kind)
    for path in files:
        _check_format(vault_dir, kind, _footer(path).schema.to_arrow_schema().names)
    return files


def table_rows(files: list[str]) -> int:
    """Rows of some shards, from their footers."""
    return sum(_footer(path).num_rows for path in files)


def column_values(files: list[str], column: str) -> set:
    """The distinct values of one column of some shards, one row group at a time."""
    found: set = set()
    for path in files:
        try:
            with _open(path) as handle:
                pf = pq.ParquetFile(handle)
                for group in range(pf.num_row_groups):
                    found.update(pc.unique(pf.read_row_group(group, columns=[column]).column(0)).to_pylist())
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise VaultUnreadable(
                f"vault file {path} cannot be read ({type(exc).__name__}: damaged or truncated)"
            ) from None
    return found


def copy_table(source_dir: str, target_dir: str, kind: str) -> list[str]:
    """Copy the newest complete generation of a table into another vault folder, shard names kept."""
    files = table_files(source_dir, kind)
    folder = join_path(target_dir, kind)
    targets = [join_path(folder, _name(path)) for path in files]
    if files:
        if "://" not in folder:
            os.makedirs(folder, exist_ok=True)
        _fs().copy(files, targets)
    return targets


def staged_generation(vault_dir: str, kind: str, run_id: str) -> tuple[str, str]:
    """``(staging folder, shard prefix)`` for a job writing the next generation of a table: add
    ``-SSSSS-of-TTTTT.parquet`` to the prefix; :func:`publish_staged` puts the shards in place."""
    gen = max(_generations(vault_dir, kind)[1], default=0) + 1
    folder = join_path(vault_dir, kind, f"{_STAGED}{run_id}")
    return folder, join_path(folder, f"{kind}-g{gen:06d}")


def _staged_shards(folder: str, kind: str) -> tuple[int, list[str]]:
    """``(generation, shard paths in order)`` of a complete staged generation; VaultUnreadable otherwise."""
    shards: dict[int, str] = {}
    gens, totals = set(), set()
    for path, _ in match_path(join_path(folder, "*.parquet")):
        m = _FILE.match(_name(path))
        if m and m["kind"] == kind:
            shards[int(m["shard"])] = path
            gens.add(int(m["gen"]))
            totals.add(int(m["of"]))
    if len(gens) != 1 or len(totals) != 1 or sorted(shards) != list(range(totals.pop())):
        raise VaultUnreadable(f"the staged {kind} table in {folder} is incomplete: nothing was published")
    return gens.pop(), [shards[i] for i in sorted(shards)]


def publish_staged(vault_dir: str, kind: str, folder: str) -> list[str]:
    """Rename a complete staged generation into place, then delete the older generations and the staging folder.

    Refused (VaultUnreadable) when the staged shards are incomplete or a newer generation appeared meanwhile."""
    gen, paths = _staged_shards(folder, kind)
    old = _generations(vault_dir, kind)[1]
    if max(old, default=0) >= gen:
        raise VaultUnreadable(f"{vault_dir} got a newer {kind} table while this one was written: nothing was published")
    targets = [join_path(vault_dir, kind, _name(path)) for path in paths]
    _fs().rename(paths, targets)  # shard by shard: the generation counts once its last shard is there
    stale = [p for ps in old.values() for p in ps]
    if stale:
        _fs().delete(stale)
    remove_staged(vault_dir, kind, folder)
    return targets


def _staging_folders(vault_dir: str, kind: str) -> list[str]:
    """Every staging folder of a table (local: listed; object store: from the files under them)."""
    root = join_path(vault_dir, kind)
    if "://" not in root:
        names = os.listdir(root) if os.path.isdir(root) else []
        return [os.path.join(root, n) for n in sorted(names) if n.startswith(_STAGED)]
    found = set()
    for path, _ in match_path(join_path(root, f"{_STAGED}*", "**")):
        found.add(join_path(root, path[len(root) :].lstrip("/").split("/", 1)[0]))
    return sorted(found)


def remove_staged(vault_dir: str, kind: str, folder: str | None = None) -> list[str]:
    """Delete one staging folder of a table, or (``folder`` None) every one a killed job left; returns them."""
    folders = [folder] if folder is not None else _staging_folders(vault_dir, kind)
    gone = [f for f in folders if exists(f)]
    for each in gone:
        delete(each)  # on an object store: every object under the prefix
    return gone
