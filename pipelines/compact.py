"""backfill compact: fold the streaming merge's deltas into a new base snapshot.

    backfill compact --base base.parquet --deltas out/stream/deltas --keys secure/keys.json --out out/base-1201 \\
        [--vault DIR] [--as-of 2026-12-01] [--policy FILE] [--encoding gb18030]

``--base`` is the base the streaming merge ran on: a raw base (its lines are
tokenized and sealed as the batch merge does) or a previous merge's
``OUT/base`` (with its ``--vault``). ``--deltas`` is the streaming merge's
``OUT/deltas`` (or its ``OUT``); only committed windows count. Per line the
latest registration wins (``registered_at``, a tie to the larger event_id)
over the base and every delta, so the result is the batch merge's base for
the same events. Writes ``OUT/base/`` (Parquet, schemas/merged_line.avsc),
``OUT/vault/`` (the base's vault rows, with a registered line's rows taken
from its winning window), ``OUT/dead_letter/`` (base rows that could not be
used) and ``OUT/manifest.json`` (base rows in = lines out + dead letters).
Run it on a quiet moment or on a copy: windows committed while it reads are
left for the next compaction.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import secrets
import sys
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.common import ArgumentParser, UserError, new_run, parse_as_of, run_main, split_beam_flags
from pipelines.io.publish import check_apart, check_owned, publishing
from pipelines.keys import register_vault
from pipelines.manifest import Timer, keys_block, policy_block, write_json

if TYPE_CHECKING:
    import datetime as dt

    from transforms.crypto.keyset import Keyset
    from transforms.scan.policy import Policy

ROWS_PER_BUCKET = 200_000
OUTPUTS = ("base", "vault", "dead_letter", "manifest.json")  # what a compaction writes into OUT


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill compact", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, action="append", help="the base the streaming merge ran on; repeatable")
    p.add_argument("--deltas", required=True, help="the streaming merge's OUT/deltas (or its OUT)")
    p.add_argument("--keys", required=True, help="keyset file (mode 0600)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--vault", default=None, help="the vault of a merged --base")
    p.add_argument(
        "--as-of",
        type=parse_as_of,
        default=None,
        help="date the checks are made against (default: the streaming merge's, from its manifest)",
    )
    p.add_argument("--policy", default=None, help="policy YAML replacing the default Decree 25 policy")
    p.add_argument("--encoding", default="utf-8", help="CSV encoding of the base")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _protect_raw(raw: pa.Table, tokenizer, vault, policy, as_of, ctx):
    """A raw base -> merged lines and vault rows, as the batch merge makes them without events (by line bucket)."""
    from transforms.scan.crossrecord import bucket_of
    from transforms.merge.bucket import merge_bucket
    from transforms.scan.normalize import clean_text

    n = max(1, math.ceil(raw.num_rows / ROWS_PER_BUCKET))
    buckets = np.asarray(bucket_of(clean_text(raw.column("line_id").combine_chunks()), n)) if n > 1 else None
    salt = secrets.token_hex(16)
    parts = []
    for b in range(n):
        part = raw if buckets is None else raw.filter(pa.array(buckets == b))
        if part.num_rows:
            parts.append(
                merge_bucket(
                    part,
                    "raw",
                    None,
                    None,
                    None,
                    tokenizer=tokenizer,
                    vault=vault,
                    policy=policy,
                    as_of=as_of,
                    ctx=ctx,
                    salt=salt,
                )
            )
    cat = lambda name: pa.concat_tables([getattr(r, name) for r in parts])  # noqa: E731
    return cat("base"), cat("vault_keys"), cat("vault_values"), cat("dead_letter")


def _deltas_dir(path: str) -> str:
    path = path.rstrip("/")
    nested = FileSystems.join(path, "deltas")
    return nested if FileSystems.exists(nested) else path


def _stream_as_of(deltas_dir: str):
    """The as-of date the streaming merge ran with (its manifest beside the deltas), so that a raw base
    is classified on the same day as the stream's checks; None when there is no manifest."""
    import datetime as dt

    from pipelines.manifest import read_json

    path = FileSystems.join(deltas_dir.rstrip("/").rsplit("/", 1)[0], "manifest.json")
    if not FileSystems.exists(path):
        return None
    try:
        return dt.date.fromisoformat(read_json(path)["as_of"])
    except (KeyError, ValueError, TypeError):
        return None


