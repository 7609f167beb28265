"""The DuckDB example DAGs in parallel on the real scheduler (LocalExecutor), issue 13 §5.

Every task is its own OS process, and DuckDB lets one process at a time open a file: a task that finds
the file taken waits (up to ``lock_timeout``) and proceeds once the other task's run has returned. The
``decomposed_source`` example runs its three tasks in parallel, twice; ``shop_source`` gets its
scheduled run and a manual run next to it. All of them succeed and every row lands once. The metadata
database is on the test PostgreSQL server; the warehouse is one DuckDB file.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline
from tests.airflow.conftest import DAGS_FOLDER, REPO
from tests.airflow_stack import AirflowStack, migrated_metadata_db, running_stack
from tests.decomposition.test_scheduler_e2e import overlapping

pytestmark = [pytest.mark.airflow, pytest.mark.e2e, pytest.mark.postgres]

STARTUP_TIMEOUT, RUN_TIMEOUT = 180, 240


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    if isinstance(postgres_server, str):
        pytest.skip("needs the throwaway PostgreSQL cluster (ASP_TEST_POSTGRES_URL is set)")
    root = tmp_path_factory.mktemp("duckdb-e2e")
    dags = root / "dags"
    dags.mkdir()
    for name in ("decomposed_source.py", "shop_source.py"):
        shutil.copy(DAGS_FOLDER / name, dags)
    shutil.copytree(DAGS_FOLDER / "data", dags / "data")
    warehouse = root / "warehouse.duckdb"
    env = {
        "AIRFLOW__CORE__PARALLELISM": "8",
        # paused until the api-server answers: the scheduled run must not start before it is up
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # eight task processes start at once on a busy machine: give the api-server time to answer
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
        "AIRFLOW_CONN_PIPELINE_STATE_DEFAULT": json.dumps({"conn_type": "duckdb", "host": str(warehouse)}),
        "AIRFLOW_STATE_PIPELINES_DIR": str(root / "pipelines"),
        "PYTHONPATH": str(REPO),
    }
    airflow = AirflowStack(
        root,
        dags,
        f"duckdb:///{warehouse}",
        env,
        metadata_db=migrated_metadata_db(postgres_server),
        migrated=True,
    )
    with running_stack(
        airflow, ["decomposed_source", "shop_source"], STARTUP_TIMEOUT, stop_timeout=10, migrate_timeout=240
    ):
        yield airflow


def task_report(stack: AirflowStack, dag_id: str, run_id: str) -> str:
    """Task states and the end of each task log of a run, for a failure message."""
    path = f"{stack.run_path(dag_id, run_id)}/taskInstances"
    report = [str({ti["task_id"]: ti["state"] for ti in stack.get(path)["task_instances"]})]
    logs = stack.run_logs(dag_id, run_id)
    for log_file in sorted(logs.glob("task_id=*/attempt=*.log")):
        report.append(f"----- {log_file.relative_to(logs)}\n{log_file.read_text(errors='replace')[-3000:]}")
    return "\n".join(report)


def query(url: str, sql: str) -> tuple:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return tuple(conn.exec_driver_sql(sql).one())
    finally:
        engine.dispose()  # DuckDB: release the file before the next task needs it


def test_duckdb_examples_in_parallel_and_a_scheduled_run_next_to_a_manual_one(stack: AirflowStack):
    for dag_id in ("shop_source", "decomposed_source"):
        stack.client.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
    # shop_source: the scheduler makes its scheduled run as soon as the DAG is parsed; a manual run next to it
    scheduled = stack.wait_for(
        "the scheduled run of shop_source",
        lambda: [
            r["dag_run_id"]
            for r in stack.get("/api/v2/dags/shop_source/dagRuns")["dag_runs"]
            if r["run_type"] == "scheduled"
        ],
        RUN_TIMEOUT,
    )
    shop_runs = [*scheduled, stack.trigger("shop_source")]
    # decomposed_source: three parallel tasks, twice (the second run right away, next to the first)
    helpdesk_runs = [stack.trigger("decomposed_source"), stack.trigger("decomposed_source")]

    states = stack.wait_for_runs("shop_source", shop_runs, RUN_TIMEOUT)
    states.update(stack.wait_for_runs("decomposed_source", helpdesk_runs, RUN_TIMEOUT))
    for run_id, state in states.items():
        dag_id = "shop_source" if run_id in shop_runs else "decomposed_source"
        assert state == "success", task_report(stack, dag_id, run_id)
    spans = {}
    for dag_id, run_ids in (("shop_source", shop_runs), ("decomposed_source", helpdesk_runs)):
        for run_id in run_ids:
            path = f"{stack.run_path(dag_id, run_id)}/taskInstances"
            for ti in stack.get(path)["task_instances"]:
                spans[f"{run_id}/{ti['task_id']}"] = ti
    print(f"e2e: {len(overlapping(spans))} pairs of the {len(spans)} task instances ran at the same time")
    assert overlapping(spans), "the LocalExecutor never ran two DuckDB tasks at once"

    url = stack.warehouse_url
    # every row once: two pages of helpdesk data, the shop file once whatever the run order
    assert query(url, "SELECT count(*), count(DISTINCT agent_id) FROM helpdesk_data.agents") == (4, 4)
    assert query(url, "SELECT count(*), count(DISTINCT ticket_id) FROM helpdesk_data.tickets") == (20, 20)
    assert query(url, "SELECT count(*), count(DISTINCT event_id) FROM helpdesk_data.ticket_events") == (
        40,
        40,
    )
    assert query(url, "SELECT count(*), count(DISTINCT rating_id) FROM helpdesk_data.ratings") == (10, 10)
    orders, distinct_orders = query(url, "SELECT count(*), count(DISTINCT order_id) FROM shop_data.orders")
    assert orders == distinct_orders > 0
    assert query(url, "SELECT count(*), count(DISTINCT id) FROM shop_data.customers") == (5, 5)

    pipeline = Pipeline("helpdesk", destination=url, dataset_name="helpdesk_data")
    state = pipeline.state
    assert state["_state_version"] == 6  # six commits of three tasks in two runs, none lost
    assert state["sources"]["helpdesk"]["syncs"] == 2
