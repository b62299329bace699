"""Settings of the backfill DAGs: where each comes from, and the checks of the runner, interpreter and paths.

Every setting is read, in this order, from the DAG run's params, then from
the Airflow Variable ``backfill_<name>``, then from the default below
(``resolve``). ``backfill_config.check_params`` uses the checks here before
anything is launched. Plain Python, beside the DAGs: nothing here imports Beam
or the project.
"""

from __future__ import annotations

import difflib
import glob
import json
import os
import re
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
    "check_dataflow",
]

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIABLE_PREFIX = "backfill_"
LOCAL_RUNNER = "FnApiRunner"  # explicit: Beam's DirectRunner may download the Prism runner
KMS_FORM = "projects/P/locations/REGION/keyRings/R/cryptoKeys/K"
WITHOUT_IDENTITY = frozenset({"report"})  # steps whose jobs read no identity value (no CMEK needed)
_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]+\Z")
_KMS_KEY = re.compile(r"projects/[^/\s]+/locations/([^/\s]+)/keyRings/[^/\s]+/cryptoKeys/[^/\s]+\Z")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SUBNET_REGION = re.compile(r"(?:^|/)regions/([^/]+)/subnetworks/")
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
    "service_account_email": (
        None,
        "worker service account email (DataflowRunner; the older name service_account too)",
    ),
    "dataflow_kms_key": (None, "CMEK for the Dataflow jobs' state and shuffle: " + KMS_FORM + " in the job's region"),
    "no_dataflow_kms_key": (False, "true: Dataflow jobs that carry identity run on Google-managed keys (no CMEK)"),
    "no_use_public_ips": (False, "true: Dataflow workers get no public IP (Private Google Access or Cloud NAT)"),
    "subnetwork": (None, "Dataflow workers' subnetwork, regions/REGION/subnetworks/NAME (or its full URL)"),
    "sdk_container_image": (None, "Dataflow worker image, passed through as --sdk_container_image"),
    "timeouts": (
        {},
        'minutes a step may run before it is stopped (and its Dataflow job cancelled), e.g. {"merge": 600}',
    ),
    "deferrable": (False, "true (DataflowRunner only): scan, merge and report wait for their job in the triggerer"),
    "beam_options": ({}, 'extra Beam options for every step, e.g. {"max_num_workers": 40}'),
}
ALIASES = {"service_account_email": "service_account"}  # the name the setting had before
# Options that have a setting of their own (or are the DAG's to set): refused in beam_options.
OWN_OPTIONS = (
    "runner",
    "project",
    "region",
    "temp_location",
    "setup_file",
    "job_name",
    "labels",
    "service_account_email",
    "dataflow_kms_key",
    "no_dataflow_kms_key",
    "use_public_ips",
    "no_use_public_ips",
    "subnetwork",
    "sdk_container_image",
)


class ConfigError(Exception):
    """A setting the operator must fix; str() is one line."""


def resolve(params: dict, variables) -> dict:
    """Settings from params, then Variables (``variables(name) -> str | None``), then defaults; typed
    (``true``/``false`` for on/off settings, JSON objects for ``beam_options`` and ``timeouts``). A param
    that is no setting (a typo in the run's conf, e.g. ``notify-topic``) is refused, not left unread."""
    _known_params(params)
    settings = {}
    for name, (default, _) in SETTINGS.items():
        value = _given(params, variables, name)
        if value in (None, "") and name in ALIASES:
            value = _given(params, variables, ALIASES[name])
        if value in (None, ""):
            value = default
        settings[name] = _typed(name, value, default)
    for key in settings["beam_options"]:
        own = str(key).replace("-", "_")
        if own in OWN_OPTIONS:
            where = "the no_use_public_ips setting" if own == "use_public_ips" else f"the {own} setting"
            raise ConfigError(
                f"beam_options {key!r}: set it through "
                + (where if own in SETTINGS or own == "use_public_ips" else "nothing: the DAGs set it themselves")
            )
    return settings


def _known_params(params: dict) -> None:
    unknown = sorted(set(params) - set(SETTINGS) - set(ALIASES.values()), key=str)
    if not unknown:
        return
    name = str(unknown[0])
    if not _PLAIN_NAME.fullmatch(name):
        raise ConfigError("a param whose name is not a plain word is no setting of these DAGs")
    close = difflib.get_close_matches(name.replace("-", "_").lower(), list(SETTINGS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; the settings: {', '.join(SETTINGS)}"
    raise ConfigError(f"param {name!r} is no setting of these DAGs{hint}")


def _given(params: dict, variables, name: str):
    value = params.get(name)
    return variables(VARIABLE_PREFIX + name) if value in (None, "") else value


def _typed(name: str, value, default):
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return text in ("true", "yes", "1", "on")
        raise ConfigError(f"{name} {str(value)[:60]!r} is not true or false")
    if isinstance(default, dict):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(f"{name} is not a JSON object: {value[:60]!r}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{name} is not a JSON object: {str(value)[:60]!r}")
    return value


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
        if settings["deferrable"]:
            raise ConfigError(
                f"deferrable needs DataflowRunner: on {LOCAL_RUNNER} the pipeline runs in the task itself"
            )
        check_interpreter(settings["python"], modules)
        return LOCAL_RUNNER, {}
    need(settings, "project", "region", "temp_location")
    for name in ("temp_location", "out"):
        if not str(settings[name]).startswith("gs://"):
            raise ConfigError(f"{name} {settings[name]} must be a gs:// path with DataflowRunner")
    check_dataflow(settings, steps)
    check_local("setup_file", settings["setup_file"])
    check_interpreter(settings["python"], [*modules, "apache_beam.runners.dataflow.dataflow_runner"])
    options = {"temp_location": settings["temp_location"], "setup_file": settings["setup_file"]}
    for name in ("dataflow_kms_key", "subnetwork", "sdk_container_image"):
        if settings[name]:
            options[name] = settings[name]
    for name in ("no_dataflow_kms_key", "no_use_public_ips"):
        if settings[name]:
            options[name] = True  # a bare --flag
    return "DataflowRunner", options


def check_dataflow(settings: dict, steps) -> None:
    """The pinned region, the CMEK key (in that region; or the explicit opt-out) and the subnetwork's region."""
    region = settings["region"]
    if not _REGION.match(region):
        raise ConfigError(f"region {region!r} is not a Dataflow region (e.g. europe-west1)")
    key = settings["dataflow_kms_key"]
    if key and settings["no_dataflow_kms_key"]:
        raise ConfigError("dataflow_kms_key and no_dataflow_kms_key contradict each other: set one")
    if key:
        match = _KMS_KEY.match(key)
        if not match:
            raise ConfigError(f"dataflow_kms_key {key!r} is not a Cloud KMS key name ({KMS_FORM})")
        if match.group(1) != region:
            raise ConfigError(
                f"dataflow_kms_key is in {match.group(1)}, the jobs in {region}: Dataflow needs a key in the jobs' region"
            )
    elif not settings["no_dataflow_kms_key"] and any(s.name not in WITHOUT_IDENTITY for s in steps):
        raise ConfigError(
            f"missing setting 'dataflow_kms_key' ({KMS_FORM}): identity passes through Dataflow's shuffle; "
            "set no_dataflow_kms_key to true to run on Google-managed keys instead"
        )
    match = _SUBNET_REGION.search(settings["subnetwork"] or "")
    if match and match.group(1) != region:
        raise ConfigError(f"subnetwork is in {match.group(1)}, the jobs in {region}: give the region's subnetwork")
