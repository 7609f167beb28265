"""Fixtures of the decomposition tests.

Airflow needs its private ``AIRFLOW_HOME`` before it is first imported: importing the Airflow tests'
conftest sets it up (or reuses it, when pytest already loaded it for ``tests/airflow``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.airflow.conftest import (  # noqa: F401 -- fixtures re-exported to this folder
    AIRFLOW_HOME,
    DAGS_FOLDER,
    airflow_db,
    fresh_pipelines_dir,
    warehouse,
)

#: DAG files only the tests run (e.g. a task that breaks the one-writer rule)
TEST_DAGS = Path(__file__).parent / "dags"


@pytest.fixture
def test_dags_bundle(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Add ``tests/decomposition/dags`` as a second DAG bundle, so ``dag.test()`` runs its DAGs."""
    bundles = [
        {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(DAGS_FOLDER)},
        },
        {
            "name": "decomposition-tests",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(TEST_DAGS)},
        },
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    return TEST_DAGS
