"""UI end-to-end DAG: an incremental load whose source rows come from a JSON file the test grows.

The resource also keeps a note with HTML in it: the pages must show it escaped.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import dag, task

from airflow_state_provider import current, incremental


@dag(schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False, tags=["e2e"])
def ui_events():
    @task.stateful_load(
        pipeline_name="ui_events",
        dataset_name="ui_data",
        table_name="events",
        retries=1,  # a failed try commits nothing; the retry restores the same state
        retry_delay=timedelta(seconds=1),
    )
    def events(updated_at=incremental("updated_at", initial_value="2024-01-01T00:00:00+00:00")):
        current.resource_state()["note"] = "<script>alert('state')</script>"
        yield json.loads(Path(os.environ["ASP_UI_ROWS"]).read_text())

    events()


ui_events()
