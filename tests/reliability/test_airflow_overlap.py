"""Two DAG runs of one pipeline at once through the real Airflow stack (issue 9 §3).

``airflow api-server``, ``scheduler`` (LocalExecutor) and ``dag-processor`` run as subprocesses with a
private ``AIRFLOW_HOME``; the destination is a database of the test PostgreSQL server. Two runs of
``dags/overlapping_runs.py`` (``max_active_runs=2``) are triggered together; their first tries restore
the same state version and load the same ids. The loser's first try must fail with
``StateConflictError`` (in its task log), its retry succeed, and every id be in the table once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline

pytest.importorskip("httpx")

from tests.airflow_stack import AirflowStack, running_stack

pytestmark = [pytest.mark.airflow, pytest.mark.e2e, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "overlapping_runs"
TIMEOUT = 180
#: the warehouse connection's password (the test cluster trusts every login): never in any log
SECRET = "e2e-Pw-4bd91c-never-logged"


@pytest.fixture
def stack(postgres_server, tmp_path: Path) -> Iterator[AirflowStack]:
    if isinstance(postgres_server, str):
        pytest.skip("needs the throwaway PostgreSQL cluster (ASP_TEST_POSTGRES_URL is set)")
    dags, overlap = tmp_path / "dags", tmp_path / "rendezvous"
    dags.mkdir()
    overlap.mkdir()
    shutil.copy(Path(__file__).parent / "dags" / "overlapping_runs.py", dags)
    warehouse = postgres_server.create_database()
    env = {
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
    airflow = AirflowStack(tmp_path, dags, postgres_server.url(warehouse), env, poll=0.5)
    with running_stack(airflow, [DAG_ID], TIMEOUT, stop_timeout=15, migrate_timeout=300):
        yield airflow


def task_log(stack: AirflowStack, run_id: str, attempt: int) -> str:
    """The log of one try of the run's ``load`` task."""
    return stack.log_file(DAG_ID, run_id, "load", attempt).read_text(errors="replace")


def test_two_dag_runs_at_once_the_loser_fails_with_a_conflict_and_its_retry_loads_once(stack: AirflowStack):
    run_ids = [stack.trigger(DAG_ID) for _ in range(2)]
    states = stack.wait_for_runs(DAG_ID, run_ids, TIMEOUT)
    tries = {r: stack.get(f"{stack.run_path(DAG_ID, r)}/taskInstances/load")["try_number"] for r in run_ids}
    assert states == dict.fromkeys(run_ids, "success"), (states, tries)
    # exactly one run needed its retry: its first try lost the race to commit
    assert sorted(tries.values()) == [1, 2], tries
    loser = next(r for r, t in tries.items() if t == 2)
    first_try = task_log(stack, loser, 1)
    assert "StateConflictError" in first_try and "sources.feed.resources.events" in first_try
    assert "StateConflictError" not in task_log(stack, loser, 2)

    engine = sa.create_engine(stack.warehouse_url)
    with engine.connect() as conn:
        ids = [r[0] for r in conn.exec_driver_sql('SELECT id FROM "ds".events ORDER BY id')]
        loads = conn.exec_driver_sql('SELECT count(*) FROM "ds"._dlt_loads').scalar()
    engine.dispose()
    assert ids == list(range(1, 201))  # no duplicate, no gap: the retry continued after the winner
    assert loads == 2
    state = Pipeline("overlap_e2e", destination=stack.warehouse_url, dataset_name="ds").state
    assert state["sources"]["feed"]["resources"]["events"]["max_id"] == 200

    # the task logs (both tries, the conflict's traceback included) and the services' logs
    logs = [p for p in stack.root.rglob("*.log") if p.is_file()]
    assert any("task_id=load" in str(p) for p in logs)
    leaked = [str(p) for p in logs if SECRET in p.read_text(errors="replace")]
    assert leaked == [], f"the connection password appears in {leaked}"