@dataclasses.dataclass
class _Job:
    """One compaction, as decided before anything is read."""

    args: argparse.Namespace
    policy: Policy
    keyset: Keyset
    as_of: dt.date
    out: str
    deltas_dir: str
    windows: list
    run_id: str
    started: str
    timer: Timer


def _inputs(args, deltas_dir: str) -> dict:
    """Every path the compaction reads, by flag: --out may be none of them, contain none, lie inside none."""
    return {
        "--base": args.base,
        "--deltas": [args.deltas, deltas_dir],
        "--vault": args.vault,
        "--keys": args.keys,
        "--policy": args.policy,
    }


def _prepare(argv) -> _Job:
    """Parse and check the arguments: the keyset, the as-of date, no overlap of OUT and the inputs, windows."""
    from pipelines.io.windows import committed_windows
    from transforms.crypto.keyset import Keyset
    from transforms.scan.policy import load_policy

    args, _ = split_beam_flags(parser(), argv, pipeline=False)
    timer = Timer()
    policy = load_policy(args.policy)
    keyset = Keyset.load(args.keys)
    out = args.out.rstrip("/")
    deltas_dir = _deltas_dir(args.deltas)
    as_of = args.as_of or _stream_as_of(deltas_dir) or parse_as_of(None)
    check_apart(out, _inputs(args, deltas_dir))  # real paths: a symbolic link to OUT is OUT
    check_owned(out, "compact")
    windows = committed_windows(deltas_dir)
    if not windows:
        raise UserError(f"--deltas {args.deltas}: no committed window there")
    run_id, started = new_run("compact")
    return _Job(
        args=args,
        policy=policy,
        keyset=keyset,
        as_of=as_of,
        out=out,
        deltas_dir=deltas_dir,
        windows=windows,
        run_id=run_id,
        started=started,
        timer=timer,
    )


class _Base(NamedTuple):
    """The base read: merged lines, vault rows and dead letters (the reader's and the protection's)."""

    kind: str
    files: list
    rows_in: int
    lines: pa.Table
    keys: pa.Table
    values: pa.Table
    dead_letter: pa.Table


def _read_base(job: _Job, ctx) -> _Base:
    """The base as merged lines and vault rows (a raw base is tokenized and sealed here)."""
    from pipelines.io.vault_files import read_vault
    from pipelines.io.windows import read_base
    from transforms.crypto.tokenize import Tokenizer
    from transforms.crypto.vault import Vault
    from transforms.merge.lines import merged_lines

    args = job.args
    kind, table, reader_dead, files = read_base(args.base, args.encoding, ctx)
    rows_in = table.num_rows + reader_dead.num_rows
    if kind == "raw":
        if args.vault:
            raise UserError("--vault goes with a merged --base (a raw base has no vault)")
        tokenizer, vault = Tokenizer(job.keyset), Vault(job.keyset)
        base, keys, values, dead = _protect_raw(table, tokenizer, vault, job.policy, job.as_of, ctx)
    else:
        if not args.vault:
            raise UserError("a merged --base needs its --vault")
        base, dead, _ = merged_lines(table, ctx)
        keys, values = read_vault(args.vault)
    job.timer.mark("base_seconds")
    return _Base(kind, files, rows_in, base, keys, values, pa.concat_tables([reader_dead, dead]))


