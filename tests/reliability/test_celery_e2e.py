"""Airflow's distributed engine: the CeleryExecutor with two clean workers, issue 13 (Build 6).

The test starts Redis (Debian's ``redis-server``, on a free port, in its own directory) as the Celery
broker and result backend, the Airflow services with ``executor = CeleryExecutor`` and the metadata
database on the test PostgreSQL server, and two ``airflow celery worker`` processes. Each worker has
its own empty working directory, ``HOME`` and ``AIRFLOW_HOME`` and is not given the metadata database:
what the workers share is the DAG files, the broker and the warehouse (a PostgreSQL database).

The DAG ``tests/reliability/dags/celery_distributed.py`` (a decomposed parallel source, a task mapped
over three regions, a task that fails once and retries) runs twice. The first run goes to worker-a
alone; worker-b, started on a queue nobody uses, then joins Airflow's queue, so in the second run both
workers take tasks and every task worker-b takes continues from state that worker-a committed. Every
row lands exactly once, every state slot is present, and the state versions, ``_dlt_loads`` and the
rows' load ids agree.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline
from tests.airflow.conftest import REPO
from tests.airflow_stack import (
    AirflowStack,
    free_port,
    migrated_metadata_db,
    postgres_conn_json,
    running_stack,
)

pytestmark = [pytest.mark.airflow, pytest.mark.e2e, pytest.mark.postgres]

DAG_ID = "celery_distributed"
DAG_FILE = Path(__file__).parent / "dags" / f"{DAG_ID}.py"
WORKERS = ("worker-a", "worker-b")
STARTUP_TIMEOUT, RUN_TIMEOUT = 300, 300  # the api-server took over 180 s to start at load 17
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
PAGE, REGIONS = 5, ("eu", "us", "ap")
SUPPORT_TASKS = ("support.agents", "support.ratings", "support.tickets")


def spawn(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until(what: str, check, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what}: exited with {proc.returncode}\n{log.read_text(errors='replace')[-4000:]}"
            )
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what}\n{log.read_text(errors='replace')[-4000:]}"
    )


def start_redis(root: Path, stack: ExitStack) -> str:
    """Redis on a free loopback port, persisting nothing, in ``root / "redis"``; its URL."""
    import redis

    home = root / "redis"
    home.mkdir()
    port = free_port()
    args = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(home)]
    proc = spawn([*args, "--save", "", "--appendonly", "no"], dict(os.environ), home, home / "redis.log")
    stack.callback(stop, proc)

    def pong() -> bool:
        try:
            return redis.Redis(port=port, socket_connect_timeout=1).ping()
        except redis.RedisError:
            return False

    wait_until("redis-server", pong, proc, home / "redis.log", 30)
    return f"redis://127.0.0.1:{port}"


def worker_env(airflow: AirflowStack, home: Path) -> dict[str, str]:
    """A clean worker's environment: its own HOME and AIRFLOW_HOME, no metadata database."""
    env = {k: v for k, v in airflow.env.items() if not k.startswith("AIRFLOW__DATABASE__")}
    env.pop("AIRFLOW__API_AUTH__JWT_SECRET")  # the scheduler signs the tasks' tokens
    env.update({"HOME": str(home / "home"), "AIRFLOW_HOME": str(home / "airflow_home")})
    return env


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    if isinstance(postgres_server, str):
        pytest.skip("needs the throwaway PostgreSQL cluster (ASP_TEST_POSTGRES_URL is set)")
    if not os.access(REDIS_SERVER, os.X_OK):
        msg = "redis-server not found (install Debian's 'redis-server' package)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    root = tmp_path_factory.mktemp("celery-e2e")
    dags = root / "dags"
    dags.mkdir()
    shutil.copy(DAG_FILE, dags)
    warehouse_db = postgres_server.create_database()
    with ExitStack() as processes:
        broker = start_redis(root, processes)
        env = {
            "HOME": str(root / "services_home"),
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CELERY__BROKER_URL": f"{broker}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"{broker}/1",
            # sending a task to the broker on a busy machine can take longer than the default second
            "AIRFLOW__CELERY__OPERATION_TIMEOUT": "10",
            # a try's calls to the api-server's execution API, from workers on a busy 2-core machine
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
            "AIRFLOW_CONN_PIPELINE_STATE_DEFAULT": postgres_conn_json(postgres_server, warehouse_db),
            "PYTHONPATH": str(REPO),
        }
        airflow = AirflowStack(
            root,
            dags,
            postgres_server.url(warehouse_db),
            env,
            executor="CeleryExecutor",
        )
        # the workers never talk to the metadata database: they start while it is made
        workers = []
        for name in WORKERS:
            home = root / name
            for folder in ("work", "home", "airflow_home"):
                (home / folder).mkdir(parents=True)
            log = home / "worker.log"
            args = [sys.executable, "-m", "airflow", "celery", "worker", "--concurrency", "2"]
            # worker-b waits on a queue of its own until the second run (join_default_queue)
            args += ["--queues", "default" if name == WORKERS[0] else "standby"]
            proc = spawn(
                [*args, "--skip-serve-logs", "--celery-hostname", f"{name}@%h"],
                worker_env(airflow, home),
                home / "work",
                log,
            )
            processes.callback(stop, proc, 30)
            workers.append((name, proc, log))
        airflow.use_metadata_db(migrated_metadata_db(postgres_server), migrated=True)
        with running_stack(airflow, [DAG_ID], STARTUP_TIMEOUT, stop_timeout=10):
            for name, proc, log in workers:
                wait_until(
                    f"celery {name}",
                    lambda log=log: " ready." in log.read_text(errors="replace"),
                    proc,
                    log,
                    STARTUP_TIMEOUT,
                )
            print(f"e2e: {len(workers)} celery workers ready")
            airflow.services.extend(proc for _, proc, _ in workers)  # a worker's exit fails the waits
            yield airflow


