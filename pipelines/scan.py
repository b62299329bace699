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

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

from pipelines.common import add_batch_flags, ArgumentParser, UserError, beam_options, is_local_runner, new_run
from pipelines.common import parse_as_of, run_main, runner_name, split_beam_flags, write_dead_letters
from pipelines.manifest import Timer, policy_block, read_json, write_json
from pipelines.io.base_files import ROWS_PER_SPLIT, PlanInPipeline, ReadSubscriberBase
from pipelines.io.planning import InputInfo, plan_splits
from pipelines.io.finalize import Finalize
from pipelines.flags import add_progress_flag
from pipelines.progress import NO_PROGRESS, progress
from pipelines.io.publish import Publication, check_apart, check_owned, publishing
from schemas import arrow_schema
from transforms.core.deadletter import DeadLetterContext
from transforms.core.shuffle import spill_area
from transforms.scan.policy import Policy, load_policy
from transforms.scan.composite import ClassifyRegistrationCompleteness

log = logging.getLogger("backfill.scan")
ROWS_PER_BUCKET = 250_000
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
    return p


def manifest_counts(counts: dict) -> tuple[dict, list[str]]:
    """The manifest's counts block and the balance that fails (checked in the job: pipelines/io/finalize.py)."""
    summary = scan_summary(counts, {})
    block = {k: summary[k] for k in ("rows_in", "classified", "dead_letters", "dead_letter_reasons", "balanced")}
    problems = (
        []
        if summary["balanced"]
        else [
            f"rows in ({summary['rows_in']:,}) != classified ({summary['classified']:,}) + dead letters "
            f"({summary['dead_letters']:,})"
        ]
    )
    return block, problems


def _write_summary(counts: dict, path: str, header: dict, info: InputInfo | None = None) -> None:
    write_json(path, scan_summary(counts, header, info))


def scan_summary(counts: dict, header: dict, info: InputInfo | None = None) -> dict:
    """The run's summary.json from the pipeline's counts."""
    if info is not None:  # planned inside the pipeline (--estimated-rows): the columns are known only now
        header = {
            **header,
            "ignored_columns": info.ignored_columns,
            "missing_identity_columns": info.missing_identity_columns,
        }
    malformed = counts.get("dead_letter_reasons", {}).get("ROW_MALFORMED", 0)
    rows_in = counts.get("rows_in", 0) + malformed
    classified = counts.get("classified", 0)
    dead = counts.get("dead_letters", 0)
    summary = {
        **header,
        "rows_in": rows_in,
        "classified": classified,
        "dead_letters": dead,
        "balanced": rows_in == classified + dead,
        "dead_letter_reasons": counts.get("dead_letter_reasons", {}),
        "identity_status": {
            k: counts.get("identity_status", {}).get(k, 0) for k in ("COMPLETE", "MISSING", "INCOMPLETE", "INVALID")
        },
        "needs_registration": counts.get("needs_registration", 0),
        "needs_review": counts.get("needs_review", 0),
        "reasons": dict(sorted(counts.get("reasons", {}).items(), key=lambda kv: (-kv[1], kv[0]))),
        "flags": counts.get("flags", {}),
        "line_type": counts.get("line_type", {}),
        "subscriber_kind": counts.get("subscriber_kind", {}),
        "status": counts.get("status", {}),
    }
    return summary


def build_pipeline(
    p: beam.Pipeline, *, splits, policy, as_of, ctx, n_buckets, spill_dir, encoding, batch_size, progress=NO_PROGRESS
):
    """Wire the scan; returns the ScanOutputs (exposed for tests).

    The run's salt (the key of the cross-record hashes) is drawn inside the job, on a worker: it is in
    no job graph (transforms/scan/composite.py)."""
    read = p | "ReadBase" >> ReadSubscriberBase(splits, ctx, encoding=encoding, batch_size=batch_size)
    progress.count(read.raw, "read")
    outputs = read.raw | "ClassifyRegistrationCompleteness" >> ClassifyRegistrationCompleteness(
        policy, as_of, ctx, None, n_buckets, spill_dir=spill_dir, reader_dead_letter=read.dead_letter
    )
    progress.count(outputs.classified, "classified")
    return outputs


