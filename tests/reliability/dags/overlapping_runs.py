"""Two DAG runs of one pipeline at once (``max_active_runs=2``): the reliability e2e test's DAG.

Each run's ``load`` task appends the next 100 event ids after the committed high-water mark. Both
first tries meet at a rendezvous (files in ``$ASP_OVERLAP_DIR``) in the source body, which runs right
after the state is restored: they restore the same version, load the same ids, and race to commit.
The loser must fail with ``StateConflictError`` and its retry (``retries=1``) load the next 100.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

from airflow_state_provider import current, resource, source
from airflow_state_provider.operators.stateful_load import StatefulLoadOperator

PAGE = 25


def rendezvous(parties: int = 2, timeout: float = 120) -> None:
    """Wait until ``parties`` first tries have arrived; later tries (retries) pass straight through."""
    here = Path(os.environ["ASP_OVERLAP_DIR"])
    if (here / "released").exists():
        return
    (here / f"arrived-{uuid.uuid4().hex}").touch()
    deadline = time.monotonic() + timeout
    while len(list(here.glob("arrived-*"))) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError("the other DAG run never arrived: were the two runs not concurrent?")
        time.sleep(0.05)
    (here / "released").touch()


@source(name="feed")
def feed():
    rendezvous()

    @resource(name="events", primary_key="id")
    def events():
        slot = current.resource_state()
        start = int(slot.get("max_id", 0))
        for low in range(start + 1, start + 101, PAGE):
            yield [{"id": i, "body": f"event {i}"} for i in range(low, low + PAGE)]
            slot["max_id"] = low + PAGE - 1

    return events


with DAG(
    "overlapping_runs",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=2,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
    tags=["reliability"],
):
    StatefulLoadOperator(
        task_id="load",
        data=feed,
        pipeline_name="overlap_e2e",
        destination_conn_id="warehouse",
        dataset_name="ds",
    )
