"""The DAGs' plans, as plain Python (``backfill_config.check_params``): Dataflow launch options from the settings,
job names and labels, time limits, the merge that refuses to skip a missing day, one-line refusals.

``check_params`` probes the project's interpreter in a subprocess, hence ``e2e``.
"""

from __future__ import annotations

import os
import re
import sys

import pytest

from tests.support.airflow import DAGS, ROOT

sys.path.insert(0, DAGS)
import backfill_config as cfg  # plain Python: no Airflow needed

CAMPAIGN = os.path.join(ROOT, "examples", "campaign.yaml")  # wave 1 on 2026-12-01, wave 2 on 2026-12-15
KMS = "projects/p1/locations/europe-west1/keyRings/backfill/cryptoKeys/dataflow"
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}\Z")


@pytest.fixture
def conf(tmp_path):
    for name in ("base.parquet", "keys.json"):
        (tmp_path / name).write_text("stand-in: nothing is launched here")
    for day in ("2026-11-27", "2026-11-28", "2026-11-29", "2026-11-30", "2026-12-01", "2026-12-14"):
        (tmp_path / "registrations" / day).mkdir(parents=True)
    return {
        "base": str(tmp_path / "base.parquet"),
        "keys": str(tmp_path / "keys.json"),
        "registrations": str(tmp_path / "registrations"),
        "campaign": CAMPAIGN,
        "out": str(tmp_path / "out"),
        "python": sys.executable,
    }


def _dataflow(conf: dict, **more) -> dict:
    return {
        **conf,
        "runner": "DataflowRunner",
        "out": "gs://demo-bucket/out",
        "project": "p1",
        "region": "europe-west1",
        "temp_location": "gs://demo-bucket/tmp",
        "dataflow_kms_key": KMS,
        **more,
    }


def _plan(conf: dict, day: str, kind: str = "campaign", run_id: str = "scheduled__2026-12-01T00:00:00+00:00"):
    steps = cfg.STEPS if kind == "campaign" else cfg.DAILY_STEPS
    return cfg.check_params(conf, {}.get, day, steps, kind, run_id=run_id)


def _merges(monkeypatch, *days: str) -> None:
    """The completed merges a gs:// output holds (no bucket here)."""
    monkeypatch.setattr(cfg, "_list_dirs", lambda folder: sorted(days) if folder.endswith("/merge") else [])


def _names(plan: dict) -> list[str]:
    return [launch["dataflow_config"]["job_name"] for step in cfg.STEPS for launch in plan[step.name]]


@pytest.mark.e2e
def test_job_names_are_one_per_date_and_step_and_the_same_for_every_run_of_a_date(conf, monkeypatch):
    _merges(monkeypatch)
    kickoff = _plan(_dataflow(conf), "2026-12-01")
    assert _names(kickoff) == [
        "backfill-campaign-scan-2026-12-01",
        "backfill-campaign-notify-w1-2026-12-01",
        "backfill-campaign-merge-2026-12-01",
        "backfill-campaign-report-2026-12-01",
    ]
    assert len(set(_names(kickoff))) == 4
    again = _plan(_dataflow(conf), "2026-12-01", run_id="manual__2026-12-01T09:00:00+00:00")
    assert _names(again) == _names(kickoff)  # a re-run writes the same folders: Dataflow refuses a second job
    _merges(monkeypatch, "2026-12-01")
    assert set(_names(_plan(_dataflow(conf), "2026-12-02"))).isdisjoint(_names(kickoff))
    _merges(monkeypatch, "2026-11-28")
    daily = _plan(_dataflow(conf), "2026-11-29", kind="daily")
    assert [m["dataflow_config"]["job_name"] for m in daily["merge"]] == ["backfill-daily-merge-2026-11-29"]
    for launch in (launch for step in cfg.STEPS for launch in kickoff[step.name]):
        assert launch["dataflow_config"]["append_job_name"] is False  # no random suffix per try


@pytest.mark.e2e
def test_dataflow_launches_carry_the_settings_labels_and_time_limits(conf, monkeypatch):
    _merges(monkeypatch)
    run_id = "manual__2026-12-01T09:15:07.783474+00:00_" + "x" * 40  # longer than a label value may be
    settings = _dataflow(
        conf,
        no_use_public_ips=True,
        subnetwork="https://www.googleapis.com/compute/v1/projects/p1/regions/europe-west1/subnetworks/private",
        sdk_container_image="europe-west1-docker.pkg.dev/p1/backfill/worker:0.1.0",
        service_account="backfill-worker@p1.iam.gserviceaccount.com",  # the setting's older name
        timeouts='{"merge": 90}',
        deferrable="yes",
        beam_options={"dataflow_service_options": ["enable_hot_key_logging"], "max_num_workers": 16},
    )
    plan = _plan(settings, "2026-12-01", run_id=run_id)
    merge, notify = plan["merge"][0], plan["notify"][0]
    options = merge["pipeline_options"]
    assert options["dataflow_kms_key"] == KMS and options["no_use_public_ips"] is True
    assert options["subnetwork"] == settings["subnetwork"] and options["max_num_workers"] == 16
    assert options["sdk_container_image"] == settings["sdk_container_image"]
    assert merge["dataflow_config"]["service_account"] == settings["service_account"]
    assert merge["dataflow_config"]["location"] == "europe-west1"
    assert options["dataflow_service_options"] == [
        "enable_hot_key_logging",
        "max_workflow_runtime_walltime_seconds=5400",
    ]
    assert merge["timeout_minutes"] == 90 and plan["scan"][0]["timeout_minutes"] == 240
    assert merge["deferrable"] is True and notify["deferrable"] is False  # notify's launcher cleans up after
    assert notify["pipeline_options"]["labels"]["wave"] == "1"
    labels = options["labels"]
    assert {k: labels[k] for k in ("dag", "campaign", "day")} == {
        "dag": "backfill_campaign",
        "campaign": "rn-2026-q4",
        "day": "2026-12-01",
    }
    assert labels["airflow_run"].startswith("manual__2026-12-01t09-15-07-783474-00-00_x")
    assert all(LABEL_VALUE.match(v) for v in labels.values()) and len(labels["airflow_run"]) == 63
    assert not {"step", "run_id"} & set(labels)  # the launcher's own labels


