"""Configuration of the backfill DAGs: settings, the output layout, and the steps.

One module for both DAGs (``backfill_campaign``, ``backfill_daily``). Nothing
here imports Beam or the project: the DAGs run in Airflow's own environment
and launch each step as ``PYTHON -m pipelines.STEP`` with the project's
interpreter (``python``), so the pipelines run under the project's pins.

Every setting is read, in this order, from the DAG run's params (trigger
with conf, or the DAG's defaults), then from the Airflow Variable
``backfill_<name>``, then from its default (``backfill_settings.py``, beside
this module: the settings and the checks of the runner, interpreter and
paths). ``check_params`` resolves and checks them all in one task before
anything is launched, so a missing setting, a runner that is not there or a
path that does not exist fails that task with one line in its log.

Layout under ``out`` (the run's logical date ``ds`` is in every daily path,
so a re-run of a date rewrites the same outputs):

    out/campaigns/CAMPAIGN_ID/scan/     the kick-off scan (as of wave 1's start)
    out/campaigns/CAMPAIGN_ID/notify/   every wave's jobs and the notify history
                                        (one folder: its history is what stops a
                                        re-run or a later wave from sending twice)
    out/merge/DS/                       the base as of the morning of DS: the previous
                                        merge + the registrations of the day before
    out/campaigns/CAMPAIGN_ID/report/DS/  the campaign's report of DS (report.html, csv/,
                                        parquet/<table>/as_of=DS/)
    registrations/DAY/                  input: one folder of registration events per day
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re

from backfill_launch import launch_kwargs
from backfill_settings import SETTINGS, ConfigError, check_local, check_runner, is_remote, need, resolve


@dataclasses.dataclass(frozen=True)
class Step:
    """A pipeline the DAGs launch.

    ``when``: ``kickoff`` (the day wave 1 starts), ``wave`` (once per wave
    starting that day), ``daily``, or ``campaign_daily`` (every day of a campaign). ``options`` maps the step's
    command-line options to templates over the run's layout (see ``check_params``); an
    option whose value comes out empty is left out. ``timeout``: how long the step may run
    (the ``timeouts`` setting overrides it). ``detachable``: its launcher has nothing left to do
    once its Dataflow job runs (the job publishes its output itself), so with the ``deferrable``
    setting the task waits for the job in the triggerer.
    """

    name: str
    module: str
    when: str
    options: dict[str, str]
    timeout: dt.timedelta = dt.timedelta(hours=4)
    detachable: bool = True


STEPS: tuple[Step, ...] = (
    Step("scan", "pipelines.scan", "kickoff", {"base": "{base}", "out": "{root}/scan", "as-of": "{ds}"}),
    Step(
        "notify",
        "pipelines.notify",
        "wave",
        {
            "scan": "{root}/scan",
            "campaign": "{campaign}",
            "wave": "{wave}",
            "merged": "{previous_merge}",
            "topic": "{notify_topic}",
            "out": "{root}/notify",
            "as-of": "{ds}",
        },
        detachable=False,  # its launcher removes the job's temporary folder (out/_tmp/RUN) after the job
    ),
    Step(
        "merge",
        "pipelines.merge",
        "daily",
        {
            "base": "{first_base}",  # the first day's: the subscriber base
            "merged": "{previous_start}",  # every later day's: the merge it starts from (its base/ and vault/)
            "registrations": "{registrations}/{events_day}",
            "keys": "{keys}",
            "out": "{out}/merge/{ds}",
            "as-of": "{ds}",
        },
        timeout=dt.timedelta(hours=8),  # the widest job: merged base + vault + a day's events
    ),
    # The morning report of a campaign: its first scan, the day's merge, the waves sent so far.
    Step(
        "report",
        "pipelines.report",
        "campaign_daily",
        {
            "scan": "{root}/scan",
            "merged": "{out}/merge/{ds}",
            "earlier-merges": "{out}/merge/*",
            "notify": "{root}/notify",
            "campaign": "{campaign}",
            "out": "{root}/report/{ds}",
            "as-of": "{ds}",
        },
    ),
)
DAILY_STEPS = tuple(s for s in STEPS if s.when == "daily")

# The campaign DAG goes on this long after the deadline (daily merge and report), so that the report's
# past-deadline list, the escalation list, is made; the daily DAG stands aside until then.
FOLLOW_UP = dt.timedelta(days=14)

DEFAULT_ARGS = {"owner": "data-engineering", "retries": 1, "retry_delay": dt.timedelta(minutes=10)}
CHECK_TIMEOUT = dt.timedelta(minutes=15)  # check_params: reads settings, the campaign, lists the merges
DUE_TIMEOUT = dt.timedelta(minutes=5)  # STEP_due: hands over a list


def _param_type(default) -> list[str]:
    if isinstance(default, bool):
        return ["null", "boolean", "string"]
    return ["null", "object" if isinstance(default, dict) else "string"]


def dag_params() -> dict:
    """The DAGs' params: every setting, empty by default (Variables and defaults fill in)."""
    from airflow.sdk import Param

    return {
        name: Param(None, type=_param_type(default), description=text) for name, (default, text) in SETTINGS.items()
    }


