"""Builders of the compaction's tests: committed windows without Pub/Sub, the commands as child processes, the
single-process fold of before issue 12 (the oracle), comparisons of bases and vaults."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from schemas import field_names

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable
AS_OF = "2026-11-30"


def keys_file(folder: str) -> str:
    """A new keyset at FOLDER/secure/keys.json (mode 0600)."""
    from transforms.crypto.keyset import Keyset

    keys = os.path.join(folder, "secure", "keys.json")
    os.makedirs(os.path.dirname(keys), mode=0o700, exist_ok=True)
    Keyset.generate().save(keys)
    return keys


def write_csv_base(path: str, rows: list[dict], extra_lines: tuple[str, ...] = ()) -> None:
    """A raw base as CSV, with ``extra_lines`` appended as they are (malformed rows)."""
    names = field_names("subscriber_base")
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in rows:
            writer.writerow(["" if row.get(n) is None else row[n] for n in names])
        handle.writelines(line + "\n" for line in extra_lines)


def commit_windows(base: list[str], windows: list[list[dict]], deltas_dir: str, keys: str) -> list[str]:
    """Each list of events committed as one streaming window over ``base`` (as the streaming merge does)."""
    from bench.bench_compact import write_windows

    return write_windows(base, windows, deltas_dir, keys, dt.date.fromisoformat(AS_OF))


def backfill(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", f"pipelines.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def compact_command(base: list[str], deltas: str, keys: str, out: str, *extra: str) -> list[str]:
    args = [a for b in base for a in ("--base", b)]
    return [*args, "--deltas", deltas, "--keys", keys, "--out", out, "--as-of", AS_OF, *extra]


def compact(base: list[str], deltas: str, keys: str, out: str, *extra: str) -> dict:
    """Run ``backfill compact``; returns its manifest."""
    proc = backfill("compact", *compact_command(base, deltas, keys, out, *extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_manifest(out)


def batch_merge(base: list[str], events: list[dict], keys: str, out: str, *extra: str) -> dict:
    """Run ``backfill merge`` of ``events`` (written as JSON Lines beside OUT); returns its manifest."""
    path = out + "-events.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(e, ensure_ascii=False, default=str) + "\n" for e in events)
    args = [a for b in base for a in ("--base", b)]
    proc = backfill("merge", *args, "--registrations", path, "--keys", keys, "--out", out, "--as-of", AS_OF, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_manifest(out)


def read_manifest(out: str) -> dict:
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)


def sorted_base(table_or_out) -> pa.Table:
    table = table_or_out if isinstance(table_or_out, pa.Table) else pq.read_table(os.path.join(table_or_out, "base"))
    from transforms.merge.bucket import MERGED_SCHEMA

    return table.select(MERGED_SCHEMA.names).cast(MERGED_SCHEMA).sort_by("line_id")


def assert_same_base(a, b) -> None:
    """Two bases (tables or output folders) hold the same lines, every column equal."""
    a, b = sorted_base(a), sorted_base(b)
    assert a.num_rows == b.num_rows
    for name in a.column_names:
        assert a.column(name).equals(b.column(name)), name


def assert_same_identities(keys: str, a_vault, b_vault, line_ids: list[str]) -> int:
    """The two vaults (folders or (keys, values) tables) open to the same values for each line; returns how
    many lines had values."""
    import pyarrow.compute as pc

    from pipelines.io.vault_files import read_vault
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.vault import Vault

    vault = Vault(Keyset.load(keys))
    a = read_vault(a_vault, line_ids) if isinstance(a_vault, str) else a_vault
    b = read_vault(b_vault, line_ids) if isinstance(b_vault, str) else b_vault

    def opened(tables, line_id):
        k, v = tables
        k = k.filter(pc.equal(k.column("line_id"), line_id))
        return vault.open(k, v.filter(pc.equal(v.column("line_id"), line_id)), line_id) if k.num_rows else None

    with_values = 0
    for line_id in line_ids:
        got = opened(a, line_id)
        assert got == opened(b, line_id), line_id
        with_values += got is not None
    return with_values


def fold_in_one_process(base: list[str], deltas: str, keys: str) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The compaction as it was before issue 12, in this process: the whole raw base protected as one bucket,
    every window read, ``fold_deltas`` over everything. The oracle the Beam pipeline must equal."""
    from pipelines.io.windows import committed_windows, read_base, read_windows
    from transforms.core.deadletter import DeadLetterContext
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.tokenize import Tokenizer
    from transforms.crypto.vault import Vault
    from transforms.merge.bucket import MERGED_SCHEMA, merge_bucket
    from transforms.merge.stream import fold_deltas
    from transforms.scan.policy import load_policy

    keyset, ctx = Keyset.load(keys), DeadLetterContext("compact", "oracle", "2026-11-30T00:00:00Z")
    kind, table, _, _ = read_base(base, "utf-8", ctx)
    assert kind == "raw"
    lines = merge_bucket(
        table,
        "raw",
        None,
        None,
        None,
        tokenizer=Tokenizer(keyset),
        vault=Vault(keyset),
        policy=load_policy(None),
        as_of=dt.date.fromisoformat(AS_OF),
        ctx=ctx,
        salt="0" * 32,
    )
    parts = list(read_windows(committed_windows(deltas)))

    def tag(t: pa.Table, i: int) -> pa.Table:
        return t.append_column("_window", pa.array([i] * t.num_rows, pa.int64()))

    merged, vkeys, values, _ = fold_deltas(
        lines.base,
        lines.vault_keys,
        lines.vault_values,
        pa.concat_tables([tag(d.cast(MERGED_SCHEMA), i) for i, _, d, _, _ in parts]),
        pa.concat_tables([tag(k, i) for i, _, _, k, _ in parts]),
        pa.concat_tables([tag(v, i) for i, _, _, _, v in parts]),
    )
    return merged, vkeys, values


def snapshot(folder: str) -> dict[str, str]:
    """Every file under ``folder``: relative path -> sha256 of its bytes."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def dead_letters(out: str) -> list[dict]:
    rows = []
    folder = os.path.join(out, "dead_letter")
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle if line.strip()]
    return rows
