"""An ``Engine`` the caller passes (``Pipeline(destination=engine)``) is never changed (issue 16).

The dialects set their engines up with pool, dialect and connection events (lock timeouts, the
isolation level, SQLite's attached datasets, DuckDB's file handling, PostgreSQL's COPY stream); on the
caller's engine these would change everything else the caller does with it. The pipeline works on a
private engine that opens its connections like the caller's. After runs, a failed run and a lock
timeout, the caller's engine has exactly the listeners it had, its dialect's ``do_commit`` is the
class's, and a fresh connection of it has the caller's settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import events

from airflow_state_provider import Pipeline, resource
from airflow_state_provider.exceptions import ConfigurationError, LockTimeoutError

_EVENTS = {
    "engine": events.ConnectionEvents,
    "pool": events.PoolEvents,
    "dialect": events.DialectEvents,
}


def listeners(engine: sa.Engine) -> dict[tuple[str, str], list[Any]]:
    """Every listener on the engine, its pool and its dialect, by (target, event name)."""
    targets = {"engine": engine, "pool": engine.pool, "dialect": engine.dialect}
    found = {}
    for kind, event_class in _EVENTS.items():
        dispatch = targets[kind].dispatch
        for name in dir(event_class):
            if not name.startswith("_") and name != "dispatch" and hasattr(dispatch, name):
                found[(kind, name)] = list(getattr(dispatch, name))
    return found


def session(engine: sa.Engine) -> dict[str, Any]:
    """What a fresh connection of ``engine`` has set: the settings the dialects change on theirs."""
    engine.dispose()  # a new DBAPI connection, through every pool listener the engine has
    with engine.connect() as conn:
        name = engine.dialect.name
        if name == "postgresql":
            return {
                s: conn.exec_driver_sql(f"SHOW {s}").scalar()
                for s in ("lock_timeout", "transaction_isolation", "application_name", "search_path")
            }
        if name == "sqlite":
            return {
                "busy_timeout": conn.exec_driver_sql("PRAGMA busy_timeout").scalar(),
                "databases": [r[1] for r in conn.exec_driver_sql("PRAGMA database_list")],
                "pysqlite_isolation_level": conn.connection.dbapi_connection.isolation_level,  # type: ignore[union-attr]
            }
        dbapi = conn.connection.dbapi_connection
    with engine.connect() as conn:  # DuckDB: the caller's pool keeps a returned connection open
        reused = conn.connection.dbapi_connection is dbapi
        search_path = conn.exec_driver_sql("SELECT current_setting('search_path')").scalar()
        return {"reused": reused, "search_path": search_path}


def user_engine(url: str) -> sa.Engine:
    if sa.make_url(url).get_backend_name() == "postgresql":
        return sa.create_engine(
            url, isolation_level="REPEATABLE READ", connect_args={"application_name": "mine"}
        )
    return sa.create_engine(url)


@resource(name="items", primary_key="id")
def items(start: int, fail: bool = False):
    yield [{"id": i} for i in range(start, start + 5)]
    if fail:
        raise RuntimeError("the source broke")


def test_a_callers_engine_is_unchanged_by_runs_failures_and_lock_timeouts(dest_url: str, tmp_path: Path):
    user = user_engine(dest_url)
    opened: list[object] = []
    sa.event.listen(user, "connect", lambda dbapi, _record: opened.append(dbapi))  # the caller's own setup
    before_listeners = listeners(user)
    before_session = session(user)
    do_commit = user.dialect.do_commit

    p = Pipeline("p", destination=user, dataset_name="ds", pipelines_dir=tmp_path / "w", lock_timeout=0.5)
    assert p.engine is not user and p.engine.url == user.url
    seen_by_user = len(opened)
    assert p.run(items(1)).row_counts == {"items": 5}
    assert p.run(items(6)).row_counts == {"items": 5}
    assert len(opened) > seen_by_user  # the pipeline's connections are opened as the caller's are
    with pytest.raises(Exception, match="the source broke"):
        p.run(items(11, fail=True))

    # another task holds the commit lock (SQLite: the dataset's write lock, taken at BEGIN)
    holder = Pipeline("p", destination=dest_url, dataset_name="ds", pipelines_dir=tmp_path / "h")
    with holder.engine.connect() as conn:
        conn.begin()
        holder.store.lock(conn)
        with pytest.raises(LockTimeoutError, match="pipeline 'p'"):
            p.run(items(11))
        conn.rollback()
    holder.engine.dispose()
    assert p.run(items(11)).row_counts == {"items": 5}

    with p.sql_client() as client:
        assert client.execute_sql("SELECT count(*) FROM items") == [(15,)]
    assert listeners(user) == before_listeners
    assert user.dialect.do_commit == do_commit and "do_commit" not in vars(user.dialect)
    assert session(user) == before_session
    if user.dialect.name == "postgresql":
        assert before_session["lock_timeout"] == "0" and before_session["application_name"] == "mine"
        assert before_session["transaction_isolation"] == "repeatable read"
        with p.engine.connect() as conn:  # the pipeline's own connections: READ COMMITTED, bounded waits
            assert conn.exec_driver_sql("SHOW application_name").scalar() == "mine"
            assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "500ms"
    elif user.dialect.name == "sqlite":
        assert before_session["databases"] == ["main"]
    else:
        assert before_session["reused"] is True
    if user.dialect.name != "sqlite":  # SQLite keeps a dataset in a file of its own
        with user.connect() as conn:
            assert conn.exec_driver_sql('SELECT count(*) FROM "ds".items').scalar() == 15
    user.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "duckdb:///:memory:"])
def test_a_callers_in_memory_engine_is_refused(url: str, tmp_path: Path):
    user = sa.create_engine(url)
    before = listeners(user)
    with pytest.raises(ConfigurationError, match=r"in-memory .* Pass the URL instead"):
        Pipeline("p", destination=user, dataset_name="ds", pipelines_dir=tmp_path)
    assert listeners(user) == before
    p = Pipeline("p", destination=url, dataset_name="ds", pipelines_dir=tmp_path)  # the URL works
    assert p.run([{"id": 1}], table_name="t").row_counts == {"t": 1}
