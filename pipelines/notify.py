"""backfill notify: plan a campaign wave's SMS, call and announcement jobs; record receipts.

    backfill notify --scan out/scan --campaign examples/campaign.yaml --wave 1 --out out/notify \\
        [--dry-run] [--topic projects/P/topics/T] [--merged out/merge] [--suppress dnd.txt] [--as-of D]
    backfill notify --receipts 'receipts/*.csv' --out out/notify
    backfill notify --receipts-subscription projects/P/subscriptions/S --out out/notify
    python -m pipelines.notify ... --runner DataflowRunner --project P --region R \\
        --temp_location gs://bucket/tmp --setup_file ./setup.py

Writes ``OUT/jobs/{sms,call,announcement}/*.avro`` (or publishes them to
``--topic``), ``OUT/history/`` (what was handed over, and receipts) and
``OUT/manifest.json`` (also kept as ``OUT/runs/RUN.json``). ``--dry-run``
writes and sends nothing: it prints the jobs by channel, region and send day,
SMS segments, the estimated cost and sample messages.

A wave written to files on a local runner runs in this process and its forked workers
(``pipelines/notify_local.py``, ``--workers N``); ``--topic``, ``--dry-run``, ``--spill off``, Beam's
worker options or a remote runner run the Beam job (``pipelines/notify_job.py``). Both engines call the
same per-batch steps (``transforms/notify/batch_steps.py``) and give the same jobs, history and counts.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile

# Beam is imported where the Beam job is built (pipelines/notify_job.py): a wave planned in this process
# (pipelines/notify_local.py) never imports it (tests/test_notify_local.py), its import alone costs seconds.
from pipelines.common import ArgumentParser, UserError, is_local_runner, new_run, parse_as_of
from pipelines.common import remove_tree, run_main, runner_name, split_beam_flags
from pipelines.flags import add_progress_flag, shown_value
from pipelines.manifest import Timer, read_json
from pipelines.notify_manifest import _mode, _save, manifest_static
from pipelines.notify_plan import WavePlan, prepare_wave
from pipelines.io.notify_files import HISTORY_JOBS, HISTORY_RECEIPTS, history_splits
from pipelines.io.folder_lock import one_run_at_a_time
from pipelines.io.paths import join_path
from pipelines.io.publish import check_apart, check_owned, writing_into
from pipelines.render.notify_text import format_dry_run, format_receipts, format_result
from transforms.core.deadletter import DeadLetterContext
from transforms.core.spill_folders import spill_area

__all__ = ["parser", "run", "main", "read_json"]

log = logging.getLogger("backfill.notify")
# Two notify runs into one OUT would read the same history, plan the same wave and hand every job over again (or
# record the same receipts twice): the second is refused before it reads the history.
_ONE_RUN = "another notify run is writing into it; run one notify at a time per folder (nothing was sent by this one)"


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill notify", description=__doc__.splitlines()[0])
    p.add_argument(
        "--scan", "--classified", dest="classified", metavar="DIR", help="the scan's output folder (its classified/)"
    )
    p.add_argument("--campaign", help="campaign file (YAML)")
    p.add_argument("--wave", type=int, help="wave number of the campaign to plan")
    p.add_argument("--out", required=True, help="output folder: jobs, history, manifest (local or gs://)")
    p.add_argument("--dry-run", action="store_true", help="write and send nothing; print counts, cost, samples")
    p.add_argument("--topic", help="publish jobs to this Pub/Sub topic (projects/P/topics/T) instead of files")
    p.add_argument(
        "--merged",
        "--registered",
        dest="registered",
        metavar="DIR",
        help="lines registered since: a merge, compact or retention output (or its base/), or a list of line ids",
    )
    p.add_argument(
        "--base-changed",
        action="store_true",
        help="--merged descends from another export of the subscriber base than the scan read (a newer one): "
        "go on with a warning instead of refusing",
    )
    p.add_argument("--suppress", help="do-not-SMS numbers, one per line")
    p.add_argument(
        "--policy", default=None, help="policy YAML whose GB/T 2260 table names {region} (default: Decree 25)"
    )
    p.add_argument("--as-of", type=parse_as_of, default=None, help="today's date for the plan (default: today)")
    p.add_argument("--receipts", action="append", help="delivery receipts (CSV or JSON Lines; file, folder, glob)")
    p.add_argument("--receipts-subscription", help="pull delivery receipts from projects/P/subscriptions/S")
    p.add_argument("--samples", type=int, default=3, help="rendered samples per template in the dry run")
    p.add_argument("--show-regions", type=int, default=20, help="regions in the dry run's table (0: all)")
    p.add_argument("--shuffle-buckets", type=int, default=None, help="buckets of the line shuffle")
    p.add_argument("--spill", choices=["auto", "on", "off"], default="auto", help="spill shuffles to files")
    p.add_argument("--publish-batch", type=int, default=1000, help="Pub/Sub messages per publish request")
    p.add_argument(
        "--allow-late-sends",
        action="store_true",
        help="send jobs that the daily caps push past the deadline or into the next wave (refused otherwise)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes of a wave planned on this machine (default: one per CPU; 1: this process only); "
        "Beam's runners size their own workers",
    )
    add_progress_flag(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _check_args(args) -> bool:
    """Returns True when a wave is to be planned."""
    planning = any(v is not None for v in (args.classified, args.campaign, args.wave))
    receipts = bool(args.receipts or args.receipts_subscription)
    if not planning and not receipts:
        raise UserError("give --scan, --campaign and --wave to plan a wave, or --receipts to record receipts")
    if planning:
        for flag, value in (("--scan", args.classified), ("--campaign", args.campaign), ("--wave", args.wave)):
            if value is None:
                raise UserError(f"{flag} is required to plan a wave")
    if args.dry_run and receipts:
        raise UserError("--dry-run records nothing: record receipts in a run of their own")
    if args.topic or args.receipts_subscription:
        from pipelines.io.pubsub import SUBSCRIPTION_RE, TOPIC_RE
    if args.topic and not TOPIC_RE.match(args.topic):
        raise UserError(f"--topic {shown_value(args.topic)} is not projects/PROJECT/topics/TOPIC")
    if args.receipts_subscription and not SUBSCRIPTION_RE.match(args.receipts_subscription):
        raise UserError(
            f"--receipts-subscription {shown_value(args.receipts_subscription)} is not projects/PROJECT/subscriptions/SUBSCRIPTION"
        )
    return planning


def _record_receipts(args, out: str, ctx: DeadLetterContext) -> dict:
    import pyarrow as pa

    from pipelines.io.pubsub import ack, pull_receipts
    from pipelines.io.receipts import read_receipt_files, record_receipts

    tables, acks = [], []
    if args.receipts:
        tables.append(read_receipt_files(args.receipts))
    if args.receipts_subscription:
        records, acks = pull_receipts(args.receipts_subscription)
        source = args.receipts_subscription
        tables.append(
            pa.table(
                {
                    **{c: pa.array([r[c] for r in records], pa.string()) for c in ("job_id", "status", "at")},
                    "_src_file": pa.array([source] * len(records), pa.string()),
                    "_src_row": pa.array([r["_src_row"] for r in records], pa.int64()),
                }
            )
        )
    counts = record_receipts(out, pa.concat_tables(tables), ctx)
    if acks:  # only now: the receipts are in the history
        ack(args.receipts_subscription, acks)
    return counts


def _runs_pipeline(args) -> bool:
    """A wave is planned (a Beam pipeline); recording receipts alone runs none."""
    return any(v is not None for v in (args.classified, args.campaign, args.wave))


def _parse(argv) -> tuple[argparse.Namespace, list[str]]:
    """The command's arguments and the Beam flags of its pipeline (see pipelines.common.split_beam_flags)."""
    return split_beam_flags(parser(), argv, pipeline=_runs_pipeline)


