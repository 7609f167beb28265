"""The real Airflow stack for end-to-end tests: ``api-server``, ``scheduler`` and ``dag-processor``.

The services run as subprocesses on loopback with a private ``AIRFLOW_HOME`` and the simple auth
manager (everyone an admin); the tests talk to the REST API with an authorized ``httpx`` client.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

SERVICES = ("api-server", "scheduler", "dag-processor")
FINISHED = ("success", "failed")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AirflowStack:
    """The services of one private ``AIRFLOW_HOME`` (``root / "airflow_home"``) and a REST client.

    ``warehouse_url`` is the destination the DAGs load into, for the tests' checks; ``env`` is the
    test's own environment (connections, ``PYTHONPATH``, ...) on top of the common settings.
    """

    def __init__(
        self,
        root: Path,
        dags: Path,
        warehouse_url: str,
        env: Mapping[str, str] | None = None,
        *,
        executor: str = "LocalExecutor",
        metadata_db: str | None = None,
        migrated: bool = False,
        poll: float = 1.0,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.root, self.home, self.warehouse_url, self.poll = root, root / "airflow_home", warehouse_url, poll
        #: True: the metadata database is migrated already (``migrated_metadata_db``): ``start`` does not
        self.migrated = False
        #: (username, password) of the client's token; None: the simple auth manager's all-admins token
        self.login = login
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__EXECUTOR": executor,
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                # tasks report to the api-server's execution API
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            }
        )
        if metadata_db:
            self.use_metadata_db(metadata_db, migrated)
        self.env.update(env or {})
        self.client = httpx.Client(base_url=self.base_url, timeout=30)
        self.services: list[subprocess.Popen] = []

    def use_metadata_db(self, url: str, migrated: bool = False) -> None:
        """Put the metadata database at ``url`` (postgresql+psycopg2); ``migrated``: skip the migration."""
        self.env.update(metadata_db_env(url))
        self.migrated = migrated

    def start(self, dag_ids: Iterable[str], timeout: float, migrate_timeout: float | None = None) -> None:
        """Migrate the metadata DB, start the services, wait for the api-server and the DAGs to be parsed."""
        airflow = [sys.executable, "-m", "airflow"]
        started = time.monotonic()
        if not self.migrated:
            migrate(self.env, migrate_timeout)
        for name in SERVICES:
            with open(self.root / f"{name}.log", "wb") as out:  # the child keeps its own descriptor
                self.services.append(
                    subprocess.Popen([*airflow, name], env=self.env, stdout=out, stderr=subprocess.STDOUT)
                )
        self.wait_for("the api-server", lambda: self.client.get("/api/v2/monitor/health").is_success, timeout)
        print(f"e2e: api-server up after {time.monotonic() - started:.1f}s")
        self.client.headers["Authorization"] = (
            f"Bearer {self.token(*self.login) if self.login else self.token()}"
        )
        for dag_id in dag_ids:
            self.wait_for(
                f"{dag_id} to be parsed",
                lambda d=dag_id: self.client.get(f"/api/v2/dags/{d}").is_success,
                timeout,
            )
        print(f"e2e: DAGs parsed after {time.monotonic() - started:.1f}s")

    def token(self, username: str | None = None, password: str | None = None) -> str:
        """A JWT of the api-server: the user's (``POST /auth/token``), or the all-admins one."""
        if username is None:
            response = self.client.get("/auth/token")
        else:
            response = self.client.post("/auth/token", json={"username": username, "password": password})
        response.raise_for_status()
        return response.json()["access_token"]

    def stop(self, timeout: float) -> None:
        """Close the client, terminate every service and kill those still running after ``timeout``."""
        self.client.close()
        for proc in self.services:
            proc.terminate()
        for proc in self.services:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def print_service_logs(self) -> None:
        """The end of each service's log, for a failed start."""
        for log in sorted(self.root.glob("*.log")):
            print(f"----- {log.name} (tail)\n{log.read_text(errors='replace')[-4000:]}")

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        """Poll ``check`` until it returns something truthy; fail as soon as a service has exited."""
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
            time.sleep(self.poll)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")

    def get(self, path: str, **kwargs: Any) -> Any:
        """The JSON of a successful GET."""
        response = self.client.get(path, **kwargs)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, json: Any) -> Any:
        """The JSON of a successful POST."""
        response = self.client.post(path, json=json)
        response.raise_for_status()
        return response.json()

    @staticmethod
    def run_path(dag_id: str, run_id: str) -> str:
        """The REST path of a DAG run."""
        return f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"

    def trigger(self, dag_id: str) -> str:
        """Trigger a run of ``dag_id`` now; its run id."""
        return self.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})["dag_run_id"]

    def wait_for_runs(self, dag_id: str, run_ids: Iterable[str], timeout: float) -> dict[str, str]:
        """The states of the DAG runs once all of them finished (success or failed)."""
        run_ids = list(run_ids)

        def finished() -> dict[str, str] | None:
            states = {r: self.get(self.run_path(dag_id, r))["state"] for r in run_ids}
            return states if all(s in FINISHED for s in states.values()) else None

        return self.wait_for(f"DAG runs {run_ids} of {dag_id} to finish", finished, timeout)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """The state of the DAG run once it finished (success or failed)."""
        return self.wait_for_runs(dag_id, [run_id], timeout)[run_id]

    def log_file(self, dag_id: str, run_id: str, task_id: str, attempt: int) -> Path:
        """The log file of one try of a task instance."""
        return self.run_logs(dag_id, run_id) / f"task_id={task_id}" / f"attempt={attempt}.log"

    def run_logs(self, dag_id: str, run_id: str) -> Path:
        """The folder of a DAG run's task logs."""
        return self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"


