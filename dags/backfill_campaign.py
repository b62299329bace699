"""### backfill_campaign: a Decree 25 registration campaign, day by day

Runs every morning (00:00 UTC, 08:00 in Beijing, when the campaign's quiet
hours end) from wave 1's start to the campaign's deadline; outside those
dates every step is skipped.

1. **check_params**: resolves the settings (DAG params, else the Airflow
   Variables `backfill_<name>`, else defaults; see `dags/backfill_config.py`),
   checks the runner, the project's interpreter and the paths, and decides
   what is due on the logical date. A bad setting fails here, in one line.
2. **scan** (on wave 1's start only): classify the base as of that day.
3. **notify** (one mapped run per wave starting that day): the wave's SMS,
   call and announcement jobs, less lines the latest merge has registered.
4. **merge** (every day): yesterday's registrations into the base as of today,
   starting from yesterday's merge; if that one is missing (but earlier ones
   exist) the task fails in one line naming the missing day.

Each step is `python -m pipelines.<step>` under the project's interpreter,
launched on `FnApiRunner` (local) or `DataflowRunner` by the Beam provider's
operator, held to its end (`dags/backfill_operator.py`): every task has a time
limit (the `timeouts` setting), a Dataflow job is named after the DAG, step and
date (a retry cannot start a second one beside it), its id and console link
are in XCom, and a kill or timeout cancels it.
The logical date is every step's `--as-of` and names its output partition, so
re-running a date rewrites the same outputs (notify finds its own history
and sends nothing twice). Every campaign day ends with the report
(`campaigns/<id>/report/<ds>/report.html`, CSV and Parquet tables).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG
from airflow.timetables.trigger import CronTriggerTimetable

import backfill_config as cfg
from backfill_operator import step_task

with DAG(
    dag_id="backfill_campaign",
    doc_md=__doc__,
    schedule=CronTriggerTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # each day's merge starts from the day before's
    default_args=cfg.DEFAULT_ARGS,
    params=cfg.dag_params(),
    tags=["subscriber-backfill", "decree-25", "beam"],
) as dag:
    plan = cfg.check_task("campaign", cfg.STEPS)()
    previous = plan
    for step in cfg.STEPS:
        # Mapped over the launches due today: none -> skipped; later steps still run.
        launch = step_task(step, cfg.due_task(step)(plan))
        previous >> launch
        previous = launch
