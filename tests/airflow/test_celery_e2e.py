"""The run model on Airflow's distributed executor: CeleryExecutor with two clean workers.

``airflow api-server``, ``scheduler`` and ``dag-processor`` run with the CeleryExecutor; Redis
(Debian's ``redis-server``, started here) is the broker; the Airflow metadata database, Celery's
result backend and the warehouse are databases of the test PostgreSQL server. Two ``airflow celery
worker`` processes each get their own empty working directory, ``HOME`` and ``AIRFLOW_HOME``: nothing
but the warehouse is shared between them (the DAG files are the code they run).

Two DAG runs of each DAG: ``decomposed_source`` (three tasks of one source in parallel),
``celery_run_model`` (a task mapped over three regions, and a task that fails once per run and
retries). Every row lands exactly once and every state slot is present.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline
from tests.airflow.conftest import DAGS_FOLDER, REPO
from tests.airflow_stack import AirflowStack, free_port, running_stack

pytestmark = [pytest.mark.airflow, pytest.mark.e2e, pytest.mark.postgres]

DAG_IDS = ("decomposed_source", "celery_run_model")
E2E_DAGS = Path(__file__).parent / "e2e_celery_dags"
STARTUP_TIMEOUT, RUN_TIMEOUT = 300, 300
WORKERS = ("w1", "w2")
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Redis on loopback, without persistence."""
    root = tmp_path_factory.mktemp("redis")
    port = free_port()
    args = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*args, "--dir", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.returncode}") from None
                __import__("time").sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def stack(postgres_server, redis_url, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    if isinstance(postgres_server, str):
        pytest.skip("needs the throwaway PostgreSQL cluster (ASP_TEST_POSTGRES_URL is set)")
    root = tmp_path_factory.mktemp("celery-e2e")
    dags = root / "dags"
    dags.mkdir()
    shutil.copy(DAGS_FOLDER / "decomposed_source.py", dags)
    shutil.copy(E2E_DAGS / "celery_run_model.py", dags)
    metadata_db, warehouse_db = postgres_server.create_database(), postgres_server.create_database()
    pg = f"postgres@127.0.0.1:{postgres_server.port}"
    env = {
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CELERY__BROKER_URL": redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg}/{metadata_db}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        # a busy CI machine (2 cores for the services, two workers and PostgreSQL) answers slowly
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "AIRFLOW_CONN_PIPELINE_STATE_DEFAULT": json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": postgres_server.port,
                "login": "postgres",
                "schema": warehouse_db,
            }
        ),
        "PYTHONPATH": str(REPO),  # this checkout's provider in every Airflow process
    }
    airflow = AirflowStack(
        root,
        dags,
        postgres_server.url(warehouse_db),
        env,
        executor="CeleryExecutor",
        metadata_db=f"postgresql+psycopg2://{pg}/{metadata_db}",
    )
    with running_stack(airflow, DAG_IDS, STARTUP_TIMEOUT, stop_timeout=15, migrate_timeout=240):
        for name in WORKERS:
            start_worker(airflow, root / name, name)
        yield airflow


