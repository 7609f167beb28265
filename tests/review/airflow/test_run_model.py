"""Review (adversary) of issue 13: Airflow's run model, with ``dag.test()``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.airflow.conftest import DAGS_FOLDER, committed_state, load_dag, sql

pytestmark = pytest.mark.airflow

REVIEW_DAGS = Path(__file__).parent / "dags"


@pytest.fixture
def url(airflow_db, warehouse, fresh_pipelines_dir, monkeypatch) -> str:
    fresh_pipelines_dir()
    bundles = [
        {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(DAGS_FOLDER)},
        },
        {
            "name": "review-tests",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(REVIEW_DAGS)},
        },
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    return f"sqlite:///{warehouse}"


def test_mapping_a_task_that_ran_unmapped_does_not_reload_its_rows(url):
    run = load_dag("review_unmapped", REVIEW_DAGS).test(logical_date=None)
    assert run.state == "success"
    slots = committed_state(url, "rv_orders", "rv_orders_dataset")["sources"]["rv_orders"]["resources"]
    assert list(slots) == ["orders"]

    run = load_dag("review_mapped", REVIEW_DAGS).test(logical_date=None)
    ids = [r[0] for r in sql(url, "rv_orders_dataset", "SELECT id FROM orders ORDER BY id")]
    # refused before any row is written, naming both slots: eu's rows are not appended again
    assert run.state == "failed"
    assert len(ids) == len(set(ids)) == 3, ids
    slots = committed_state(url, "rv_orders", "rv_orders_dataset")["sources"]["rv_orders"]["resources"]
    assert list(slots) == ["orders"]