def _read_text(path: str) -> str:
    if path.startswith("gs://"):
        from airflow.providers.google.cloud.hooks.gcs import GCSHook, _parse_gcs_url

        bucket, blob = _parse_gcs_url(path)
        return GCSHook().download(bucket_name=bucket, object_name=blob).decode("utf-8")
    with open(path, encoding="utf-8") as f:
        return f.read()


def _list_dirs(folder: str) -> list[str]:
    if folder.startswith("gs://"):
        from airflow.providers.google.cloud.hooks.gcs import GCSHook, _parse_gcs_url

        bucket, prefix = _parse_gcs_url(folder.rstrip("/") + "/")
        names = GCSHook().list(bucket, prefix=prefix, match_glob="**/manifest.json")
        return sorted({n[len(prefix) :].split("/")[0] for n in names})
    if not os.path.isdir(folder):
        return []
    return sorted(d for d in os.listdir(folder) if os.path.exists(os.path.join(folder, d, "manifest.json")))


def read_campaign(path: str) -> dict:
    """campaign_id, waves {number: start date} and deadline of a campaign file (full checks: notify's)."""
    import yaml

    check_local("campaign", path)
    try:
        doc = yaml.safe_load(_read_text(path))
        waves = {int(w["wave"]): dt.date.fromisoformat(str(w["start"])) for w in doc["waves"]}
        deadline = dt.date.fromisoformat(str(doc["deadline"]))
        campaign_id = str(doc["campaign_id"])
    except Exception as exc:  # the one line names the problem's class, not file contents
        raise ConfigError(
            f"campaign {path}: not a readable campaign file ({type(exc).__name__}); "
            "backfill notify --dry-run shows what is wrong"
        ) from None
    if not re.fullmatch(r"[A-Za-z0-9._-]+", campaign_id) or not waves:
        raise ConfigError(f"campaign {path}: campaign_id must be letters, digits, '.', '_' or '-' and waves non-empty")
    return {"campaign_id": campaign_id, "waves": waves, "deadline": deadline, "kickoff": min(waves.values())}


def _completed_merges(out: str, ds: str) -> list[str]:
    """The days before DS whose merge completed (its folder holds a manifest.json), oldest first."""
    return [d for d in _list_dirs(f"{out}/merge") if re.fullmatch(r"\d{4}-\d\d-\d\d", d) and d < ds]


def previous_merge(out: str, ds: str) -> str:
    """The latest completed merge before DS (a fixed partition: re-runs of DS see the same one)."""
    days = _completed_merges(out, ds)
    return f"{out}/merge/{days[-1]}" if days else ""


def merge_start(out: str, ds: str) -> tuple[str, str | None]:
    """What the merge of DS starts from: (the merge of DS - 1 day, None), or ("", None) on the first day
    (no completed merge before DS: it starts from the base), or ("", one line) when earlier merges exist but
    DS - 1's did not complete: starting from an older one would leave out what DS - 1's merge brings in."""
    days = _completed_merges(out, ds)
    eve = (dt.date.fromisoformat(ds) - dt.timedelta(days=1)).isoformat()
    if not days:
        return "", None
    if days[-1] == eve:
        return f"{out}/merge/{eve}", None
    return "", (
        f"merge {ds}: the merge of {eve} is missing ({out}/merge/{eve}/manifest.json): run the DAG for {eve} "
        f"first (starting from the merge of {days[-1]} would leave out the registrations of the days between)"
    )


def check_params(params: dict, variables, ds: str, steps=STEPS, kind: str = "campaign", run_id: str = "manual") -> dict:
    """Resolve and check the settings; returns, per step, the list of launches due on DS (maybe none).

    ``kind``: ``campaign`` works only from wave 1's start to the campaign's
    deadline and ``FOLLOW_UP`` after; ``daily`` stands aside on those days when a campaign is
    configured (the campaign DAG merges them), so one merge is made per day. ``run_id``: the
    Airflow run's (a label of its Dataflow jobs).
    """
    settings = resolve(params, variables)
    needed = {"base", "out"} | ({"campaign"} if kind == "campaign" else set())
    if any(s.when == "daily" for s in steps):
        needed |= {"registrations", "keys"}
    need(settings, *sorted(needed))
    runner, runner_options = check_runner(settings, steps)
    day = dt.date.fromisoformat(ds)
    layout = _layout(settings, ds)
    campaign = read_campaign(settings["campaign"]) if settings.get("campaign") else None
    launches: dict[str, list] = {s.name: [] for s in steps}
    aside = _standing_aside(kind, campaign, day, ds)
    if aside:
        return {**launches, "notes": [aside]}
    if campaign:
        layout["root"] = f"{layout['out']}/campaigns/{campaign['campaign_id']}"
        layout["campaign_id"] = campaign["campaign_id"] if kind == "campaign" else ""
    _add_previous_merge(layout, settings["base"])
    run = {"dag_id": f"backfill_{kind}", "run_id": run_id, "steps": steps}
    for name in ("base", "keys", "registrations"):
        if settings.get(name):
            check_local(name, settings[name])
    for step in steps:
        for step_layout in _due_layouts(step, campaign, day, layout, settings):
            launches[step.name].append(launch_kwargs(step, step_layout, runner, settings, runner_options, run))
    notes = [f"{ds}: " + ", ".join(f"{k} x{len(v)}" for k, v in launches.items()) + f" on {runner}"]
    return {**launches, "notes": notes}


