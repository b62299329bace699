"""The manifest of a ``backfill notify`` run: its mode, what the wave planned and handed over, the timings.

Used by :mod:`pipelines.notify`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pipelines.common import runner_name
from pipelines.io.paths import join_path
from pipelines.io.notify_files import HISTORY_JOBS
from pipelines.manifest import Timer, policy_block, write_json
from transforms.notify.planner import OUTCOMES

IN_PROCESS = "in-process"  # the manifest's runner when the wave ran without Beam (pipelines/notify_local.py)

if TYPE_CHECKING:
    from pipelines.notify_plan import WavePlan


def _mode(args) -> str:
    return "dry-run" if args.dry_run else ("pubsub" if args.topic else "files")


def manifest_static(args, wave_plan: WavePlan, out: str) -> dict:
    """What a wave's manifest says that is known before its pipeline runs (JSON-able: it travels in the job)."""
    campaign, wave, first_day, mode = wave_plan.campaign, wave_plan.wave, wave_plan.first_day, _mode(args)
    zone_hours = f"{campaign.quiet_end:%H:%M}-{campaign.quiet_start:%H:%M}"
    return {
        "mode": mode,
        "as_of": wave_plan.as_of.isoformat(),
        "campaign": {
            "campaign_id": campaign.campaign_id,  # an absolute local path: the report finds it again
            "source": campaign.source if "://" in campaign.source else os.path.abspath(campaign.source),
            "sha256": campaign.digest,
            "wave": wave.wave,
            "wave_start": wave.start.isoformat(),
            "first_day": first_day.isoformat(),
            "channels": list(wave.channels),
            "variants": [v.as_dict() for v in wave.variants],  # the A/B split; [] when the wave has none
            "timezone": campaign.timezone,
            "allowed_hours": zone_hours,
            "locale": campaign.locale,
            "daily_cap": dict(campaign.daily_cap),
            "min_days_between": campaign.min_days_between,
        },
        "inputs": {
            "classified": args.classified,
            "classified_rows": wave_plan.rows,
            "registered": args.registered,
            "suppress": args.suppress,
        },
        "outputs": ({"topic": args.topic} if args.topic else {"jobs": join_path(out, "jobs")})
        | {"history": join_path(out, *HISTORY_JOBS)},
        "policy": policy_block(wave_plan.policy),  # its division table names {region}
        **_runner(wave_plan),
    }


def _runner(wave_plan: WavePlan) -> dict:
    """The manifest's runner: ``in-process`` and its worker processes, or the Beam job's runner."""
    if wave_plan.workers:
        return {"runner": IN_PROCESS, "workers": wave_plan.workers}
    return {"runner": runner_name(wave_plan.options)}


def with_result(static: dict, result: dict, timer: Timer) -> dict:
    """The wave's manifest: the static part, and the counts, days and timings of its result (balance checked)."""
    plan = result.get("plan", {})
    outcomes = plan.get("outcomes", {})
    jobs = {c: result.get("jobs", {}).get(c, 0) for c in ("sms", "call", "announcement")}
    handed = result.get("handed_over", {})
    decided = sum(outcomes.get(o.lower(), 0) for o in OUTCOMES[1:])
    balanced = plan.get("targeted", 0) == decided and (
        static["mode"] == "dry-run" or all(handed.get(c, 0) == n for c, n in jobs.items())
    )
    return {
        **static,
        "counts": {
            **plan,
            "jobs": jobs,
            "announcements": jobs["announcement"],
            "announcements_already_sent": result.get("announcements_already_sent", 0),
            "lines_without_region": result.get("lines_without_region", 0),
            "variants": result.get("variants", {}),  # variant -> channel -> jobs
            "segments": result.get("segments", 0),
            "cost": round(result.get("cost", 0.0), 4),
            "handed_over": handed,
            "files": result.get("files", {}),
            "balanced": balanced,
        },
        "by_day": result.get("by_day", {}),
        "timings": _timings(timer, result.get("publish")),
    }


def _timings(timer: Timer, publish: dict | None) -> dict:
    """The run's timings, with the hand-over's publish rate when jobs were published."""
    timings = timer.as_dict()
    if publish and publish.get("messages"):
        seconds = max(publish["last"] - publish["first"], 1e-9)
        timings["publish"] = {
            "messages": publish["messages"],
            "seconds": round(seconds, 3),
            "messages_per_second": round(publish["messages"] / seconds),
        }
    return timings


def unbalanced(manifest: dict) -> str:
    """The one-line problem of a wave whose counts do not add up."""
    counts = manifest["counts"]
    handed = sum(counts["handed_over"].values()) if counts.get("handed_over") else 0
    return (
        f"notify counts do not add up ({counts.get('targeted', 0):,} lines targeted; "
        f"{sum(counts['jobs'].values()):,} jobs, {handed:,} handed over); the run is recorded in runs/"
    )


def _save(out: str, run_id: str, manifest: dict) -> None:
    write_json(join_path(out, "runs", f"{run_id}.json"), manifest)
    write_json(join_path(out, "manifest.json"), manifest)
