"""backfill scan: classify every line of the subscriber base under the policy.

    backfill scan --base base.parquet --out out/scan [--as-of 2026-11-30]
        [--policy my_policy.yaml] [--encoding gb18030] [Beam flags...]
    python -m pipelines.scan --base 'exports/*.csv' --out gs://bucket/scan \\
        --runner DataflowRunner --project P --region R \\
        --temp_location gs://bucket/tmp --setup_file ./setup.py
    python -m pipelines.scan --base gs://bucket/base/ --out gs://bucket/scan --estimated-rows 300000000 \\
        --runner DataflowRunner ... --dry_run=True --no_auth --sdk_location=container   # offline job check

``--estimated-rows N`` moves the planning of the base (listing files, reading
footers and headers) from the launcher into the pipeline's first step; the
dry run builds the Dataflow job and exits without reading or writing anything.

Writes ``OUT/classified/`` (Parquet, the classified-line contract, no
identity values), ``OUT/dead_letter/`` (JSON Lines, a reason each),
``OUT/summary.json`` and ``OUT/manifest.json``, and prints a short summary.
They are written beside OUT and switched in at the end (``pipelines/io/publish.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import sys
import time
from typing import TYPE_CHECKING

# Beam is imported where the Beam job is built (_run_beam, build_pipeline, _beam_options): the in-process scan
# never imports it (tests/test_no_beam.py), since its import alone costs seconds of one core.
from pipelines.common import add_batch_flags, ArgumentParser, UserError, beam_options, new_run
from pipelines.common import parse_as_of, run_main, runner_name, split_beam_flags, write_dead_letters
from pipelines.manifest import Timer, policy_block, read_json
from pipelines.io.base_reads import ROWS_PER_SPLIT
from pipelines.io.lineage import base_lineage
from pipelines.io.paths import join_path
from pipelines.io.planning import InputInfo
from pipelines.io.finish import finish
from pipelines.flags import LOCAL_RUNNERS, add_progress_flag, runs_in_process
from pipelines.io.publish import Publication, check_apart, check_owned, publishing
from pipelines.scan_inputs import plan_raw_base
from pipelines.scan_summary import format_summary, manifest_counts, scan_summary, write_summary
from schemas import arrow_schema
from transforms.core.deadletter import DeadLetterContext
from transforms.core.spill_folders import spill_area
from transforms.scan.policy import Policy, load_policy

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.io.base_files import PlanInPipeline

__all__ = ["parser", "build_pipeline", "run", "main", "scan_summary", "format_summary", "manifest_counts"]

log = logging.getLogger("backfill.scan")
DEFAULT_RUNNER = "FnApiRunner"  # the runner beam_options chooses when none is named
ROWS_PER_BUCKET = 250_000
IN_PROCESS = "in-process"  # the manifest's runner when the scan ran without Beam (pipelines/scan_local.py)
# What a scan writes into OUT (_shuffle: where scans before the sealed spill spilled; dropped on a re-run).
OUTPUTS = ("classified", "dead_letter", "summary.json", "manifest.json", "_shuffle")


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill scan", description=__doc__.splitlines()[0])
    p.add_argument(
        "--base", required=True, action="append", help="base file, glob or folder (Avro, Parquet, CSV); repeatable"
    )
    p.add_argument("--out", required=True, help="output folder (local or gs://)")
    add_batch_flags(p)
    add_progress_flag(p)
    p.add_argument(
        "--estimated-rows",
        type=int,
        default=None,
        help="plan the base inside the pipeline, not at launch, and size the shuffles for this many rows "
        "(the launcher reads no base file: an offline Dataflow dry run, a launcher without access)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes of the scan on this machine (default: one per CPU; 1: this process only); "
        "Beam's runners size their own workers",
    )
    return p


def build_pipeline(p, *, splits, policy, as_of, ctx, n_buckets, spill_dir, encoding, batch_size, progress=None):
    """Wire the scan into the Beam pipeline ``p``; returns the ScanOutputs (exposed for tests).

    The run's salt (the key of the cross-record hashes) is drawn inside the job, on a worker: it is in
    no job graph (transforms/scan/composite.py)."""
    from pipelines.io.base_files import ReadSubscriberBase
    from pipelines.progress import NO_PROGRESS
    from transforms.scan.composite import ClassifyRegistrationCompleteness

    progress = NO_PROGRESS if progress is None else progress
    read = p | "ReadBase" >> ReadSubscriberBase(splits, ctx, encoding=encoding, batch_size=batch_size)
    progress.count(read.raw, "read")
    outputs = read.raw | "ClassifyRegistrationCompleteness" >> ClassifyRegistrationCompleteness(
        policy, as_of, ctx, None, n_buckets, spill_dir=spill_dir, reader_dead_letter=read.dead_letter
    )
    progress.count(outputs.classified, "classified")
    return outputs


@dataclasses.dataclass
class _Job:
    """One scan run, as decided before its pipeline runs."""

    args: argparse.Namespace
    options: PipelineOptions | None  # None: no Beam flag given and no Beam job (the in-process scan)
    runner: str  # the runner the options name (beam_options' default when there are none)
    policy: Policy
    as_of: dt.date
    splits: list | PlanInPipeline
    info: InputInfo
    dry_run: bool
    run_id: str
    started: str
    n_buckets: int
    out: str
    spill: bool
    timer: Timer
    workers: int = 0  # worker processes of the in-process scan (pipelines/scan_local.py); 0: the Beam job runs
    stage: str = ""  # where this run writes (publishing's OUT.tmp-RUN); OUT itself in a dry run
    lineage: dict | None = None  # the base's fingerprint (pipelines/io/lineage.py); None: planned in the pipeline

    @property
    def summary_path(self) -> str:
        return join_path(self.stage or self.out, "summary.json")


def _plan_base(args) -> tuple[list | PlanInPipeline, InputInfo]:
    """The base's splits, planned here, or (``--estimated-rows``) left to the pipeline's first step."""
    if args.estimated_rows is None:
        return plan_raw_base(args.base, rows_per_split=ROWS_PER_SPLIT, encoding=args.encoding)  # a merged one refused
    from pipelines.io.base_files import PlanInPipeline  # the Beam job's first step plans the base

    # the pipeline plans the base (and refuses a merged one); nothing is read here
    planned = PlanInPipeline(tuple(args.base), args.encoding, refuse_merged=True)
    return planned, InputInfo(args.base, [], [], args.estimated_rows)


def _prepare(argv) -> _Job:
    """Parse and check the arguments, plan the base, choose the run id, the buckets and the spill."""
    args, beam_args = split_beam_flags(parser(), argv)
    timer = Timer()
    as_of = args.as_of or parse_as_of(None)
    out = args.out.rstrip("/")
    check_apart(out, _inputs(args))  # before the base is read: real paths, one line
    policy = load_policy(args.policy)
    splits, info = _plan_base(args)  # a merged base is refused before anything is written
    run_id, started = new_run("scan")
    options = _beam_options(args, beam_args, run_id)
    runner = DEFAULT_RUNNER if options is None else runner_name(options)
    if args.spill == "on" and runner not in LOCAL_RUNNERS:
        raise UserError("--spill on needs a local runner: the spill is a private local folder")
    spill = args.spill != "off" and runner in LOCAL_RUNNERS
    dry_run = options is not None and _dry_run(options)
    workers = _workers(args, beam_args, dry_run)
    if not dry_run:
        check_owned(out, "scan")
    return _Job(
        args=args,
        options=options,
        runner=runner,
        policy=policy,
        as_of=as_of,
        splits=splits,
        info=info,
        # A Dataflow dry run (--dry_run=True) builds the job and runs nothing: no output is touched or read back.
        dry_run=dry_run,
        run_id=run_id,
        started=started,
        n_buckets=args.shuffle_buckets or max(1, math.ceil(info.estimated_rows / ROWS_PER_BUCKET)),
        out=out,
        spill=spill,
        timer=timer,
        workers=workers,
        lineage=base_lineage(info.files) if isinstance(splits, list) else None,
    )


def _beam_options(args, beam_args: list[str], run_id: str) -> PipelineOptions | None:
    """Beam's options from the Beam flags (checked by Beam), or None when no Beam flag is given and the scan
    runs in this process: then the runner is the default local one, no dry run, and Beam is not imported."""
    if not beam_args and args.spill != "off" and args.estimated_rows is None:
        return None
    return beam_options(beam_args, step="scan", run_id=run_id)


def _dry_run(options: PipelineOptions) -> bool:
    from apache_beam.options.pipeline_options import TestOptions

    return bool(options.view_as(TestOptions).dry_run)


def _workers(args, beam_args: list[str], dry_run: bool) -> int:
    """The in-process scan's worker processes, or 0 when the Beam job runs: a remote runner, Beam's local
    worker options, ``--spill off`` (only Beam shuffles in memory), planning in the pipeline, a dry run."""
    beam_job = not runs_in_process(beam_args) or args.spill == "off" or args.estimated_rows is not None or dry_run
    if beam_job:
        if args.workers is not None:
            raise UserError(
                "--workers sizes the scan on this machine; with --spill off, --estimated-rows, a dry run, "
                "Beam's worker options or a remote runner the Beam job runs: size it with the runner's options"
            )
        return 0
    from pipelines.task_pool import default_workers

    return args.workers or default_workers()


def _inputs(args) -> dict:
    """Every path the scan reads, by flag: --out may be none of them, contain none, lie inside none."""
    return {"--base": args.base, "--policy": args.policy}


_IDENTITY = ("doc_type", "doc_number", "name", "address")  # the identity columns every line's check needs


def _log_plan(job: _Job) -> None:
    info, planned_here = job.info, isinstance(job.splits, list)
    log.info(
        "scan %s: %s %s, ~%s rows in %s, %s bucket(s), runner %s, policy %s, as of %s",
        job.run_id,
        f"{len(info.files):,}",
        "file(s)" if planned_here else "path(s)",
        f"{info.estimated_rows:,}",
        f"{len(job.splits):,} split(s)" if planned_here else "splits planned in the pipeline",
        f"{job.n_buckets:,}",
        job.runner,
        job.policy.version,
        job.as_of,
    )
    if info.ignored_columns:
        log.info("scan: ignoring column(s) beyond the contract: %s", ", ".join(info.ignored_columns))
    absent = [c for c in _IDENTITY if c in info.missing_identity_columns]
    if absent:  # under a header that is none of its names (联系地址...) every line would need registration
        log.warning("scan: %s: no such column in (a file of) the base, absent on every line of it", ", ".join(absent))


def _run_pipeline(job: _Job, pub: Publication) -> None:
    """Classify the base; write classified/, dead_letter/, summary.json and (checked in the job) manifest.json
    into the staged folder."""
    ctx = DeadLetterContext("scan", job.run_id, job.started)
    header = {
        "step": "scan",
        "run_id": job.run_id,
        "as_of": job.as_of.isoformat(),
        "policy_version": job.policy.version,
        "ignored_columns": job.info.ignored_columns,
        "missing_identity_columns": job.info.missing_identity_columns,
    }
    if job.workers:
        _run_in_process(job, pub, ctx, header)
    else:
        _run_beam(job, pub, ctx, header)


def _run_in_process(job: _Job, pub: Publication, ctx: DeadLetterContext, header: dict) -> None:
    """The same outputs from worker processes of this machine, without Beam (pipelines/scan_local.py)."""
    from pipelines.scan_local import run_in_process

    counts = run_in_process(job, ctx, job.workers, job.args.progress_seconds)
    write_summary(counts, job.summary_path, header)
    finish(counts, pub, _manifest(job), manifest_counts, job.timer.started)


def _run_beam(job: _Job, pub: Publication, ctx: DeadLetterContext, header: dict) -> None:
    """The Beam job: classified/, dead_letter/, summary.json and, its balance checked in the job, the manifest."""
    import apache_beam as beam

    from pipelines.io.base_files import PlanInPipeline
    from pipelines.io.finalize import Finalize
    from pipelines.progress import progress

    out = job.stage or job.out
    # The spill: sealed under a per-run key in a private local folder, never under OUT (transforms/core/shuffle.py).
    phases = dict.fromkeys(("read", "classified"), job.info.estimated_rows)
    with (
        spill_area("scan") if job.spill and not job.dry_run else contextlib.nullcontext() as spill_dir,
        progress("scan", job.run_id, phases, job.options, job.args.progress_seconds) as prog,
    ):
        with beam.Pipeline(options=job.options) as p:
            outputs = build_pipeline(
                p,
                splits=job.splits,
                policy=job.policy,
                as_of=job.as_of,
                ctx=ctx,
                n_buckets=job.n_buckets,
                spill_dir=spill_dir,
                encoding=job.args.encoding,
                batch_size=job.args.batch_size,
                progress=prog,
            )
            written = [
                outputs.classified
                | "WriteClassified"
                >> beam.io.WriteToParquetBatched(
                    join_path(out, "classified", "part"),
                    schema=arrow_schema("classified_line"),
                    file_name_suffix=".parquet",
                ),
                write_dead_letters(outputs.dead_letter, join_path(out, "dead_letter", "part")),
            ]
            planned = None
            if isinstance(job.splits, PlanInPipeline):
                planned = beam.pvalue.AsSingleton(
                    p | "BaseFiles" >> beam.Create([job.splits]) | "PlanBase" >> beam.Map(PlanInPipeline.info)
                )
            written.append(
                outputs.counts | "WriteSummary" >> beam.Map(write_summary, job.summary_path, header, planned)
            )
            outputs.counts | "Finalize" >> Finalize(
                pub, _manifest(job), manifest_counts, after=written, started=job.timer.started
            )


def _manifest(job: _Job) -> dict:
    """What the manifest says that is known before the run; the job adds the counts (Finalize)."""
    out = job.out  # the paths it records are OUT's; it is written into the staged folder
    return {
        "step": "scan",
        "run_id": job.run_id,
        "started": job.started,
        "as_of": job.as_of.isoformat(),
        "policy": policy_block(job.policy),
        "inputs": {
            "base": job.info.files,
            "encoding": job.args.encoding,
            "estimated_rows": job.info.estimated_rows,
        },
        **({"lineage": job.lineage} if job.lineage else {}),  # which base this is: notify and report compare it
        "outputs": {
            "classified": join_path(out, "classified"),
            "dead_letter": join_path(out, "dead_letter"),
            "summary": join_path(out, "summary.json"),  # not the staged folder's, gone once switched in
        },
        "runner": IN_PROCESS if job.workers else job.runner,
        **({"workers": job.workers} if job.workers else {}),
        "shuffle": {"buckets": job.n_buckets, "spill": job.spill},
        "timings": {"plan_seconds": round(time.time() - job.timer.started, 3)},
    }


def run(argv=None) -> dict:
    """Run a scan; returns its summary.

    The run writes beside OUT and switches its output in at the end (pipelines/io/publish.py): the previous
    output stays whole and readable until then, and stays as it was if the run fails or does not balance."""
    job = _prepare(argv)
    _log_plan(job)
    if job.dry_run:  # builds the job as it would run, runs nothing: no output is touched or read back
        pub = Publication(job.out, f"{job.out}.tmp-{job.run_id}", "scan", job.run_id, produces=OUTPUTS)
        job.stage = pub.stage
        _run_pipeline(job, pub)
        return {"dry_run": True, "run_id": job.run_id, "runner": job.runner}
    with publishing(job.out, "scan", job.run_id, inputs=_inputs(job.args), produces=OUTPUTS) as pub:
        job.stage = pub.stage
        _run_pipeline(job, pub)  # the job checks the balance and writes the manifest (pipelines/io/finalize.py)
        summary = read_json(pub.written("summary.json"))
    return summary


def main(argv=None) -> int:
    def body(argv):
        summary = run(argv)
        if summary.get("dry_run"):
            print(f"scan {summary['run_id']}: dry run on {summary['runner']}: the job was built, not run")
            return 0
        print(format_summary(summary))
        return 0

    return run_main("backfill scan", body, argv)


if __name__ == "__main__":
    sys.exit(main())