def _plan_wave(args, plan: WavePlan, out: str, head: dict, timer: Timer) -> dict:
    """Run the wave: jobs written, published or (dry run) only counted, in this process (a local run, see
    notify_plan._workers) or by the Beam job; returns its result."""
    run_id = head["run_id"]
    local = bool(plan.workers) or is_local_runner(plan.options)
    spill = args.spill != "off" and local
    runner = f"in-process ({plan.workers} worker(s))" if plan.workers else runner_name(plan.options)
    log.info(
        "notify %s: campaign %s wave %d, %s classified lines, mode %s, runner %s",
        *(run_id, plan.campaign.campaign_id, plan.wave.wave, f"{plan.rows:,}", _mode(args), runner),
    )
    # The shuffle spill (and a dry run's result) go to a private local folder, sealed under a per-run key,
    # removed at the end or by a later run if this one dies (transforms/core/spill_folders.py); never under OUT.
    with spill_area("notify") if local else contextlib.nullcontext() as area:
        if args.dry_run:
            tmp = area or tempfile.mkdtemp(prefix="notify-")
        else:
            tmp = join_path(out, "_tmp", run_id)
        try:
            static = {**head, **manifest_static(args, plan, out)}
            if plan.workers:
                from pipelines.notify_local import run_in_process

                return run_in_process(args, plan, out, static, timer, area)
            from pipelines.notify_job import run_beam_wave

            spill_dir = join_path(area, "shuffle") if spill else None
            return run_beam_wave(args, plan, out, static, timer, tmp, spill_dir)
        finally:
            if args.dry_run and not area:
                shutil.rmtree(tmp, ignore_errors=True)
            elif not args.dry_run:
                _remove_tmp(out, run_id)


