"""Configuration of the backfill DAGs: settings, the output layout, and the steps.

One module for both DAGs (``backfill_campaign``, ``backfill_daily``). Nothing
here imports Beam or the project: the DAGs run in Airflow's own environment
and launch each step as ``PYTHON -m pipelines.STEP`` with the project's
interpreter (``python``), so the pipelines run under the project's pins.

Every setting is read, in this order, from the DAG run's params (trigger
with conf, or the DAG's defaults), then from the Airflow Variable
``backfill_<name>``, then from the default below. ``check_params`` resolves
and checks them all in one task before anything is launched, so a missing
setting, a runner that is not there or a path that does not exist fails that
task with one line in its log.

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
import glob
import json
import os
import re
import subprocess

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIABLE_PREFIX = "backfill_"
LOCAL_RUNNER = "FnApiRunner"  # explicit: Beam's DirectRunner may download the Prism runner
RUNNERS = ("FnApiRunner", "DirectRunner", "DataflowRunner")

# name -> (default, help). ``None`` means required where a step needs it.
SETTINGS: dict[str, tuple[object, str]] = {
    "runner": (LOCAL_RUNNER, "FnApiRunner (local; DirectRunner means the same) or DataflowRunner"),
    "python": (os.path.join(PROJECT_DIR, ".venv", "bin", "python"), "the project's interpreter (make test builds it)"),
    "base": (None, "the subscriber base: file, glob or folder (local or gs://)"),
    "campaign": (None, "the campaign file (YAML, local or gs://)"),
    "registrations": (None, "root of the registration events: one folder per day, ROOT/YYYY-MM-DD/"),
    "keys": (None, "keyset file (mode 0600, backfill keys init); on Dataflow a path every worker can read"),
    "out": (None, "output root (local or gs://)"),
    "notify_topic": (None, "publish notify jobs to projects/P/topics/T instead of writing files"),
    "project": (None, "GCP project (DataflowRunner)"),
    "region": (None, "Dataflow region (DataflowRunner)"),
    "temp_location": (None, "gs:// folder for Dataflow's temporary and staged files (DataflowRunner)"),
    "setup_file": (os.path.join(PROJECT_DIR, "setup.py"), "setup.py the Dataflow workers install"),
    "service_account": (None, "worker service account email (DataflowRunner)"),
    "beam_options": ({}, 'extra Beam options for every step, e.g. {"max_num_workers": 40}'),
}


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


class ConfigError(Exception):
    """A setting the operator must fix; str() is one line."""


def dag_params() -> dict:
    """The DAGs' params: every setting, empty by default (Variables and defaults fill in)."""
    from airflow.sdk import Param

    return {
        name: Param(None, type=["null", "object" if isinstance(default, dict) else "string"], description=text)
        for name, (default, text) in SETTINGS.items()
    }


def resolve(params: dict, variables) -> dict:
    """Settings from params, then Variables (``variables(name) -> str | None``), then defaults."""
    settings = {}
    for name, (default, _) in SETTINGS.items():
        value = params.get(name)
        if value in (None, ""):
            value = variables(VARIABLE_PREFIX + name)
        if value in (None, ""):
            value = default
        if name == "beam_options" and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(f"beam_options is not a JSON object: {value[:60]!r}") from None
        settings[name] = value
    return settings


def _need(settings: dict, *names: str) -> None:
    for name in names:
        if settings.get(name) in (None, ""):
            raise ConfigError(
                f"missing setting {name!r} ({SETTINGS[name][1]}): pass the DAG param {name} "
                f"or set the Airflow Variable {VARIABLE_PREFIX}{name}"
            )


def _remote(path: str) -> bool:
    return "://" in path


def _check_local(name: str, path: str) -> None:
    """A local path must exist (a glob must match); remote paths are checked by the step itself."""
    if not _remote(path) and not glob.glob(path):
        raise ConfigError(f"{name} {path}: no such file or directory")


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

    _check_local("campaign", path)
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


def check_interpreter(python: str, modules: list[str]) -> None:
    """The project's interpreter is there and has Beam and the step modules (no pipeline is built)."""
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise ConfigError(
            f"project interpreter {python} not found: build it (make test) or set the Airflow "
            f"Variable {VARIABLE_PREFIX}python"
        )
    probe = "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))"
    try:
        missing = subprocess.run(
            [python, "-c", probe, *modules], capture_output=True, text=True, timeout=120, check=True, cwd="/"
        ).stdout.split()
    except (subprocess.SubprocessError, OSError) as exc:
        raise ConfigError(f"project interpreter {python} does not run ({type(exc).__name__})") from None
    if missing:
        raise ConfigError(
            f"{python} cannot import {', '.join(missing)}: install the project there "
            "(pip install -c constraints.txt -e '.[test]')"
        )


