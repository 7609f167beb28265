"""End-to-end DAG for the CeleryExecutor test: a task mapped over three regions and a task that fails
once per DAG run and retries. Each DAG run loads the next page of every region and of the flaky feed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task

from airflow_state_provider import incremental

REGIONS = ["eu", "us", "ap"]
PAGE, TOTAL = 4, 8  # two DAG runs load everything


def page(prefix: str, after: int) -> list[dict]:
    return [{"id": f"{prefix}-{n}", "seq": n} for n in range(after + 1, min(after + PAGE, TOTAL) + 1)]


@dag(schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False, tags=["e2e"])
def celery_run_model():
    @task.stateful_load(
        pipeline_name="orders", dataset_name="orders_data", table_name="orders", primary_key="id"
    )
    def orders(region: str, seq=incremental("seq", initial_value=0)):
        yield page(region, seq.start_value)

    @task.stateful_load(
        pipeline_name="flaky",
        dataset_name="flaky_data",
        table_name="feed",
        primary_key="id",
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
    def feed(ti=None, seq=incremental("seq", initial_value=0)):
        rows = page("feed", seq.start_value)
        yield rows[:2]
        if ti.try_number == 1:
            raise RuntimeError("simulated outage after the first rows (try 1)")
        yield rows[2:]

    orders.expand(region=REGIONS)
    feed()


celery_run_model()
