"""OpenLineage facets of ``StatefulLoadOperator`` and ``@task.stateful_load``, read through the
OpenLineage provider's own extractor manager (what its listener calls when a task completes)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from airflow.providers.openlineage.extractors.manager import ExtractorManager
from airflow.sdk import DAG, task
from airflow.utils.state import TaskInstanceState
from sqlalchemy.engine import make_url

from airflow_state_provider import resource, source
from airflow_state_provider.operators.stateful_load import StatefulLoadOperator
from tests.airflow.conftest import conn_env

pytestmark = pytest.mark.airflow


@source(name="shop")
def shop():
    @resource(primary_key="id")
    def orders():
        yield [{"id": 1, "amount": 10.5, "note": "a"}, {"id": 2, "amount": 3.0, "note": None}]

    @resource
    def customers():
        yield {"id": 7, "name": "ada"}

    return orders, customers


@pytest.fixture
def lineage_dest(dest_url, monkeypatch, fresh_pipelines_dir) -> str:
    fresh_pipelines_dir()
    url = make_url(dest_url)
    backend = url.get_backend_name()
    if backend in ("sqlite", "duckdb"):
        conn = {"conn_type": "pipeline_state", "host": url.database, "extra": {"dialect": backend}}
    else:
        conn = {
            "conn_type": "pipeline_state",
            "host": url.host,
            "port": url.port,
            "login": url.username,
            "schema": url.database,
            "extra": {"dialect": "postgresql"},
        }
    monkeypatch.setenv(conn_env("lineage"), json.dumps(conn))
    return dest_url


def lineage_of(op):
    return ExtractorManager().extract_metadata(
        dagrun=SimpleNamespace(run_id="r"),
        task=op,
        task_instance_state=TaskInstanceState.SUCCESS,
        task_instance=None,
    )


def expected_namespace(url: str) -> tuple[str, str]:
    """(namespace, dataset-name prefix) the connection of ``url`` gives."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return f"postgres://{parsed.host}:{parsed.port}", f"{parsed.database}.shop_data."
    return f"{parsed.get_backend_name()}://localhost{parsed.database}", "shop_data."


def test_operator_reports_an_output_dataset_per_loaded_table(lineage_dest):
    with DAG("lineage_op", schedule=None):
        op = StatefulLoadOperator(
            task_id="load",
            data=shop(),
            pipeline_name="shop",
            dataset_name="shop_data",
            destination_conn_id="lineage",
        )
    op.execute({})
    lineage = lineage_of(op)
    namespace, prefix = expected_namespace(lineage_dest)
    assert lineage.inputs == []
    outputs = {o.name: o for o in lineage.outputs}
    assert set(outputs) == {f"{prefix}orders", f"{prefix}customers"}
    orders = outputs[f"{prefix}orders"]
    assert orders.namespace == namespace
    assert orders.outputFacets["outputStatistics"].rowCount == 2
    assert outputs[f"{prefix}customers"].outputFacets["outputStatistics"].rowCount == 1
    fields = [f.name for f in orders.facets["schema"].fields]
    assert {"id", "amount", "note", "_dlt_load_id", "_dlt_id"} <= set(fields)
    assert all(f.type for f in orders.facets["schema"].fields)


def test_decorator_reports_its_table(lineage_dest):
    with DAG("lineage_deco", schedule=None):

        @task.stateful_load(
            pipeline_name="events",
            dataset_name="shop_data",
            table_name="events",
            destination_conn_id="lineage",
        )
        def events():
            yield [{"id": 1, "kind": "click"}, {"id": 2, "kind": "view"}, {"id": 3, "kind": "click"}]

        op = events().operator
    op.execute({})
    lineage = lineage_of(op)
    namespace, prefix = expected_namespace(lineage_dest)
    (output,) = lineage.outputs
    assert (output.namespace, output.name) == (namespace, f"{prefix}events")
    assert output.outputFacets["outputStatistics"].rowCount == 3
    assert {"id", "kind"} <= {f.name for f in output.facets["schema"].fields}


def test_no_lineage_before_a_load(lineage_dest):
    with DAG("lineage_none", schedule=None):
        op = StatefulLoadOperator(
            task_id="load", data=shop(), pipeline_name="shop", destination_conn_id="lineage"
        )
    assert lineage_of(op).outputs == []
