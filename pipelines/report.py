"""backfill report: completion analytics and agent compliance over the scan, notify and merge outputs.

    backfill report --scan out/scan --merged out/merge [--notify out/notify] [--campaign campaign.yaml] \\
        [--earlier-merges out/merge-1201 ...] [--as-of YYYY-MM-DD] [--previous out/report-1201] \\
        [--workers N] --out out/report [Beam flags...]
    backfill report --self-inspection --year 2026 --manifests out [...] --out out/inspection

``--merged`` (old name ``--merge``) is the live state: a merge output, or that of ``compact`` or
``retention`` after it. What is known before the job (the inputs checked, the
campaign of the notify runs that sent, the previous report, a stale merge) is
``pipelines/report_inputs.py``.

The per-line work is a Beam job (``pipelines/report_job.py``; the local
runner unless ``--runner`` says otherwise): the scan's needed lines, the
merged base, the notify history and its receipts joined by bucket of line ids, the events
and dead letters of the merges by bucket of event ids, each worker holding
one bucket; it leaves small tables of counts (facts), from which its last
step draws every table and the page. Memory stays flat in the base's size.
On a local runner without Beam's worker options the same steps run without
Beam (``pipelines/report_local.py``), shared with ``--workers N`` forked
worker processes (default one per CPU).

Writes ``OUT/parquet/<table>/as_of=<date>/`` (hive-partitioned by report date,
so daily reports into one folder build a history a query engine reads),
``OUT/csv/<table>.csv``, ``OUT/report.html`` (one self-contained page:
charts embedded) and ``OUT/manifest.json`` (written by the job once its
counts balance). The figures are defined in ``transforms/compliance/report.py``;
no identity value is read.

The report refuses inputs that do not belong together (a merge of another
base, notices of another campaign or of no campaign to be found, a scan made
after the campaign started or after the merge) with a one-line error, rather
than chart wrong numbers; a merge older than the report date by more than a
day is a warning, on the page and in the last line printed.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from typing import TYPE_CHECKING, NamedTuple

from pipelines.flags import add_progress_flag, runs_in_process
from pipelines.common import ArgumentParser, UserError, beam_options, is_local_runner, new_run, parse_as_of, run_main
from pipelines.common import runner_name, split_beam_flags
from pipelines.manifest import policy_block, read_json
from pipelines.io import report_files as report_io
from pipelines.io.publish import check_apart, check_owned, publishing
from pipelines.io.report_previous import previous_headline
from pipelines.report_finish import MAX_NOT_IN_MERGE, ReportFinish, summarise
from pipelines.report_inputs import ReportInputs, ReportPlan, campaign_facts, check_dates, read_inputs
from pipelines.report_inputs import report_context
from pipelines.report_inputs import stale_warnings

if TYPE_CHECKING:
    from transforms.scan.policy import Policy

__all__ = ["parser", "run", "main", "MAX_NOT_IN_MERGE", "ROWS_PER_BUCKET"]

ROWS_PER_BUCKET = 200_000  # lines per bucket of the join: a bucket (needed lines, base rows, notices) is one worker's
IN_PROCESS_ROWS_PER_BUCKET = 500_000  # in this process: a bucket at a time, in memory (peak flat in the base's size)
IN_PROCESS = "in-process"  # the manifest's runner when no Beam job ran


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill report", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--scan", help="the campaign's first scan (its output folder)")
    p.add_argument(
        "--merged",
        "--merge",
        dest="merge",
        metavar="DIR",
        help="the latest merge output, or of compact or retention after it (its base is the state now)",
    )
    p.add_argument(
        "--base-changed",
        action="store_true",
        help="--merged descends from another export of the subscriber base than the scan read (a newer one): "
        "go on with a warning instead of refusing",
    )
    p.add_argument(
        "--earlier-merges",
        nargs="*",
        default=[],
        metavar="DIR",
        help="earlier daily merge outputs, or a pattern such as out/merge/* (merges before --merged's "
        "date): their events and dead letters count for the agents",
    )
    p.add_argument("--notify", help="the notify output folder (history of the waves sent)")
    p.add_argument("--campaign", help="campaign file (default: the one the notify runs used)")
    p.add_argument("--as-of", type=parse_as_of, default=None, help="report date (default: the merge's as-of date)")
    p.add_argument("--policy", default=None, help="policy YAML (agent thresholds; default: the Decree 25 policy)")
    p.add_argument(
        "--previous",
        metavar="DIR",
        help="the previous report's folder, for the change since then (default: OUT's own earlier days, "
        "else the report folders beside OUT)",
    )
    _engine_flags(p)
    p.add_argument("--self-inspection", action="store_true", help="the annual self-inspection (Art. 15) instead")
    p.add_argument("--year", type=int, help="self-inspection: the year")
    p.add_argument(
        "--manifests",
        nargs="*",
        default=[],
        metavar="DIR",
        help="self-inspection: folders searched for run manifests and audit logs",
    )
    p.add_argument(
        "--keys",
        action="append",
        default=None,
        help="self-inspection: keyset file whose audit key verifies the audit logs' chains; repeatable",
    )
    add_progress_flag(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _engine_flags(p: ArgumentParser) -> None:
    """How the per-line work runs: its buckets, their spill, the worker processes on this machine."""
    p.add_argument(
        "--shuffle-buckets", type=int, default=None, help="buckets of the joins (default: from the scan's size)"
    )
    p.add_argument(
        "--spill",
        choices=["auto", "on", "off"],
        default="auto",
        help="spill the joins' payloads to sealed local files (auto: on for local runners)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes of the report on this machine (default: one per CPU; 1: this process only); "
        "Beam's runners size their own workers",
    )


def run(argv=None) -> dict:
    args, beam_args = split_beam_flags(parser(), argv, pipeline=lambda a: not a.self_inspection)
    if args.self_inspection:
        return _self_inspection(args)
    if not args.scan:
        raise UserError("--scan is required: the campaign's first scan output folder")
    if args.shuffle_buckets is not None and args.shuffle_buckets < 1:
        raise UserError("--shuffle-buckets must be at least 1")
    check_apart(args.out, _inputs(args))  # real paths, before anything is read
    check_owned(args.out, "report")
    began = time.time()
    run_id, started = new_run("report")
    policy = _load_policy(args.policy)
    read = read_inputs(args)
    facts = campaign_facts(read.campaign, read.scan.as_of)
    as_of = args.as_of or (read.merge.as_of if read.merge else None) or read.scan.as_of
    check_dates(read, as_of, facts, args)
    engine = _engine(args, beam_args, run_id)
    plan = ReportPlan(
        scan=read.scan,
        merge=read.merge,
        notify=read.notify,
        campaign_id=read.campaign_id,
        timezone=facts.timezone if facts else "Asia/Shanghai",
        past_on=bool(facts and facts.past_deadline(as_of)),
        n_buckets=args.shuffle_buckets or max(1, math.ceil(read.scan.rows / engine.rows_per_bucket)),
    )
    engine = _sized(engine, plan)
    previous = previous_headline(args.out, as_of, read.campaign_id, args.previous)
    # Written beside OUT (with the Parquet partitions of other days linked in) and switched in at the end
    # (pipelines/io/publish.py): a failed or unbalanced run leaves the previous report whole.
    with publishing(args.out, "report", run_id, inputs=_inputs(args), produces=OUTPUTS, seed=("parquet",)) as pub:
        report_io.drop_partitions(pub.stage, as_of)  # a re-run of the day replaces its partitions
        warnings = stale_warnings(read.merge, as_of)
        header = _header(args, read, run_id, started, as_of, policy, engine, plan, pub, began, warnings)
        finishing = _finishing(args, read, policy, facts, as_of, previous, pub, header, warnings, began)
        watch = (run_id, args.progress_seconds)
        if engine.options is None:
            from pipelines.report_local import run_in_process

            run_in_process(plan, finishing, engine.spill, watch, engine.workers)
        else:
            _run_job(engine.options, plan, finishing, engine.spill, watch)
    return read_json(pub.final(pub.path("manifest.json")))  # written by the job, its balances checked there


class _Engine(NamedTuple):
    options: object | None  # Beam's PipelineOptions; None: the report runs in this process
    runner: str  # as the manifest names it
    spill: bool
    rows_per_bucket: int
    workers: int = 0  # worker processes of the in-process run (pipelines/report_local.py); 0: the Beam job


def _engine(args, beam_args: list[str], run_id: str) -> _Engine:
    """Where the per-line work runs, whether its joins spill, the lines per bucket of the joins, the workers."""
    if runs_in_process(beam_args):
        from pipelines.task_pool import default_workers

        workers = args.workers or default_workers()
        return _Engine(None, IN_PROCESS, args.spill != "off", IN_PROCESS_ROWS_PER_BUCKET, workers)
    if args.workers is not None:
        raise UserError(
            "--workers sizes the report on this machine; with Beam's worker options or a remote runner the "
            "Beam job runs: size it with the runner's options"
        )
    options = beam_options(beam_args, step="report", run_id=run_id)
    if args.spill == "on" and not is_local_runner(options):
        raise UserError("--spill on needs a local runner: the spill is a private local folder")
    spill = args.spill != "off" and is_local_runner(options)
    return _Engine(options, runner_name(options), spill, ROWS_PER_BUCKET)


def _sized(engine: _Engine, plan: ReportPlan) -> _Engine:
    """The in-process run's workers share spilled buckets (three reads, then a task per bucket): none more than
    that work, and this process alone when the buckets are kept in memory."""
    if not engine.workers:
        return engine
    several = engine.spill and plan.n_buckets > 1
    return engine._replace(workers=min(engine.workers, max(plan.n_buckets, 3)) if several else 1)


def _finishing(args, read, policy, facts, as_of, previous, pub, header, warnings, began) -> ReportFinish:
    """What the job's last step needs, known now (picklable)."""
    return ReportFinish(
        pub=pub,
        manifest=header,
        summarise=functools.partial(summarise, scan=args.scan, merge=args.merge),
        campaign=facts,
        scan_as_of=read.scan.as_of,
        as_of=as_of,
        thresholds=dict(policy.agents),
        merge_given=read.merge is not None,
        events_recorded=bool(read.merge and read.merge.events is not None),
        events_missing=tuple(read.merge.events_missing if read.merge else ()),
        notify_given=read.notify is not None,
        started=began,
        context=report_context(read, policy, previous),
        live_step=read.merge.step if read.merge else "merge",
        warnings=warnings,
    )