def join_default_queue(stack: AirflowStack, worker: str) -> None:
    """Make the Celery worker ``worker`` (started on a queue nobody uses) take Airflow's tasks too."""
    from celery import Celery

    app = Celery(broker=stack.env["AIRFLOW__CELERY__BROKER_URL"])
    try:
        node = f"{worker}@{socket.gethostname()}"
        replies = app.control.add_consumer("default", destination=[node], reply=True, timeout=30)
    finally:
        app.close()
    assert replies == [{node: {"ok": "add consumer default"}}], replies


def task_logs(stack: AirflowStack, run_id: str) -> dict[str, dict[str, Path]]:
    """Each worker's task log files of a run by ``<task_id>[/map_index=<i>]/attempt=<n>``.

    A worker writes the logs of the tries it runs under its own ``AIRFLOW_HOME``.
    """
    logs = {}
    for name in WORKERS:
        folder = stack.root / name / "airflow_home" / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
        files = sorted(folder.rglob("attempt=*.log"))
        logs[name] = {str(f.relative_to(folder)).removeprefix("task_id=")[: -len(".log")]: f for f in files}
    return logs


def failure_report(stack: AirflowStack, run_id: str) -> str:
    report = [str({key: ti["state"] for key, ti in task_instances(stack, run_id).items()})]
    for name, files in task_logs(stack, run_id).items():
        for key, log_file in files.items():
            report.append(f"----- {name}: {key}\n{log_file.read_text(errors='replace')[-3000:]}")
    for name in WORKERS:
        tail = (stack.root / name / "worker.log").read_text(errors="replace")[-3000:]
        report.append(f"----- {name}/worker.log\n{tail}")
    return "\n".join(report)


def task_instances(stack: AirflowStack, run_id: str) -> dict[str, dict]:
    """The run's task instances by ``task_id`` or ``task_id[map_index]``."""
    tis = stack.get(f"{stack.run_path(DAG_ID, run_id)}/taskInstances")["task_instances"]
    return {ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]": ti for ti in tis}


def rows(conn: sa.Connection, sql: str) -> list[tuple]:
    return [tuple(r) for r in conn.exec_driver_sql(sql)]


def check_pipeline(
    conn: sa.Connection, url: str, pipeline_name: str, dataset: str, tables: dict[str, str], commits: int
) -> dict:
    """The pipeline's state agrees with ``_dlt_loads`` and the rows; its committed state document.

    ``tables`` maps each table to its primary key. Every commit is one state version and one load:
    versions 1..commits, each state row's load in ``_dlt_loads``, and every row's load one of them.
    """
    state_rows = rows(
        conn,
        f"SELECT version, _dlt_load_id FROM {dataset}._dlt_pipeline_state"
        f" WHERE pipeline_name = '{pipeline_name}' ORDER BY version",
    )
    assert [v for v, _ in state_rows] == list(range(1, commits + 1)), state_rows
    state_loads = {load_id for _, load_id in state_rows}
    committed = {
        load_id for (load_id,) in rows(conn, f"SELECT load_id FROM {dataset}._dlt_loads WHERE status = 0")
    }
    assert state_loads <= committed
    assert len(state_loads) == commits
    for table, key in tables.items():
        count, distinct = rows(conn, f"SELECT count(*), count(DISTINCT {key}) FROM {dataset}.{table}")[0]
        assert count == distinct, f"{dataset}.{table}: {count - distinct} rows landed twice"
        loads = {load_id for (load_id,) in rows(conn, f"SELECT DISTINCT _dlt_load_id FROM {dataset}.{table}")}
        assert loads <= state_loads, (
            f"{dataset}.{table}: rows of loads without a state version: {loads - state_loads}"
        )
    pipeline = Pipeline(pipeline_name, destination=url, dataset_name=dataset)
    try:
        state = pipeline.state
    finally:
        pipeline.engine.dispose()
    assert state["_state_version"] == commits
    return state["sources"][pipeline_name]


