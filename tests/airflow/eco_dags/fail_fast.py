"""Two loads with retries: one fails for good (a column type conflict), one loses a state race once.

``schema_conflict`` loads text into the integer column ``typed.v`` (the test creates it first): the
same input fails the same way on every try, so the task must end after one try. ``state_conflict``
commits a competing version of its own resource slot while it extracts, the first time only (a marker
file in ``$ECO_MARKER_DIR``): its commit fails with ``StateConflictError`` and the retry succeeds.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG

from airflow_state_provider import Pipeline, current, resource, source
from airflow_state_provider.hooks.pipeline_state import PipelineStateHook
from airflow_state_provider.operators.stateful_load import StatefulLoadOperator


@resource(name="events")
def events():
    current.resource_state()["seen"] = current.resource_state().get("seen", 0) + 1
    yield {"id": 1}


@source(name="race")
def race():
    marker = os.path.join(os.environ["ECO_MARKER_DIR"], "raced")
    if not os.path.exists(marker):
        open(marker, "w").close()
        # another writer commits the same slot after this try restored the state
        url = PipelineStateHook(destination_conn_id="eco_dest").get_sqlalchemy_url()
        rival = Pipeline("racer", destination=url, dataset_name="eco_data")
        try:
            rival.run(race_rival())
        finally:
            rival.engine.dispose()
    return events


@source(name="race")
def race_rival():
    return events


defaults = {"retries": 2, "retry_delay": timedelta(0)}
with DAG(
    "eco_fail_fast",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    default_args=defaults,
):
    StatefulLoadOperator(
        task_id="schema_conflict",
        data=[{"v": "not a number"}],
        table_name="typed",
        pipeline_name="typed",
        dataset_name="eco_data",
        destination_conn_id="eco_dest",
    )
    StatefulLoadOperator(
        task_id="state_conflict",
        data=race,
        pipeline_name="racer",
        dataset_name="eco_data",
        destination_conn_id="eco_dest",
    )