def _run_job(options, plan, finishing: ReportFinish, spill: bool, watch: tuple[str, float]) -> None:
    """Run the report's job; ``watch``: (run id, --progress-seconds) of its progress lines."""
    import apache_beam as beam

    from pipelines.progress import progress
    from pipelines.report_job import build_pipeline
    from transforms.core.shuffle import spill_area

    run_id, every = watch
    # The spill of the joins: sealed under a per-run key in a private local folder, never under OUT.
    lines = progress("report", run_id, {"read": plan.scan.rows}, options, every)
    with spill_area("report") if spill else contextlib.nullcontext() as spill_dir, lines as prog:
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, plan, finishing, spill_dir, prog)


# What a report writes into OUT; parquet/ keeps the partitions of other report days.
OUTPUTS = ("parquet", "csv", "report.html", "manifest.json")
OUTPUT_PATHS = {"html": "report.html", "parquet": "parquet", "csv": "csv"}  # as the manifest names them


def _inputs(args) -> dict:
    """Every path the report reads, by flag: --out may be none of them, contain none, lie inside none."""
    return {
        "--scan": args.scan,
        "--merged": args.merge,
        "--earlier-merges": args.earlier_merges,
        "--notify": args.notify,
        "--campaign": args.campaign,
        "--policy": args.policy,
        "--previous": args.previous,
    }