@pytest.mark.timeout(900)
def test_two_runs_on_two_clean_celery_workers(stack: AirflowStack):
    tasks = {t["task_id"]: t for t in stack.get(f"/api/v2/dags/{DAG_ID}/tasks")["tasks"]}
    assert sorted(tasks) == ["flaky", "orders", *SUPPORT_TASKS]
    started = time.monotonic()
    first = stack.trigger(DAG_ID)
    assert stack.wait_for_run(DAG_ID, first, RUN_TIMEOUT) == "success", failure_report(stack, first)
    # the fresh worker joins: in the second run, whatever it takes continues what worker-a committed
    join_default_queue(stack, WORKERS[1])
    second = stack.trigger(DAG_ID)
    assert stack.wait_for_run(DAG_ID, second, RUN_TIMEOUT) == "success", failure_report(stack, second)
    print(f"e2e: two runs finished after {time.monotonic() - started:.1f}s")

    expected = {*SUPPORT_TASKS, "flaky", *(f"orders[{i}]" for i in range(len(REGIONS)))}
    placements = []
    for run_id in (first, second):
        tis = task_instances(stack, run_id)
        assert {key: ti["state"] for key, ti in tis.items()} == dict.fromkeys(expected, "success")
        assert tis["flaky"]["try_number"] == 2  # failed once, then retried
        placements.append({name: sorted(tries) for name, tries in task_logs(stack, run_id).items()})
        print(f"e2e: run {run_id}: {placements[-1]}")
    assert not placements[0][WORKERS[1]]
    # worker-b ran tries of the second run (worker-a takes two at a time), every one of them continuing
    # from state that worker-a committed
    assert placements[1][WORKERS[0]] and placements[1][WORKERS[1]], placements[1]
    for name in WORKERS:  # clean workers: the local pipeline copy is in each worker's own HOME
        assert not any((stack.root / name / "work").iterdir()), f"{name} wrote into its working directory"

    url = stack.warehouse_url
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            support = check_pipeline(
                conn,
                url,
                "support",
                "support_data",
                {
                    "agents": "agent_id",
                    "tickets": "ticket_id",
                    "ticket_events": "event_id",
                    "ratings": "rating_id",
                },
                commits=2 * len(SUPPORT_TASKS),
            )
            assert rows(conn, "SELECT count(*) FROM support_data.agents") == [(3,)]  # merged
            assert rows(
                conn, "SELECT min(ticket_id), max(ticket_id), count(*) FROM support_data.tickets"
            ) == [(1, 2 * PAGE, 2 * PAGE)]
            assert rows(conn, "SELECT count(*) FROM support_data.ticket_events") == [(4 * PAGE,)]
            assert rows(
                conn, "SELECT min(rating_id), max(rating_id), count(*) FROM support_data.ratings"
            ) == [(1, 2 * PAGE, 2 * PAGE)]
            assert support["syncs"] == 2
            slots = support["resources"]
            assert sorted(slots) == ["agents", "ratings", "ticket_events", "tickets"]
            assert slots["tickets"]["incremental"]["ticket_id"]["last_value"] == 2 * PAGE
            assert slots["ratings"]["incremental"]["rating_id"]["last_value"] == 2 * PAGE
            assert slots["ticket_events"]["events"] == 4 * PAGE

            orders = check_pipeline(
                conn, url, "orders", "orders_data", {"orders": "id"}, commits=2 * len(REGIONS)
            )
            loaded = {r for (r,) in rows(conn, "SELECT id FROM orders_data.orders")}
            assert loaded == {f"{region}-{n}" for region in REGIONS for n in range(1, 2 * PAGE + 1)}
            assert sorted(orders["resources"]) == sorted(f"orders__region_{region}" for region in REGIONS)
            for slot in orders["resources"].values():
                assert slot["incremental"]["seq"]["last_value"] == 2 * PAGE

            flaky = check_pipeline(conn, url, "flaky", "flaky_data", {"events": "id"}, commits=2)
            assert rows(conn, "SELECT min(id), max(id), count(*) FROM flaky_data.events") == [
                (1, 4 * PAGE, 4 * PAGE)
            ]
            assert flaky["resources"]["flaky"]["loaded_by_try"] == 2
            assert flaky["resources"]["flaky"]["incremental"]["id"]["last_value"] == 4 * PAGE
    finally:
        engine.dispose()
