"""The mapped arguments of one step's launch: the Beam operator's options, the Dataflow job's name and labels,
the step's time limit.

Plain Python, beside the DAGs (``backfill_config.check_params`` calls :func:`launch_kwargs` once per
launch, in the run's first task; the operator is ``backfill_operator.BackfillBeamOperator``):

* **job name** ``DAG-STEP[-wWAVE]-DS`` (``backfill-campaign-merge-2026-12-01``): one per output folder and
  logical date, the same for every try of the task, and never suffixed (``append_job_name=False``: the
  provider's default suffix is random per try). Dataflow refuses to create a job while an active job of
  the same name exists in the project and region, so a retry cannot start a second job beside a live
  one: Beam's launcher then fails with ``DataflowJobAlreadyExistsError`` and the task with it.
* **labels** ``dag``, ``campaign``, ``wave``, ``day`` and ``airflow_run`` (the Airflow run id), lowercased
  into Dataflow's ``[a-z0-9_-]``, at most 63 characters; the launcher adds ``step`` and ``run_id`` (its own
  run id) itself, and the provider ``airflow-version``.
* **time limit** per step (``Step.timeout``, or the ``timeouts`` setting in minutes): the task's
  ``execution_timeout`` and, on Dataflow, the job's ``max_workflow_runtime_walltime_seconds``, so Dataflow
  cancels a job that outlives its task even when nothing in Airflow holds it any more.
"""

from __future__ import annotations

import re

from backfill_settings import ConfigError

__all__ = ["job_name", "job_labels", "timeout_minutes", "launch_kwargs"]

_LABEL = re.compile(r"[^a-z0-9_-]")


def job_name(dag_id: str, step: str, ds: str, wave: str = "") -> str:
    """The Dataflow job name of a step's launch on DS: stable across tries, distinct per date and wave."""
    name = "-".join(p for p in (dag_id, step, f"w{wave}" if wave else "", ds) if p)
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", name.lower())).strip("-")


def _label(value: str) -> str:
    return _LABEL.sub("-", str(value).lower())[:63]


def job_labels(dag_id: str, ds: str, run_id: str, campaign: str = "", wave: str = "") -> dict[str, str]:
    """Dataflow labels of a launch (keys fixed; values lowercased into [a-z0-9_-], at most 63 characters)."""
    labels = {"dag": dag_id, "campaign": campaign, "wave": wave, "day": ds, "airflow_run": run_id}
    return {key: _label(value) for key, value in labels.items() if value}


def timeout_minutes(step, settings: dict, steps) -> float:
    """The step's time limit in minutes: the ``timeouts`` setting's, else the step's default."""
    given = settings.get("timeouts") or {}
    unknown = sorted(set(given) - {s.name for s in steps})
    if unknown:
        raise ConfigError(f"timeouts {unknown[0]!r}: no such step here (steps: {', '.join(s.name for s in steps)})")
    value = given.get(step.name)
    if value is None:
        return step.timeout.total_seconds() / 60
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"timeouts {step.name}: {value!r} is not a positive number of minutes")
    return float(value)


def _dataflow_config(name: str, settings: dict) -> dict:
    return {
        "job_name": name,
        "append_job_name": False,  # the name is the duplicate guard: no random suffix per try
        "project_id": settings["project"],
        "location": settings["region"],
        "service_account": settings["service_account_email"],
    }


def launch_kwargs(step, layout: dict, runner: str, settings: dict, runner_options: dict, run: dict) -> dict:
    """The mapped kwargs of one ``BackfillBeamOperator`` run. ``run``: ``dag_id``, ``run_id``, ``steps``."""
    if step.name == "merge" and layout.get("merge_refused"):
        return {"refuse": layout["merge_refused"]}  # fails the task in one line (see backfill_config)
    options = {k: v.format(**layout) for k, v in step.options.items()}
    options = {k: v for k, v in options.items() if v}
    options.update(runner_options)
    extra = dict(settings["beam_options"] or {})
    minutes = timeout_minutes(step, settings, run["steps"])
    kwargs = {"runner": runner, "py_interpreter": settings["python"], "timeout_minutes": minutes}
    if runner == "DataflowRunner":
        wave, ds = layout.get("wave", ""), layout["ds"]
        kwargs["dataflow_config"] = _dataflow_config(job_name(run["dag_id"], step.name, ds, wave), settings)
        campaign = layout.get("campaign_id", "")
        options["labels"] = job_labels(run["dag_id"], ds, run["run_id"], campaign, wave)
        given = extra.pop("dataflow_service_options", None) or []
        options["dataflow_service_options"] = [
            *([given] if isinstance(given, str) else list(given)),
            f"max_workflow_runtime_walltime_seconds={int(minutes * 60)}",
        ]
        kwargs["deferrable"] = bool(settings["deferrable"] and step.detachable)
    options.update(extra)
    kwargs["pipeline_options"] = options
    return kwargs
