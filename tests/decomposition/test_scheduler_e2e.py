"""The decomposed example DAG through the real Airflow stack, with tasks running in parallel.

``airflow api-server``, ``scheduler`` (LocalExecutor) and ``dag-processor`` run as subprocesses on
loopback with a private ``AIRFLOW_HOME``; the metadata database and the destination are two databases
of the test PostgreSQL server. The ``decomposed_source`` example (three ``parallel`` tasks, one state
writer) is triggered twice; the second run continues from the state the first committed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from itertools import combinations

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline
from tests.airflow.conftest import DAGS_FOLDER, REPO
from tests.airflow_stack import AirflowStack, migrated_metadata_db, postgres_conn_json, running_stack

pytestmark = [pytest.mark.airflow, pytest.mark.e2e, pytest.mark.postgres]

DAG_ID = "decomposed_source"
TASKS = ("helpdesk.agents", "helpdesk.ratings", "helpdesk.tickets")
STARTUP_TIMEOUT, RUN_TIMEOUT = 180, 120  # the api-server took over 120 s to start at load 17


def trigger_and_wait(stack: AirflowStack) -> str:
    """Trigger a run of the DAG, wait for it and assert it succeeded; its run id."""
    run_id = stack.trigger(DAG_ID)
    state = stack.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT)
    assert state == "success", failure_report(stack, run_id)
    return run_id


def failure_report(stack: AirflowStack, run_id: str) -> str:
    """Task states and the end of every task log file of the run."""
    report = [str({task_id: ti["state"] for task_id, ti in run_task_instances(stack, run_id).items()})]
    logs = stack.run_logs(DAG_ID, run_id)
    for log_file in sorted(logs.glob("task_id=*/attempt=*.log")):
        tail = log_file.read_text(errors="replace")[-3000:]
        report.append(f"----- {log_file.relative_to(logs)}\n{tail}")
    return "\n".join(report)


def run_task_instances(stack: AirflowStack, run_id: str) -> dict[str, dict]:
    """The run's task instances by task id."""
    path = f"{stack.run_path(DAG_ID, run_id)}/taskInstances"
    return {ti["task_id"]: ti for ti in stack.get(path)["task_instances"]}


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    if isinstance(postgres_server, str):
        pytest.skip("needs the throwaway PostgreSQL cluster (ASP_TEST_POSTGRES_URL is set)")
    root = tmp_path_factory.mktemp("decomposed-e2e")
    dags = root / "dags"
    dags.mkdir()
    shutil.copy(DAGS_FOLDER / "decomposed_source.py", dags)
    warehouse_db = postgres_server.create_database()
    env = {
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW_CONN_PIPELINE_STATE_DEFAULT": postgres_conn_json(postgres_server, warehouse_db),
        "AIRFLOW_STATE_PIPELINES_DIR": str(root / "pipelines"),
        "PYTHONPATH": str(REPO),  # this checkout's provider in every Airflow process
    }
    airflow = AirflowStack(
        root,
        dags,
        postgres_server.url(warehouse_db),
        env,
        metadata_db=migrated_metadata_db(postgres_server),
        migrated=True,
    )
    with running_stack(airflow, [DAG_ID], STARTUP_TIMEOUT, stop_timeout=10, migrate_timeout=180):
        yield airflow


def overlapping(task_instances: dict[str, dict]) -> list[tuple[str, str]]:
    """Pairs of task instances whose run times overlapped."""
    spans = {
        t: (datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"]))
        for t, ti in task_instances.items()
    }
    pairs = combinations(sorted(spans), 2)
    return [(a, b) for a, b in pairs if spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]]


def test_parallel_tasks_twice_through_the_scheduler(stack: AirflowStack):
    tasks = {t["task_id"]: t for t in stack.get(f"/api/v2/dags/{DAG_ID}/tasks")["tasks"]}
    assert sorted(tasks) == list(TASKS)
    assert all(not t["downstream_task_ids"] for t in tasks.values())  # parallel: no dependencies
    assert "**State writer**" in tasks["helpdesk.agents"]["doc_md"]
    assert "task `helpdesk.agents`" in tasks["helpdesk.tickets"]["doc_md"]

    runs = []
    for _ in range(2):
        started = time.monotonic()
        run_id = trigger_and_wait(stack)
        print(f"e2e: run {run_id} succeeded after {time.monotonic() - started:.1f}s")
        runs.append(run_task_instances(stack, run_id))
        print(f"e2e: tasks that ran at the same time: {overlapping(runs[-1])}")
    for task_instances in runs:
        assert {t: ti["state"] for t, ti in task_instances.items()} == dict.fromkeys(TASKS, "success")
    assert any(overlapping(tis) for tis in runs), "the LocalExecutor never ran two tasks at once"

    engine = sa.create_engine(stack.warehouse_url)
    try:
        with engine.connect() as conn:

            def counts(table: str, key: str) -> tuple[int, int]:
                query = f"SELECT count(*), count(DISTINCT {key}) FROM helpdesk_data.{table}"
                return tuple(conn.execute(sa.text(query)).one())

            # complete after two pages, nothing twice
            assert counts("agents", "agent_id") == (4, 4)
            assert counts("tickets", "ticket_id") == (20, 20)
            assert counts("ticket_events", "event_id") == (40, 40)
            assert counts("ratings", "rating_id") == (10, 10)
            loads = conn.execute(sa.text("SELECT count(*) FROM helpdesk_data._dlt_loads WHERE status = 0"))
            assert loads.scalar() == 6
    finally:
        engine.dispose()

    pipeline = Pipeline("helpdesk", destination=stack.warehouse_url, dataset_name="helpdesk_data")
    try:
        state = pipeline.state
    finally:
        pipeline.engine.dispose()
    helpdesk = state["sources"]["helpdesk"]
    assert sorted(helpdesk["resources"]) == ["agents", "ratings", "ticket_events", "tickets"]
    assert (helpdesk["syncs"], helpdesk["agent_ids"]) == (2, [1, 2, 3, 4])  # the writer's source keys
    slots = helpdesk["resources"]
    assert slots["tickets"]["incremental"]["ticket_id"]["last_value"] == 20
    assert slots["ticket_events"]["events"] == 40
    assert slots["ratings"]["incremental"]["rated_at"]["last_value"] == "2024-01-01T09:00:00+00:00"
    assert state["_state_version"] == 6  # six commits, none lost
