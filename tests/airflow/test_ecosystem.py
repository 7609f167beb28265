"""The provider inside Airflow's SQL ecosystem, on real Airflow (``dag.test()``) and real databases.

A ``pipeline_state`` connection serves common-sql's operator, decorator and sensor; permanent load
errors end a task without retries while transient ones are retried.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.airflow.conftest import DAGS_FOLDER, conn_env

pytestmark = pytest.mark.airflow

ECO_DAGS = Path(__file__).parent / "eco_dags"


@pytest.fixture
def eco_bundle(monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tests/airflow/eco_dags`` as a second DAG bundle, so ``dag.test()`` runs its DAGs."""
    bundles = [
        {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(DAGS_FOLDER)},
        },
        {
            "name": "eco-tests",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(ECO_DAGS)},
        },
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    return ECO_DAGS


def eco_dag(dag_id: str):
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=str(ECO_DAGS))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def connection_for(url: str) -> dict:
    """A ``pipeline_state`` connection (JSON form) to the database of a SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("sqlite", "duckdb"):
        return {"conn_type": "pipeline_state", "host": parsed.database, "extra": {"dialect": backend}}
    return {
        "conn_type": "pipeline_state",
        "host": parsed.host,
        "port": parsed.port,
        "login": parsed.username,
        "password": "secret-not-needed",
        "schema": parsed.database,
        "extra": {"dialect": "postgresql"},
    }


@pytest.fixture
def eco_dest(dest_url, monkeypatch, fresh_pipelines_dir) -> str:
    fresh_pipelines_dir()
    monkeypatch.setenv(conn_env("eco_dest"), json.dumps(connection_for(dest_url)))
    return dest_url


def test_common_sql_operator_decorator_and_sensor_read_a_load(
    airflow_db, eco_bundle, eco_dest, tmp_path, monkeypatch
):
    result = tmp_path / "result.json"
    monkeypatch.setenv("ECO_RESULT", str(result))
    dag_run = eco_dag("eco_sql_ecosystem").test(logical_date=None)
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == dict.fromkeys(("load", "query", "wait", "count_rows", "verify"), "success")
    assert dag_run.state == "success"
    assert json.loads(result.read_text()) == {"rows": [[1, "a"], [2, "b"]], "count": [[2]]}


def test_the_hook_is_a_dbapi_hook(eco_dest):
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    from airflow_state_provider import Pipeline
    from airflow_state_provider.hooks.pipeline_state import PipelineStateHook

    pipeline = Pipeline("eco", destination=eco_dest, dataset_name="eco_data")
    pipeline.run([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], table_name="items")
    pipeline.engine.dispose()

    hook = PipelineStateHook(destination_conn_id="eco_dest")
    assert isinstance(hook, DbApiHook)
    assert hook.sqlalchemy_url == hook.get_sqlalchemy_url()
    assert hook.dialect_name == hook.sqlalchemy_url.get_backend_name()
    statement = "SELECT id, name FROM eco_data.items ORDER BY id"
    assert [tuple(r) for r in hook.get_records(statement)] == [(1, "a"), (2, "b")]
    assert tuple(hook.get_first("SELECT max(id) FROM eco_data.items")) == (2,)
    # parameters use the driver's own marker
    assert tuple(hook.get_first(f"SELECT name FROM eco_data.items WHERE id = {hook.placeholder}", [2])) == (
        "b",
    )
    hook.run("CREATE TABLE eco_data.checks (n INTEGER)")
    hook.run(f"INSERT INTO eco_data.checks (n) VALUES ({hook.placeholder})", parameters=[3])
    hook.dispose()
    assert hook.get_first("SELECT sum(n) FROM eco_data.checks")[0] == 3  # committed
    engine = hook.get_sqlalchemy_engine()  # common-sql's: a new engine, bound values hidden in errors
    try:
        assert engine.url == hook.sqlalchemy_url and engine.hide_parameters
    finally:
        engine.dispose()
    hook.dispose()


# -- fail fast ----------------------------------------------------------------------------------------


def test_a_column_type_conflict_ends_after_one_try_a_state_conflict_is_retried(
    airflow_db, eco_bundle, eco_dest, tmp_path, monkeypatch, capfd
):
    from airflow_state_provider import Pipeline

    seed = Pipeline("typed", destination=eco_dest, dataset_name="eco_data")
    seed.run([{"v": 1}], table_name="typed")
    seed.engine.dispose()
    monkeypatch.setenv("ECO_MARKER_DIR", str(tmp_path))

    dag_run = eco_dag("eco_fail_fast").test(logical_date=None)
    tries = {ti.task_id: (ti.state, ti.try_number) for ti in dag_run.get_task_instances()}
    assert tries == {"schema_conflict": ("failed", 1), "state_conflict": ("success", 2)}
    out = capfd.readouterr().out.replace("\n", " ")
    assert "AirflowFailException: SchemaConflictError" in out
    assert "StateConflictError" in out
    # the retry committed on top of the rival's version
    state = Pipeline("racer", destination=eco_dest, dataset_name="eco_data")
    try:
        assert state.state["sources"]["race"]["resources"]["events"]["seen"] == 2
    finally:
        state.engine.dispose()


def test_permanent_errors_end_the_task_chained_to_the_original(warehouse):
    from airflow_state_provider._airflow_compat import AirflowFailException
    from airflow_state_provider.exceptions import ConfigurationError
    from airflow_state_provider.operators.stateful_load import StatefulLoadOperator

    op = StatefulLoadOperator(task_id="t", data=[{"id": 1}], table_name="t", pipeline_name="p")
    op.write_disposition = "upsert"  # as rendered from a template
    with pytest.raises(AirflowFailException, match="write_disposition must be one of") as failed:
        op.execute({})
    assert isinstance(failed.value.__cause__, ConfigurationError)
    assert not warehouse.exists()  # nothing was written