@pytest.mark.e2e
def test_the_merge_after_a_missing_day_is_refused_and_the_first_day_starts_from_the_base(conf, monkeypatch):
    out = conf["out"]
    first = _plan(conf, "2026-11-28", kind="daily")["merge"][0]
    assert first["pipeline_options"]["base"] == conf["base"] and "merged" not in first["pipeline_options"]
    for day in ("2026-11-27",):
        os.makedirs(os.path.join(out, "merge", day))
        with open(os.path.join(out, "merge", day, "manifest.json"), "w") as f:
            f.write("{}")
    os.makedirs(os.path.join(out, "merge", "2026-11-28"))  # a run that never completed: no manifest
    following = _plan(conf, "2026-11-28", kind="daily")["merge"][0]["pipeline_options"]
    assert following["merged"] == f"{out}/merge/2026-11-27" and "base" not in following
    [refused] = _plan(conf, "2026-11-29", kind="daily")["merge"]
    assert refused == {
        "refuse": f"merge 2026-11-29: the merge of 2026-11-28 is missing ({out}/merge/2026-11-28/manifest.json): run "
        "the DAG for 2026-11-28 first (starting from the merge of 2026-11-27 would leave out the registrations of "
        "the days between)"
    }
    _merges(monkeypatch, "2026-11-30")  # the campaign's first day after a completed one: notify still runs
    kickoff = _plan(_dataflow(conf), "2026-12-01")
    assert kickoff["merge"][0]["pipeline_options"]["merged"] == "gs://demo-bucket/out/merge/2026-11-30"
    _merges(monkeypatch, "2026-12-01")
    wave2 = _plan(_dataflow(conf), "2026-12-15")
    assert list(wave2["merge"][0]) == ["refuse"] and "the merge of 2026-12-14 is missing" in wave2["merge"][0]["refuse"]
    assert wave2["notify"][0]["pipeline_options"]["merged"] == "gs://demo-bucket/out/merge/2026-12-01"


@pytest.mark.e2e
@pytest.mark.parametrize(
    "change, message",
    [
        ({"region": "Europe West"}, "region 'Europe West' is not a Dataflow region"),
        ({"dataflow_kms_key": "projects/p1/keys/k"}, "is not a Cloud KMS key name"),
        ({"dataflow_kms_key": KMS.replace("europe-west1", "us-central1")}, "Dataflow needs a key in the jobs' region"),
        ({"no_dataflow_kms_key": "true"}, "dataflow_kms_key and no_dataflow_kms_key contradict each other"),
        ({"subnetwork": "regions/us-central1/subnetworks/s"}, "subnetwork is in us-central1, the jobs in europe-west1"),
        ({"beam_options": {"region": "us-central1"}}, "beam_options 'region': set it through the region setting"),
        ({"beam_options": {"use_public_ips": True}}, "set it through the no_use_public_ips setting"),
        ({"beam_options": {"labels": {"a": "b"}}}, "beam_options 'labels': set it through nothing"),
        ({"timeouts": {"compact": 10}}, "timeouts 'compact': no such step here"),
        ({"timeouts": {"merge": -5}}, "timeouts merge: -5 is not a positive number of minutes"),
        ({"no_use_public_ips": "maybe"}, "no_use_public_ips 'maybe' is not true or false"),
        ({"runner": "FnApiRunner", "deferrable": True}, "deferrable needs DataflowRunner"),
        (
            {"notify-topic": "projects/p1/topics/t"},
            "param 'notify-topic' is no setting of these DAGs; did you mean 'notify_topic'?",
        ),
        ({"Region": "europe-west1"}, "param 'Region' is no setting of these DAGs; did you mean 'region'?"),
        ({"xyzzy": "1"}, "param 'xyzzy' is no setting of these DAGs; the settings: runner, python, base"),
        ({"金丝雀": "1"}, "a param whose name is not a plain word is no setting of these DAGs"),
    ],
)
def test_bad_launch_settings_are_refused_in_one_line(conf, monkeypatch, change, message):
    _merges(monkeypatch)
    with pytest.raises(cfg.ConfigError) as refused:
        _plan({**_dataflow(conf), **change}, "2026-12-01")
    assert message in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.e2e
def test_dataflow_without_a_key_needs_the_explicit_opt_out(conf, monkeypatch):
    _merges(monkeypatch)
    settings = {k: v for k, v in _dataflow(conf).items() if k != "dataflow_kms_key"}
    with pytest.raises(cfg.ConfigError, match="missing setting 'dataflow_kms_key'"):
        _plan(settings, "2026-12-01")
    plan = _plan({**settings, "no_dataflow_kms_key": "true"}, "2026-12-01")
    assert plan["scan"][0]["pipeline_options"]["no_dataflow_kms_key"] is True
    assert "dataflow_kms_key" not in plan["scan"][0]["pipeline_options"]