def start_worker(stack: AirflowStack, root: Path, name: str) -> None:
    """A clean Celery worker: its own empty working dir, HOME and AIRFLOW_HOME; logs to root/*.log."""
    for sub in ("cwd", "home", "airflow_home"):
        (root / sub).mkdir(parents=True)
    env = {**stack.env, "HOME": str(root / "home"), "AIRFLOW_HOME": str(root / "airflow_home")}
    args = [sys.executable, "-m", "airflow", "celery", "worker", "-H", f"{name}@%h", "--skip-serve-logs"]
    with open(stack.root / f"worker-{name}.log", "wb") as out:
        stack.services.append(
            subprocess.Popen(
                [*args, "--without-mingle", "--without-gossip"],
                cwd=root / "cwd",
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )


def task_instances(stack: AirflowStack, dag_id: str, run_id: str) -> dict[tuple[str, int], dict]:
    path = f"{stack.run_path(dag_id, run_id)}/taskInstances"
    return {(ti["task_id"], ti["map_index"]): ti for ti in stack.get(path)["task_instances"]}


def worker_logs(stack: AirflowStack, name: str) -> list[Path]:
    """The task log files a worker wrote (each worker has its own AIRFLOW_HOME)."""
    return sorted((stack.root / name / "airflow_home" / "logs").glob("dag_id=*/run_id=*/task_id=*/**/*.log"))


def failed_task_logs(stack: AirflowStack) -> str:
    """The end of every worker task log that reports an error, and the service logs."""
    stack.print_service_logs()
    tails = []
    for name in WORKERS:
        for log in worker_logs(stack, name):
            text = log.read_text(errors="replace")
            if '"level": "error"' in text or "Traceback" in text or "error" in text.lower():
                tails.append(f"----- {name}: {log.name} {log.parent.name}\n{text[-2500:]}")
    return "\n".join(tails)


@pytest.mark.timeout(1800)  # the stack alone starts in 1-5 minutes on a busy 2-core machine
def test_two_runs_on_two_clean_celery_workers_load_every_row_once(stack: AirflowStack):
    for round_ in (1, 2):
        runs = {dag_id: stack.trigger(dag_id) for dag_id in DAG_IDS}
        for dag_id, run_id in runs.items():
            state = stack.wait_for_run(dag_id, run_id, RUN_TIMEOUT)
            tis = task_instances(stack, dag_id, run_id)
            report = {k: (ti["state"], ti["try_number"]) for k, ti in tis.items()}
            assert state == "success", (round_, dag_id, report, failed_task_logs(stack))
            if dag_id == "celery_run_model":
                assert sorted(k for k in tis if k[0] == "orders") == [("orders", i) for i in range(3)]
                assert tis[("feed", -1)]["try_number"] == 2  # failed once, retried, succeeded

    ran = {name: worker_logs(stack, name) for name in WORKERS}
    print("e2e: task logs per worker:", {n: len(f) for n, f in ran.items()})
    assert all(ran.values()), f"a worker ran no task: {ran}"
    for name in WORKERS:  # clean workers: local state only under their own HOME, never shared
        assert not (stack.root / name / "cwd").joinpath(".airflow_state").exists()

    engine = sa.create_engine(stack.warehouse_url)
    try:
        with engine.connect() as conn:

            def ids(table: str, key: str) -> list:
                rows = [r[0] for r in conn.execute(sa.text(f"SELECT {key} FROM {table} ORDER BY {key}"))]
                assert len(rows) == len(set(rows)), f"duplicates in {table}"
                return rows

            assert ids("orders_data.orders", "id") == sorted(
                f"{r}-{n}" for r in ("eu", "us", "ap") for n in range(1, 9)
            )
            assert ids("flaky_data.feed", "id") == sorted(f"feed-{n}" for n in range(1, 9))
            assert len(ids("helpdesk_data.agents", "agent_id")) == 4
            assert len(ids("helpdesk_data.tickets", "ticket_id")) == 20
            assert len(ids("helpdesk_data.ticket_events", "event_id")) == 40
            assert len(ids("helpdesk_data.ratings", "rating_id")) == 10
    finally:
        engine.dispose()

    def state(pipeline_name: str, dataset: str) -> dict:
        p = Pipeline(pipeline_name, destination=stack.warehouse_url, dataset_name=dataset)
        try:
            return p.state
        finally:
            p.engine.dispose()

    orders = state("orders", "orders_data")["sources"]["orders"]["resources"]
    assert {k: v["incremental"]["seq"]["last_value"] for k, v in orders.items()} == {
        "orders__region_eu": 8,
        "orders__region_us": 8,
        "orders__region_ap": 8,
    }
    feed = state("flaky", "flaky_data")["sources"]["flaky"]["resources"]["feed"]
    assert feed["incremental"]["seq"]["last_value"] == 8
    helpdesk = state("helpdesk", "helpdesk_data")["sources"]["helpdesk"]
    assert sorted(helpdesk["resources"]) == ["agents", "ratings", "ticket_events", "tickets"]
    assert helpdesk["syncs"] == 2
