"""The state browser's read models and the writer audit, on real SQLite, DuckDB and PostgreSQL."""

from __future__ import annotations

import json
import os

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline, incremental, operations, resource
from airflow_state_provider.destination.audit import AUDIT_TABLE, Writer, writing_as
from airflow_state_provider.destination.store import STATE_TABLE
from airflow_state_provider.plugins import browser

TASK_ENV = {
    "AIRFLOW_CTX_DAG_ID": "loads",
    "AIRFLOW_CTX_DAG_RUN_ID": "manual__2024-01-01T00:00:00+00:00",
    "AIRFLOW_CTX_TASK_ID": "events",
    "AIRFLOW_CTX_TRY_NUMBER": "2",
}


def _events(upto: int):
    @resource(name="events", primary_key="id")
    def events(cursor=incremental("id", initial_value=0)):
        yield [{"id": n, "payload": f"<b>{n}</b>"} for n in range(1, upto + 1)]

    return events


def _run(url: str, pipelines_dir, upto: int) -> Pipeline:
    pipeline = Pipeline("shop", destination=url, dataset_name="shop_data", pipelines_dir=pipelines_dir)
    pipeline.run(_events(upto)())
    return pipeline


@pytest.fixture
def history(dest_url: str, pipelines_dir, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    """Three versions: a task's two loads (try 2 of ``loads.events``) and a UI rollback to version 1."""
    for key, value in TASK_ENV.items():
        monkeypatch.setenv(key, value)
    _run(dest_url, pipelines_dir, 3)
    pipeline = _run(dest_url, pipelines_dir, 5)
    for key in TASK_ENV:
        monkeypatch.delenv(key)
    plan = operations.plan_rollback(pipeline, 1)
    with writing_as(Writer("ui", user_name="editor", action=plan.action)):
        assert operations.apply(plan).version == 3
    return pipeline


def test_history_shows_writers_and_changed_paths(history: Pipeline):
    page = browser.history_page(history)
    assert [v.version for v in page.versions] == [3, 2, 1]
    newest, middle, oldest = page.versions
    assert newest.writer["writer"] == "ui" and newest.writer["user_name"] == "editor"
    assert newest.writer["action"] == "rollback to version 1"
    assert middle.writer["writer"] == "task"
    assert (middle.writer["dag_id"], middle.writer["task_id"], middle.writer["try_number"]) == (
        "loads",
        "events",
        2,
    )
    assert middle.writer["run_id"] == TASK_ENV["AIRFLOW_CTX_DAG_RUN_ID"]
    assert "sources.shop.resources.events.incremental.id.last_value" in middle.changed_paths
    assert oldest.changed_paths is None and page.next_before is None and page.audited


def test_history_pages_by_load_id(history: Pipeline):
    first = browser.history_page(history, limit=2)
    assert [v.version for v in first.versions] == [3, 2]
    # the last row of a page still gets its changed paths from the row after it
    assert first.versions[-1].changed_paths
    second = browser.history_page(history, before=first.next_before, limit=2)
    assert [v.version for v in second.versions] == [1] and second.next_before is None


def test_diff_and_incrementals(history: Pipeline):
    changes = browser.diff(history, 1, 2)
    by_path = {c["path"]: c for c in changes}
    last = by_path["sources.shop.resources.events.incremental.id.last_value"]
    assert (last["kind"], last["old"], last["new"]) == ("changed", 3, 5)
    assert browser.diff(history, 1, 3) == []  # the rollback restored version 1's content
    (inc,) = browser.incrementals(browser.version(history, 2).state)
    assert inc["slot"] == "sources.shop.resources.events" and inc["cursor_path"] == "id"
    assert (inc["initial_value"], inc["start_value"], inc["last_value"]) == (0, 3, 5)
    assert inc["boundary_hashes"] == 1


def test_pipelines_and_datasets(history: Pipeline):
    assert "shop_data" in browser.datasets(history.engine)
    (summary,) = browser.pipelines(history.engine, "shop_data")
    assert (summary.pipeline_name, summary.version) == ("shop", 3)
    assert summary.newest_load_id == summary.version_load_id and summary.size > 0


def test_task_commits(history: Pipeline):
    commits = browser.task_commits(
        history.engine, "shop_data", "loads", TASK_ENV["AIRFLOW_CTX_DAG_RUN_ID"], "events"
    )
    assert [c["version"] for c in commits] == [1, 2]
    assert commits[0]["restored"] is None
    assert commits[1]["restored"]["version"] == 1
    (inc,) = commits[1]["incrementals"]
    assert (inc["start_value"], inc["last_value"]) == (3, 5)
    assert browser.task_commits(history.engine, "shop_data", "loads", "other", "events") == []


def test_failed_commit_leaves_no_audit_row(dest_url: str, pipelines_dir):
    """The audit row is written in the commit transaction: a load that fails writes neither."""

    @resource(name="events")
    def broken(cursor=incremental("id", initial_value=0)):
        yield [{"id": 1}]
        raise RuntimeError("source failed")

    pipeline = Pipeline("shop", destination=dest_url, dataset_name="shop_data", pipelines_dir=pipelines_dir)
    with pytest.raises(RuntimeError):
        pipeline.run(broken())
    with pipeline.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(pipeline.store.audit.table)).scalar() == 0


