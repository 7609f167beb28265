"""End-to-end DAG: a stateful load killed mid-run (the UI or the scheduler marks the task failed).

The resource loads a page into the open transaction, then waits. The supervisor's SIGTERM makes
Airflow call ``on_kill``, which aborts the run: the transaction rolls back, nothing is committed.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from airflow.sdk import dag

from airflow_state_provider import current, resource
from airflow_state_provider.operators.stateful_load import StatefulLoadOperator

log = logging.getLogger(__name__)


@resource
def slow_pages():
    current.resource_state()["pages"] = 1
    yield [{"id": n} for n in range(100)]
    log.info("first page loaded into the open transaction; waiting to be killed")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.2)
    yield {"id": 100}


@dag(schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False, tags=["e2e"])
def stateful_kill():
    StatefulLoadOperator(task_id="slow", data=slow_pages, pipeline_name="killed", dataset_name="killed_data")


stateful_kill()