def _runner(settings: dict, steps) -> tuple[str, dict]:
    runner = settings["runner"]
    if runner not in RUNNERS:
        raise ConfigError(f"runner {runner!r} is not available here: use {LOCAL_RUNNER} (local) or DataflowRunner")
    modules = ["apache_beam", *(s.module for s in steps)]
    if runner != "DataflowRunner":
        check_interpreter(settings["python"], modules)
        return LOCAL_RUNNER, {}
    _need(settings, "project", "region", "temp_location")
    for name in ("temp_location", "out"):
        if not str(settings[name]).startswith("gs://"):
            raise ConfigError(f"{name} {settings[name]} must be a gs:// path with DataflowRunner")
    _check_local("setup_file", settings["setup_file"])
    check_interpreter(settings["python"], [*modules, "apache_beam.runners.dataflow.dataflow_runner"])
    options = {"temp_location": settings["temp_location"], "setup_file": settings["setup_file"]}
    return "DataflowRunner", options


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
    campaign_only = kind == "campaign"
    settings = resolve(params, variables)
    needed = {"base", "out"} | ({"campaign"} if campaign_only else set())
    if any(s.when == "daily" for s in steps):
        needed |= {"registrations", "keys"}
    _need(settings, *sorted(needed))
    runner, runner_options = _runner(settings, steps)
    day = dt.date.fromisoformat(ds)
    out = settings["out"].rstrip("/")
    layout = {
        **{k: v or "" for k, v in settings.items() if isinstance(v, str) or v is None},
        "out": out,
        "ds": ds,
        "events_day": (day - dt.timedelta(days=1)).isoformat(),
    }
    campaign = read_campaign(settings["campaign"]) if settings.get("campaign") else None
    active = campaign is not None and campaign["kickoff"] <= day <= campaign["deadline"] + FOLLOW_UP
    ends = campaign["deadline"] + FOLLOW_UP if campaign else None
    launches: dict[str, list] = {s.name: [] for s in steps}
    notes = []
    if campaign_only and not active:
        notes.append(
            f"{ds} is outside campaign {campaign['campaign_id']} ({campaign['kickoff']} to {ends}, "
            f"the deadline {campaign['deadline']} and {FOLLOW_UP.days} days of follow-up): nothing to do"
        )
        return {**launches, "notes": notes}
    if not campaign_only and active:
        notes.append(f"campaign {campaign['campaign_id']} runs until {ends}: backfill_campaign merges {ds}")
        return {**launches, "notes": notes}
    if campaign:
        layout["root"] = f"{out}/campaigns/{campaign['campaign_id']}"
    previous = previous_merge(out, ds)
    layout.update(
        previous_merge=previous,
        previous_base=f"{previous}/base" if previous else settings["base"],
        previous_vault=f"{previous}/vault" if previous else "",
    )
    for name in ("base", "keys", "registrations"):
        if settings.get(name):
            _check_local(name, settings[name])
    for step in steps:
        if step.when == "kickoff" and campaign and day == campaign["kickoff"]:
            launches[step.name].append(_launch(step, layout, runner, settings, runner_options))
        elif step.when == "wave" and campaign:
            for wave, start in sorted(campaign["waves"].items()):
                if start == day:
                    if wave > 1 and not _remote(out) and not os.path.exists(f"{layout['root']}/scan/summary.json"):
                        raise ConfigError(
                            f"wave {wave} is due but the campaign's scan is missing at "
                            f"{layout['root']}/scan: run backfill_campaign for {campaign['kickoff']}"
                        )
                    launches[step.name].append(
                        _launch(step, {**layout, "wave": str(wave)}, runner, settings, runner_options)
                    )
        elif step.when == "campaign_daily" and campaign:
            launches[step.name].append(_launch(step, layout, runner, settings, runner_options))
        elif step.when == "daily":
            day_folder = f"{settings['registrations']}/{layout['events_day']}"
            _check_local("registrations for " + layout["events_day"], day_folder)
            launches[step.name].append(_launch(step, layout, runner, settings, runner_options))
    notes.append(f"{ds}: " + ", ".join(f"{k} x{len(v)}" for k, v in launches.items()) + f" on {runner}")
    return {**launches, "notes": notes}


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
