"""The example DAGs, run twice with ``dag.test()``: each run on an empty pipelines dir (a fresh worker),
the second continuing from the state the first committed in the destination."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.airflow.conftest import committed_state, load_example_dag, run_dag, sql

pytestmark = pytest.mark.airflow


def D(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def events_cursor(url: str) -> dict:
    state = committed_state(url, "events", "events_data")
    return state["sources"]["events"]["resources"]["events"]["incremental"]["updated_at"]


def run_twice(dag_id, first, second, fresh_pipelines_dir) -> None:
    for logical_date in (first, second):
        fresh_pipelines_dir()
        assert run_dag(dag_id, logical_date).state == "success"


def test_examples_parse_and_use_the_default_connection(airflow_db):
    for dag_id in ("chess_archives", "taskflow_incremental_events", "shop_source"):
        dag = load_example_dag(dag_id)
        (task,) = dag.tasks
        assert task.destination_conn_id == "pipeline_state_default"
        assert not task.do_xcom_push


def test_chess_archives(airflow_db, warehouse, fresh_pipelines_dir):
    url = f"sqlite:///{warehouse}"
    fresh_pipelines_dir()
    assert run_dag("chess_archives", D(2024, 3, 15)).state == "success"
    first = committed_state(url, "chess", "chess_data")
    archives = first["sources"]["chess"]["resources"]["players_games"]["archives"]
    assert len(archives) == 6  # two players x January..March
    assert sql(url, "chess_data", "SELECT count(*) FROM players_games") == [(18,)]

    fresh_pipelines_dir()
    assert run_dag("chess_archives", D(2024, 6, 15)).state == "success"
    second = committed_state(url, "chess", "chess_data")
    assert second["_state_version"] == first["_state_version"] + 1
    now = second["sources"]["chess"]["resources"]["players_games"]["archives"]
    assert now[:6] == archives and len(now) == 12
    assert sql(url, "chess_data", "SELECT count(*), count(DISTINCT url) FROM players_games") == [(36, 36)]
    loads = sql(url, "chess_data", "SELECT count(DISTINCT _dlt_load_id) FROM players_games")
    assert loads == [(2,)]


def test_taskflow_incremental_events(airflow_db, warehouse, fresh_pipelines_dir):
    url = f"sqlite:///{warehouse}"
    fresh_pipelines_dir()
    assert run_dag("taskflow_incremental_events", D(2024, 1, 4)).state == "success"
    assert events_cursor(url)["last_value"] == "2024-01-03T18:00:00+00:00"
    assert sql(url, "events_data", "SELECT count(*), max(id) FROM events") == [(12, 12)]

    fresh_pipelines_dir()
    assert run_dag("taskflow_incremental_events", D(2024, 1, 8)).state == "success"
    assert events_cursor(url)["last_value"] == "2024-01-07T18:00:00+00:00"
    # the API returned the boundary event again; the cursor's dedup kept it out
    assert sql(url, "events_data", "SELECT count(*), count(DISTINCT id), max(id) FROM events") == [
        (28, 28, 28)
    ]
    per_load = sql(url, "events_data", "SELECT count(*) FROM events GROUP BY _dlt_load_id ORDER BY 1")
    assert per_load == [(12,), (16,)]


def test_shop_source(airflow_db, warehouse, fresh_pipelines_dir):
    url = f"sqlite:///{warehouse}"
    run_twice("shop_source", D(2024, 1, 4), D(2024, 1, 8), fresh_pipelines_dir)
    state = committed_state(url, "shop", "shop_data")["sources"]["shop"]
    assert sorted(state["currencies"]) == ["EUR", "GBP", "USD"]
    assert state["resources"]["orders"]["incremental"]["created_at"]["last_value"] == "2024-01-07T15:00:00Z"
    assert sql(url, "shop_data", "SELECT count(*), count(DISTINCT id) FROM customers") == [(5, 5)]
    orders = sql(url, "shop_data", "SELECT count(*), count(DISTINCT order_id), max(order_id) FROM orders")
    assert orders == [(16, 16, 1015)]
    per_load = sql(url, "shop_data", "SELECT count(*) FROM orders GROUP BY _dlt_load_id ORDER BY 1")
    assert per_load == [(7,), (9,)]


def test_manual_run_has_no_interval_and_loads_everything(airflow_db, warehouse, fresh_pipelines_dir):
    url = f"sqlite:///{warehouse}"
    run_twice("taskflow_incremental_events", None, None, fresh_pipelines_dir)
    assert sql(url, "events_data", "SELECT count(*), count(DISTINCT id) FROM events") == [(40, 40)]
    assert events_cursor(url)["last_value"] == "2024-01-10T18:00:00+00:00"
