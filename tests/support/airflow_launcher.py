"""A stand-in for the project's interpreter in the DAG tests (run as a script: :func:`interpreter` writes
the wrapper the DAGs' ``python`` setting points at).

The Beam operator runs its interpreter twice: ``PYTHON -c CODE`` (the provider's Beam version probe,
handed to the real interpreter) and ``PYTHON -m pipelines.STEP FLAGS...`` (the launch). A launch
appends to ``$FAKE_LAUNCH_RECORD`` (JSON lines) its pid, step, command line and the Beam options Beam
parses from it, then, by ``$FAKE_LAUNCH_MODE``:

* ``job``: submits a Dataflow job through Beam's own Dataflow client
  (``DataflowApplicationClient.submit_job_description``, the code that logs ``Created job with id``)
  with its API stubbed to answer job ``$FAKE_JOB_ID`` (the job it returns carries a canary the client
  logs at INFO in ``Create job: ...``); all under ``pipelines.common.run_main``, so the line reaches
  stderr through the launchers' own logging; exits 0;
* ``job-hang``: the same, then waits to be stopped (a long job);
* ``fail-once``: the first launch of a job name exits 3 without a job, the next is ``job``;
* ``hang``: waits to be stopped, without a job.
"""

from __future__ import annotations

import json
import os
import sys
import time
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JOB_ID = "2026-12-05_01_02_03-1234567890"


def interpreter(folder: str) -> str:
    """An executable ``python`` in ``folder`` that runs this script under the project's interpreter."""
    path = os.path.join(folder, "python")
    with open(path, "w", encoding="utf-8") as f:
        # -P: this script's folder (tests/support) stays off sys.path: only the checkout's packages are importable
        f.write(f'#!/bin/sh\nexec {sys.executable} -P {os.path.abspath(__file__)} "$@"\n')
    os.chmod(path, 0o755)
    return path


class _StubJobs:
    """Dataflow's jobs API as far as job creation goes: the job back, with the id the test chose."""

    def __init__(self, job_id: str, canary: str) -> None:
        self.job_id, self.canary = job_id, canary

    def create_job(self, request):
        from google.cloud import dataflow

        job = request.job
        return dataflow.Job(
            id=self.job_id, name=job.name, client_request_id=job.client_request_id, labels={"note": self.canary}
        )


def submit(options, job_id: str, canary: str) -> None:
    """Beam's Dataflow client submitting a job (its API stubbed): logs what a real submission logs."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    from apache_beam.runners.dataflow.internal import apiclient
    from google.cloud import dataflow

    client = apiclient.DataflowApplicationClient.__new__(apiclient.DataflowApplicationClient)
    client.google_cloud_options = options.view_as(GoogleCloudOptions)
    client._jobs_client = _StubJobs(job_id, canary)
    name = client.google_cloud_options.job_name or "fake-job"
    client.submit_job_description(SimpleNamespace(proto=dataflow.Job(name=name, client_request_id="req-1")))


def _options_seen(options) -> dict:
    from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions, WorkerOptions

    cloud, worker = options.view_as(GoogleCloudOptions), options.view_as(WorkerOptions)
    return {
        "runner": options.view_as(StandardOptions).runner,
        "job_name": cloud.job_name,
        "project": cloud.project,
        "region": cloud.region,
        "labels": cloud.labels,
        "dataflow_kms_key": cloud.dataflow_kms_key,
        "service_account_email": cloud.service_account_email,
        "dataflow_service_options": cloud.dataflow_service_options,
        "use_public_ips": worker.use_public_ips,
        "subnetwork": worker.subnetwork,
        "sdk_container_image": worker.sdk_container_image,
    }


def _record(entry: dict) -> list[dict]:
    """Append ``entry`` to the record; returns the entries before it."""
    path = os.environ["FAKE_LAUNCH_RECORD"]
    earlier = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            earlier = [json.loads(line) for line in f if line.strip()]
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    return earlier


def _launch(step: str, argv: list[str]) -> int:
    mode = os.environ.get("FAKE_LAUNCH_MODE", "job")
    entry = {"pid": os.getpid(), "step": step, "argv": argv, "options": None}
    if mode == "hang":  # recorded at once: a time limit may come before Beam is even imported
        _record(entry)
        time.sleep(3600)
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.common import run_main

    def body(argv):
        options = PipelineOptions(argv)
        earlier = _record({**entry, "options": _options_seen(options)})
        if mode == "fail-once" and not [e for e in earlier if e["step"] == step]:
            return 3
        submit(options, os.environ.get("FAKE_JOB_ID", JOB_ID), os.environ.get("FAKE_CANARY", "canary"))
        if mode == "job-hang":
            time.sleep(3600)
        return 0

    return run_main(f"backfill {step}", body, argv)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "-c":  # the provider's probe: the real interpreter answers
        os.execv(sys.executable, [sys.executable, *argv])
    if len(argv) < 2 or argv[0] != "-m":
        print(f"airflow_launcher: unexpected command line {argv[:2]}", file=sys.stderr)
        return 2
    sys.path.insert(0, ROOT)
    return _launch(argv[1].rsplit(".", 1)[-1], argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