def _read_deltas(job: _Job) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Every committed window's delta lines and vault rows, tagged with the window's number."""
    from pipelines.io.windows import read_windows
    from transforms.merge.bucket import MERGED_SCHEMA

    parts = list(read_windows(job.windows))
    tag = lambda t, i: t.append_column("_window", pa.array(np.full(t.num_rows, i, np.int64)))  # noqa: E731
    deltas = pa.concat_tables([tag(d.cast(MERGED_SCHEMA), i) for i, _, d, _, _ in parts])
    delta_keys = pa.concat_tables([tag(k, i) for i, _, _, k, _ in parts])
    delta_values = pa.concat_tables([tag(v, i) for i, _, _, _, v in parts])
    foreign = set(pc.unique(delta_keys.column("keyset_id")).to_pylist()) - {job.keyset.keyset_id}
    if foreign:
        raise UserError(
            f"--deltas {job.args.deltas}: vault rows made under keyset {sorted(foreign)[0]}, "
            f"not {job.keyset.keyset_id} (--keys {job.args.keys})"
        )
    return deltas, delta_keys, delta_values


def _write_outputs(out: str, merged: pa.Table, keys: pa.Table, values: pa.Table, dead: pa.Table) -> None:
    """base/ (one Parquet file), vault/ and dead_letter/ into ``out`` (the staged folder)."""
    from pipelines.io.vault_files import write_vault

    with FileSystems.create(FileSystems.join(out, "base", "part-00000-of-00001.parquet")) as handle:
        pq.write_table(merged, handle, row_group_size=65_536)
    write_vault(FileSystems.join(out, "vault"), keys, values)
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in dead.to_pylist())
    with FileSystems.create(FileSystems.join(out, "dead_letter", "base.jsonl")) as handle:
        handle.write(payload.encode("utf-8"))


def _manifest(job: _Job, base: _Base, merged: pa.Table, keys: pa.Table, values: pa.Table, counts: dict) -> dict:
    rows_in, dead, out = base.rows_in, base.dead_letter, job.out
    return {
        "step": "compact",
        "run_id": job.run_id,
        "started": job.started,
        "as_of": job.as_of.isoformat(),
        "policy": policy_block(job.policy),
        "keys": keys_block(job.keyset),
        "inputs": {
            "base": base.files,
            "base_kind": base.kind,
            "vault": job.args.vault,
            "deltas": job.deltas_dir,
            "windows": [FileSystems.split(w)[1] for w in job.windows],
        },
        "counts": {
            "base": {
                "rows_in": rows_in,
                "lines_out": merged.num_rows,
                "dead_letters": dead.num_rows,
                "balanced": rows_in == merged.num_rows + dead.num_rows,
            },
            "deltas": {"windows": len(job.windows), **counts},
            "vault": {"keys": keys.num_rows, "values": values.num_rows},
        },
        "outputs": {name: FileSystems.join(out, name) for name in ("base", "vault", "dead_letter")},
        "timings": job.timer.as_dict(),
    }


def run(argv=None) -> dict:
    """Run a compaction; returns its manifest."""
    from transforms.core.deadletter import DeadLetterContext
    from transforms.merge.stream import fold_deltas

    job = _prepare(argv)
    base = _read_base(job, DeadLetterContext("compact", job.run_id, job.started))
    deltas, delta_keys, delta_values = _read_deltas(job)
    merged, keys, values, counts = fold_deltas(base.lines, base.keys, base.values, deltas, delta_keys, delta_values)
    job.timer.mark("fold_seconds")
    # Known to the keyset before it exists: a shred re-wraps its data keys rather than retire them under it.
    register_vault(job.args.keys, FileSystems.join(job.out, "vault"), by="compact", run_id=job.run_id)
    # Written beside OUT, switched in at the end (pipelines/io/publish.py): the previous output stays whole
    # until then, and as it was if the run fails or does not balance.
    with publishing(job.out, "compact", job.run_id, inputs=_inputs(job.args, job.deltas_dir), produces=OUTPUTS) as pub:
        _write_outputs(pub.stage, merged, keys, values, base.dead_letter)
        job.timer.mark("write_seconds")
        manifest = _manifest(job, base, merged, keys, values, counts)
        b = manifest["counts"]["base"]
        if not b["balanced"]:
            raise UserError(
                f"compact counts do not balance ({b['rows_in']:,} rows in, {b['lines_out']:,} lines out, "
                f"{b['dead_letters']:,} dead letters): nothing was published"
            )
        write_json(pub.path("manifest.json"), manifest)  # last: the manifest says the output is whole
    return manifest


def format_summary(m: dict) -> str:
    b, d = m["counts"]["base"], m["counts"]["deltas"]
    return (
        f"compact {m['run_id']}: base {b['rows_in']:,} rows in -> {b['lines_out']:,} lines + "
        f"{b['dead_letters']:,} dead letters ({'balanced' if b['balanced'] else 'NOT BALANCED'})\n"
        f"  {d['windows']:,} window(s), {d['delta_rows']:,} delta rows -> {d['lines_registered']:,} lines "
        f"registered ({d['superseded_or_unknown']:,} older than the line's registration)"
    )


def main(argv=None) -> int:
    def body(argv):
        print(format_summary(run(argv)))
        return 0

    return run_main("backfill compact", body, argv)


if __name__ == "__main__":
    sys.exit(main())
