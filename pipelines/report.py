"""backfill report: completion analytics and agent compliance over the scan, notify and merge outputs.

    backfill report --scan out/scan --merge out/merge [--notify out/notify] [--campaign campaign.yaml] \\
        [--earlier-merges out/merge-1201 ...] [--as-of YYYY-MM-DD] --out out/report
    backfill report --self-inspection --year 2026 --manifests out [...] --out out/inspection

Writes ``OUT/parquet/<table>/as_of=<date>/part-0.parquet`` (hive-partitioned by
report date, so daily reports into one folder build a history a query engine
reads), ``OUT/csv/<table>.csv``, ``OUT/report.html`` (one self-contained page:
charts embedded) and ``OUT/manifest.json``. The figures are defined in
``transforms/compliance/report.py``; no identity value is read.

The report refuses inputs that do not belong together (a merge of another
base, notices of another campaign, a scan made after the campaign started or
after the merge) with a one-line error, rather than chart wrong numbers.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import TYPE_CHECKING, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.common import ArgumentParser, UserError, new_run, parse_as_of, run_main, split_beam_flags
from pipelines.manifest import Timer, policy_block, write_json
from pipelines.io import report_files as report_io
from pipelines.io.publish import check_apart, check_owned, publishing
from transforms.compliance.report import CampaignFacts, ReportInputs, completion_tables

if TYPE_CHECKING:
    from transforms.notify.campaign import Campaign
    from transforms.scan.policy import Policy

__all__ = ["parser", "run", "main", "MAX_NOT_IN_MERGE"]

# Needed lines a merged base may lack (its own dead letters) before the report calls it another base's.
MAX_NOT_IN_MERGE = 0.01


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


def _facts(campaign, history: pa.Table | None, scan_as_of: dt.date) -> CampaignFacts:
    if campaign is None:
        waves = sorted(set(history["wave"].to_pylist())) if history is not None and history.num_rows else []
        return CampaignFacts(None, "Asia/Shanghai", None, tuple((w, scan_as_of) for w in waves), scan_as_of)
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
    facts: CampaignFacts,
    scan_dir: str,
    merge_dir: str | None,
) -> None:
    first_wave = min((start for _, start in facts.waves), default=None)
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
    """The inputs as read: the outputs of scan, merge and notify, and the campaign they belong to."""

    scan: report_io.ScanOutput
    merge: report_io.MergeOutput | None
    notify: report_io.NotifyOutput | None
    campaign: Campaign | None
    history: pa.Table | None  # this campaign's notices
    other_campaigns: int  # notices of other campaigns left out


class _Computed(NamedTuple):
    """The report's tables and the figures the checks and findings use."""

    facts: CampaignFacts
    as_of: dt.date
    tables: dict[str, pa.Table]
    needed: int
    missing: int  # needed lines the merged base does not hold


def run(argv=None) -> dict:
    args, _ = split_beam_flags(parser(), argv, pipeline=False)
    if args.self_inspection:
        return _self_inspection(args)
    if not args.scan:
        raise UserError("--scan is required: the campaign's first scan output folder")
    check_apart(args.out, _inputs(args))  # real paths, before anything is read
    check_owned(args.out, "report")
    timer = Timer()
    run_id, started = new_run("report")
    policy = _load_policy(args.policy)
    read = _read_inputs(args)
    timer.mark("read")
    done = _compute(args, read, policy.agents)
    timer.mark("computed")
    findings = _findings(
        read.merge, read.notify, done.missing, read.other_campaigns, done.facts, done.as_of, done.needed
    )
    header = _header(args, read, done, run_id, started, policy, findings)
    # Written beside OUT (with the Parquet partitions of other days linked in) and switched in at the end
    # (pipelines/io/publish.py): a failed run leaves the previous report whole.
    with publishing(args.out, "report", run_id, inputs=_inputs(args), produces=OUTPUTS, seed=("parquet",)) as pub:
        manifest = _write_outputs(pub.stage, done, header, policy.agents, timer)
        manifest["outputs"] = {name: pub.final(path) for name, path in manifest["outputs"].items()}
        write_json(pub.path("manifest.json"), manifest)  # last: the manifest says the output is whole
    return manifest


