"""The DAGs keep hold of their jobs, run by Airflow itself (``airflow dags test``, SQLite, offline).

A probe DAG runs the DAGs' real launch task (``backfill_operator.step_task``: the mapped
``BackfillBeamOperator``) over launches planned by ``backfill_config.check_params`` from settings, with
the interpreter setting pointing at a stand-in launcher (tests/support/airflow_launcher.py) that submits
its "Dataflow job" through Beam's own Dataflow client, its API stubbed. Checked, in Airflow's own
database and the launcher's record:

* the job id Beam's client logs reaches XCom (``dataflow_job_id``, ``dataflow_job_url``, the task's
  return value), and the launch options (region, CMEK key, public IPs, subnetwork, service account,
  worker image, labels, job name, Dataflow's own time limit) reach the launcher as Beam options;
* a retried launch uses the same job name as the first try;
* a step past its time limit fails and its launcher is gone (no orphan writing the same folder);
* deferrable: the launcher is stopped once the job runs and the task hands the job to Dataflow's trigger;
* a missing day-D merge fails the real ``backfill_daily`` merge of D+1 in one line naming D.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from tests.support.airflow import DAGS, dags_test, migrated_home, task_states, trigger_timeouts, triggers, xcoms
from tests.support.airflow_launcher import JOB_ID, interpreter
from tests.support.rows import CANARY_NAME

sys.path.insert(0, DAGS)
import backfill_config as cfg  # plain Python: no Airflow needed

DAY = "2026-12-01"
KMS = "projects/p1/locations/europe-west1/keyRings/backfill/cryptoKeys/dataflow"
SUBNET = "regions/europe-west1/subnetworks/backfill-private"
IMAGE = "europe-west1-docker.pkg.dev/p1/backfill/worker:0.1.0"
PROBE_DAG = """
import datetime as dt, json, sys
import pendulum
from airflow.sdk import DAG, task
sys.path.insert(0, {dags!r})
import backfill_config as cfg
from backfill_operator import step_task

PLAN = json.loads({plan!r})
with DAG(dag_id="launch_probe", schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC"), catchup=False,
         default_args={{"retries": {retries}, "retry_delay": dt.timedelta(seconds=1)}}):
    @task(task_id="merge_due")
    def due():
        return PLAN
    step_task(cfg.DAILY_STEPS[0], due())
