"""backfill report: completion analytics and agent compliance over the scan, notify and merge outputs.

    backfill report --scan out/scan --merge out/merge [--notify out/notify] [--campaign campaign.yaml] \\
        [--earlier-merges out/merge-1201 ...] [--as-of YYYY-MM-DD] --out out/report [Beam flags...]
    backfill report --self-inspection --year 2026 --manifests out [...] --out out/inspection

The per-line work is a Beam job (``pipelines/report_job.py``; the local
runner unless ``--runner`` says otherwise): the scan's needed lines, the
merged base and the notify history joined by bucket of line ids, the events
and dead letters of the merges by bucket of event ids, each worker holding
one bucket; it leaves small tables of counts (facts), from which its last
step draws every table and the page. Memory stays flat in the base's size.

Writes ``OUT/parquet/<table>/as_of=<date>/`` (hive-partitioned by report date,
so daily reports into one folder build a history a query engine reads),
``OUT/csv/<table>.csv``, ``OUT/report.html`` (one self-contained page:
charts embedded) and ``OUT/manifest.json`` (written by the job once its
counts balance). The figures are defined in ``transforms/compliance/report.py``;
no identity value is read.

The report refuses inputs that do not belong together (a merge of another
base, notices of another campaign, a scan made after the campaign started or
after the merge) with a one-line error, rather than chart wrong numbers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import math
import sys
import time
from typing import TYPE_CHECKING, NamedTuple

from pipelines.common import ArgumentParser, UserError, beam_options, is_local_runner, new_run, parse_as_of, run_main
from pipelines.common import runner_name, split_beam_flags
from pipelines.manifest import policy_block, read_json
from pipelines.io import report_files as report_io
from pipelines.io.publish import check_apart, check_owned, publishing
from pipelines.report_finish import MAX_NOT_IN_MERGE, ReportFinish, summarise
from transforms.compliance.report import CampaignFacts

if TYPE_CHECKING:
    from transforms.notify.campaign import Campaign
    from transforms.scan.policy import Policy

__all__ = ["parser", "run", "main", "MAX_NOT_IN_MERGE", "ROWS_PER_BUCKET"]

ROWS_PER_BUCKET = 200_000  # lines per bucket of the join: a bucket (needed lines, base rows, notices) is one worker's


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill report", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--scan", help="the campaign's first scan (its output folder)")
    p.add_argument("--merge", help="the latest merge output (its base is the state now)")
    p.add_argument(
        "--earlier-merges",
        nargs="*",
        default=[],
        metavar="DIR",
        help="earlier daily merge outputs, or a pattern such as out/merge/* (merges before --merge's "
        "date): their events and dead letters count for the agents",
    )
    p.add_argument("--notify", help="the notify output folder (history of the waves sent)")
    p.add_argument("--campaign", help="campaign file (default: the one the notify runs used)")
    p.add_argument("--as-of", type=parse_as_of, default=None, help="report date (default: the merge's as-of date)")
    p.add_argument("--policy", default=None, help="policy YAML (agent thresholds; default: the Decree 25 policy)")
    p.add_argument(
        "--shuffle-buckets", type=int, default=None, help="buckets of the joins (default: from the scan's size)"
    )
    p.add_argument(
        "--spill",
        choices=["auto", "on", "off"],
        default="auto",
        help="spill the joins' payloads to sealed local files (auto: on for local runners)",
    )
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
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _campaign_facts(campaign: Campaign | None, scan_as_of: dt.date) -> CampaignFacts | None:
    """The campaign's time zone, deadline and waves (None without a campaign file: the job finds the waves)."""
    if campaign is None:
        return None
    waves = tuple((w.wave, w.start) for w in sorted(campaign.waves.values(), key=lambda w: w.wave))
    return CampaignFacts(
        campaign.campaign_id,
        campaign.timezone,
        campaign.deadline,
        waves,
        min([scan_as_of, *(start for _, start in waves)]),
    )


def _check_dates(
    scan_as_of: dt.date,
    merge_as_of: dt.date | None,
    as_of: dt.date,
    facts: CampaignFacts | None,
    scan_dir: str,
    merge_dir: str | None,
) -> None:
    first_wave = min((start for _, start in facts.waves), default=None) if facts else None
    if first_wave is not None and facts.campaign_id and scan_as_of > first_wave:
        raise UserError(
            f"the scan at {scan_dir} is as of {scan_as_of}, after wave 1 of {facts.campaign_id} started "
            f"({first_wave}): give the campaign's first scan"
        )
    if merge_as_of is not None and merge_as_of < scan_as_of:
        raise UserError(
            f"the merge at {merge_dir} is as of {merge_as_of}, before the scan ({scan_as_of}): "
            "give the latest merge of this campaign"
        )
    if merge_as_of is not None and as_of < merge_as_of:
        raise UserError(f"--as-of {as_of} is before the merge's as-of date {merge_as_of}")


