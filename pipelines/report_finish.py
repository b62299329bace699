"""The report job's last step: from the facts, the tables, the page and the manifest (checked in the job).

    facts | "FinishReport" >> beam.Map(finish_report, time, counts, csv_parts, *writes, job=ReportFinish(...))

It runs once, in one worker, after every write of the job, over the small
tables the job added up (``transforms/compliance/report_facts.py``): it makes
the report's tables (``transforms/compliance/report.py``), writes them as
Parquet and CSV, joins the past-deadline CSV parts into one file, draws
``report.html``, and hands the counts to ``pipelines/io/finalize.finish``,
which checks the balances (needed lines in = joined + not in the merge, rows
read = rows counted in the buckets...) and writes ``manifest.json``; an
unbalanced run, or a merge of another base, fails the job and nothing is
published. Nothing here grows with the number of lines.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Callable, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.io.finish import finish
from pipelines.io.publish import Publication
from transforms.compliance.report import CampaignFacts, ReportContext, TimeToRegister, report_tables

__all__ = ["ReportFinish", "finish_report", "summarise", "findings", "MAX_NOT_IN_MERGE"]

# Needed lines a merged base may lack (its own dead letters) before the report calls it another base's.
MAX_NOT_IN_MERGE = 0.01


@dataclasses.dataclass(frozen=True)
class ReportFinish:
    """What the last step needs, known before the run (picklable: paths, dates, figures; no data)."""

    pub: Publication
    manifest: dict  # step, run id, inputs, policy... and outputs (the final paths)
    summarise: Callable[[dict], tuple[dict, list[str]]]
    campaign: CampaignFacts | None  # None: no campaign file (the waves come from the notices)
    scan_as_of: dt.date
    as_of: dt.date
    thresholds: Mapping[str, float]
    merge_given: bool
    events_recorded: bool
    events_missing: tuple[str, ...]
    notify_given: bool
    started: float
    context: ReportContext = dataclasses.field(default_factory=ReportContext)  # names, notify runs, scan summary...
    live_step: str = "merge"  # the step whose base is the state now: merge, compact or retention
    warnings: tuple[str, ...] = ()  # said on the page and in the exit line (a stale merge)


def _balanced(block: dict, total: str, parts: tuple[str, ...]) -> dict:
    return {**block, "balanced": block.get(total, 0) == sum(block.get(p, 0) for p in parts)}


def summarise(counts: dict, *, scan: str = "", merge: str | None = None) -> tuple[dict, list[str]]:
    """The manifest's counts block (the tables' rows and every balance) and the one-line problems."""
    scan_lines = counts.get("scan_lines", {})
    blocks = {
        "scan_lines": _balanced(dict(scan_lines), "read", ("needed", "not_needed")),
        "needed_lines": _balanced(
            {"in": scan_lines.get("needed", 0), **counts.get("needed_lines", {})}, "in", ("joined", "not_in_merge")
        ),
    }
    for name, parts in (
        ("base_rows", ("needed_lines", "other_lines")),
        ("notices", ("other_campaigns", "without_line", "needed_lines", "other_lines")),
        ("receipts", ("other_campaigns", "without_line", "needed_lines", "other_lines")),
        ("events", ("without_event_id", "distinct", "repeated")),
        ("dead_letters", ("without_event_id", "with_event_id")),
    ):
        if name in counts:
            blocks[name] = _balanced(dict(counts[name]), "read", parts)
    problems = [
        f"report counts do not balance for the {name} ({', '.join(f'{k} {v:,}' for k, v in b.items() if k != 'balanced')})"
        for name, b in blocks.items()
        if not b["balanced"]
    ]
    needed, missing = blocks["needed_lines"]["in"], blocks["needed_lines"].get("not_in_merge", 0)
    if merge and needed and missing > MAX_NOT_IN_MERGE * needed:
        problems.append(
            f"{missing:,} of the {needed:,} lines the scan at {scan} found needing registration are "
            f"not in the merged base at {merge}: is it a merge of another base or campaign?"
        )
    block = {**counts.get("tables", {}), "agents_over_threshold": counts.get("agents_over_threshold", 0), **blocks}
    return block, problems


def _campaign(job: ReportFinish, facts: Mapping[str, pa.Table]) -> CampaignFacts:
    """The campaign's facts; without a campaign file its waves are those of the notices (all dated the scan)."""
    if job.campaign is not None:
        return job.campaign
    seen = facts.get("history_waves")
    waves = sorted(set(seen["wave"].to_pylist())) if seen is not None else []
    return CampaignFacts(None, "Asia/Shanghai", None, tuple((w, job.scan_as_of) for w in waves), job.scan_as_of)