"""


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """env + a migrated SQLite database, copied per `dags test`."""
    return migrated_home(str(tmp_path_factory.mktemp("airflow-home")))


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """Settings of a daily merge (base, keyset, registrations of the day before), the stand-in interpreter."""
    tmp = tmp_path_factory.mktemp("dag-launch")
    for name in ("base.parquet", "keys.json"):
        (tmp / name).write_text("stand-in: the launcher in these tests reads nothing")
    for day in ("2026-11-27", "2026-11-28", "2026-11-30"):
        (tmp / "registrations" / day).mkdir(parents=True)
    conf = {
        "base": str(tmp / "base.parquet"),
        "keys": str(tmp / "keys.json"),
        "registrations": str(tmp / "registrations"),
        "out": str(tmp / "out"),
        "python": interpreter(str(tmp)),
    }
    return {"tmp": tmp, "conf": conf}


def _dataflow(conf: dict, **more) -> dict:
    return {
        **conf,
        "runner": "DataflowRunner",
        "out": "gs://demo-bucket/out",
        "project": "p1",
        "region": "europe-west1",
        "temp_location": "gs://demo-bucket/tmp",
        "dataflow_kms_key": KMS,
        "no_use_public_ips": "true",
        "subnetwork": SUBNET,
        "service_account_email": "backfill-worker@p1.iam.gserviceaccount.com",
        "sdk_container_image": IMAGE,
        **more,
    }


def _probe(airflow, tmp, conf, monkeypatch, retries=0, mode="job", run_id="manual__probe"):
    """Plan the day's merge from ``conf``, then run it in the probe DAG; returns (result, launcher records).
    Airflow has a Google connection without credentials (the operator reads it; nothing here calls Google)."""
    monkeypatch.setattr(cfg, "_list_dirs", lambda folder: [])  # no bucket to list: the first merge
    plan = cfg.check_params(conf, {}.get, DAY, cfg.DAILY_STEPS, "daily", run_id=run_id)["merge"]
    dags = tmp / f"dags-{mode}-{retries}"
    dags.mkdir()
    (dags / "probe.py").write_text(PROBE_DAG.format(dags=DAGS, plan=json.dumps(plan), retries=retries))
    record = tmp / f"record-{mode}-{retries}.jsonl"
    extra = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": "google-cloud-platform://",
        "NO_GCE_CHECK": "True",  # google-auth: no metadata server to ask
        "CLOUDSDK_CONFIG": str(tmp / "no-gcloud"),
        "GOOGLE_APPLICATION_CREDENTIALS": "",
        "FAKE_LAUNCH_RECORD": str(record),
        "FAKE_LAUNCH_MODE": mode,
        "FAKE_CANARY": CANARY_NAME,
    }
    result = dags_test(airflow, "launch_probe", DAY, {}, extra_env=extra)
    records = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return result, records


def _gone(pid: int, wait: float = 30.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


@pytest.mark.e2e
def test_the_job_id_and_console_link_reach_xcom_and_the_options_reach_beam(airflow, place, monkeypatch):
    result, records = _probe(airflow, place["tmp"], _dataflow(place["conf"]), monkeypatch)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "state=success" in log, log[-4000:]
    pushed = xcoms(result.home, "launch_probe", "merge")
    url = f"https://console.cloud.google.com/dataflow/jobs/europe-west1/{JOB_ID}?project=p1"
    assert pushed["dataflow_job_id"] == JOB_ID and pushed["dataflow_job_url"] == url
    assert pushed["return_value"] == {"dataflow_job_id": JOB_ID, "dataflow_job_url": url}
    assert pushed["dataflow_job_config"] == url  # the task's console link (Airflow stores it formatted)
    assert CANARY_NAME not in log  # Beam's client logged the whole job (with the canary) at INFO: not passed on
    [launch] = records
    seen = launch["options"]
    assert seen["job_name"] == "backfill-daily-merge-2026-12-01" and seen["runner"] == "DataflowRunner"
    assert (seen["project"], seen["region"], seen["dataflow_kms_key"]) == ("p1", "europe-west1", KMS)
    assert seen["use_public_ips"] is False and seen["subnetwork"] == SUBNET and seen["sdk_container_image"] == IMAGE
    assert seen["service_account_email"] == "backfill-worker@p1.iam.gserviceaccount.com"
    labels = dict(label.split("=", 1) for label in seen["labels"])
    assert labels == {
        "dag": "backfill_daily",
        "day": DAY,
        "airflow_run": "manual__probe",
        "airflow-version": labels["airflow-version"],
    }
    hours = cfg.DAILY_STEPS[0].timeout.total_seconds()
    assert seen["dataflow_service_options"] == [f"max_workflow_runtime_walltime_seconds={int(hours)}"]


@pytest.mark.e2e
def test_a_retry_launches_under_the_same_job_name(airflow, place, monkeypatch):
    result, records = _probe(airflow, place["tmp"], _dataflow(place["conf"]), monkeypatch, retries=1, mode="fail-once")
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "state=success" in log, log[-4000:]
    assert len(records) == 2 and records[0]["pid"] != records[1]["pid"]
    assert records[0]["options"]["job_name"] == records[1]["options"]["job_name"] == "backfill-daily-merge-2026-12-01"
    assert task_states(result.home, "launch_probe")["merge"] == [("success", 2)]
    assert xcoms(result.home, "launch_probe", "merge")["dataflow_job_id"] == JOB_ID


@pytest.mark.e2e
def test_a_step_past_its_time_limit_fails_and_leaves_no_launcher_behind(airflow, place, monkeypatch):
    conf = {**place["conf"], "timeouts": {"merge": 0.5}}  # 30 seconds, on the local runner
    started = time.monotonic()
    result, records = _probe(airflow, place["tmp"], conf, monkeypatch, mode="hang")
    log = result.stdout + result.stderr
    assert result.returncode != 0 and "AirflowTaskTimeout" in log, log[-4000:]
    assert time.monotonic() - started < 600  # the launcher sleeps an hour
    [launch] = records
    assert _gone(launch["pid"]), "the launcher outlived its task"
    assert task_states(result.home, "launch_probe")["merge"] == [("failed", 1)]


@pytest.mark.e2e
def test_deferrable_stops_the_launcher_and_hands_the_job_to_the_trigger(airflow, place, monkeypatch):
    conf = _dataflow(place["conf"], deferrable="true")
    result, records = _probe(airflow, place["tmp"], conf, monkeypatch, mode="job-hang")
    log = result.stdout + result.stderr
    [launch] = records
    assert _gone(launch["pid"]), "the launcher was not stopped once its job ran"
    assert "its launcher is stopped, the triggerer waits" in log, log[-4000:]
    [(path, kwargs)] = triggers(result.home)
    assert path.endswith(".DataflowJobStateCompleteTrigger")
    assert (kwargs["job_id"], kwargs["project_id"], kwargs["location"]) == (JOB_ID, "p1", "europe-west1")
    assert all(trigger_timeouts(result.home, "launch_probe", "merge"))  # the wait ends with the time limit
    assert xcoms(result.home, "launch_probe", "merge")["dataflow_job_id"] == JOB_ID
    # offline there is no Dataflow API to ask: the trigger reports that, and the task fails rather than succeed
    assert "Your default credentials were not found" in log
    assert task_states(result.home, "launch_probe")["merge"][0][0] == "failed"


@pytest.mark.e2e
def test_a_missing_merge_fails_the_next_days_merge_in_one_line(airflow, place, tmp_path):
    out = tmp_path / "out"
    (out / "merge" / "2026-11-27").mkdir(parents=True)
    (out / "merge" / "2026-11-27" / "manifest.json").write_text("{}")  # 11-28's merge never completed
    conf = {**place["conf"], "out": str(out), "python": sys.executable}
    result = dags_test(airflow, "backfill_daily", "2026-11-29", conf)
    log = result.stdout + result.stderr
    assert result.returncode != 0
    message = f"merge 2026-11-29: the merge of 2026-11-28 is missing ({out}/merge/2026-11-28/manifest.json)"
    lines = [ln for ln in log.splitlines() if message in ln and "[error" in ln]
    assert len(lines) == 1, log[-4000:]
    assert "Running command" not in log  # nothing was launched
    states = task_states(result.home, "backfill_daily")
    assert states["check_params"] == [("success", 1)] and states["merge"] == [("failed", 1)]  # no retry
