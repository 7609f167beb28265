"""Decomposed DAGs run with ``dag.test()`` on the embedded default destination (SQLite)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline
from airflow_state_provider.exceptions import ReadOnlyStateError
from tests.airflow.conftest import committed_state, run_dag, sql
from tests.decomposition.conftest import TEST_DAGS

pytestmark = pytest.mark.airflow


def misuse_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(TEST_DAGS))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["decomposed_misuse"]


def table_names(url: str, dataset_name: str) -> set[str]:
    pipeline = Pipeline("_reader", destination=url, dataset_name=dataset_name)
    try:
        with pipeline.engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names(schema=dataset_name))
    finally:
        pipeline.engine.dispose()


def count_distinct(url: str, table: str, key: str) -> tuple[int, int]:
    ((total, distinct),) = sql(url, "helpdesk_data", f"SELECT count(*), count(DISTINCT {key}) FROM {table}")
    return total, distinct


def test_example_runs_twice_and_the_second_run_continues(airflow_db, warehouse, fresh_pipelines_dir):
    url = f"sqlite:///{warehouse}"
    fresh_pipelines_dir()
    assert run_dag("decomposed_source", None).state == "success"
    first = committed_state(url, "helpdesk", "helpdesk_data")["sources"]["helpdesk"]
    assert first["syncs"] == 1
    assert count_distinct(url, "tickets", "ticket_id") == (10, 10)

    fresh_pipelines_dir()  # a clean worker: everything is restored from the destination
    assert run_dag("decomposed_source", None).state == "success"
    state = committed_state(url, "helpdesk", "helpdesk_data")
    helpdesk = state["sources"]["helpdesk"]
    assert (helpdesk["syncs"], helpdesk["agent_ids"]) == (2, [1, 2, 3, 4])
    resources = helpdesk["resources"]
    assert sorted(resources) == ["agents", "ratings", "ticket_events", "tickets"]
    assert resources["tickets"]["incremental"]["ticket_id"]["last_value"] == 20
    assert resources["ticket_events"]["events"] == 40
    assert resources["ratings"]["incremental"]["rated_at"]["last_value"] == "2024-01-01T09:00:00+00:00"
    assert count_distinct(url, "agents", "agent_id") == (4, 4)
    assert count_distinct(url, "tickets", "ticket_id") == (20, 20)
    assert count_distinct(url, "ticket_events", "event_id") == (40, 40)
    assert count_distinct(url, "ratings", "rating_id") == (10, 10)
    # six commits (three tasks, two runs), each a new state version
    assert state["_state_version"] == 6
    assert sql(url, "helpdesk_data", "SELECT count(*) FROM _dlt_loads WHERE status = 0") == [(6,)]


def test_a_non_writer_task_writing_source_state_fails_naming_the_writer(
    airflow_db, warehouse, fresh_pipelines_dir, test_dags_bundle, capfd
):
    url = f"sqlite:///{warehouse}"
    fresh_pipelines_dir()
    dag_run = misuse_dag().test(logical_date=None)
    assert dag_run.state == "failed"
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == {"ledger.balances": "success", "ledger.entries": "failed"}
    message = (
        "ReadOnlyStateError: pipeline 'ledger': source state sources.ledger is read-only in task "
        "'ledger.entries': the state writer of source 'ledger' is task 'ledger.balances'"
    )
    assert message in capfd.readouterr().out.replace("\n", " ")

    # the failed task committed nothing: neither its rows nor its resource state
    ledger = committed_state(url, "ledger", "ledger_data")["sources"]["ledger"]
    assert ledger["closed_on"] == "2024-01-31" and "last_entry" not in ledger
    assert sorted(ledger.get("resources", {})) == []  # no resource slot: no "resources" key, as dlt
    assert sql(url, "ledger_data", "SELECT count(*) FROM balances") == [(2,)]
    assert {"balances", "_dlt_loads"} <= table_names(url, "ledger_data")
    assert "entries" not in table_names(url, "ledger_data")


def test_the_non_writer_task_data_raises_with_its_read_only_sources(warehouse, test_dags_bundle):
    """The same task's data and settings, run through the core: the error type and full message."""
    dag = misuse_dag()
    task = dag.get_task("ledger.entries")
    pipeline = Pipeline("ledger", destination=f"sqlite:///{warehouse}", dataset_name="ledger_data")
    with pytest.raises(ReadOnlyStateError) as raised:
        pipeline.run(task.data, read_only_sources=task.read_only_sources)
    assert "the state writer of source 'ledger' is task 'ledger.balances'" in str(raised.value)
    assert "resource state (current.resource_state()) stays writable here" in str(raised.value)
