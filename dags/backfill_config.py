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

from backfill_settings import SETTINGS, ConfigError, check_local, check_runner, is_remote, need, resolve


@dataclasses.dataclass(frozen=True)
class Step:
    """A pipeline the DAGs launch.

    ``when``: ``kickoff`` (the day wave 1 starts), ``wave`` (once per wave
    starting that day), ``daily``, or ``campaign_daily`` (every day of a campaign). ``options`` maps the step's command-line
    options to templates over the run's layout (see ``check_params``); an
    option whose value comes out empty is left out.
    """

    name: str
    module: str
    when: str
    options: dict[str, str]


STEPS: tuple[Step, ...] = (
    Step("scan", "pipelines.scan", "kickoff", {"base": "{base}", "out": "{root}/scan", "as-of": "{ds}"}),
    Step(
        "notify",
        "pipelines.notify",
        "wave",
        {
            "classified": "{root}/scan",
            "campaign": "{campaign}",
            "wave": "{wave}",
            "registered": "{previous_merge}",
            "topic": "{notify_topic}",
            "out": "{root}/notify",
            "as-of": "{ds}",
        },
    ),
    Step(
        "merge",
        "pipelines.merge",
        "daily",
        {
            "base": "{previous_base}",
            "vault": "{previous_vault}",
            "registrations": "{registrations}/{events_day}",
            "keys": "{keys}",
            "out": "{out}/merge/{ds}",
            "as-of": "{ds}",
        },
    ),
    # The morning report of a campaign: its first scan, the day's merge, the waves sent so far.
    Step(
        "report",
        "pipelines.report",
        "campaign_daily",
        {
            "scan": "{root}/scan",
            "merge": "{out}/merge/{ds}",
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


def dag_params() -> dict:
    """The DAGs' params: every setting, empty by default (Variables and defaults fill in)."""
    from airflow.sdk import Param

    return {
        name: Param(None, type=["null", "object" if isinstance(default, dict) else "string"], description=text)
        for name, (default, text) in SETTINGS.items()
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


def previous_merge(out: str, ds: str) -> str:
    """The latest completed merge before DS (a fixed partition: re-runs of DS see the same one)."""
    days = [d for d in _list_dirs(f"{out}/merge") if re.fullmatch(r"\d{4}-\d\d-\d\d", d) and d < ds]
    return f"{out}/merge/{days[-1]}" if days else ""


def _launch(step: Step, layout: dict, runner: str, settings: dict, runner_options: dict) -> dict:
    """The mapped kwargs of one BeamRunPythonPipelineOperator run."""
    options = {k: v.format(**layout) for k, v in step.options.items()}
    options = {k: v for k, v in options.items() if v}
    options.update(runner_options)
    options.update(settings["beam_options"] or {})
    kwargs = {"runner": runner, "py_interpreter": settings["python"], "pipeline_options": options}
    if runner == "DataflowRunner":
        name = f"backfill-{step.name}-{layout.get('wave', '')}-{layout['ds']}".replace("--", "-")
        kwargs["dataflow_config"] = {
            "job_name": re.sub(r"[^a-z0-9-]", "-", name.lower()),
            "project_id": settings["project"],
            "location": settings["region"],
            "service_account": settings["service_account"],
        }
    return kwargs


def check_params(params: dict, variables, ds: str, steps=STEPS, kind: str = "campaign") -> dict:
    """Resolve and check the settings; returns, per step, the list of launches due on DS (maybe none).

    ``kind``: ``campaign`` works only from wave 1's start to the campaign's
    deadline and ``FOLLOW_UP`` after; ``daily`` stands aside on those days when a campaign is
    configured (the campaign DAG merges them), so one merge is made per day.
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
    _add_previous_merge(layout, settings["base"])
    for name in ("base", "keys", "registrations"):
        if settings.get(name):
            check_local(name, settings[name])
    for step in steps:
        for step_layout in _due_layouts(step, campaign, day, layout, settings):
            launches[step.name].append(_launch(step, step_layout, runner, settings, runner_options))
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
    """The merge the day's merge starts from (its base and vault), or the subscriber base if there is none yet."""
    previous = previous_merge(layout["out"], layout["ds"])
    layout.update(
        previous_merge=previous,
        previous_base=f"{previous}/base" if previous else base,
        previous_vault=f"{previous}/vault" if previous else "",
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

    @task(task_id="check_params", retries=0)
    def check(params: dict | None = None, ds: str | None = None) -> dict:
        try:
            plan = check_params(dict(params or {}), lambda key: Variable.get(key, default=None), ds, steps, kind)
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

    @task(task_id=f"{step.name}_due", retries=0)
    def due(plan: dict) -> list[dict]:
        return plan[step.name]

    return due