def run(argv=None) -> dict:
    """Run notify; returns its manifest (with the jobs summary under ``summary``)."""
    return _run(*_parse(argv))


def _inputs(args) -> dict:
    """Every path notify reads, by flag: --out may be none of them, contain none, lie inside none."""
    return {
        "--scan": args.classified,
        "--campaign": args.campaign,
        "--merged": args.registered,
        "--suppress": args.suppress,
        "--policy": args.policy,
        "--receipts": args.receipts,
    }


def _run(args, beam_args: list[str]) -> dict:
    planning = _check_args(args)
    timer = Timer()
    out = args.out.rstrip("/")
    check_apart(out, _inputs(args))  # real paths, before anything is read or sent
    if not args.dry_run:
        check_owned(out, "notify")
    run_id, started = new_run("notify")
    manifest: dict = {"step": "notify", "run_id": run_id, "started": started}
    plan = prepare_wave(args, beam_args, run_id) if planning else None  # checked before anything is recorded or sent
    # Notify adds to its folder (jobs, history, runs): never replaced, made private (0600/0700) at the end.
    with contextlib.ExitStack() as held:
        if not args.dry_run:
            held.enter_context(writing_into(out, "notify", run_id, inputs=_inputs(args)))
            held.enter_context(one_run_at_a_time(out, _ONE_RUN))
        if planning:  # a file in the history that is not one: one line, before the wave is started
            history_splits(out, HISTORY_JOBS), history_splits(out, HISTORY_RECEIPTS)
        if args.receipts or args.receipts_subscription:
            manifest["receipts"] = _record_receipts(args, out, DeadLetterContext("notify", run_id, started))
            timer.mark("receipts_seconds")
            _remove_tmp(out, run_id)
            if not planning:
                manifest.update(
                    {
                        "mode": "receipts",
                        "outputs": {"history": join_path(out, *HISTORY_RECEIPTS)},
                        "timings": timer.as_dict(),
                    }
                )
                _save(out, run_id, manifest)
                return manifest
        result = _plan_wave(args, plan, out, manifest, timer)  # the job saves the manifest and checks it
    return {**result["manifest"], "summary": result.get("summary", {})}


def _remove_tmp(out: str, run_id: str) -> None:
    remove_tree(join_path(out, "_tmp", run_id))
    if "://" not in out:  # and the _tmp folder itself, once no other run uses it
        try:
            os.rmdir(os.path.join(out, "_tmp"))
        except OSError:
            pass


def main(argv=None) -> int:
    def body(argv):
        args, beam_args = _parse(argv)
        manifest = _run(args, beam_args)
        if manifest.get("mode") == "receipts":
            print(format_receipts(manifest["receipts"]))
        elif args.dry_run:
            print(format_dry_run(manifest, manifest["summary"], args.show_regions))
        else:
            print(format_result(manifest))
        return 0

    return run_main("backfill notify", body, argv)


if __name__ == "__main__":
    sys.exit(main())
