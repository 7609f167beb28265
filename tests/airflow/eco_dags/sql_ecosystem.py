"""A load, then common-sql's operator, decorator and sensor on the same ``pipeline_state`` connection.

The connection ``eco_dest`` comes from the test's environment; ``verify`` writes what the SQL tasks
returned to ``$ECO_RESULT`` for the test to read.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.providers.common.sql.sensors.sql import SqlSensor
from airflow.sdk import DAG, task

from airflow_state_provider.operators.stateful_load import StatefulLoadOperator

with DAG("eco_sql_ecosystem", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False):
    load = StatefulLoadOperator(
        task_id="load",
        data=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        table_name="items",
        pipeline_name="eco",
        dataset_name="eco_data",
        destination_conn_id="eco_dest",
    )
    query = SQLExecuteQueryOperator(
        task_id="query",
        conn_id="eco_dest",
        sql="SELECT id, name FROM eco_data.items ORDER BY id",
    )
    wait = SqlSensor(
        task_id="wait",
        conn_id="eco_dest",
        sql="SELECT count(*) FROM eco_data.items",
        poke_interval=1,
        timeout=60,
    )

    @task.sql(conn_id="eco_dest")
    def count_rows():
        return "SELECT count(*) FROM eco_data.items"

    @task
    def verify(rows, count):
        with open(os.environ["ECO_RESULT"], "w") as f:
            json.dump({"rows": [list(r) for r in rows], "count": [list(r) for r in count]}, f)

    counted = count_rows()
    load >> [query, wait, counted]
    verify(query.output, counted)
