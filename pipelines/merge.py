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

On a local runner the merge runs in this process and ``--workers`` worker
processes forked from it, without a Beam job (``pipelines/merge_local.py``);
a remote runner, Beam's local worker options or ``--spill off`` run the Beam
job (``pipelines/merge_beam.py``). Both write the same outputs.

OUT is written beside itself (``OUT.tmp-RUN_ID``) and switched in once the
manifest is written (``pipelines/io/publish.py``): an --out that overlaps an
input (real paths) or that a merge did not make is refused before anything
is written, and a failed run leaves the previous output as it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

from pipelines.common import add_batch_flags, ArgumentParser, UserError, beam_options, is_local_runner, new_run
from pipelines.flags import add_merged, add_progress_flag, runs_in_process
from pipelines.common import parse_as_of
from pipelines.common import run_main, runner_name, split_beam_flags
from pipelines.io.events import plan_event_splits
from pipelines.io.lineage import base_lineage
from pipelines.io.paths import join_path
from pipelines.manifest import Timer, keys_block, policy_block, read_json, write_json
from pipelines.io.planning import InputInfo
from pipelines.io.publish import check_apart, check_owned, publishing
from pipelines.keys_session import register_vault
from pipelines.merge_counts import manifest_counts, summarise
from pipelines.merge_plan import _plan_base, _plan_vault, buckets_for
from transforms.core.deadletter import DeadLetterContext
from transforms.scan.policy import Policy, load_policy

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.crypto.keyset import Keyset

log = logging.getLogger("backfill.merge")
ROWS_PER_BUCKET = 100_000  # a bucket (base lines + events + vault rows) is one worker's working set
IN_PROCESS = "in-process"  # the manifest's runner when the merge ran without Beam (pipelines/merge_local.py)
OUTPUTS = ("base", "vault", "dead_letter", "summary.json", "manifest.json")  # what a merge writes into OUT


def __getattr__(name: str):
    """``build_pipeline`` lives with the Beam job (pipelines/merge_beam.py), imported only when asked for."""
    if name == "build_pipeline":
        from pipelines.merge_beam import build_pipeline

        return build_pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    add_batch_flags(
        p,
        buckets_help="buckets of the shuffles (default: from the input size, or the N of a previous merge's files, "
        "then read by bucket without a shuffle); given, every input goes through the shuffles",
    )
    add_progress_flag(p)
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes of the merge on this machine (default: one per CPU; 1: this process only); "
        "Beam's runners size their own workers",
    )
    return p


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
    options: PipelineOptions | None  # None: no Beam flag, the merge runs in this process (no Beam job)
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
    workers: int = 0  # worker processes of the in-process merge (pipelines/merge_local.py); 0: the Beam job runs
    stage: str = ""  # where this run writes (publishing's OUT.tmp-RUN); OUT itself once switched
    # inputs already cut by line bucket, read straight by their bucket's task (pipelines/merge_plan.py plan_buckets)
    direct: dict = dataclasses.field(default_factory=dict)
    lineage: dict | None = None  # the base's fingerprint and origin (pipelines/io/lineage.py)

    @property
    def summary_path(self) -> str:
        return join_path(self.stage or self.out, "summary.json")


def _prepare(argv) -> _Job:
    """Parse and check the arguments and inputs, plan them, choose the run id, the buckets and the spill."""
    from transforms.crypto.keyset import Keyset

    args, beam_args = split_beam_flags(parser(), argv)
    timer = Timer()
    as_of = args.as_of or parse_as_of(None)
    policy = load_policy(args.policy)
    keyset = Keyset.load(args.keys)  # permissions and format checked before anything runs
    out = args.out.rstrip("/")
    _check_paths(args, out)
    kind, base_splits, base_info = _plan_base(args, keyset)
    event_splits, event_info = plan_event_splits(args.registrations, encoding=args.encoding)
    vault = _plan_vault(args, keyset, kind)
    run_id, started = new_run("merge")
    # no Beam flag (and the spill on): the merge runs in this process on the default local runner, and Beam's
    # options are not made (Beam is not even imported)
    options = None if not beam_args and args.spill != "off" else beam_options(beam_args, step="merge", run_id=run_id)
    local = options is None or is_local_runner(options)
    rows = max(base_info.estimated_rows, event_info.estimated_rows)
    if args.spill == "on" and not local:
        raise UserError("--spill on needs a local runner: the spill is a private local folder")
    workers = _workers(args, beam_args)
    # the previous merge's files cut by line bucket skip the shuffle, in process or in the Beam job
    n_buckets, direct = buckets_for(args, kind, base_splits, vault, rows, ROWS_PER_BUCKET)
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
        n_buckets=n_buckets,
        spill=args.spill != "off" and local,
        out=out,
        timer=timer,
        workers=workers,
        direct=direct,
        lineage=base_lineage(base_info.files),
    )


