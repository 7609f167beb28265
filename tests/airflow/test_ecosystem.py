"""The provider inside Airflow's SQL ecosystem, on real Airflow (``dag.test()``) and real databases.

A ``pipeline_state`` connection serves common-sql's operator, decorator and sensor; permanent load
errors end a task without retries while transient ones are retried.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.airflow.conftest import DAGS_FOLDER, conn_env, load_dag

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
    return load_dag(dag_id, ECO_DAGS)


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


# -- the connection form and its Test button ----------------------------------------------------------


def hook_for(monkeypatch, conn: dict):
    from airflow_state_provider.hooks.pipeline_state import PipelineStateHook

    monkeypatch.setenv(conn_env("form"), json.dumps(conn))
    return PipelineStateHook(destination_conn_id="form")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"dialect": "postgress"},
            "extra 'dialect' is 'postgress'; supported dialects: sqlite, duckdb, postgresql",
        ),
        ({"dialect": "mysql"}, "supported dialects: sqlite, duckdb, postgresql"),
        (
            {"sqlalchemy_url": "mysql://u@h/d"},
            "the URL's dialect 'mysql' is not supported; supported dialects: sqlite, duckdb, postgresql",
        ),
        (
            {"dialect": "sqlite", "max_state_versions": "lots"},
            "extra 'max_state_versions' must be an integer >= 1, got 'lots'",
        ),
        (  # every problem at once, the dialect's too
            {"dialect": "postgress", "max_state_versions": "ten", "restore_from_destination": "maybe"},
            "extra 'dialect' is 'postgress'; supported dialects: sqlite, duckdb, postgresql; "
            "extra 'max_state_versions' must be an integer >= 1, got 'ten'; "
            "extra 'restore_from_destination' must be true or false, got 'maybe'",
        ),
        ({"dialect": "sqlite", "restore_from_destination": "maybe"}, "must be true or false, got 'maybe'"),
        (
            {"dialect": "postgresql", "connect_timeout": "ten", "warn_state_bytes": 1.5},
            "extra 'warn_state_bytes' must be an integer >= 1, got 1.5; "
            "extra 'connect_timeout' must be an integer >= 0",
        ),
        (
            {"dialect": "postgresql", "driver": "pg8000"},
            "the postgresql driver 'postgresql+pg8000' cannot be imported (No module named 'pg8000'): "
            "install the 'postgres' extra (pip install 'airflow-state-provider[postgres]', "
            "or pip install -e '.[postgres]' from a checkout)",
        ),
        ({"dialect": "postgresql", "driver": "nodriver"}, "no SQLAlchemy dialect 'postgresql+nodriver'"),
    ],
)
def test_connection_test_validates_the_extras(monkeypatch, tmp_path, extra, expected):
    hook = hook_for(
        monkeypatch, {"conn_type": "pipeline_state", "host": str(tmp_path / "w.db"), "extra": extra}
    )
    ok, message = hook.test_connection()
    assert not ok
    assert message.startswith("connection 'form': ") and expected in message


def test_connection_test_passes_a_valid_form(monkeypatch, tmp_path):
    extra = {
        "dialect": "duckdb",
        "dataset_name": "raw",
        "max_state_versions": "7",
        "restore_from_destination": "false",
    }
    hook = hook_for(
        monkeypatch, {"conn_type": "pipeline_state", "host": str(tmp_path / "w.duckdb"), "extra": extra}
    )
    assert hook.validate_extras() == []
    ok, message = hook.test_connection()
    assert ok and "first load creates it" in message


def test_airflow_connections_test_names_the_supported_dialects(tmp_path):
    """What the UI's Test button runs, through Airflow's own command (needs test_connection enabled)."""
    import os
    import subprocess
    import sys

    conn = {"conn_type": "pipeline_state", "host": str(tmp_path / "w.db"), "extra": {"dialect": "sqllite"}}
    env = {**os.environ, "AIRFLOW__CORE__TEST_CONNECTION": "Enabled", conn_env("form"): json.dumps(conn)}
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "connections", "test", "form"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert "Connection failed!" in out
    assert "extra 'dialect' is 'sqllite'; supported dialects: sqlite, duckdb, postgresql" in out


# -- provider metadata --------------------------------------------------------------------------------


def test_providers_get_shows_description_documentation_and_airflow_versions():
    import importlib.metadata
    import os
    import subprocess
    import sys

    from airflow_state_provider.get_provider_info import AIRFLOW_REQUIREMENT, DOCUMENTATION_URL

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow",
            "providers",
            "get",
            "airflow-state-provider",
            "--full",
            "-o",
            "json",
        ],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    (info,) = json.loads(result.stdout)
    assert "committed in the same transaction as the loaded rows" in info["description"]
    assert f"Documentation: {DOCUMENTATION_URL}" in info["description"]
    assert "Supported Airflow versions: 3.1 and newer." in info["description"]
    # the airflow extra requires what the description says
    requires = importlib.metadata.requires("airflow-state-provider")
    assert f'{AIRFLOW_REQUIREMENT}; extra == "airflow"' in requires
    assert any(r.startswith("apache-airflow-providers-common-sql") for r in requires)


def test_connection_form_offers_the_supported_dialects():
    import importlib.metadata

    from airflow_state_provider.hooks.pipeline_state import SUPPORTED_DIALECTS

    if tuple(int(p) for p in importlib.metadata.version("apache-airflow").split(".")[:2]) < (3, 2):
        pytest.skip("conn-fields are read from provider info since Airflow 3.2")
    from airflow.providers_manager import ProvidersManager

    widget = ProvidersManager().connection_form_widgets["extra__pipeline_state__dialect"]
    assert widget.field["schema"]["enum"] == [*SUPPORTED_DIALECTS, None]


# -- assets ---------------------------------------------------------------------------------------------


@pytest.fixture
def eco_sqlite(tmp_path, monkeypatch, fresh_pipelines_dir) -> str:
    """``eco_dest`` on a SQLite file only (for the DAG-level tests whose logic is not per dialect)."""
    fresh_pipelines_dir()
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    monkeypatch.setenv(conn_env("eco_dest"), json.dumps(connection_for(url)))
    return url


def test_each_loaded_table_gets_an_asset_event_that_queues_the_downstream_dag(
    airflow_db, eco_bundle, eco_sqlite, tmp_path
):
    import os
    import subprocess
    import sys

    from airflow.models import DagModel
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from airflow_state_provider.hooks.pipeline_state import PipelineStateHook

    # the DAG processor's part: both DAGs serialized (and active), so the scheduler knows who consumes what
    subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "reserialize"],
        env={**os.environ, "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False"},
        check=True,
        capture_output=True,
        timeout=300,
    )
    with create_session() as session:  # an earlier test of the session may have created it paused
        session.query(DagModel).filter(DagModel.dag_id == "eco_assets_report").update({"is_paused": False})
    hook = PipelineStateHook(destination_conn_id="eco_dest")
    uris = {t: hook.table_asset_uri("eco_data", t) for t in ("orders", "customers")}
    dag_run = eco_dag("eco_assets_load").test(logical_date=None)
    assert dag_run.state == "success"

    with create_session() as session:
        events = {
            uri: session.query(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .filter(AssetModel.uri == uri)
            .all()
            for uri in uris.values()
        }
        extras = {uri: [e.extra for e in found] for uri, found in events.items()}
        queued = [
            q.target_dag_id
            for q in session.query(AssetDagRunQueue)
            .join(AssetModel, AssetModel.id == AssetDagRunQueue.asset_id)
            .filter(AssetModel.uri == uris["orders"])
        ]
    load_id = extras[uris["orders"]][0]["load_id"]
    assert extras == {
        uris["orders"]: [{"load_id": load_id, "row_count": 3, "state_version": 1}],
        uris["customers"]: [{"load_id": load_id, "row_count": 1, "state_version": 1}],
    }
    assert queued == ["eco_assets_report"]  # the scheduler's queue: it creates the run from this


@pytest.mark.parametrize(
    ("conn", "namespace", "uri"),
    [
        (
            {"conn_type": "pipeline_state", "host": "/data/w.sqlite", "extra": {"dialect": "sqlite"}},
            "sqlite://localhost/data/w.sqlite",
            "sqlite://localhost/data/w.sqlite/raw/events",
        ),
        (
            {"conn_type": "duckdb", "host": "/data/w.duckdb"},
            "duckdb://localhost/data/w.duckdb",
            "duckdb://localhost/data/w.duckdb/raw/events",
        ),
        (
            {
                "conn_type": "pipeline_state",
                "host": "db.internal",
                "login": "loader",
                "password": "s3cret-pass",
                "schema": "analytics",
                "extra": {"dialect": "postgresql"},
            },
            "postgres://db.internal:5432",
            "postgres://db.internal:5432/analytics/raw/events",
        ),
    ],
)
def test_asset_uri_and_lineage_namespace_name_database_dataset_and_table(monkeypatch, conn, namespace, uri):
    hook = hook_for(monkeypatch, conn)
    assert hook.lineage_namespace() == namespace
    assert hook.table_asset_uri("raw", "events") == uri
    assert hook.table_asset("raw", "events").uri == uri  # Airflow keeps it as is: stable
    assert "s3cret" not in uri and "loader" not in uri
