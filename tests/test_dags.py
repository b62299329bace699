"""The Airflow DAGs, loaded and run by Airflow itself.

Airflow lives in its own virtual environment (``requirements-airflow.txt``
says why): ``.venv-airflow`` beside this repository, which ``make test``
builds, or the one ``BACKFILL_AIRFLOW_VENV`` names. Every Airflow command runs
offline against a SQLite database in a temporary ``AIRFLOW_HOME``, with no
example DAGs and no webserver. The pipelines run under the project's own
interpreter (this one), on the local FnApiRunner.

* the DagBag loads both DAGs with no import error, the tasks expected, a
  time limit on every task, and no Beam module imported by parsing them;
* ``airflow dags test backfill_campaign 2026-12-01`` on a small generated base
  runs check_params, scan, wave 1 notices and the day's merge; the outputs
  balance, and a re-run of the date rewrites the same outputs and sends nothing twice;
* bad settings fail check_params with one line in the log;
* ``backfill_config`` (plain Python) resolves settings, plans days, refuses bad ones.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from tests.support.airflow import AIRFLOW_VENV, DAGS, ROOT, dags_test, migrated_home

CAMPAIGN = os.path.join(ROOT, "examples", "campaign.yaml")  # wave 1 on 2026-12-01, wave 2 on 2026-12-15
KICKOFF = "2026-12-01"
sys.path.insert(0, DAGS)
import backfill_config as cfg  # noqa: E402  (plain Python: no Airflow needed)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """env + a migrated SQLite database, copied per `dags test` so each starts clean."""
    return migrated_home(str(tmp_path_factory.mktemp("airflow-home")))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A 2,000-line base, a keyset, and the registrations of the day before the kick-off."""
    from dev import generate

    tmp = str(tmp_path_factory.mktemp("dag-site"))
    base = os.path.join(tmp, "base.parquet")
    generate.write_base(base, 2000, 2013)
    keys = os.path.join(tmp, "secure", "keys.json")
    subprocess.run([sys.executable, "-m", "pipelines.keys", "init", "--keys", keys], check=True, capture_output=True)
    import pyarrow.parquet as pq

    lines = [
        r["line_id"]
        for r in pq.read_table(base, columns=["line_id", "status", "subscriber_kind"]).to_pylist()
        if r["line_id"]
        and (r["status"] or "").strip().upper() == "ACTIVE"
        and (r["subscriber_kind"] or "").strip().upper() == "INDIVIDUAL"
    ][:30]
    day = os.path.join(tmp, "registrations", "2026-11-30")
    os.makedirs(day)
    with open(os.path.join(day, "events.jsonl"), "w", encoding="utf-8") as f:
        for i, line in enumerate(lines):
            f.write(
                json.dumps(
                    {
                        "event_id": f"EV{i:04d}",
                        "line_id": line,
                        "doc_type": "RESIDENT_ID",
                        "doc_number": "11010519491231002X",
                        "name": "张三",
                        "address": "北京市朝阳区建国路88号",
                        "channel": "STORE",
                        "verified_by": "ID_CARD_READER",
                        "registered_at": f"2026-11-30T{8 + i % 10:02d}:00:00",
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    return {
        "tmp": tmp,
        "conf": {
            "base": base,
            "campaign": CAMPAIGN,
            "keys": keys,
            "out": os.path.join(tmp, "out"),
            "registrations": os.path.join(tmp, "registrations"),
            "python": sys.executable,
        },
    }


@pytest.mark.e2e
def test_dagbag_loads_both_dags_without_beam(airflow):
    probe = f"""
import json, sys
sys.path.insert(0, {DAGS!r})  # as Airflow does for the DAGs folder (bundle) it parses: backfill_config is beside
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={DAGS!r})
print(json.dumps({{"errors": {{k: v.splitlines()[-1] for k, v in bag.import_errors.items()}},
                  "dags": {{d: sorted(t.task_id for t in dag.tasks) for d, dag in bag.dags.items()}},
                  "meta": {{d: [dag.catchup, sorted(dag.tags), bool(dag.doc_md), dag.default_args.get("retries")]
                           for d, dag in bag.dags.items()}},
                  "timeouts": {{f"{{d}}.{{t.task_id}}": t.execution_timeout and t.execution_timeout.total_seconds()
                               for d, dag in bag.dags.items() for t in dag.tasks}},
                  "beam": sorted(m for m in sys.modules if m == "apache_beam" or m.startswith("apache_beam."))}}))
"""
    proc = subprocess.run(
        [os.path.join(AIRFLOW_VENV, "bin", "python"), "-c", probe],
        env=airflow,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    bag = json.loads(proc.stdout.strip().splitlines()[-1])
    assert bag["errors"] == {}
    steps = [s.name for s in cfg.STEPS]
    assert bag["dags"]["backfill_campaign"] == sorted(["check_params", *steps, *(f"{s}_due" for s in steps)])
    daily = [s.name for s in cfg.DAILY_STEPS]
    assert bag["dags"]["backfill_daily"] == sorted(["check_params", *daily, *(f"{s}_due" for s in daily)])
    for dag_id, (catchup, tags, doc, retries) in bag["meta"].items():
        assert catchup is False and "subscriber-backfill" in tags and doc and retries >= 1, dag_id
    assert bag["beam"] == []  # parsing the DAGs imports no Beam
    # every task has a time limit; a step's is its default (the run's settings may change it)
    assert all(bag["timeouts"].values()), bag["timeouts"]
    for step in cfg.STEPS:
        assert bag["timeouts"][f"backfill_campaign.{step.name}"] == step.timeout.total_seconds()


def test_every_step_of_the_dags_is_a_pipeline_module():
    import importlib.util

    for step in cfg.STEPS:
        assert importlib.util.find_spec(step.module), step.module


def _digest(folder: str) -> list[str]:
    import pyarrow.parquet as pq

    return sorted(
        json.dumps(r, sort_keys=True, default=str, ensure_ascii=False)
        for f in sorted(glob.glob(os.path.join(folder, "*.parquet")))
        for r in pq.read_table(f).to_pylist()
    )


def _outputs(out: str) -> dict:
    root = os.path.join(out, "campaigns", "rn-2026-q4")
    return {
        "classified": _digest(os.path.join(root, "scan", "classified")),
        "merged": _digest(os.path.join(out, "merge", KICKOFF, "base")),
        "history": _digest(os.path.join(root, "notify", "history", "jobs")),
        "job_files": sorted(
            os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "notify", "jobs", "*", "*"))
        ),
    }


@pytest.mark.e2e
def test_campaign_dag_runs_end_to_end_and_a_rerun_changes_nothing(airflow, site):
    out = site["conf"]["out"]
    first = dags_test(airflow, "backfill_campaign", KICKOFF, site["conf"])
    assert first.returncode == 0 and "state=success" in first.stdout + first.stderr, (first.stdout + first.stderr)[
        -4000:
    ]
    log = first.stdout + first.stderr
    assert "Running command: " + sys.executable + " -m pipelines.scan --runner=FnApiRunner" in log
    root = os.path.join(out, "campaigns", "rn-2026-q4")
    with open(os.path.join(root, "scan", "summary.json"), encoding="utf-8") as f:
        scan = json.load(f)
    assert scan["balanced"] and scan["rows_in"] == 2000 and scan["as_of"] == KICKOFF
    assert glob.glob(os.path.join(root, "scan", "classified", "*.parquet"))
    with open(os.path.join(root, "notify", "manifest.json"), encoding="utf-8") as f:
        notify = json.load(f)
    assert notify["counts"]["balanced"] and notify["campaign"]["wave"] == 1 and notify["as_of"] == KICKOFF
    assert sum(notify["counts"]["jobs"].values()) > 0
    with open(os.path.join(out, "merge", KICKOFF, "manifest.json"), encoding="utf-8") as f:
        merge = json.load(f)
    assert merge["counts"]["base"]["balanced"] and merge["counts"]["events"]["balanced"]
    assert merge["counts"]["events"]["applied"] == 30 and merge["inputs"]["base_kind"] == "raw"
    with open(os.path.join(root, "report", KICKOFF, "manifest.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["as_of"] == KICKOFF and report["inputs"]["merge_run_id"] == merge["run_id"]
    assert report["completion"]["needed"] == scan["needs_registration"]
    import pyarrow.parquet as pq

    needed = {
        r["line_id"]
        for r in pq.read_table(
            os.path.join(root, "scan", "classified"), columns=["line_id", "needs_registration"]
        ).to_pylist()
        if r["needs_registration"]
    }
    with open(os.path.join(site["tmp"], "registrations", "2026-11-30", "events.jsonl"), encoding="utf-8") as f:
        registered = {json.loads(line)["line_id"] for line in f} & needed
    assert report["completion"]["registered"] == report["completion"]["complete"] == len(registered) > 0
    assert os.path.exists(os.path.join(root, "report", KICKOFF, "report.html"))
    before = _outputs(out)

    again = dags_test(airflow, "backfill_campaign", KICKOFF, site["conf"])
    assert again.returncode == 0 and "state=success" in again.stdout + again.stderr, (again.stdout + again.stderr)[
        -4000:
    ]
    assert _outputs(out) == before  # same rows; notify found its history and handed over nothing new
    assert "handed over 0 job(s)" in again.stdout + again.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    "change, message",
    [
        ({"base": "/nonexistent/base.parquet"}, "base /nonexistent/base.parquet: no such file or directory"),
        ({"runner": "SparkRunner"}, "runner 'SparkRunner' is not available here"),
        ({"keys": ""}, "missing setting 'keys'"),
    ],
)
def test_bad_settings_fail_check_params_in_one_line(airflow, site, change, message):
    proc = dags_test(airflow, "backfill_campaign", KICKOFF, {**site["conf"], **change})
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    lines = [ln for ln in log.splitlines() if "check_params: " in ln and "[error" in ln]
    assert len(lines) == 1 and message in lines[0], log[-3000:]
    assert "Running command" not in log  # nothing was launched


# ---- backfill_config, as plain Python ------------------------------------------------------------------------


def _plan(conf: dict, day: str, kind: str = "campaign", variables=None):
    steps = cfg.STEPS if kind == "campaign" else cfg.DAILY_STEPS
    return cfg.check_params(conf, (variables or {}).get, day, steps, kind)


@pytest.mark.e2e
def test_config_plans_kickoff_waves_and_daily_merges(site, tmp_path):
    for day in ("2026-11-29", "2026-11-30", "2026-12-01"):
        os.makedirs(tmp_path / "registrations" / day)
    conf = {**site["conf"], "out": str(tmp_path / "out"), "registrations": str(tmp_path / "registrations")}
    kickoff = _plan(conf, KICKOFF)
    assert [len(kickoff[s]) for s in ("scan", "notify", "merge", "report")] == [1, 1, 1, 1]
    assert kickoff["report"][0]["pipeline_options"]["out"] == f"{conf['out']}/campaigns/rn-2026-q4/report/{KICKOFF}"
    scan = kickoff["scan"][0]
    assert scan["runner"] == "FnApiRunner" and scan["py_interpreter"] == sys.executable
    assert scan["pipeline_options"] == {
        "base": conf["base"],
        "out": f"{conf['out']}/campaigns/rn-2026-q4/scan",
        "as-of": KICKOFF,
    }
    assert "merged" not in kickoff["notify"][0]["pipeline_options"]  # no merge before the kick-off
    assert kickoff["merge"][0]["pipeline_options"]["registrations"].endswith("/2026-11-30")
    assert _plan(conf, "2026-11-30")["merge"] == []  # before the campaign: the campaign DAG does nothing
    assert _plan(conf, "2026-11-30", "daily")["merge"]  # ... and the daily DAG merges
    assert _plan(conf, KICKOFF, "daily")["merge"] == []  # during it, the daily DAG stands aside
    # after the deadline (2027-01-31) the campaign DAG follows up: its report makes the escalation list
    for day in ("2027-01-31", "2027-02-14"):  # the registrations of the days before 02-01 and 02-15
        os.makedirs(tmp_path / "registrations" / day, exist_ok=True)
    follow_up = _plan(conf, "2027-02-01")
    assert follow_up["report"] and follow_up["merge"] and follow_up["notify"] == []
    assert _plan(conf, "2027-02-01", "daily")["merge"] == []
    assert _plan(conf, "2027-02-15")["report"] == [] and _plan(conf, "2027-02-15", "daily")["merge"]
    os.makedirs(tmp_path / "out" / "merge" / KICKOFF)
    (tmp_path / "out" / "merge" / KICKOFF / "manifest.json").write_text("{}")
    later = _plan(conf, "2026-12-02")
    assert later["scan"] == [] and later["notify"] == []
    merge = later["merge"][0]["pipeline_options"]
    assert merge["merged"] == f"{conf['out']}/merge/{KICKOFF}" and "base" not in merge
    with pytest.raises(cfg.ConfigError, match="wave 2 is due but the campaign's scan is missing"):
        _plan(conf, "2026-12-15")


@pytest.mark.e2e
def test_config_reads_variables_and_maps_direct_runner_to_fnapi(site):
    conf = {k: v for k, v in site["conf"].items() if k != "out"}
    plan = _plan({**conf, "runner": "DirectRunner"}, KICKOFF, variables={"backfill_out": "/tmp/x-out"})
    assert plan["scan"][0]["runner"] == "FnApiRunner"  # Beam's DirectRunner may download Prism
    assert plan["scan"][0]["pipeline_options"]["out"] == "/tmp/x-out/campaigns/rn-2026-q4/scan"


@pytest.mark.e2e
def test_config_dataflow_needs_project_region_gs_paths_and_a_key(site, monkeypatch):
    monkeypatch.setattr(cfg, "_list_dirs", lambda folder: [])  # no bucket to list here
    conf = {**site["conf"], "runner": "DataflowRunner"}
    with pytest.raises(cfg.ConfigError, match="missing setting 'project'"):
        _plan(conf, KICKOFF)
    conf.update(project="demo-project", region="europe-west1", temp_location="gs://demo-bucket/tmp")
    with pytest.raises(cfg.ConfigError, match="must be a gs:// path"):
        _plan(conf, KICKOFF)
    conf["out"] = "gs://demo-bucket/out"
    with pytest.raises(cfg.ConfigError, match="missing setting 'dataflow_kms_key'"):
        _plan(conf, KICKOFF)
    conf["dataflow_kms_key"] = "projects/demo-project/locations/europe-west1/keyRings/r/cryptoKeys/k"
    plan = _plan({**conf, "beam_options": '{"max_num_workers": 40}'}, KICKOFF)
    scan = plan["scan"][0]
    assert scan["runner"] == "DataflowRunner"
    assert scan["dataflow_config"]["job_name"] == "backfill-campaign-scan-2026-12-01"
    assert scan["dataflow_config"]["append_job_name"] is False
    assert scan["dataflow_config"]["project_id"] == "demo-project"
    assert scan["pipeline_options"]["setup_file"] == os.path.join(ROOT, "setup.py")
    assert scan["pipeline_options"]["max_num_workers"] == 40
    assert scan["pipeline_options"]["dataflow_kms_key"] == conf["dataflow_kms_key"]
    assert plan["notify"][0]["dataflow_config"]["job_name"] == "backfill-campaign-notify-w1-2026-12-01"


@pytest.mark.e2e
def test_config_refuses_a_missing_interpreter(site):
    with pytest.raises(cfg.ConfigError, match="project interpreter /nowhere/python not found"):
        _plan({**site["conf"], "python": "/nowhere/python"}, KICKOFF)
