"""What a Dataflow launch must say, checked before anything is read or built (``pipelines.common.beam_options``).

On ``--runner DataflowRunner`` every launcher:

* needs ``--region``, given explicitly: the region decides where identity is processed, so there is no
  default (Beam would otherwise take ``gcloud``'s or ``$CLOUDSDK_COMPUTE_REGION``);
* needs ``--dataflow_kms_key projects/P/locations/REGION/keyRings/R/cryptoKeys/K`` (CMEK: identity
  passes through Dataflow's shuffle and Streaming Engine), in the job's region, unless the step carries
  no identity (the report) or the run says ``--no_dataflow_kms_key``: a Beam option registered here, so
  a mistyped opt-out is an unknown flag (exit 2), never a silent run on Google-managed keys;
* checks the job's labels (Dataflow's rules: a key starts with a lowercase letter, keys and values are
  ``[a-z0-9_-]`` and at most 63 characters) and adds ``step`` and ``run_id`` (lowercased); both are
  the launcher's, so ``--labels step=...`` is refused;
* checks that a ``regions/R/subnetworks/S`` subnetwork lies in ``--region``;
* refuses ``--template_location`` and ``--no_wait_until_finish`` for a step that waits for its job and
  reads back the manifest the job wrote (every batch step): a launch that returns before the job runs
  would find nothing to read. The streaming merge only submits its job, so it takes both.

``--no_use_public_ips``, ``--subnetwork``, ``--service_account_email`` and ``--sdk_container_image``
pass through to Beam. Every refusal is one line (:class:`pipelines.common.UserError`).
"""

from __future__ import annotations

import ast
import logging
import re

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions
from apache_beam.options.pipeline_options import WorkerOptions

from pipelines.flags import shown_value

__all__ = ["DeployOptions", "dataflow_args", "is_dataflow", "run_labels"]

log = logging.getLogger("backfill")

WITHOUT_IDENTITY = frozenset({"report"})  # steps whose jobs read no identity value
SUBMIT_ONLY = frozenset({"merge-streaming"})  # steps that submit their job and return
RESERVED_LABELS = ("step", "run_id")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}\Z")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}\Z")
_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]+\Z")
_KMS_KEY = re.compile(r"projects/[^/\s]+/locations/([^/\s]+)/keyRings/[^/\s]+/cryptoKeys/[^/\s]+\Z")
_SUBNET_REGION = re.compile(r"(?:^|/)regions/([^/]+)/subnetworks/")
KMS_FORM = "projects/P/locations/REGION/keyRings/R/cryptoKeys/K"


