"""The inputs of ``backfill compact`` planned before its pipeline runs: the deltas folder, the stream's as-of
date, the base's kind and splits, its vault, the committed windows, the buckets and the spill; all checked.
Used by :mod:`pipelines.compact`. Nothing here reads a row of the base or of a window.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from pipelines.io.publish_guards import exists
from typing import TYPE_CHECKING

from apache_beam.io.filesystems import FileSystems

from pipelines.common import UserError, beam_options, is_local_runner, new_run, parse_as_of, split_beam_flags
from pipelines.io.planning import InputInfo
from pipelines.io.publish import check_apart, check_owned
from pipelines.manifest import Timer

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.crypto.keyset import Keyset
    from transforms.scan.policy import Policy

__all__ = ["Job", "prepare", "deltas_dir", "stream_as_of", "inputs"]


def deltas_dir(path: str) -> str:
    """``--deltas`` names the stream's ``OUT/deltas`` or its ``OUT``: the folder of the windows."""
    path = path.rstrip("/")
    nested = FileSystems.join(path, "deltas")
    return nested if exists(nested) else path  # a prefix, on an object store


def stream_as_of(deltas: str) -> dt.date | None:
    """The as-of date the streaming merge ran with (its manifest beside the deltas), so that a raw base
    is classified on the same day as the stream's checks; None when there is no manifest."""
    from pipelines.manifest import read_json

    path = FileSystems.join(deltas.rstrip("/").rsplit("/", 1)[0], "manifest.json")
    if not FileSystems.exists(path):
        return None
    try:
        return dt.date.fromisoformat(read_json(path)["as_of"])
    except (KeyError, ValueError, TypeError):
        return None


def inputs(args: argparse.Namespace, deltas: str) -> dict:
    """Every path the compaction reads, by flag: --out may be none of them, contain none, lie inside none."""
    return {
        "--base": args.base,
        "--deltas": [args.deltas, deltas],
        "--vault": args.vault,
        "--keys": args.keys,
        "--policy": args.policy,
    }


@dataclasses.dataclass
class Job:
    """One compaction, as decided before its pipeline runs."""

    args: argparse.Namespace
    options: PipelineOptions
    policy: Policy
    keyset: Keyset
    as_of: dt.date
    kind: str
    base_splits: list
    base_info: InputInfo
    vault: dict | None
    deltas: str
    windows: list
    n_buckets: int
    spill: bool
    out: str
    run_id: str
    started: str
    timer: Timer
    # a previous merge's files cut by line bucket, read by each bucket's own step (pipelines/merge_plan.py)
    direct: dict = dataclasses.field(default_factory=dict)


def _plan_inputs(args, keyset) -> tuple[str, list, InputInfo, dict | None]:
    """The base's kind and splits and its vault's shards, as the batch merge plans them."""
    from pipelines.merge_plan import _plan_base, _plan_vault

    kind, splits, info = _plan_base(args, keyset)
    if kind == "raw" and args.vault:
        raise UserError("--vault goes with a merged --base (a raw base has no vault)")
    return kind, splits, info, _plan_vault(args, keyset, kind)


def _check_stream_base(args, deltas: str, info: InputInfo) -> None:
    """The base must be the one the streaming merge ran on, as its manifests beside the deltas record it."""
    from pipelines.io.lineage import base_lineage, check_stream_base

    given = f"--merged {args.merged}" if args.merged else "--base " + " --base ".join(args.base)
    stream = deltas.rstrip("/").rsplit("/", 1)[0]
    check_stream_base(given, args.deltas, stream, base_lineage(info.files), changed=args.base_changed)


def prepare(argv, parser: argparse.ArgumentParser, rows_per_bucket: int) -> Job:
    """Parse and check the arguments: the keyset, the as-of date, no overlap of OUT and the inputs, the
    committed windows, the base and its vault (planned, not read), the buckets and the spill."""
    from pipelines.io.windows import committed_windows
    from pipelines.merge_plan import buckets_for
    from transforms.crypto.keyset import Keyset
    from transforms.scan.policy import load_policy

    args, beam_args = split_beam_flags(parser, argv)
    timer = Timer()
    policy = load_policy(args.policy)
    keyset = Keyset.load(args.keys)  # permissions and format checked before anything runs
    out = args.out.rstrip("/") or args.out  # "/" stays "/"
    deltas = deltas_dir(args.deltas)
    as_of = args.as_of or stream_as_of(deltas) or parse_as_of(None)
    check_apart(out, inputs(args, deltas))  # real paths: a symbolic link to OUT is OUT
    check_owned(out, "compact")
    windows = committed_windows(deltas)
    if not windows:
        raise UserError(f"--deltas {args.deltas}: no committed window there")
    kind, base_splits, base_info, vault = _plan_inputs(args, keyset)
    _check_stream_base(args, deltas, base_info)
    run_id, started = new_run("compact")
    options = beam_options(beam_args, step="compact", run_id=run_id)
    if args.spill == "on" and not is_local_runner(options):
        raise UserError("--spill on needs a local runner: the spill is a private local folder")
    n_buckets, direct = buckets_for(args, kind, base_splits, vault, base_info.estimated_rows, rows_per_bucket)
    return Job(
        args=args,
        options=options,
        policy=policy,
        keyset=keyset,
        as_of=as_of,
        kind=kind,
        base_splits=base_splits,
        base_info=base_info,
        vault=vault,
        deltas=deltas,
        windows=windows,
        n_buckets=n_buckets,
        direct=direct,
        spill=args.spill != "off" and is_local_runner(options),
        out=out,
        run_id=run_id,
        started=started,
        timer=timer,
    )
