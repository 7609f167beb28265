"""Two DAG runs of one pipeline at once through the real Airflow stack (issue 9 §3).

``airflow api-server``, ``scheduler`` (LocalExecutor) and ``dag-processor`` run as subprocesses with a
private ``AIRFLOW_HOME``; the destination is a database of the test PostgreSQL server. Two runs of
``dags/overlapping_runs.py`` (``max_active_runs=2``) are triggered together; their first tries restore
the same state version and load the same ids. The loser's first try must fail with
``StateConflictError`` (in its task log), its retry succeed, and every id be in the table once.
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
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline

httpx = pytest.importorskip("httpx")

pytestmark = [pytest.mark.airflow, pytest.mark.e2e, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "overlapping_runs"
TIMEOUT = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    home: Path
    client: Any
    services: list[subprocess.Popen]
    warehouse_url: str

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
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
            time.sleep(0.5)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")

    def get(self, path: str) -> Any:
        response = self.client.get(path)
        response.raise_for_status()
        return response.json()

    def run_path(self, run_id: str) -> str:
        return f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"

    def task_log(self, run_id: str, attempt: int) -> str:
        path = self.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / "task_id=load"
        return (path / f"attempt={attempt}.log").read_text(errors="replace")


@pytest.fixture
def stack(postgres_server, tmp_path: Path) -> Iterator[Stack]:
    if isinstance(postgres_server, str):
        pytest.skip("needs the throwaway PostgreSQL cluster (ASP_TEST_POSTGRES_URL is set)")
    dags, overlap = tmp_path / "dags", tmp_path / "rendezvous"
    dags.mkdir()
    overlap.mkdir()
    shutil.copy(Path(__file__).parent / "dags" / "overlapping_runs.py", dags)
    warehouse = postgres_server.create_database()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    home = tmp_path / "airflow_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW_CONN_WAREHOUSE": json.dumps(
                {
                    "conn_type": "postgres",
                    "host": "127.0.0.1",
                    "port": postgres_server.port,
                    "login": "postgres",
                    "schema": warehouse,
                }
            ),
            "AIRFLOW_STATE_PIPELINES_DIR": str(tmp_path / "pipelines"),
            "ASP_OVERLAP_DIR": str(overlap),
            "PYTHONPATH": str(REPO),
        }
    )
    airflow = [sys.executable, "-m", "airflow"]
    migrate = subprocess.run(
        [*airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    services: list[subprocess.Popen] = []
    client = httpx.Client(base_url=base_url, timeout=30)
    stack = Stack(home, client, services, postgres_server.url(warehouse))
    try:
        for name in ("api-server", "scheduler", "dag-processor"):
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            services.append(subprocess.Popen([*airflow, name], env=env, stdout=log, stderr=subprocess.STDOUT))
        stack.wait_for("the api-server", lambda: client.get("/api/v2/monitor/health").is_success)
        client.headers["Authorization"] = f"Bearer {client.get('/auth/token').json()['access_token']}"
        stack.wait_for("the DAG", lambda: client.get(f"/api/v2/dags/{DAG_ID}").is_success)
        yield stack
    except Exception:
        for log_file in sorted(tmp_path.glob("*.log")):
            print(f"----- {log_file.name} (tail)\n{log_file.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        client.close()
        for proc in services:
            proc.terminate()
        for proc in services:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_two_dag_runs_at_once_the_loser_fails_with_a_conflict_and_its_retry_loads_once(stack: Stack):
    run_ids = []
    for _ in range(2):
        response = stack.client.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None})
        response.raise_for_status()
        run_ids.append(response.json()["dag_run_id"])

    def finished() -> dict[str, str] | None:
        states = {r: stack.get(stack.run_path(r))["state"] for r in run_ids}
        return states if all(s in ("success", "failed") for s in states.values()) else None

    states = stack.wait_for("both DAG runs", finished)
    tries = {r: stack.get(f"{stack.run_path(r)}/taskInstances/load")["try_number"] for r in run_ids}
    assert states == dict.fromkeys(run_ids, "success"), (states, tries)
    # exactly one run needed its retry: its first try lost the race to commit
    assert sorted(tries.values()) == [1, 2], tries
    loser = next(r for r, t in tries.items() if t == 2)
    first_try = stack.task_log(loser, 1)
    assert "StateConflictError" in first_try and "sources.feed.resources.events" in first_try
    assert "StateConflictError" not in stack.task_log(loser, 2)

    engine = sa.create_engine(stack.warehouse_url)
    with engine.connect() as conn:
        ids = [r[0] for r in conn.exec_driver_sql('SELECT id FROM "ds".events ORDER BY id')]
        loads = conn.exec_driver_sql('SELECT count(*) FROM "ds"._dlt_loads').scalar()
    engine.dispose()
    assert ids == list(range(1, 201))  # no duplicate, no gap: the retry continued after the winner
    assert loads == 2
    state = Pipeline("overlap_e2e", destination=stack.warehouse_url, dataset_name="ds").state
    assert state["sources"]["feed"]["resources"]["events"]["max_id"] == 200
