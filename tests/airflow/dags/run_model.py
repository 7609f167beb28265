"""DAGs of the run-model tests (tests/airflow/test_run_model.py): mapped stateful tasks and intervals.

Rows come from a deterministic fake API: region ``r`` has orders ``<r>-1 .. <r>-<upto>`` whose cursor
``seq`` is 1..upto (every region starts low, so a region bound to another's cursor loads nothing).
``run_conf`` sets the regions and ``upto``.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from airflow.sdk import DAG, task

from airflow_state_provider import incremental, resource
from airflow_state_provider.operators.stateful_load import StatefulLoadOperator

try:
    from airflow.timetables.interval import CronDataIntervalTimetable
except ImportError:  # pragma: no cover
    from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable

START = datetime(2024, 1, 1)


def fake_orders(region: str, upto: int, since: int) -> list[dict]:
    return [{"id": f"{region}-{n}", "region": region, "seq": n} for n in range(since, upto + 1)]


with DAG("mapped_decorator", schedule=None, start_date=START, params={"regions": ["eu", "us"], "upto": 5}):

    @task
    def regions(params=None):
        return params["regions"]

    @task.stateful_load(pipeline_name="orders", table_name="orders", primary_key="id")
    def orders(region: str, params=None, seq=incremental("seq", initial_value=0)):
        yield fake_orders(region, params["upto"], seq.start_value or 1)

    orders.expand(region=regions())


@resource(name="orders", primary_key="id")
def region_orders(region: str, upto: int = 5, seq=incremental("seq", initial_value=0)):
    yield fake_orders(region, upto, seq.start_value or 1)


with DAG("mapped_operator", schedule=None, start_date=START):
    StatefulLoadOperator.partial(task_id="orders", pipeline_name="orders_op").expand(
        data=[region_orders(region="eu"), region_orders(region="us")]
    )
    StatefulLoadOperator.partial(task_id="orders_kw", pipeline_name="orders_kw").expand_kwargs(
        [
            {"data": region_orders(region="eu"), "write_disposition": "merge"},
            {"data": region_orders(region="ap"), "write_disposition": "append"},
        ]
    )


# -- intervals -----------------------------------------------------------------------------------------
DAYS = [date(2024, 3, 1) + timedelta(days=n) for n in range(20)]


def fake_events() -> list[dict]:
    """One event per day at 12:00 UTC; the incremental keeps the rows of the run's range."""
    return [{"id": d.isoformat(), "at": f"{d.isoformat()}T12:00:00+00:00", "day": d} for d in DAYS]


def events_task(**kwargs):
    @task.stateful_load(pipeline_name="events", table_name="events", primary_key="id", **kwargs)
    def events(
        at=incremental("at", initial_value="2024-03-01T00:00:00+00:00", allow_external_schedulers=True),
    ):
        yield fake_events()

    return events()


with DAG(
    "daily_ranges",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2024, 3, 1),
    catchup=False,
):
    events_task(write_disposition="append")

with DAG(
    "daily_ranges_merge",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2024, 3, 1),
    catchup=False,
):
    events_task(write_disposition="merge")

with DAG("daily_points", schedule="@daily", start_date=datetime(2024, 3, 1), catchup=False):
    events_task(write_disposition="append")

with DAG("daily_points_strict", schedule="@daily", start_date=datetime(2024, 3, 1), catchup=False):
    events_task(write_disposition="append", on_missing_interval="raise")


with DAG(
    "tokyo_days",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="Asia/Tokyo"),
    start_date=datetime(2024, 3, 1),
    catchup=False,
):

    @task.stateful_load(pipeline_name="tokyo", table_name="days", primary_key="id")
    def tokyo(day=incremental("day", initial_value=date(2024, 3, 1), allow_external_schedulers=True)):
        yield fake_events()

    tokyo()


with DAG("cursor_events", schedule=None, start_date=datetime(2024, 3, 1)):

    @task.stateful_load(
        pipeline_name="events", table_name="events", primary_key="id", write_disposition="merge"
    )
    def cursor_events(at=incremental("at", initial_value="2024-03-01T00:00:00+00:00")):
        yield fake_events()

    cursor_events()