def postgres_conn_json(postgres_server: Any, database: str) -> str:
    """An ``AIRFLOW_CONN_*`` value (JSON) for ``database`` on the test PostgreSQL server, as a
    ``postgres`` connection (user ``postgres``, no password, loopback)."""
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": postgres_server.port,
            "login": "postgres",
            "schema": database,
        }
    )


def metadata_db_env(url: str) -> dict[str, str]:
    """Airflow's settings for a PostgreSQL metadata database at ``url`` (postgresql+psycopg2)."""
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
        # the async engine would default to asyncpg, which is not installed
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": url.replace(
            "postgresql+psycopg2://", "postgresql+psycopg://", 1
        ),
    }


def migrate(env: Mapping[str, str], timeout: float | None) -> None:
    """``airflow db migrate`` with ``env``; its output if it fails."""
    started = time.monotonic()
    cmd = [sys.executable, "-m", "airflow", "db", "migrate"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"\ne2e: airflow db migrate took {time.monotonic() - started:.1f}s")


#: the migrated template database of each test PostgreSQL server (by port), made once per session
_metadata_templates: dict[int, str] = {}


def migrated_metadata_db(postgres_server: Any, timeout: float | None = 300) -> str:
    """A new, migrated Airflow metadata database on the test PostgreSQL server: its psycopg2 URL.

    The first call migrates a template database; every call copies it (``CREATE DATABASE ...
    TEMPLATE``, well under a second), so the suite's end-to-end stacks pay for one migration. Pass
    the URL as ``AirflowStack(metadata_db=..., migrated=True)``.
    """
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{postgres_server.port}/{{}}"
    template = _metadata_templates.get(postgres_server.port)
    if template is None:
        template = postgres_server.create_database()
        with tempfile.TemporaryDirectory(prefix="asp-migrate-") as home:
            env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
            env.update(AIRFLOW_HOME=home, AIRFLOW__CORE__LOAD_EXAMPLES="False")
            env.update(metadata_db_env(url.format(template)))
            migrate(env, timeout)
        _metadata_templates[postgres_server.port] = template
    return url.format(postgres_server.create_database(template=template))


@contextmanager
def running_stack(
    stack: AirflowStack,
    dag_ids: Iterable[str],
    timeout: float,
    stop_timeout: float,
    migrate_timeout: float | None = None,
) -> Iterator[AirflowStack]:
    """Start ``stack`` (printing the service logs if that fails) and stop it on the way out."""
    try:
        stack.start(dag_ids, timeout, migrate_timeout)
        yield stack
    except Exception:
        stack.print_service_logs()
        raise
    finally:
        stack.stop(stop_timeout)
