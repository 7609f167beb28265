"""Issue 12, input 7 through ``dag.test()``: an interval-bound cursor with checkpoints, a failed first
try and its Airflow retry load the interval exactly once, on SQLite, DuckDB and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.airflow.conftest import DAGS_FOLDER, conn_env, load_dag, sql

pytestmark = pytest.mark.airflow

DAGS = Path(__file__).parent / "checkpoint_dags"


@pytest.fixture
def checkpoint_dags(monkeypatch: pytest.MonkeyPatch) -> Path:
    bundles = [
        {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(DAGS_FOLDER)},
        },
        {
            "name": "checkpoint-tests",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(DAGS)},
        },
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    return DAGS


def test_interval_retry_after_checkpoints_loads_the_interval_once(
    airflow_db, checkpoint_dags, dest_url, fresh_pipelines_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv(
        conn_env("warehouse"),
        json.dumps({"conn_type": "pipeline_state", "extra": {"sqlalchemy_url": dest_url}}),
    )
    monkeypatch.setenv("ASP_CHECKPOINT_MARKER", str(tmp_path / "first-try-failed"))
    fresh_pipelines_dir()
    dag_run = load_dag("checkpointed_interval", DAGS).test(logical_date=datetime(2024, 3, 2, tzinfo=UTC))

    assert dag_run.state == "success"
    (ti,) = dag_run.get_task_instances()
    assert ti.try_number == 2  # the first try failed after three pages, the retry finished
    ((total, distinct),) = sql(dest_url, "ds", "SELECT count(*), count(DISTINCT id) FROM events")
    assert (total, distinct) == (24, 24)


EXAMPLES = {
    # dag id: (two logical dates, {dataset: {table: key}})
    "chess_archives": (
        (datetime(2024, 3, 15, tzinfo=UTC), datetime(2024, 6, 15, tzinfo=UTC)),
        {"chess_data": {"players_games": ("url", 36)}},
    ),
    "taskflow_incremental_events": (
        (datetime(2024, 1, 4, tzinfo=UTC), datetime(2024, 1, 8, tzinfo=UTC)),
        {"events_data": {"events": ("id", 28)}},
    ),
    "shop_source": (
        (datetime(2024, 1, 4, tzinfo=UTC), datetime(2024, 1, 8, tzinfo=UTC)),
        {"shop_data": {"orders": ("order_id", 16), "customers": ("id", 5)}},
    ),
    "decomposed_source": (
        (None, None),
        {
            "helpdesk_data": {
                "tickets": ("ticket_id", 20),
                "ticket_events": ("event_id", 40),
                "ratings": ("rating_id", 10),
                "agents": ("agent_id", 4),
            }
        },
    ),
}


@pytest.mark.parametrize("dag_id", sorted(EXAMPLES))
def test_example_dags_with_checkpoints_on_load_the_same_rows(
    dag_id, airflow_db, warehouse, fresh_pipelines_dir
):
    """Every example DAG, each task with ``checkpoint_every=1``, run twice: the same rows, once each
    (none of the examples declares an ascending cursor, so their rows wait for the final commit)."""
    from tests.airflow.conftest import load_example_dag

    url = f"sqlite:///{warehouse}"
    dates, tables = EXAMPLES[dag_id]
    for logical_date in dates:
        fresh_pipelines_dir()
        dag = load_example_dag(dag_id)
        for task in dag.tasks:
            task.checkpoint_every = 1
        assert dag.test(logical_date=logical_date).state == "success"
    for dataset, keys in tables.items():
        for table, (key, rows) in keys.items():
            found = sql(url, dataset, f"SELECT count(*), count(DISTINCT {key}) FROM {table}")
            assert found == [(rows, rows)], (table, found)