def findings(job: ReportFinish, counts: dict, campaign: CampaignFacts, tables: Mapping[str, pa.Table]) -> list[str]:
    """What the reader must know about the inputs, in plain words (shown at the top of the page)."""
    needed = tables["completion"]["needed"][0].as_py()
    out = list(job.warnings)
    if not job.merge_given:
        out.append("No merge output was given: no registration is counted; every needed line is still open.")
    elif not job.events_recorded and job.live_step != "merge":
        out.append(
            f"The state now is the output of {job.live_step}, which records no registration files: the agent "
            "table counts the events of the merges given with --earlier-merges only."
        )
    elif not job.events_recorded:
        out.append("The merge records no registration files: the agent table counts no registrations.")
    if job.events_missing:
        out.append(
            f"{len(job.events_missing)} registration file(s) the merges read are gone "
            f"({job.events_missing[0]}): the agent table counts only the events still there."
        )
    if not job.notify_given:
        out.append("No notify output was given: the wave funnel and the time to register are empty.")
    missing = counts.get("needed_lines", {}).get("not_in_merge", 0)
    if missing:
        out.append(
            f"{missing:,} needed line(s) are not in the merged base (dead letters of the merge); "
            "they count as not complete."
        )
    other = counts.get("notices", {}).get("other_campaigns", 0)
    if other:
        out.append(f"{other:,} notice(s) of other campaigns in the notify history were left out.")
    if campaign.deadline is None:
        out.append("No campaign file: the deadline is unknown, so no past-deadline list.")
    elif not campaign.past_deadline(job.as_of):
        out.append(
            f"The deadline ({campaign.deadline}) and the last wave have not both passed: no past-deadline list yet."
        )
    if not needed:
        out.append("No line needed registration at the scan: there is nothing to complete.")
    named = [w for w, send in job.context.sends.items() if send.get("variants")]
    if named and not pc.sum(tables["by_variant"]["sent"]).as_py():
        out.append(
            f"Wave(s) {', '.join(map(str, sorted(named)))} name template variants, but the notify history records "
            "no variant per line: the variant table is empty."
        )
    return out


def _headline(table: pa.Table) -> dict:
    row = table.to_pylist()[0]
    return {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in row.items()}


def finish_report(
    facts: dict,
    time_to_register: TimeToRegister,
    counts: dict,
    csv_parts: list | None,
    *writes,
    job,
    charts_aside: tuple[str, ...] = (),
) -> dict:
    """Tables, CSV, page and manifest from the facts; the balance checked (pipelines/io/finalize.finish).
    ``csv_parts``: the job's past-deadline CSV parts to join (None: the in-process run wrote the CSV);
    ``charts_aside``: charts a forked process draws while this one writes the tables and draws the others."""
    del writes  # side inputs only make this step wait for the past-deadline files
    from pipelines.io.report_files import write_tables
    from pipelines.io.report_sinks import join_csv_parts
    from pipelines.render.report_charts import draw_aside
    from pipelines.render.report_html import write_report

    if job.summarise(counts)[1]:  # a balance fails: finish raises it, before anything is drawn
        return finish(counts, job.pub, job.manifest, job.summarise, job.started)
    began = time.time()
    campaign = _campaign(job, facts)
    tables = report_tables(facts, campaign, job.as_of, job.thresholds, time_to_register, job.context)
    aside = draw_aside(tables, campaign.deadline, campaign.waves, charts_aside) if charts_aside else None
    try:
        headline = _headline(tables["completion"])
        if csv_parts is not None:
            join_csv_parts(job.pub.stage, csv_parts)
        write_tables(job.pub.stage, tables, job.as_of)
        header = {**job.manifest, "campaign_id": campaign.campaign_id}
        header["findings"] = findings(job, counts, campaign, tables)
        write_report(job.pub.stage, tables, header, campaign, job.thresholds, aside)
    finally:
        if aside is not None:
            aside.close()
    over = int(pc.sum(pc.cast(tables["agents"]["over_threshold"], pa.int64())).as_py() or 0)
    rows = {**{name: table.num_rows for name, table in tables.items()}, "past_deadline": headline["past_deadline"]}
    counted = {**counts, "tables": rows, "agents_over_threshold": over}
    timings = {**header.get("timings", {}), "tables_and_page_seconds": round(time.time() - began, 3)}
    manifest = {**header, "completion": headline, "timings": timings}
    return finish(counted, job.pub, manifest, job.summarise, job.started)
