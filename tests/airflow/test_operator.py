"""``StatefulLoadOperator`` and ``@task.stateful_load`` executed for real, on a real SQLite destination.

``execute()`` runs with the context keys the Task SDK provides; no metadata database is involved.
"""

from __future__ import annotations

import json
import os
import re
import signal
from datetime import UTC, datetime

import pytest
from airflow.sdk import DAG, task

from airflow_state_provider import current, incremental, resource, source
from airflow_state_provider._airflow_compat import AirflowTaskTerminated
from airflow_state_provider.exceptions import ReadOnlyStateError
from airflow_state_provider.operators.stateful_load import StatefulLoadOperator
from tests.airflow.conftest import committed_state, sql

pytestmark = pytest.mark.airflow

JAN = [{"id": n, "at": datetime(2024, 1, n, tzinfo=UTC)} for n in range(1, 11)]


def context(start: datetime | None = None, end: datetime | None = None) -> dict:
    return {"data_interval_start": start, "data_interval_end": end}


@pytest.fixture
def url(warehouse, fresh_pipelines_dir) -> str:
    fresh_pipelines_dir()
    return f"sqlite:///{warehouse}"


@resource(primary_key="id")
def days(at=incremental("at", allow_external_schedulers=True)):
    yield JAN


def test_no_xcom_by_default_and_only_a_summary_when_asked(url):
    op = StatefulLoadOperator(task_id="load", data=days, pipeline_name="p")
    assert op.do_xcom_push is False
    assert op.execute(context()) is None

    op = StatefulLoadOperator(
        task_id="load2", data=[{"id": 1}], table_name="t", pipeline_name="p", do_xcom_push=True
    )
    summary = op.execute(context())
    json.dumps(summary)  # XCom-serializable
    assert summary["row_counts"] == {"t": 1}
    assert summary["state_version"] == 1 and summary["state_changed"] is False
    assert "sources" not in json.dumps(summary)  # never the state itself


def test_data_interval_reaches_external_scheduler_incrementals(url):
    op = StatefulLoadOperator(task_id="load", data=days, pipeline_name="p")
    op.execute(context(datetime(2024, 1, 3, tzinfo=UTC), datetime(2024, 1, 6, tzinfo=UTC)))
    assert sql(url, "p_dataset", "SELECT id FROM days ORDER BY id") == [(3,), (4,), (5,)]


def test_callable_data_is_evaluated_when_the_task_runs(url):
    calls = []

    def build():
        calls.append(1)
        return days

    op = StatefulLoadOperator(task_id="load", data=build, pipeline_name="p")
    assert calls == []
    op.execute(context())
    assert calls == [1]
    assert sql(url, "p_dataset", "SELECT count(*) FROM days") == [(10,)]


def test_template_fields_render(url):
    op = StatefulLoadOperator(
        task_id="load",
        data=[{"id": 1}],
        pipeline_name="p_{{ params.env }}",
        dataset_name="ds_{{ params.env }}",
        table_name="t_{{ params.env }}",
        destination_conn_id="{{ params.conn }}",
    )
    assert set(StatefulLoadOperator.template_fields) == {
        "pipeline_name",
        "dataset_name",
        "table_name",
        "destination_conn_id",
        "write_disposition",
        "primary_key",
        "merge_key",
        "refresh",
        "state_key",
    }
    op.render_template_fields({"params": {"env": "prod", "conn": "pipeline_state_default"}})
    op.execute(context())
    assert sql(url, "ds_prod", "SELECT count(*) FROM t_prod") == [(1,)]