class _Read(NamedTuple):
    """The inputs as listed: the outputs of scan, merge and notify, and the campaign they belong to."""

    scan: report_io.ScanOutput
    merge: report_io.MergeOutput | None
    notify: report_io.NotifyOutput | None
    campaign: Campaign | None


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
    read = _read_inputs(args)
    facts = _campaign_facts(read.campaign, read.scan.as_of)
    merge_as_of = read.merge.as_of if read.merge else None
    as_of = args.as_of or merge_as_of or read.scan.as_of
    _check_dates(read.scan.as_of, merge_as_of, as_of, facts, args.scan, args.merge)
    options = beam_options(beam_args)
    if args.spill == "on" and not is_local_runner(options):
        raise UserError("--spill on needs a local runner: the spill is a private local folder")
    spill = args.spill != "off" and is_local_runner(options)
    n_buckets = args.shuffle_buckets or max(1, math.ceil(read.scan.rows / ROWS_PER_BUCKET))
    from pipelines.report_job import ReportPlan

    plan = ReportPlan(
        scan=read.scan,
        merge=read.merge,
        notify=read.notify,
        campaign_id=report_io.campaign_id_for(read.notify, read.campaign),
        timezone=facts.timezone if facts else "Asia/Shanghai",
        past_on=bool(facts and facts.past_deadline(as_of)),
        n_buckets=n_buckets,
    )
    # Written beside OUT (with the Parquet partitions of other days linked in) and switched in at the end
    # (pipelines/io/publish.py): a failed or unbalanced run leaves the previous report whole.
    with publishing(args.out, "report", run_id, inputs=_inputs(args), produces=OUTPUTS, seed=("parquet",)) as pub:
        report_io.drop_partitions(pub.stage, as_of)  # a re-run of the day replaces its partitions
        header = _header(args, read, run_id, started, as_of, policy, options, plan, pub, began)
        finishing = ReportFinish(
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
        )
        _run_job(options, plan, finishing, spill)
    return read_json(pub.final(pub.path("manifest.json")))  # written by the job, its balances checked there


def _run_job(options, plan, finishing: ReportFinish, spill: bool) -> None:
    import apache_beam as beam

    from pipelines.report_job import build_pipeline
    from transforms.core.shuffle import spill_area

    # The spill of the joins: sealed under a per-run key in a private local folder, never under OUT.
    with spill_area("report") if spill else contextlib.nullcontext() as spill_dir:
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, plan, finishing, spill_dir)


# What a report writes into OUT; parquet/ keeps the partitions of other report days.
OUTPUTS = ("parquet", "csv", "report.html", "manifest.json")
OUTPUT_PATHS = {"html": "report.html", "parquet": "parquet", "csv": "csv"}  # as the manifest names them


def _inputs(args) -> dict:
    """Every path the report reads, by flag: --out may be none of them, contain none, lie inside none."""
    return {
        "--scan": args.scan,
        "--merge": args.merge,
        "--earlier-merges": args.earlier_merges,
        "--notify": args.notify,
        "--campaign": args.campaign,
        "--policy": args.policy,
    }


def _load_policy(path: str | None) -> Policy:
    from transforms.scan.policy import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as exc:
        raise UserError(str(exc)) from None


def _read_inputs(args) -> _Read:
    """List the scan, merge and notify outputs, load the campaign; refuse notices of another base or campaign."""
    scan = report_io.read_scan(args.scan)
    merge = report_io.read_merge(args.merge, args.earlier_merges) if args.merge else None
    notify = report_io.read_notify(args.notify) if args.notify else None
    campaign = report_io.load_campaign_for(args.campaign, notify)
    report_io.check_notify_matches(notify, scan, campaign)
    return _Read(scan, merge, notify, campaign)


def _header(args, read: _Read, run_id, started, as_of, policy: Policy, options, plan, pub, began) -> dict:
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
            "earlier_merges": args.earlier_merges,
            "notify": args.notify,
            "campaign": read.campaign.source if read.campaign else None,
        },
        "outputs": {key: pub.final(pub.path(name)) for key, name in OUTPUT_PATHS.items()},
        "runner": runner_name(options),
        "shuffle": {"buckets": plan.n_buckets, "spill": args.spill != "off" and is_local_runner(options)},
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
        f"  agents over a threshold: {manifest['counts'].get('agents_over_threshold', 0)}",
    ]
    lines += [f"  note: {text}" for text in manifest["findings"]]
    lines.append(f"  -> {manifest['outputs']['html']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    def body(argv):
        manifest = run(argv)
        print(format_summary(manifest))
        return 0

    return run_main("backfill report", body, argv)


if __name__ == "__main__":
    sys.exit(main())
