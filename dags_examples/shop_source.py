"""``StatefulLoadOperator`` over a multi-resource ``@source`` read from a small local file.

``shop`` has two resources: ``customers`` (merged on ``id`` each run) and ``orders`` (appended,
incremental on ``created_at``, only orders created before the run's data interval end). ``orders``
also keeps the currencies it has seen in the source state that both resources share; the source
function body reads that state (read-only) after it has been restored from the destination.

Every loaded table is an Airflow Asset: ``shop_orders_report`` is scheduled on the ``orders`` table and
runs after each load that committed orders, with the load id, row count and state version of the event.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from airflow.sdk import dag, get_current_context, task

from airflow_state_provider import current, incremental, resource, source
from airflow_state_provider.hooks.pipeline_state import PipelineStateHook
from airflow_state_provider.operators.stateful_load import StatefulLoadOperator

log = logging.getLogger(__name__)

DATA_FILE = Path(__file__).parent / "data" / "shop.json"


def read_shop(path: Path) -> dict:
    return json.loads(path.read_text())


@resource(write_disposition="merge", primary_key="id")
def customers(path: Path = DATA_FILE):
    yield read_shop(path)["customers"]


@resource(write_disposition="append", primary_key="order_id")
def orders(
    path: Path = DATA_FILE,
    until: datetime | None = None,
    created_at=incremental("created_at", initial_value="2024-01-01T00:00:00Z"),
):
    currencies = current.source_state().setdefault("currencies", [])
    for order in read_shop(path)["orders"]:
        if until is not None and datetime.fromisoformat(order["created_at"]) >= until:
            break
        if order["currency"] not in currencies:
            currencies.append(order["currency"])
        yield {**order, "amount": Decimal(order["amount"])}


@source(name="shop")
def shop(path: Path = DATA_FILE, until: datetime | None = None):
    log.info("currencies seen by earlier runs: %s", current.source_state().get("currencies", []))
    return customers(path), orders(path, until=until)


def shop_of_this_run():
    """Called by the operator at execute time: orders up to the run's data interval end."""
    return shop(until=get_current_context().get("data_interval_end"))


@dag(
    schedule="@daily",
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["airflow-state-provider", "example"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},  # a failed try commits nothing
)
def shop_source():
    StatefulLoadOperator(
        task_id="load_shop",
        data=shop_of_this_run,
        pipeline_name="shop",
        dataset_name="shop_data",
    )


shop_source()


# the asset URI names the connection's database, so the connection is read when this file is parsed
ORDERS = PipelineStateHook().table_asset("shop_data", "orders")


@dag(schedule=[ORDERS], start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False, tags=["example"])
def shop_orders_report():
    @task
    def report(triggering_asset_events=None):
        # keyed by the asset, and also by the asset alias the load emitted through: read the asset's
        for event in (triggering_asset_events or {}).get(ORDERS, ()):
            extra = event.extra
            log.info(
                "%s: load %s added %s rows (state version %s)",
                event.asset.uri,
                extra["load_id"],
                extra["row_count"],
                extra["state_version"],
            )

    report()


shop_orders_report()
