"""A load whose tables are Airflow Assets, and a DAG scheduled on one of them.

``eco_assets_load`` loads ``orders`` and ``customers`` into ``eco_data``; ``eco_assets_report`` runs
when ``orders`` changes and records the asset event it was triggered by in ``$ECO_RESULT``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

from airflow.sdk import DAG, task

from airflow_state_provider import resource, source
from airflow_state_provider.hooks.pipeline_state import PipelineStateHook
from airflow_state_provider.operators.stateful_load import StatefulLoadOperator


@source(name="shop")
def shop():
    @resource(primary_key="id", write_disposition="merge")
    def orders():
        yield [{"id": 1, "amount": 10.5}, {"id": 2, "amount": 20}, {"id": 3, "amount": 7}]

    @resource(primary_key="id")
    def customers():
        yield {"id": 1, "name": "ada"}

    return orders, customers


START = datetime(2024, 1, 1, tzinfo=UTC)

with DAG("eco_assets_load", schedule=None, start_date=START, catchup=False):
    StatefulLoadOperator(
        task_id="load",
        data=shop,
        pipeline_name="eco_shop",
        dataset_name="eco_data",
        destination_conn_id="eco_dest",
    )

# the asset URI names the connection's database: reading it here happens when the file is parsed
ORDERS = PipelineStateHook(destination_conn_id="eco_dest").table_asset("eco_data", "orders")

with DAG("eco_assets_report", schedule=[ORDERS], start_date=START, catchup=False):

    @task
    def report(triggering_asset_events=None):
        # keyed by the asset, and also by the asset alias the load emitted through: read the asset's
        events = [
            {"uri": event.asset.uri, "extra": event.extra}
            for event in (triggering_asset_events or {}).get(ORDERS, ())
        ]
        with open(os.environ["ECO_RESULT"], "w") as f:
            json.dump(events, f)

    report()
