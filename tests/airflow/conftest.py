"""Real Airflow for the provider tests.

Airflow reads ``AIRFLOW_HOME`` when it is first imported, so this module points it at a private
temporary directory before anything imports Airflow (pytest collects ``tests/airflow`` before the
other test folders). ``airflow db migrate`` runs once per session, only for tests that need the
metadata database (``dag.test()``). The DAG folder is the repository's ``dags_examples``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags_examples"

if "airflow" in sys.modules:
    raise RuntimeError(
        "Airflow was imported before tests/airflow/conftest.py could give it a private AIRFLOW_HOME; "
        "run tests/airflow first or in its own pytest process"
    )
AIRFLOW_HOME = tempfile.mkdtemp(prefix="asp-airflow-home-")
atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)
AIRFLOW_ENV = {
    "AIRFLOW_HOME": AIRFLOW_HOME,
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
}
os.environ.update(AIRFLOW_ENV)
# the examples read the default connection when parsed (an asset URI names its database); tests that
# load point it at their own file (the ``warehouse`` fixture)
os.environ.setdefault(
    "AIRFLOW_CONN_PIPELINE_STATE_DEFAULT",
    json.dumps(
        {
            "conn_type": "pipeline_state",
            "host": f"{AIRFLOW_HOME}/parse.sqlite",
            "extra": {"dialect": "sqlite"},
        }
    ),
)


def conn_env(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def sqlite_conn_json(path: Path, **extra: Any) -> str:
    """A ``pipeline_state`` connection to a SQLite file, in Airflow's JSON env-var form."""
    return json.dumps(
        {"conn_type": "pipeline_state", "host": str(path), "extra": {"dialect": "sqlite", **extra}}
    )


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """The metadata database of the private AIRFLOW_HOME, migrated once per session."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        env={**os.environ, **AIRFLOW_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return AIRFLOW_HOME


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The examples' default destination: ``pipeline_state_default`` → a fresh SQLite file."""
    path = tmp_path / "warehouse.sqlite"
    monkeypatch.setenv(conn_env("pipeline_state_default"), sqlite_conn_json(path))
    return path


@pytest.fixture
def fresh_pipelines_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Call to point the pipelines dir at a new empty directory, as on a clean worker."""
    counter = iter(range(1_000_000))

    def fresh() -> Path:
        path = tmp_path / f"pipelines-{next(counter)}"
        path.mkdir()
        monkeypatch.setenv("AIRFLOW_STATE_PIPELINES_DIR", str(path))
        return path

    return fresh


def load_dag(dag_id: str, folder: Path | str = DAGS_FOLDER):
    """The DAG object ``dag_id``, parsed from ``folder`` (default: the examples) as the DAG processor
    would; fails on any import error in the folder."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def load_example_dag(dag_id: str):
    """The DAG object of an example, parsed from the DAG folder as the DAG processor would."""
    return load_dag(dag_id)


def run_dag(dag_id: str, logical_date: datetime | None):
    """``dag.test()`` one run of an example DAG; returns the finished DagRun."""
    dag = load_example_dag(dag_id)
    return dag.test(logical_date=logical_date)


def sql(url: str, dataset_name: str, statement: str) -> list[tuple]:
    """Rows of ``statement`` run in a pipeline dataset (reads through the core's SQL client)."""
    from airflow_state_provider import Pipeline

    pipeline = Pipeline("_reader", destination=url, dataset_name=dataset_name)
    try:
        with pipeline.sql_client() as client:
            return client.execute_sql(statement)
    finally:
        pipeline.engine.dispose()


def committed_state(url: str, pipeline_name: str, dataset_name: str) -> dict:
    """The newest committed state of a pipeline, decoded, as a clean worker restores it."""
    from airflow_state_provider import Pipeline

    pipeline = Pipeline(pipeline_name, destination=url, dataset_name=dataset_name)
    try:
        return pipeline.state
    finally:
        pipeline.engine.dispose()
