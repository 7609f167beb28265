"""End-to-end DAG: a stateful load whose first try fails mid-load and whose retry succeeds.

Try 1 loads a first page into the open transaction, writes resource state, then fails: nothing of it
may be committed. Try 2 must therefore restore "first run" again and commit everything once.
``audit`` pushes its load summary to XCom (``do_xcom_push=True``) to show what XCom may hold.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task

from airflow_state_provider import current, incremental
from airflow_state_provider.operators.stateful_load import StatefulLoadOperator

ROWS = [{"id": n, "updated_at": f"2024-01-01T{n:02d}:00:00+00:00"} for n in range(1, 11)]


@dag(schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False, tags=["e2e"])
def stateful_retry():
    @task.stateful_load(
        pipeline_name="retry_events",
        dataset_name="retry_data",
        table_name="events",
        primary_key="id",
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
    def events(
        ti=None,
        updated_at=incremental("updated_at", initial_value="2024-01-01T00:00:00+00:00"),
    ):
        current.resource_state()["loaded_by_try"] = ti.try_number
        yield ROWS[:5]
        if ti.try_number == 1:
            raise RuntimeError("simulated outage after the first page (try 1)")
        yield ROWS[5:]

    audit = StatefulLoadOperator(
        task_id="audit",
        data=[{"check": "events loaded"}],
        table_name="audit",
        pipeline_name="retry_events",
        dataset_name="retry_data",
        do_xcom_push=True,
    )
    events() >> audit


stateful_retry()