def _load_policy(path: str | None) -> Policy:
    from transforms.scan.policy import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as exc:
        raise UserError(str(exc)) from None


def _header(args, read: ReportInputs, run_id, started, as_of, policy: Policy, engine, plan, pub, began, warnings):
    """What the manifest says that is known before the job; the job adds the findings, figures and counts."""
    return {
        "step": "report",
        "run_id": run_id,
        "started": started,
        "as_of": as_of.isoformat(),
        "campaign_id": plan.campaign_id,
        "policy": policy_block(policy, source=False),
        "inputs": {
            "scan": args.scan,
            "scan_run_id": read.scan.run_id,
            "merge": args.merge,
            "merge_run_id": read.merge.run_id if read.merge else None,
            "merge_step": read.merge.step if read.merge else None,
            "earlier_merges": args.earlier_merges,
            "notify": args.notify,
            "campaign": read.campaign.source if read.campaign else None,
        },
        "outputs": {key: pub.final(pub.path(name)) for key, name in OUTPUT_PATHS.items()},
        "runner": engine.runner,
        **({"workers": engine.workers} if engine.workers else {}),
        "shuffle": {"buckets": plan.n_buckets, "spill": engine.spill},
        "warnings": list(warnings),
        "timings": {"plan_seconds": round(time.time() - began, 3)},
    }


def _self_inspection(args) -> dict:
    if args.year is None or not args.manifests:
        raise UserError("--self-inspection needs --year Y and --manifests DIR [DIR ...]")
    from pipelines.self_inspection import self_inspection

    return self_inspection(args.manifests, args.year, args.out, args.keys)


def format_summary(manifest: dict) -> str:
    if manifest.get("step") != "report":
        from pipelines.self_inspection import format_summary as inspection_summary

        return inspection_summary(manifest)
    c = manifest["completion"]
    rate = f"{100 * c['completion_rate']:.1f}%" if c["completion_rate"] is not None else "n/a"
    lines = [
        f"report {manifest['run_id']}: as of {c['report_date']}, campaign {c['campaign_id'] or '(none)'}",
        f"  completion: {c['complete']:,} of {c['needed']:,} lines that needed registration are COMPLETE "
        f"({rate}); "
        f"{c['remaining']:,} remaining, {c['past_deadline']:,} past the deadline",
        f"  agents over a threshold: {manifest['counts'].get('agents_over_threshold', 0):,}",
    ]
    lines += [f"  note: {text}" for text in manifest["findings"] if text not in manifest.get("warnings", ())]
    lines.append(f"  -> {manifest['outputs']['html']}")
    lines += [f"warning: {text}" for text in manifest.get("warnings", ())]  # the exit line says it
    return "\n".join(lines)


def main(argv=None) -> int:
    def body(argv):
        manifest = run(argv)
        print(format_summary(manifest))
        return 0

    return run_main("backfill report", body, argv)


if __name__ == "__main__":
    sys.exit(main())
