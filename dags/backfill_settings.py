"""Settings of the backfill DAGs: where each comes from, and the checks of the runner, interpreter and paths.

Every setting is read, in this order, from the DAG run's params, then from
the Airflow Variable ``backfill_<name>``, then from the default below
(``resolve``). ``backfill_config.check_params`` uses the checks here before
anything is launched. Plain Python, beside the DAGs: nothing here imports Beam
or the project.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess

__all__ = [
    "PROJECT_DIR",
    "VARIABLE_PREFIX",
    "LOCAL_RUNNER",
    "RUNNERS",
    "SETTINGS",
    "ConfigError",
    "resolve",
    "need",
    "is_remote",
    "check_local",
    "check_interpreter",
    "check_runner",
]

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


class ConfigError(Exception):
    """A setting the operator must fix; str() is one line."""


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


def need(settings: dict, *names: str) -> None:
    for name in names:
        if settings.get(name) in (None, ""):
            raise ConfigError(
                f"missing setting {name!r} ({SETTINGS[name][1]}): pass the DAG param {name} "
                f"or set the Airflow Variable {VARIABLE_PREFIX}{name}"
            )


def is_remote(path: str) -> bool:
    return "://" in path


def check_local(name: str, path: str) -> None:
    """A local path must exist (a glob must match); remote paths are checked by the step itself."""
    if not is_remote(path) and not glob.glob(path):
        raise ConfigError(f"{name} {path}: no such file or directory")


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


def check_runner(settings: dict, steps) -> tuple[str, dict]:
    """The runner the steps launch on and its options; checks its settings and the project's interpreter."""
    runner = settings["runner"]
    if runner not in RUNNERS:
        raise ConfigError(f"runner {runner!r} is not available here: use {LOCAL_RUNNER} (local) or DataflowRunner")
    modules = ["apache_beam", *(s.module for s in steps)]
    if runner != "DataflowRunner":
        check_interpreter(settings["python"], modules)
        return LOCAL_RUNNER, {}
    need(settings, "project", "region", "temp_location")
    for name in ("temp_location", "out"):
        if not str(settings[name]).startswith("gs://"):
            raise ConfigError(f"{name} {settings[name]} must be a gs:// path with DataflowRunner")
    check_local("setup_file", settings["setup_file"])
    check_interpreter(settings["python"], [*modules, "apache_beam.runners.dataflow.dataflow_runner"])
    options = {"temp_location": settings["temp_location"], "setup_file": settings["setup_file"]}
    return "DataflowRunner", options
