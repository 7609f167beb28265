"""DAGs of tests/review/test_airflow_run_model.py: one task, first unmapped, then mapped."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_state_provider import incremental

START = datetime(2024, 1, 1)


def fake_orders(region: str, upto: int, since: int) -> list[dict]:
    return [{"id": f"{region}-{n}", "region": region, "seq": n} for n in range(since, upto + 1)]


def make_task():
    @task.stateful_load(pipeline_name="rv_orders", table_name="orders", primary_key="id")
    def orders(region: str, seq=incremental("seq", initial_value=0)):
        yield fake_orders(region, 3, seq.start_value or 1)

    return orders


with DAG("review_unmapped", schedule=None, start_date=START):
    make_task()(region="eu")

with DAG("review_mapped", schedule=None, start_date=START):
    make_task().expand(region=["eu", "us"])