def _layout(settings: dict, ds: str) -> dict:
    """The values the steps' option templates use: the string settings, ``out`` (no trailing /), DS, its eve."""
    day = dt.date.fromisoformat(ds)
    return {
        **{k: v or "" for k, v in settings.items() if isinstance(v, str) or v is None},
        "out": settings["out"].rstrip("/"),
        "ds": ds,
        "events_day": (day - dt.timedelta(days=1)).isoformat(),
    }


def _standing_aside(kind: str, campaign: dict | None, day: dt.date, ds: str) -> str | None:
    """Why this DAG has nothing to do on DS, or None: the campaign DAG outside the campaign's days, or
    the daily DAG within them."""
    active = campaign is not None and campaign["kickoff"] <= day <= campaign["deadline"] + FOLLOW_UP
    ends = campaign["deadline"] + FOLLOW_UP if campaign else None
    if kind == "campaign" and not active:
        return (
            f"{ds} is outside campaign {campaign['campaign_id']} ({campaign['kickoff']} to {ends}, "
            f"the deadline {campaign['deadline']} and {FOLLOW_UP.days} days of follow-up): nothing to do"
        )
    if kind != "campaign" and active:
        return f"campaign {campaign['campaign_id']} runs until {ends}: backfill_campaign merges {ds}"
    return None


def _add_previous_merge(layout: dict, base: str) -> None:
    """The merge the day's merge starts from (``previous_start``: its base and vault), or the subscriber base on
    the first day (``first_base``); ``merge_refused`` when the day before's is missing. ``previous_merge``: the
    latest completed one (notify leaves out the lines it has registered)."""
    start, refused = merge_start(layout["out"], layout["ds"])
    layout.update(
        previous_merge=previous_merge(layout["out"], layout["ds"]),
        previous_start=start or "",
        first_base="" if start else base,
        merge_refused=refused or "",
    )


def _due_layouts(step: Step, campaign: dict | None, day: dt.date, layout: dict, settings: dict) -> list[dict]:
    """The layout of each launch of ``step`` due on ``day``: one, one per wave starting that day, or none."""
    if step.when == "kickoff" and campaign and day == campaign["kickoff"]:
        return [layout]
    if step.when == "wave" and campaign:
        return _due_waves(campaign, day, layout)
    if step.when == "campaign_daily" and campaign:
        return [layout]
    if step.when == "daily":
        day_folder = f"{settings['registrations']}/{layout['events_day']}"
        check_local("registrations for " + layout["events_day"], day_folder)
        return [layout]
    return []


def _due_waves(campaign: dict, day: dt.date, layout: dict) -> list[dict]:
    """The layouts of the waves starting on ``day``; a wave after the first needs the campaign's scan."""
    due = []
    for wave, start in sorted(campaign["waves"].items()):
        if start == day:
            if wave > 1 and not is_remote(layout["out"]) and not os.path.exists(f"{layout['root']}/scan/summary.json"):
                raise ConfigError(
                    f"wave {wave} is due but the campaign's scan is missing at "
                    f"{layout['root']}/scan: run backfill_campaign for {campaign['kickoff']}"
                )
            due.append({**layout, "wave": str(wave)})
    return due


def check_task(kind: str, steps=STEPS):
    """The DAGs' first task: ``check_params`` for this DAG kind, failing with one line (no retry)."""
    import logging

    from airflow.sdk import Variable, task
    from airflow.sdk.exceptions import AirflowFailException

    log = logging.getLogger("backfill.dags")

    @task(task_id="check_params", retries=0, execution_timeout=CHECK_TIMEOUT)
    def check(params: dict | None = None, ds: str | None = None, run_id: str | None = None) -> dict:
        try:
            variables = lambda key: Variable.get(key, default=None)  # noqa: E731
            plan = check_params(dict(params or {}), variables, ds, steps, kind, run_id or "manual")
        except ConfigError as exc:
            log.error("check_params: %s", exc)
            raise AirflowFailException(str(exc)) from None
        for note in plan.pop("notes"):
            log.info("check_params: %s", note)
        return plan

    return check


def due_task(step: Step):
    """``STEP_due``: the launches of one step from check_params' plan (a mapped task
    can only expand a task's whole return value)."""
    from airflow.sdk import task

    @task(task_id=f"{step.name}_due", retries=0, execution_timeout=DUE_TIMEOUT)
    def due(plan: dict) -> list[dict]:
        return plan[step.name]

    return due