def _workers(args, beam_args: list[str]) -> int:
    """The in-process merge's worker processes, or 0 when the Beam job runs: a remote runner, Beam's local
    worker options, ``--spill off`` (only Beam shuffles in memory)."""
    if not runs_in_process(beam_args) or args.spill == "off":
        if args.workers is not None:
            raise UserError(
                "--workers sizes the merge on this machine; with --spill off, Beam's worker options or a remote "
                "runner the Beam job runs: size it with the runner's options"
            )
        return 0
    from pipelines.task_pool import default_workers

    return args.workers or default_workers()


def _log_plan(job: _Job) -> None:
    base, events, keyset = job.base_info, job.event_info, job.keyset
    log.info(
        "merge %s: %s base (%s file(s), ~%s rows), %s event file(s) (~%s events), %s bucket(s)%s, runner %s, "
        "join key %s, vault key %s, policy %s, as of %s",
        job.run_id,
        job.kind,
        f"{len(base.files):,}",
        f"{base.estimated_rows:,}",
        f"{len(events.files):,}",
        f"{events.estimated_rows:,}",
        f"{job.n_buckets:,}",
        f" ({', '.join(sorted(job.direct))} read by bucket, no shuffle)" if job.direct else "",
        f"{IN_PROCESS} ({job.workers} worker process(es))" if job.workers else runner_name(job.options),
        keyset.primary_join_version,
        keyset.primary_vault_version,
        job.policy.version,
        job.as_of,
    )


def _run_pipeline(job: _Job, pub) -> None:
    """Merge; write base/, vault/, dead_letter/, summary.json and (checked in the job) manifest.json."""
    ctx = DeadLetterContext("merge", job.run_id, job.started)
    header = {
        "step": "merge",
        "run_id": job.run_id,
        "as_of": job.as_of.isoformat(),
        "policy_version": job.policy.version,
        "base_kind": job.kind,
        "keys": keys_block(job.keyset),
    }
    if job.workers:
        _run_in_process(job, pub, ctx, header)
    else:
        from pipelines.merge_beam import run_beam

        run_beam(job, pub, ctx, header, _manifest(job))


def _run_in_process(job: _Job, pub, ctx: DeadLetterContext, header: dict) -> None:
    """The same outputs from worker processes of this machine, without a Beam job (pipelines/merge_local.py);
    the counts checked before anything is published."""
    from pipelines.io.finish import finish
    from pipelines.merge_local import run_in_process

    counts = run_in_process(job, ctx, job.workers, job.args.progress_seconds)
    write_json(job.summary_path, summarise(counts, header))
    finish(counts, pub, _manifest(job), manifest_counts, job.timer.started)


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
        **({"lineage": job.lineage} if job.lineage else {}),  # which base this is: notify and report compare it
        "outputs": {name: join_path(out, name) for name in ("base", "vault", "dead_letter")},
        "runner": IN_PROCESS if job.workers else runner_name(job.options),
        **({"workers": job.workers} if job.workers else {}),
        "shuffle": {"buckets": job.n_buckets, "spill": job.spill, "read_by_bucket": sorted(job.direct)},
        "timings": {"plan_seconds": round(time.time() - job.timer.started, 3)},
    }


def run(argv=None) -> dict:
    """Run a merge; returns its manifest.

    The run writes beside OUT and switches its output in at the end (pipelines/io/publish.py): the previous
    output stays whole and readable until then, and stays as it was if the run fails or does not balance."""
    job = _prepare(argv)
    _log_plan(job)
    # Known to the keyset before it exists: a shred re-wraps its data keys rather than retire them under it.
    register_vault(job.args.keys, join_path(job.out, "vault"), by="merge", run_id=job.run_id)
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