def test_audit_table_keeps_dlt_tables_unchanged(history: Pipeline):
    """dlt's table keeps exactly its columns; our writer goes to a table of its own."""
    with history.engine.connect() as conn:
        assert sa.inspect(conn).has_table(AUDIT_TABLE, schema="shop_data")
        columns = list(
            conn.execute(
                sa.select(sa.text("*")).select_from(sa.table(STATE_TABLE, schema="shop_data")).limit(0)
            ).keys()
        )
    assert columns == [
        "version",
        "engine_version",
        "pipeline_name",
        "state",
        "created_at",
        "version_hash",
        "_dlt_load_id",
        "_dlt_id",
    ]


def test_ui_edit_detail_is_recorded(history: Pipeline):
    plan = operations.plan_set(history, "sources.shop.resources.events.incremental.id.last_value", 4)
    writer = Writer(
        "ui", user_name="editor", action="set", detail={"changed_paths": [c.path for c in plan.changes]}
    )
    with writing_as(writer):
        operations.apply(plan)
    newest = browser.history_page(history, limit=1).versions[0]
    assert newest.writer["action"] == "set"
    assert newest.writer["detail"] == json.loads(
        json.dumps({"changed_paths": [c.path for c in plan.changes]})
    )


def test_mapped_task_writer_and_its_commits(dest_url: str, pipelines_dir):
    """The operator records its task instance (``task_writer``): map index and try number included, and
    the task-instance view of one map index shows only its own commits."""
    from types import SimpleNamespace

    from airflow_state_provider.destination.audit import task_writer

    for index, upto in ((0, 2), (1, 4)):
        ti = SimpleNamespace(dag_id="loads", run_id="r1", task_id="events", map_index=index, try_number=1)
        with writing_as(task_writer(ti)):
            pipeline = _run(dest_url, pipelines_dir, upto)
    (first,) = browser.task_commits(pipeline.engine, "shop_data", "loads", "r1", "events", map_index=0)
    (second,) = browser.task_commits(pipeline.engine, "shop_data", "loads", "r1", "events", map_index=1)
    assert (first["map_index"], first["version"], second["map_index"], second["version"]) == (0, 1, 1, 2)
    assert second["restored"]["version"] == 1
    assert len(browser.task_commits(pipeline.engine, "shop_data", "loads", "r1", "events")) == 2


@pytest.mark.parametrize(
    "query",
    ["timeout=5&password=SEKRET", "password=SEKRET&timeout=5", "motherduck_token=SEKRET&b=1"],
)
def test_the_connection_url_shown_hides_secret_query_parameters(tmp_path, monkeypatch, query):
    # found by review: a query-string password came through when SQLAlchemy re-sorted the query
    from airflow_state_provider.plugins import service

    url = f"sqlite:///{tmp_path / 'w.sqlite'}?{query}"
    conn = {"conn_type": "pipeline_state", "extra": {"sqlalchemy_url": url}}
    monkeypatch.setenv("AIRFLOW_CONN_LEAKY", json.dumps(conn))
    with service.destination("leaky") as dest:
        assert "SEKRET" not in dest.where
        assert "***" in dest.where


@pytest.mark.parametrize("number", [-1, 2**63, 10**20])
def test_a_version_number_out_of_range_is_a_bad_request(history: Pipeline, number):
    # found by review: 10**20 reached the database and came back as a 502 (OverflowError)
    with pytest.raises(operations.StateOperationError, match="is not a state version number"):
        browser.version(history, number)


def test_looking_for_a_dataset_creates_nothing(history: Pipeline, tmp_path):
    """The pages open a pipeline only in a dataset that has state: a misspelled dataset in a URL (any
    reader can type one) must not leave a SQLite dataset file, or anything else, behind."""
    engine = history.engine
    assert browser.has_state(engine, "shop_data")
    before = browser.datasets(engine)
    for name in ("shop_datx", "no_such_dataset", "main"):
        assert not browser.has_state(engine, name)
    assert browser.datasets(engine) == before
    if engine.dialect.name == "sqlite":
        from airflow_state_provider.destination.dialects.sqlite import dataset_file

        assert not any(
            os.path.exists(dataset_file(engine.url.database, "no_such_dataset") + tail)
            for tail in ("", "-wal", "-shm")
        )