class DeployOptions(PipelineOptions):
    """The one option this project adds to Beam's: the explicit opt-out of CMEK on Dataflow."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--no_dataflow_kms_key",
            action="store_true",
            default=False,
            help="backfill: run a Dataflow job that carries identity without --dataflow_kms_key (Google-managed "
            "keys for its shuffle and state); without this, such a run is refused",
        )


def _user_error(message: str) -> Exception:
    from pipelines.common import UserError

    return UserError(message)


def is_dataflow(args: list[str]) -> bool:
    """Whether Beam flags choose Dataflow (``DataflowRunner``, ``TestDataflowRunner``, a dotted path to one)."""
    runner = ""
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(args):
            runner = args[i + 1]
    name = runner.rsplit(".", 1)[-1].lower()
    return name in ("dataflow", "dataflowrunner", "testdataflowrunner")


def dataflow_args(args: list[str], *, step: str | None = None, run_id: str | None = None) -> list[str]:
    """``args`` checked for a Dataflow launch (module docstring), with the ``step`` and ``run_id`` labels added;
    unchanged for any other runner."""
    if not is_dataflow(args):
        return args
    options = PipelineOptions(args)
    cloud = options.view_as(GoogleCloudOptions)
    region = _check_region(cloud.region)
    _check_kms(cloud.dataflow_kms_key, options.view_as(DeployOptions).no_dataflow_kms_key, region, step)
    _check_network(options.view_as(WorkerOptions), region)
    _check_waiting(options, cloud.template_location, step)
    given = user_labels(cloud.labels)
    added = run_labels(step, run_id) if step else {}
    clash = sorted(set(given) & set(RESERVED_LABELS))
    if clash:
        raise _user_error(f"--labels {clash[0]}=...: the {clash[0]} label is set by the launcher")
    return [*args, *(f"--labels={key}={value}" for key, value in added.items())]


def _check_region(region: str | None) -> str:
    if not region:
        raise _user_error(
            "DataflowRunner needs --region (e.g. --region europe-west1): no default, the region decides where "
            "identity data is processed"
        )
    if not _REGION.match(region):
        raise _user_error(f"--region {region!r} is not a Dataflow region (e.g. europe-west1)")
    return region


def _check_kms(key: str | None, opted_out: bool, region: str, step: str | None) -> None:
    if key and opted_out:
        raise _user_error("--dataflow_kms_key and --no_dataflow_kms_key contradict each other: give one")
    if key:
        match = _KMS_KEY.match(key)
        if not match:
            raise _user_error(f"--dataflow_kms_key {key!r} is not a Cloud KMS key name ({KMS_FORM})")
        if match.group(1) != region:
            raise _user_error(
                f"--dataflow_kms_key is in {match.group(1)}, the job in {region}: Dataflow needs a key in the "
                "job's region"
            )
        return
    if step in WITHOUT_IDENTITY:
        return
    if opted_out:
        log.warning("--no_dataflow_kms_key: the job's shuffle and state are encrypted with Google-managed keys")
        return
    raise _user_error(
        f"DataflowRunner needs --dataflow_kms_key {KMS_FORM} (CMEK): identity passes through Dataflow's "
        "shuffle and Streaming Engine; --no_dataflow_kms_key runs on Google-managed keys instead"
    )


def _check_network(worker: WorkerOptions, region: str) -> None:
    subnet = worker.subnetwork or ""
    match = _SUBNET_REGION.search(subnet)
    if match and match.group(1) != region:
        raise _user_error(f"--subnetwork is in {match.group(1)}, the job in {region}: give the region's subnetwork")
    if worker.use_public_ips is False and not worker.sdk_container_image:
        log.warning(
            "--no_use_public_ips without --sdk_container_image: the workers install the project's dependencies "
            "from PyPI at start, which needs Cloud NAT or a mirror; the worker image (Dockerfile) needs neither"
        )


def _check_waiting(options: PipelineOptions, template_location: str | None, step: str | None) -> None:
    if step in SUBMIT_ONLY:
        return
    if template_location:
        flag = "--template_location"
    elif options.view_as(StandardOptions).no_wait_until_finish:
        flag = "--no_wait_until_finish"
    else:
        return
    raise _user_error(
        f"{flag}: backfill {step or 'this step'} waits for its job and reads back the manifest the job wrote, so "
        "it cannot return before the job runs: launch it from a process that waits (Airflow's Beam operator, or "
        "the worker image running the step's launcher)"
    )


def user_labels(labels) -> dict[str, str]:
    """The labels given with ``--labels k=v`` (or Beam's JSON form), checked against Dataflow's rules."""
    found: dict[str, str] = {}
    for label in [labels] if isinstance(labels, (str, dict)) else labels or []:
        if isinstance(label, dict):
            pairs = label.items()
        elif label.lstrip().startswith("{"):
            try:
                pairs = dict(ast.literal_eval(label)).items()
            except (ValueError, SyntaxError, TypeError):
                raise _user_error(f"--labels {label!r} is neither k=v nor a JSON object") from None
        else:
            key, _, value = label.partition("=")
            pairs = [(key, value)]
        for key, value in pairs:
            _check_label(str(key), str(value))
            found[str(key)] = str(value)
    return found


def run_labels(step: str, run_id: str | None) -> dict[str, str]:
    """The launcher's labels: ``step`` and, once the run has one, ``run_id`` (lowercased)."""
    labels = {"step": step.lower()}
    if run_id:
        labels["run_id"] = run_id.lower()[:63]
    for key, value in labels.items():
        _check_label(key, value)
    return labels


def _check_label(key: str, value: str) -> None:
    if not _LABEL_KEY.match(key):
        raise _user_error(
            f"--labels {key!r}: a label key starts with a lowercase letter and has at most 63 of a-z 0-9 _ -"
        )
    if not _LABEL_VALUE.match(value):
        raise _user_error(f"--labels {key}={shown_value(value)}: a label value has at most 63 of a-z 0-9 _ -")
