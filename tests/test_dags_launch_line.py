"""A launcher on Dataflow prints the line Airflow's Beam provider reads the job id from, and nothing more.

The launcher (``pipelines.common.run_main``'s logging) keeps Beam at WARNING; Beam's Dataflow client logs
``Created job with id: [ID]`` at INFO, among the job's whole description. The stand-in launcher
(tests/support/airflow_launcher.py) submits a job through that client, its API stubbed, with a canary in the
job the client logs; the provider's own line callback (``process_line_and_extract_dataflow_job_id_callback``,
imported in Airflow's environment) reads the launcher's output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.airflow import AIRFLOW_VENV, airflow_bin
from tests.support.airflow_launcher import JOB_ID, interpreter
from tests.support.rows import CANARY_NAME

READ_IDS = """
import json, sys
from airflow.providers.google.cloud.hooks.dataflow import process_line_and_extract_dataflow_job_id_callback
found = []
callback = process_line_and_extract_dataflow_job_id_callback(on_new_job_id_callback=found.append)
for line in sys.stdin:
    callback(line)
print(json.dumps(found))
"""


def _provider_reads(output: str) -> list[str]:
    airflow_bin("python")
    proc = subprocess.run(
        [os.path.join(AIRFLOW_VENV, "bin", "python"), "-c", READ_IDS],
        input=output,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _launch(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FAKE_LAUNCH_RECORD": str(tmp_path / "record.jsonl"), "FAKE_CANARY": CANARY_NAME}
    args = ["--runner=DataflowRunner", "--project=p1", "--region=europe-west1", "--job_name=backfill-daily-merge-x"]
    return subprocess.run(
        [interpreter(str(tmp_path)), "-m", "pipelines.merge", *args, *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.e2e
def test_the_job_line_reaches_the_provider_and_nothing_else_of_the_job_is_logged(tmp_path):
    proc = _launch(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _provider_reads(proc.stdout + proc.stderr) == [JOB_ID]
    url = f"https://console.cloud.google.com/dataflow/jobs/europe-west1/{JOB_ID}?project=p1"
    assert proc.stderr.splitlines() == [
        f"Created job with id: [{JOB_ID}]",
        f"To access the Dataflow monitoring console, please navigate to {url}",
    ]
    assert CANARY_NAME not in proc.stdout + proc.stderr  # "Create job: <the job>" stays at INFO, unprinted


@pytest.mark.e2e
def test_with_debug_the_rest_of_the_client_stays_quiet_too(tmp_path):
    proc = _launch(tmp_path, "--debug")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _provider_reads(proc.stderr) == [JOB_ID]
    assert CANARY_NAME not in proc.stdout + proc.stderr
    assert "Submitted job" not in proc.stderr and "Create job" not in proc.stderr


def test_the_launchers_filter_passes_only_the_job_lines_at_info():
    import logging

    from pipelines.common import _JobLines

    keep = _JobLines()

    def record(level: int, msg: str, *args) -> logging.LogRecord:
        return logging.LogRecord("apache_beam.runners.dataflow.internal.apiclient", level, __file__, 1, msg, args, None)

    assert keep.filter(record(logging.INFO, "Created job with id: [%s]", JOB_ID))
    assert keep.filter(record(logging.INFO, "To access the Dataflow monitoring console, please navigate to %s", "u"))
    assert not keep.filter(record(logging.INFO, "Create job: %s", CANARY_NAME))
    assert not keep.filter(record(logging.INFO, "sdk_pipeline_options: %s", {"a": 1}))
    assert keep.filter(record(logging.WARNING, "anything the client warns about"))
    assert sys.modules["pipelines.common"]._DATAFLOW_CLIENT == "apache_beam.runners.dataflow.internal.apiclient"