def format_summary(summary: dict) -> str:
    status = summary["identity_status"]
    total = max(summary["classified"], 1)
    lines = [
        f"scan {summary['run_id']}: {summary['rows_in']:,} rows in -> {summary['classified']:,} classified + "
        f"{summary['dead_letters']:,} dead letters ({'balanced' if summary['balanced'] else 'NOT BALANCED'})",
        "  identity: " + ", ".join(f"{k} {v:,} ({100 * v / total:.1f}%)" for k, v in status.items()),
        f"  needs registration {summary['needs_registration']:,}; needs review {summary['needs_review']:,}",
    ]
    top = list(summary["reasons"].items())[:5]
    if top:
        lines.append("  top reasons: " + ", ".join(f"{k} {v:,}" for k, v in top))
    if summary["dead_letter_reasons"]:
        reasons = sorted(summary["dead_letter_reasons"].items())
        lines.append("  dead letters: " + ", ".join(f"{k} {v:,}" for k, v in reasons))
    return "\n".join(lines)


@dataclasses.dataclass
class _Job:
    """One scan run, as decided before its pipeline runs."""

    args: argparse.Namespace
    options: PipelineOptions
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
    stage: str = ""  # where this run writes (publishing's OUT.tmp-RUN); OUT itself in a dry run

    @property
    def summary_path(self) -> str:
        return FileSystems.join(self.stage or self.out, "summary.json")


def _plan_base(args) -> tuple[list | PlanInPipeline, InputInfo]:
    """The base's splits, planned here, or (``--estimated-rows``) left to the pipeline's first step."""
    if args.estimated_rows is None:
        return plan_splits(args.base, rows_per_split=ROWS_PER_SPLIT, encoding=args.encoding)
    if args.estimated_rows < 0:
        raise UserError("--estimated-rows must be at least 0")
    # the pipeline plans the base; nothing is read here
    return PlanInPipeline(tuple(args.base), args.encoding), InputInfo(args.base, [], [], args.estimated_rows)


def _prepare(argv) -> _Job:
    """Parse and check the arguments, plan the base, choose the run id, the buckets and the spill."""
    args, beam_args = split_beam_flags(parser(), argv)
    timer = Timer()
    as_of = args.as_of or parse_as_of(None)
    out = args.out.rstrip("/")
    check_apart(out, _inputs(args))  # before the base is read: real paths, one line
    policy = load_policy(args.policy)
    splits, info = _plan_base(args)
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    run_id, started = new_run("scan")
    options = beam_options(beam_args, step="scan", run_id=run_id)
    if args.spill == "on" and not is_local_runner(options):
        raise UserError("--spill on needs a local runner: the spill is a private local folder")
    spill = args.spill != "off" and is_local_runner(options)
    dry_run = bool(options.view_as(TestOptions).dry_run)
    if not dry_run:
        check_owned(out, "scan")
    return _Job(
        args=args,
        options=options,
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
    )


def _inputs(args) -> dict:
    """Every path the scan reads, by flag: --out may be none of them, contain none, lie inside none."""
    return {"--base": args.base, "--policy": args.policy}


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
        runner_name(job.options),
        job.policy.version,
        job.as_of,
    )
    if info.ignored_columns:
        log.info("scan: ignoring column(s) beyond the contract: %s", ", ".join(info.ignored_columns))


def _run_pipeline(job: _Job, pub: Publication) -> None:
    """Classify the base; write classified/, dead_letter/, summary.json and (checked in the job) manifest.json
    into the staged folder."""
    out, ctx = job.stage or job.out, DeadLetterContext("scan", job.run_id, job.started)
    header = {
        "step": "scan",
        "run_id": job.run_id,
        "as_of": job.as_of.isoformat(),
        "policy_version": job.policy.version,
        "ignored_columns": job.info.ignored_columns,
        "missing_identity_columns": job.info.missing_identity_columns,
    }
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
                    FileSystems.join(out, "classified", "part"),
                    schema=arrow_schema("classified_line"),
                    file_name_suffix=".parquet",
                ),
                write_dead_letters(outputs.dead_letter, FileSystems.join(out, "dead_letter", "part")),
            ]
            planned = None
            if isinstance(job.splits, PlanInPipeline):
                planned = beam.pvalue.AsSingleton(
                    p | "BaseFiles" >> beam.Create([job.splits]) | "PlanBase" >> beam.Map(PlanInPipeline.info)
                )
            written.append(
                outputs.counts | "WriteSummary" >> beam.Map(_write_summary, job.summary_path, header, planned)
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
        "outputs": {
            "classified": FileSystems.join(out, "classified"),
            "dead_letter": FileSystems.join(out, "dead_letter"),
            "summary": job.summary_path,
        },
        "runner": runner_name(job.options),
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
        return {"dry_run": True, "run_id": job.run_id, "runner": runner_name(job.options)}
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
