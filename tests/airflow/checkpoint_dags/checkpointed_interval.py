"""An interval-bound cursor with checkpoints whose first try fails halfway (issue 12, input 7).

The task loads the hourly events of its data interval (``allow_external_schedulers=True``) with
``checkpoint_every=2``; its first try raises after three pages, its retry (``retries=1``) runs to the
end. The cursor stores no progress, so nothing of the first try may be committed: the retry loads the
interval once.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

try:
    from airflow.sdk import DeltaDataIntervalTimetable
except ImportError:  # Airflow 3.1
    from airflow.timetables.interval import DeltaDataIntervalTimetable

from airflow_state_provider import incremental, resource
from airflow_state_provider.operators.stateful_load import StatefulLoadOperator


@resource(name="events", primary_key="id")
def events(
    at=incremental("at", initial_value=datetime(2024, 1, 1, tzinfo=UTC), allow_external_schedulers=True),
):
    marker = Path(os.environ["ASP_CHECKPOINT_MARKER"])
    start = at.start_value
    for page in range(12):
        if page == 3 and not marker.exists():
            marker.touch()
            raise RuntimeError("the events API failed halfway through the interval")
        hours = range(page * 2, page * 2 + 2)
        yield [
            {"id": int((start + timedelta(hours=h)).timestamp()), "at": start + timedelta(hours=h)}
            for h in hours
        ]


with DAG(
    "checkpointed_interval",
    schedule=DeltaDataIntervalTimetable(timedelta(days=1)),  # a manual run covers the day before
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=0)},
    tags=["tests"],
):
    StatefulLoadOperator(
        task_id="load",
        data=events,
        pipeline_name="checkpointed_interval",
        destination_conn_id="warehouse",
        dataset_name="ds",
        checkpoint_every=2,
    )