def test_per_run_arguments_are_templated(url):
    """write_disposition, keys and refresh come from the run's params (e.g. a backfill that reloads)."""

    def load(params: dict, rows: list[dict]) -> None:
        op = StatefulLoadOperator(
            task_id="load",
            data=rows,
            table_name="t",
            pipeline_name="p",
            write_disposition="{{ params.mode }}",
            primary_key="{{ params.key }}",
            merge_key="{{ params.key }}",
            refresh="{{ params.refresh or '' }}",
        )
        op.render_template_fields({"params": params})
        op.execute(context())

    load({"mode": "merge", "key": "id", "refresh": None}, [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
    load({"mode": "merge", "key": "id", "refresh": None}, [{"id": 1, "v": "c"}])
    assert sql(url, "p_dataset", "SELECT id, v FROM t ORDER BY id") == [(1, "c"), (2, "b")]
    load({"mode": "append", "key": "id", "refresh": "drop_data"}, [{"id": 3, "v": "d"}])
    assert sql(url, "p_dataset", "SELECT id, v FROM t ORDER BY id") == [(3, "d")]


def test_load_summary_is_logged_as_key_value_pairs(url, capfd, caplog):
    caplog.set_level("INFO")
    StatefulLoadOperator(task_id="load", data=[{"id": 1}], table_name="t", pipeline_name="p").execute(
        context()
    )
    logged = capfd.readouterr().out + caplog.text  # structlog's console (3.1) or logging (3.3)
    (line,) = {m.split(" [", 1)[0] for m in re.findall(r"Load summary: [^\n]*", logged)}
    assert "pipeline_name=p dataset_name=p_dataset load_id=" in line
    assert "rows.t=1 state_version=1 state_changed=True changed_paths=0 checkpoints=0" in line
    assert "{" not in line


def test_refresh_drops_the_source_state_and_tables_first(url):
    @resource
    def counter():
        state = current.resource_state()
        state["runs"] = state.get("runs", 0) + 1
        yield {"run": state["runs"]}

    for refresh in (None, None, "drop_sources"):
        StatefulLoadOperator(task_id="load", data=counter, pipeline_name="p", refresh=refresh).execute(
            context()
        )
    assert sql(url, "p_dataset", "SELECT run FROM counter") == [(1,)]


def test_multi_resource_source_with_shared_state(url):
    @resource(write_disposition="merge", primary_key="id")
    def users():
        current.source_state()["user_count"] = 2
        yield [{"id": 1}, {"id": 2}]

    @resource
    def logins():
        assert current.source_state()["user_count"] == 2
        yield {"user": 1}

    @source
    def app():
        return users(), logins()

    StatefulLoadOperator(task_id="load", data=app(), pipeline_name="p").execute(context())
    assert committed_state(url, "p", "p_dataset")["sources"]["app"]["user_count"] == 2


def test_on_kill_during_a_run_rolls_back(url):
    """SIGTERM arrives mid-run; Airflow's handler calls on_kill, which aborts the open transaction."""

    @resource
    def slow():
        current.resource_state()["seen"] = 1
        yield [{"id": 1}, {"id": 2}]
        os.kill(os.getpid(), signal.SIGTERM)
        yield [{"id": 3}]

    op = StatefulLoadOperator(task_id="load", data=slow, pipeline_name="p")
    previous = signal.signal(signal.SIGTERM, lambda *_: op.on_kill())  # what the Task SDK installs
    try:
        with pytest.raises(AirflowTaskTerminated):
            op.execute(context())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert committed_state(url, "p", "p_dataset")["_state_version"] == 0
    assert "slow" not in committed_state(url, "p", "p_dataset").get("sources", {}).get("p", {}).get(
        "resources", {}
    )

    op.on_kill()  # no run in progress (e.g. after execution_timeout): nothing to do
    op.data = [{"id": 9}]
    op.table_name = "slow"
    op.execute(context())
    assert sql(url, "p_dataset", "SELECT id FROM slow") == [(9,)]


# -- @task.stateful_load ----------------------------------------------------------------------------


def test_decorated_generator_is_the_resource(url):
    with DAG("d", schedule=None):

        @task.stateful_load(
            pipeline_name="p", table_name="events", write_disposition="merge", primary_key="id"
        )
        def events(
            prefix: str,
            data_interval_end=None,
            at=incremental("at", initial_value=datetime(2024, 1, 1, tzinfo=UTC)),
        ):
            current.resource_state()["prefix"] = prefix
            for row in JAN:
                if data_interval_end is None or row["at"] < data_interval_end:
                    yield {**row, "name": f"{prefix}{row['id']}", "since": at.start_value}

        op = events("e").operator

    assert op.custom_operator_name == "@task.stateful_load"
    assert op.resource_name == "events"
    op.execute(context(datetime(2024, 1, 4, tzinfo=UTC), datetime(2024, 1, 5, tzinfo=UTC)))
    state = committed_state(url, "p", "p_dataset")["sources"]["p"]["resources"]["events"]
    assert state["prefix"] == "e"
    assert state["incremental"]["at"]["last_value"] == datetime(2024, 1, 4, tzinfo=UTC)
    assert sql(url, "p_dataset", "SELECT count(*), max(name) FROM events") == [(4, "e4")]

    op.execute(context())  # a manual run: all rows; the cursor continues from Jan 4
    assert sql(url, "p_dataset", "SELECT count(*), count(DISTINCT id) FROM events") == [(10, 10)]


def test_decorated_parameters_without_defaults_must_be_given_at_parse_time():
    with DAG("d", schedule=None):

        @task.stateful_load(pipeline_name="p")
        def rows(prefix):
            yield {"prefix": prefix}

        with pytest.raises(TypeError, match="prefix"):
            rows()


def test_read_only_source_state_fails_the_task_and_commits_nothing(url):
    @resource
    def writer():
        current.source_state()["x"] = 1
        yield {"id": 1}

    @source
    def src():
        return (writer(),)

    op = StatefulLoadOperator(
        task_id="reader",
        data=src(),
        pipeline_name="p",
        read_only_sources={"src": "task 'reader' is not the writer"},
    )
    with pytest.raises(ReadOnlyStateError, match="is not the writer"):
        op.execute(context())
    assert committed_state(url, "p", "p_dataset")["_state_version"] == 0


def test_merge_key_hint_replaces_rows_of_the_same_key(url):
    def load(rows):
        StatefulLoadOperator(
            task_id="load",
            data=rows,
            table_name="daily",
            write_disposition="merge",
            merge_key="day",
            pipeline_name="p",
        ).execute(context())

    load([{"day": 1, "n": 1}, {"day": 1, "n": 2}, {"day": 2, "n": 3}])
    load([{"day": 1, "n": 9}])
    assert sql(url, "p_dataset", "SELECT day, n FROM daily ORDER BY day, n") == [(1, 9), (2, 3)]
