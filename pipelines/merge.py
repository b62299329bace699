"""backfill merge: bring completed registrations back into the base, tokenized, with a vault.

    backfill merge --base base.parquet --registrations 'events/*.jsonl' --keys secure/keys.json \\
        --out out/merge [--as-of 2026-12-01] [--policy my_policy.yaml] [--encoding gb18030] [Beam flags...]
    backfill merge --merged out/merge-1130 --registrations events/2026-12-01/ \\
        --keys secure/keys.json --out out/merge-1201                                       # the daily merge
    python -m pipelines.merge ... --runner DataflowRunner --project P --region R \\
        --temp_location gs://bucket/tmp --setup_file ./setup.py

``--base`` is a raw base (Avro, Parquet, CSV with plaintext identity columns)
or a previous merge's ``OUT/base/`` (told apart by its columns); with a
previous merge's base, its vault is required too (``--merged OUT`` names
both, as ``--base OUT/base --vault OUT/vault`` does; without the vault the
merge refuses to run): the lines without a new registration keep their
row and their vault records, and re-registered lines keep their data key.
Writes ``OUT/base/`` (Parquet, schemas/merged_line.avsc: tokens and masks,
never plaintext), ``OUT/vault/`` (what ``backfill reveal`` opens),
``OUT/dead_letter/`` (JSON Lines), ``OUT/summary.json`` and
``OUT/manifest.json``, whose counts prove that nothing was lost:
base rows in = lines out + base dead letters, and events in = applied +
superseded + duplicates + dead letters.

OUT is written beside itself (``OUT.tmp-RUN_ID``) and switched in once the
manifest is written (``pipelines/io/publish.py``): an --out that overlaps an
input (real paths) or that a merge did not make is refused before anything
is written, and a failed run leaves the previous output as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import os
import sys
import time
from typing import TYPE_CHECKING

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.common import add_batch_flags, ArgumentParser, UserError, beam_options, is_local_runner, new_run
from pipelines.flags import add_merged, add_progress_flag
from pipelines.common import parse_as_of
from pipelines.common import run_main, runner_name, split_beam_flags, write_dead_letters
from pipelines.io.events import ReadRegistrationEvents, plan_event_splits
from pipelines.manifest import Timer, keys_block, policy_block, read_json, write_json
from pipelines.io.merged_base import (
    ReadMergedBase,
    ReadVaultTable,
    write_merged_base,
    write_vault_table,
)
from pipelines.io.base_files import ReadSubscriberBase
from pipelines.io.planning import InputInfo
from pipelines.io.finalize import Finalize
from pipelines.io.publish import check_apart, check_owned, publishing
from pipelines.keys import register_vault
from pipelines.merge_counts import manifest_counts, summarise
from pipelines.merge_plan import _plan_base, _plan_vault
from pipelines.progress import NO_PROGRESS, progress
from transforms.core.deadletter import DeadLetterContext
from transforms.core.shuffle import spill_area
from transforms.merge.composite import MergeCompletedRegistrations
from transforms.scan.policy import Policy, load_policy

if TYPE_CHECKING:
    from transforms.crypto.keyset import Keyset

log = logging.getLogger("backfill.merge")
ROWS_PER_BUCKET = 100_000  # a bucket (base lines + events + vault rows) is one worker's working set
OUTPUTS = ("base", "vault", "dead_letter", "summary.json", "manifest.json")  # what a merge writes into OUT


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill merge", description=__doc__.splitlines()[0])
    add_merged(
        p,
        base_help="base file, glob or folder: a raw base (Avro, Parquet, CSV), or a merged base with --vault; "
        "repeatable",
        vault_help="the vault of a merged --base",
    )
    p.add_argument(
        "--registrations",
        required=True,
        action="append",
        help="registration events: file, glob or folder (Avro, Parquet, CSV, JSON Lines); repeatable",
    )
    p.add_argument("--keys", required=True, help="keyset file (mode 0600; backfill keys init)")
    p.add_argument("--out", required=True, help="output folder (local or gs://)")
    add_batch_flags(p)
    add_progress_flag(p)
    return p


def build_pipeline(
    p: beam.Pipeline,
    *,
    base_splits,
    kind,
    event_splits,
    vault,
    policy,
    as_of,
    ctx,
    keys_path,
    n_buckets,
    spill_dir,
    encoding,
    batch_size,
    progress=NO_PROGRESS,
):
    """Wire the merge; returns the MergeOutputs (exposed for tests)."""
    inputs = {}
    if kind == "raw":
        base = p | "ReadBase" >> ReadSubscriberBase(base_splits, ctx, encoding=encoding, batch_size=batch_size)
        inputs.update(base=base.raw, base_dead_letter=base.dead_letter)
    else:
        inputs["base"] = p | "ReadMergedBase" >> ReadMergedBase(base_splits, batch_size)
    progress.count(inputs["base"], "read")
    events = p | "ReadEvents" >> ReadRegistrationEvents(event_splits, ctx, encoding=encoding, batch_size=batch_size)
    inputs.update(events=events.raw, events_dead_letter=events.dead_letter)
    if vault:
        inputs["vault_keys"] = p | "ReadVaultKeys" >> ReadVaultTable(vault["keys"], "keys")
        inputs["vault_values"] = p | "ReadVaultValues" >> ReadVaultTable(vault["values"], "values")
    return inputs | "MergeCompletedRegistrations" >> MergeCompletedRegistrations(
        policy, as_of, ctx, keys_path, n_buckets, base_kind=kind, spill_dir=spill_dir
    )


def _located(paths: list[str]) -> list[str]:
    return [p if "://" in p else os.path.abspath(p) for p in paths]


def _inputs(args) -> dict:
    """Every path the merge reads, by flag: --out may be none of them, contain none, lie inside none."""
    return {
        "--base": args.base,
        "--registrations": args.registrations,
        "--vault": args.vault,
        "--keys": args.keys,
        "--policy": args.policy,
    }


def _check_paths(args, out: str) -> None:
    """Refuse an --out that overlaps an input (real paths: the daily merge reads yesterday's OUT, perhaps
    through a symbolic link) or a folder a merge did not make, before anything is read or written."""
    check_apart(out, _inputs(args))
    check_owned(out, "merge")


@dataclasses.dataclass
class _Job:
    """One merge run, as decided before its pipeline runs."""

    args: argparse.Namespace
    options: PipelineOptions
    policy: Policy
    keyset: Keyset
    as_of: dt.date
    kind: str
    base_splits: list
    base_info: InputInfo
    event_splits: list
    event_info: InputInfo
    vault: dict | None
    run_id: str
    started: str
    n_buckets: int
    spill: bool
    out: str
    timer: Timer
    stage: str = ""  # where this run writes (publishing's OUT.tmp-RUN); OUT itself once switched

    @property
    def summary_path(self) -> str:
        return FileSystems.join(self.stage or self.out, "summary.json")


def _prepare(argv) -> _Job:
    """Parse and check the arguments and inputs, plan them, choose the run id, the buckets and the spill."""
    from transforms.crypto.keyset import Keyset

    args, beam_args = split_beam_flags(parser(), argv)
    timer = Timer()
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    as_of = args.as_of or parse_as_of(None)
    policy = load_policy(args.policy)
    keyset = Keyset.load(args.keys)  # permissions and format checked before anything runs
    out = args.out.rstrip("/")
    _check_paths(args, out)
    kind, base_splits, base_info = _plan_base(args, keyset)
    event_splits, event_info = plan_event_splits(args.registrations, encoding=args.encoding)
    vault = _plan_vault(args, keyset, kind)
    run_id, started = new_run("merge")
    options = beam_options(beam_args, step="merge", run_id=run_id)
    rows = max(base_info.estimated_rows, event_info.estimated_rows)
    if args.spill == "on" and not is_local_runner(options):
        raise UserError("--spill on needs a local runner: the spill is a private local folder")
    return _Job(
        args=args,
        options=options,
        policy=policy,
        keyset=keyset,
        as_of=as_of,
        kind=kind,
        base_splits=base_splits,
        base_info=base_info,
        event_splits=event_splits,
        event_info=event_info,
        vault=vault,
        run_id=run_id,
        started=started,
        n_buckets=args.shuffle_buckets or max(1, math.ceil(rows / ROWS_PER_BUCKET)),
        spill=args.spill != "off" and is_local_runner(options),
        out=out,
        timer=timer,
    )


def _log_plan(job: _Job) -> None:
    base, events, keyset = job.base_info, job.event_info, job.keyset
    log.info(
        "merge %s: %s base (%s file(s), ~%s rows), %s event file(s) (~%s events), %s bucket(s), runner %s, "
        "join key %s, vault key %s, policy %s, as of %s",
        job.run_id,
        job.kind,
        f"{len(base.files):,}",
        f"{base.estimated_rows:,}",
        f"{len(events.files):,}",
        f"{events.estimated_rows:,}",
        f"{job.n_buckets:,}",
        runner_name(job.options),
        keyset.primary_join_version,
        keyset.primary_vault_version,
        job.policy.version,
        job.as_of,
    )


def _run_pipeline(job: _Job, pub) -> None:
    """Merge; write base/, vault/, dead_letter/, summary.json and (checked in the job) manifest.json."""
    out, ctx, summary_path = job.stage, DeadLetterContext("merge", job.run_id, job.started), job.summary_path
    header = {
        "step": "merge",
        "run_id": job.run_id,
        "as_of": job.as_of.isoformat(),
        "policy_version": job.policy.version,
        "base_kind": job.kind,
        "keys": keys_block(job.keyset),
    }
    # The spill carries raw rows and events: sealed under a per-run key, in a private local folder (0700)
    # that a later run removes if this one dies (transforms/core/shuffle.py), never under OUT.
    phases = dict.fromkeys(("read", "merged"), job.base_info.estimated_rows)
    with (
        spill_area("merge") if job.spill else contextlib.nullcontext() as spill_dir,
        progress("merge", job.run_id, phases, job.options, job.args.progress_seconds) as prog,
    ):
        with beam.Pipeline(options=job.options) as p:
            outputs = build_pipeline(
                p,
                base_splits=job.base_splits,
                kind=job.kind,
                event_splits=job.event_splits,
                vault=job.vault,
                policy=job.policy,
                as_of=job.as_of,
                ctx=ctx,
                keys_path=job.args.keys,
                n_buckets=job.n_buckets,
                spill_dir=spill_dir,
                encoding=job.args.encoding,
                batch_size=job.args.batch_size,
                progress=prog,
            )
            prog.count(outputs.base, "merged")
            vault_dir = FileSystems.join(out, "vault")
            written = [
                write_merged_base(outputs.base, FileSystems.join(out, "base")),
                write_vault_table(outputs.vault_keys, vault_dir, "keys", "WriteVaultKeys"),
                write_vault_table(outputs.vault_values, vault_dir, "values", "WriteVaultValues"),
                write_dead_letters(outputs.dead_letter, FileSystems.join(out, "dead_letter", "part")),
                outputs.counts | "WriteSummary" >> beam.Map(lambda c: write_json(summary_path, summarise(c, header))),
            ]
            outputs.counts | "Finalize" >> Finalize(
                pub, _manifest(job), manifest_counts, after=written, started=job.timer.started
            )


def _manifest(job: _Job) -> dict:
    """What the manifest says that is known before the run; the job adds the counts (Finalize)."""
    out, args = job.out, job.args
    return {
        "step": "merge",
        "run_id": job.run_id,
        "started": job.started,
        "as_of": job.as_of.isoformat(),
        "policy": policy_block(job.policy),
        "keys": keys_block(job.keyset),
        # absolute local paths: the report reads the events back from here, from any working directory
        "inputs": {
            "base": _located(job.base_info.files),
            "base_kind": job.kind,
            "registrations": _located(job.event_info.files),
            "vault": args.vault,
            "encoding": args.encoding,
        },
        "outputs": {name: FileSystems.join(out, name) for name in ("base", "vault", "dead_letter")},
        "runner": runner_name(job.options),
        "shuffle": {"buckets": job.n_buckets, "spill": job.spill},
        "timings": {"plan_seconds": round(time.time() - job.timer.started, 3)},
    }


def run(argv=None) -> dict:
    """Run a merge; returns its manifest.

    The run writes beside OUT and switches its output in at the end (pipelines/io/publish.py): the previous
    output stays whole and readable until then, and stays as it was if the run fails or does not balance."""
    job = _prepare(argv)
    _log_plan(job)
    # Known to the keyset before it exists: a shred re-wraps its data keys rather than retire them under it.
    register_vault(job.args.keys, FileSystems.join(job.out, "vault"), by="merge", run_id=job.run_id)
    with publishing(job.out, "merge", job.run_id, inputs=_inputs(job.args), produces=OUTPUTS) as pub:
        job.stage = pub.stage
        _run_pipeline(job, pub)
        manifest = read_json(pub.written("manifest.json"))  # written by the job, balances checked there
    return manifest


def format_summary(manifest: dict) -> str:
    b, e, v = manifest["counts"]["base"], manifest["counts"]["events"], manifest["counts"]["vault"]

    def ok(side: dict) -> str:
        return "balanced" if side["balanced"] else "NOT BALANCED"

    lines = [
        f"merge {manifest['run_id']}: base {b['rows_in']:,} rows in -> {b['lines_out']:,} lines + "
        f"{b['dead_letters']:,} dead letters ({ok(b)})",
        f"  events {e['rows_in']:,} in -> {e['applied']:,} applied + {e['superseded']:,} superseded + "
        f"{e['duplicates']:,} duplicates + {e['dead_letters']:,} dead letters ({ok(e)})",
        f"  vault: {v.get('lines_sealed', 0):,} lines sealed ({v.get('values_sealed', 0):,} values), "
        f"{v.get('keys_copied', 0):,} carried; join key {manifest['keys']['join']}, "
        f"vault key {manifest['keys']['vault']}",
    ]
    if e["dead_letter_reasons"]:
        lines.append("  event dead letters: " + ", ".join(f"{k} {n:,}" for k, n in e["dead_letter_reasons"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--streaming" in argv:  # registrations from Pub/Sub: pipelines/merge_streaming.py
        from pipelines import merge_streaming

        return merge_streaming.main(argv)

    def body(argv):
        print(format_summary(run(argv)))
        return 0

    return run_main("backfill merge", body, argv)


if __name__ == "__main__":
    sys.exit(main())
