"""The decomposed example DAG through the real Airflow stack, with tasks running in parallel.

``airflow api-server``, ``scheduler`` (LocalExecutor) and ``dag-processor`` run as subprocesses on
loopback with a private ``AIRFLOW_HOME``; the metadata database and the destination are two databases
of the test PostgreSQL server. The ``decomposed_source`` example (three ``parallel`` tasks, one state
writer) is triggered twice; the second run continues from the state the first committed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline
from tests.airflow.conftest import DAGS_FOLDER, REPO

pytestmark = [pytest.mark.airflow, pytest.mark.e2e, pytest.mark.postgres]

DAG_ID = "decomposed_source"
TASKS = ("helpdesk.agents", "helpdesk.ratings", "helpdesk.tickets")
STARTUP_TIMEOUT, RUN_TIMEOUT = 120, 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    root: Path
    client: httpx.Client
    services: list[subprocess.Popen]
    warehouse_url: str

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.services:
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {proc.args[-1]} exited with {proc.returncode} ({what})")
            try:
                result = check()
            except httpx.HTTPError:
                result = None
            if result:
                return result
            time.sleep(1)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")

    def get(self, path: str) -> dict:
        response = self.client.get(path)
        response.raise_for_status()
        return response.json()

    def trigger_and_wait(self) -> str:
        response = self.client.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None})
        response.raise_for_status()
        run_id = response.json()["dag_run_id"]
        run_path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"
        state = self.wait_for(
            f"DAG run {run_id}",
            lambda: (s := self.get(run_path)["state"]) in ("success", "failed") and s,
            RUN_TIMEOUT,
        )
        assert state == "success", self.failure_report(run_id)
        return run_id

    def failure_report(self, run_id: str) -> str:
        """Task states and the end of every task log file of the run."""
        report = [str(self.task_states(run_id))]
        logs = self.root / "airflow_home" / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
        for log_file in sorted(logs.glob("task_id=*/attempt=*.log")):
            tail = log_file.read_text(errors="replace")[-3000:]
            report.append(f"----- {log_file.relative_to(logs)}\n{tail}")
        return "\n".join(report)

    def task_instances(self, run_id: str) -> dict[str, dict]:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        return {ti["task_id"]: ti for ti in self.get(path)["task_instances"]}

    def task_states(self, run_id: str) -> dict[str, str]:
        return {task_id: ti["state"] for task_id, ti in self.task_instances(run_id).items()}


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if isinstance(postgres_server, str):
        pytest.skip("needs the throwaway PostgreSQL cluster (ASP_TEST_POSTGRES_URL is set)")
    root = tmp_path_factory.mktemp("decomposed-e2e")
    dags = root / "dags"
    dags.mkdir()
    shutil.copy(DAGS_FOLDER / "decomposed_source.py", dags)
    metadata_db, warehouse_db = postgres_server.create_database(), postgres_server.create_database()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(root / "airflow_home"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                f"postgresql+psycopg2://postgres@127.0.0.1:{postgres_server.port}/{metadata_db}"
            ),
            # the async engine (api-server) would default to asyncpg, which is not installed
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": (
                f"postgresql+psycopg://postgres@127.0.0.1:{postgres_server.port}/{metadata_db}"
            ),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # tasks report to the api-server's execution API
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW_CONN_PIPELINE_STATE_DEFAULT": json.dumps(
                {
                    "conn_type": "postgres",
                    "host": "127.0.0.1",
                    "port": postgres_server.port,
                    "login": "postgres",
                    "schema": warehouse_db,
                }
            ),
            "AIRFLOW_STATE_PIPELINES_DIR": str(root / "pipelines"),
            "PYTHONPATH": str(REPO),  # this checkout's provider in every Airflow process
        }
    )
    airflow = [sys.executable, "-m", "airflow"]
    started = time.monotonic()
    migrate = subprocess.run(
        [*airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    print(f"\ne2e: airflow db migrate on PostgreSQL took {time.monotonic() - started:.1f}s")
    services: list[subprocess.Popen] = []
    client = httpx.Client(base_url=base_url, timeout=30)
    stack = Stack(root, client, services, postgres_server.url(warehouse_db))
    try:
        for name in ("api-server", "scheduler", "dag-processor"):
            log = open(root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            services.append(subprocess.Popen([*airflow, name], env=env, stdout=log, stderr=subprocess.STDOUT))
        healthy = lambda: client.get("/api/v2/monitor/health").is_success  # noqa: E731
        stack.wait_for("the api-server", healthy, STARTUP_TIMEOUT)
        client.headers["Authorization"] = f"Bearer {client.get('/auth/token').json()['access_token']}"
        stack.wait_for("the DAG", lambda: client.get(f"/api/v2/dags/{DAG_ID}").is_success, STARTUP_TIMEOUT)
        print(f"e2e: services up and the DAG parsed after {time.monotonic() - started:.1f}s")
        yield stack
    except Exception:
        for log_file in sorted(root.glob("*.log")):
            print(f"----- {log_file.name} (tail)\n{log_file.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        client.close()
        for proc in services:
            proc.terminate()
        for proc in services:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def overlapping(task_instances: dict[str, dict]) -> list[tuple[str, str]]:
    """Pairs of task instances whose run times overlapped."""
    spans = {
        t: (datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"]))
        for t, ti in task_instances.items()
    }
    pairs = combinations(sorted(spans), 2)
    return [(a, b) for a, b in pairs if spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]]


def test_parallel_tasks_twice_through_the_scheduler(stack: Stack):
    tasks = {t["task_id"]: t for t in stack.get(f"/api/v2/dags/{DAG_ID}/tasks")["tasks"]}
    assert sorted(tasks) == list(TASKS)
    assert all(not t["downstream_task_ids"] for t in tasks.values())  # parallel: no dependencies
    assert "**State writer**" in tasks["helpdesk.agents"]["doc_md"]
    assert "task `helpdesk.agents`" in tasks["helpdesk.tickets"]["doc_md"]

    runs = []
    for _ in range(2):
        started = time.monotonic()
        run_id = stack.trigger_and_wait()
        print(f"e2e: run {run_id} succeeded after {time.monotonic() - started:.1f}s")
        runs.append(stack.task_instances(run_id))
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
