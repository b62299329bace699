"""Airflow for the DAG tests: its own virtual environment, a migrated SQLite database per module, a fresh
copy of it per ``airflow dags test``, and reading a run's XComs back from that database.

Airflow lives in ``.venv-airflow`` beside the repository (``make test`` builds it from
requirements-airflow.txt) or where ``BACKFILL_AIRFLOW_VENV`` points. Every command runs offline, with no
example DAGs and no webserver. Tests that use these run subprocesses: mark them ``e2e``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sqlite3
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAGS = os.path.join(ROOT, "dags")
AIRFLOW_VENV = os.environ.get("BACKFILL_AIRFLOW_VENV", os.path.join(ROOT, ".venv-airflow"))


def airflow_bin(name: str) -> str:
    path = os.path.join(AIRFLOW_VENV, "bin", name)
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"no Airflow environment at {AIRFLOW_VENV}: run `make test` (it builds .venv-airflow from "
            "requirements-airflow.txt), or point BACKFILL_AIRFLOW_VENV at one",
            pytrace=False,
        )
    return path


def migrated_home(home: str, dags: str = DAGS) -> dict:
    """The environment of Airflow commands on a freshly migrated SQLite database in ``home``."""
    os.makedirs(home, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=home,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=_sqlite(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=dags,
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__LOGGING__COLORED_CONSOLE_LOG="False",
        NO_PROXY="*",
        PYTHONDONTWRITEBYTECODE="1",
    )
    proc = subprocess.run(
        [airflow_bin("airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600, cwd=home
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return env


def dags_test(env: dict, dag_id: str, day: str, conf: dict, extra_env: dict | None = None):
    """``airflow dags test DAG DAY -c CONF`` on a fresh copy of the database; the result's ``home`` is the copy."""
    home = env["AIRFLOW_HOME"]
    run_home = f"{home}-{dag_id}-{day}-{len(glob.glob(home + '-*'))}"
    shutil.copytree(home, run_home)  # the migrated database, fresh for this run
    # the database of the copy: `db migrate` wrote the original's path into airflow.cfg
    run_env = {**env, **(extra_env or {}), "AIRFLOW_HOME": run_home}
    run_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = _sqlite(run_home)
    proc = subprocess.run(
        [airflow_bin("airflow"), "dags", "test", dag_id, day, "-c", json.dumps(conf)],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=run_home,
    )
    proc.home = run_home
    return proc


def _sqlite(home: str) -> str:
    return "sqlite:///" + os.path.join(home, "airflow.db")


def _db(home: str) -> sqlite3.Connection:
    return sqlite3.connect(os.path.join(home, "airflow.db"))


def xcoms(home: str, dag_id: str, task_id: str) -> dict[str, object]:
    """The XComs a task pushed in the run of ``home``'s database: {key: value} (values as Airflow stored them)."""
    with _db(home) as db:
        rows = db.execute("SELECT key, value FROM xcom WHERE dag_id = ? AND task_id = ?", (dag_id, task_id))
        return {key: json.loads(value) if isinstance(value, (str, bytes)) else value for key, value in rows}


def task_states(home: str, dag_id: str) -> dict[str, list]:
    """{task_id: [(state, try_number), ...] per map index} of the runs in ``home``'s database."""
    found: dict[str, list] = {}
    with _db(home) as db:
        rows = db.execute(
            "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id = ? ORDER BY map_index",
            (dag_id,),
        )
        for task_id, _index, state, tries in rows:
            found.setdefault(task_id, []).append((state, tries))
    return found


def triggers(home: str) -> list[tuple[str, dict]]:
    """(classpath, kwargs) of the triggers deferred tasks handed their wait to, in ``home``'s database."""
    with _db(home) as db:
        return [(path, json.loads(kwargs)) for path, kwargs in db.execute("SELECT classpath, kwargs FROM trigger")]


def trigger_timeouts(home: str, dag_id: str, task_id: str) -> list:
    with _db(home) as db:
        rows = db.execute(
            "SELECT trigger_timeout FROM task_instance WHERE dag_id = ? AND task_id = ?", (dag_id, task_id)
        )
        return [row[0] for row in rows]