# What a report writes into OUT; parquet/ keeps the partitions of other report days.
OUTPUTS = ("parquet", "csv", "report.html", "manifest.json")


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
    """Read scan, merge and notify outputs and the campaign; refuse notices of another base or campaign."""
    scan = report_io.read_scan(args.scan)
    merge = report_io.read_merge(args.merge, args.earlier_merges) if args.merge else None
    notify = report_io.read_notify(args.notify) if args.notify else None
    campaign = report_io.load_campaign_for(args.campaign, notify)
    history, other_campaigns = report_io.campaign_history(notify, campaign)
    report_io.check_notify_matches(notify, scan, campaign)
    return _Read(scan, merge, notify, campaign, history, other_campaigns)


def _compute(args, read: _Read, agent_thresholds) -> _Computed:
    """Check the dates belong together, compute every table, refuse a merged base of another base."""
    scan, merge = read.scan, read.merge
    facts = _facts(read.campaign, read.history, scan.as_of)
    merge_as_of = merge.as_of if merge else None
    as_of = args.as_of or merge_as_of or scan.as_of
    _check_dates(scan.as_of, merge_as_of, as_of, facts, args.scan, args.merge)
    merged = merge.base if merge else report_io.unmerged(scan.classified)
    inputs = ReportInputs(
        classified=scan.classified,
        merged=merged,
        history=read.history,
        events=merge.events if merge else None,
        dead_letters=merge.dead_letters if merge else None,
    )
    tables, notes = completion_tables(inputs, facts, as_of, agent_thresholds)
    needed = tables["completion"]["needed"][0].as_py()
    missing = notes["not_in_merge"]
    if merge and needed and missing > MAX_NOT_IN_MERGE * needed:
        raise UserError(
            f"{missing:,} of the {needed:,} lines the scan at {args.scan} found needing registration are "
            f"not in the merged base at {args.merge}: is it a merge of another base or campaign?"
        )
    return _Computed(facts, as_of, tables, needed, missing)


def _header(args, read: _Read, done: _Computed, run_id: str, started: str, policy: Policy, findings: list[str]) -> dict:
    """The manifest's header, shown at the top of the page: the run, its inputs and the findings."""
    return {
        "step": "report",
        "run_id": run_id,
        "started": started,
        "as_of": done.as_of.isoformat(),
        "campaign_id": done.facts.campaign_id,
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
        "findings": findings,
    }


def _write_outputs(out: str, done: _Computed, header: dict, agent_thresholds, timer: Timer) -> dict:
    """Write the tables (Parquet and CSV) and the page; the manifest that lists them."""
    tables = done.tables
    written = report_io.write_tables(out, tables, done.as_of)
    timer.mark("tables")
    from pipelines.render.report_html import write_report

    html = write_report(out, tables, header, done.facts, agent_thresholds)
    timer.mark("html")
    over = int(pc.sum(pc.cast(tables["agents"]["over_threshold"], pa.int64())).as_py() or 0)
    return {
        **header,
        "outputs": {"html": html, **written},
        "counts": {**{name: table.num_rows for name, table in tables.items()}, "agents_over_threshold": over},
        "completion": _headline(tables["completion"]),
        "timings": timer.as_dict(),
    }


def _findings(
    merge, notify, missing: int, other_campaigns: int, facts: CampaignFacts, as_of: dt.date, needed: int
) -> list[str]:
    """What the reader must know about the inputs, in plain words (shown at the top of the page)."""
    out = []
    if merge is None:
        out.append("No merge output was given: no registration is counted; every needed line is still open.")
    elif merge.events is None:
        out.append("The merge records no registration files: the agent table counts no registrations.")
    if merge is not None and merge.events_missing:
        out.append(
            f"{len(merge.events_missing)} registration file(s) the merges read are gone "
            f"({merge.events_missing[0]}): the agent table counts only the events still there."
        )
    if notify is None:
        out.append("No notify output was given: the wave funnel and the time to register are empty.")
    if missing:
        out.append(
            f"{missing:,} needed line(s) are not in the merged base (dead letters of the merge); "
            "they count as not complete."
        )
    if other_campaigns:
        out.append(f"{other_campaigns:,} notice(s) of other campaigns in the notify history were left out.")
    if facts.deadline is None:
        out.append("No campaign file: the deadline is unknown, so no past-deadline list.")
    elif not facts.past_deadline(as_of):
        out.append(
            f"The deadline ({facts.deadline}) and the last wave have not both passed: no past-deadline list yet."
        )
    if not needed:
        out.append("No line needed registration at the scan: there is nothing to complete.")
    return out


def _headline(table: pa.Table) -> dict:
    row = table.to_pylist()[0]
    return {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in row.items()}


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
