"""### backfill_daily: the daily merge outside a campaign

Every morning (00:00 UTC), merges the registrations of the day before into
the base as of the logical date: `out/merge/<ds>/` from the latest earlier
merge (or the raw base) and `registrations/<ds - 1 day>/`. While a
configured campaign runs (wave 1's start to its deadline) this DAG stands
aside: `backfill_campaign` makes that day's merge, so there is one per day.

Settings as in `backfill_campaign` (DAG params, else Variables
`backfill_<name>`, else defaults): `base`, `registrations`, `keys`, `out`,
`runner`, `python`, and for Dataflow `project`, `region`, `temp_location`.
The report belongs to a campaign (it measures completion against the
campaign's first scan), so it runs in `backfill_campaign`, not here.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG
from airflow.timetables.trigger import CronTriggerTimetable

import backfill_config as cfg
from backfill_operator import step_task

with DAG(
    dag_id="backfill_daily",
    doc_md=__doc__,
    schedule=CronTriggerTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=cfg.DEFAULT_ARGS,
    params=cfg.dag_params(),
    tags=["subscriber-backfill", "decree-25", "beam"],
) as dag:
    plan = cfg.check_task("daily", cfg.DAILY_STEPS)()
    previous = plan
    for step in cfg.DAILY_STEPS:
        launch = step_task(step, cfg.due_task(step)(plan))
        previous >> launch
        previous = launch
