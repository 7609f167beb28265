"""DuckDB: one writer process per file; in-process commits of a pipeline serialized by a lock.

DuckDB's optimistic concurrency does not conflict on plain inserts, so two connections could both
append "version N+1". A process-local lock per (database, dataset, pipeline), held from
:meth:`lock_pipeline` until the transaction has committed (or rolled back), serializes them; other
processes cannot open the file for writing at the same time anyway.

A DuckDB transaction sees a snapshot taken when it started, so under the lock it cannot see a commit
of the same pipeline made while it was loading, and could not merge with it (a lost update, and
the rows of both runs). Such a transaction raises :class:`StateConflictError` instead (single writer
plus retry, DESIGN §5.3); the retry restores the newest state.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from airflow_state_provider.destination.dialects.base import Dialect
from airflow_state_provider.exceptions import StateConflictError

_Key = tuple[str, str, str]
_locks: dict[_Key, threading.Lock] = {}
_locks_guard = threading.Lock()
_HELD = "asp_held_locks"
#: state commits per (database, dataset, pipeline) made in this process, counted once committed
_commits: dict[_Key, int] = {}
#: on a connection: ``_commits`` as it was when its transaction began (before its snapshot)
_SEEN = "asp_commits_seen"


def _release(conn: Any) -> None:
    """Release the pipeline locks held by ``conn`` (a Connection or a pooled DBAPI connection)."""
    for _, lock in conn.info.pop(_HELD, []):
        lock.release()


def _began(conn: sa.Connection) -> None:
    with _locks_guard:
        conn.info[_SEEN] = dict(_commits)


def _release_after_commit(do_commit: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap the engine dialect's ``do_commit``: count and unlock only once the commit is done (the
    ``commit`` event fires before it, when another run could still read the old state)."""

    def commit(dbapi_connection: Any) -> None:
        try:
            do_commit(dbapi_connection)
            with _locks_guard:
                for key, _ in dbapi_connection.info.get(_HELD, []):
                    _commits[key] = _commits.get(key, 0) + 1
        finally:
            _release(dbapi_connection)

    commit.asp_wrapped = True  # type: ignore[attr-defined]
    return commit


class DuckDBDialect(Dialect):
    name = "duckdb"

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(engine)
        if not sa.event.contains(engine, "rollback", _release):
            sa.event.listen(engine, "rollback", _release)
            sa.event.listen(engine, "begin", _began)
        dialect = engine.dialect
        if not getattr(dialect.do_commit, "asp_wrapped", False):
            dialect.do_commit = _release_after_commit(dialect.do_commit)  # type: ignore[method-assign]

    def lock_pipeline(self, conn: sa.Connection, dataset: str, pipeline_name: str) -> None:
        key = (str(self.engine.url.database), dataset, pipeline_name)
        with _locks_guard:
            lock = _locks.setdefault(key, threading.Lock())
        lock.acquire()
        seen = conn.info.get(_SEEN)
        with _locks_guard:
            stale = seen is not None and _commits.get(key, 0) != seen.get(key, 0)
        if stale:
            lock.release()
            raise StateConflictError(
                f"pipeline {pipeline_name!r}: another run of this pipeline in this process committed to "
                f"DuckDB dataset {dataset!r} while this run was loading. A DuckDB transaction cannot see "
                "commits made after it started, so this run cannot merge with it: nothing was committed. "
                "Retry the task (it restores the newest state)."
            )
        conn.info.setdefault(_HELD, []).append((key, lock))

    def use_dataset(self, conn: sa.Connection, dataset: str) -> None:
        conn.exec_driver_sql("SET search_path = " + _quoted(dataset).replace("'", "''").join("''"))
        conn.commit()

    def insert_rows(
        self, conn: sa.Connection, table: sa.Table, columns: list[str], rows: list[tuple]
    ) -> None:
        """One ``INSERT ... SELECT UNNEST(?), UNNEST(?), ...`` per batch, each column bound as one list.

        Columnar binding converts whole Python lists natively; measured on 100k rows of 9 mixed
        columns: ~80k rows/s, against ~1.7k rows/s for ``executemany`` and ~10k rows/s for
        1000-row multi-VALUES statements. Decimals travel as text (7x faster, and exact).
        """
        if not rows:
            return
        data = [list(col) for col in zip(*rows, strict=True)]
        for i, name in enumerate(columns):
            fix = _fix_for(table.c[name].type)
            if fix is not None:
                data[i] = [None if v is None else fix(v) for v in data[i]]
        prep = conn.dialect.identifier_preparer
        statement = "INSERT INTO {} ({}) SELECT {}".format(
            prep.format_table(table),
            ", ".join(prep.quote_identifier(c) for c in columns),
            ", ".join(["UNNEST(?)"] * len(columns)),
        )
        conn.connection.driver_connection.execute(statement, data)


def _utc_wall_time(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def _fix_for(t: sa.types.TypeEngine) -> Callable[[Any], Any] | None:
    if isinstance(t, sa.Numeric) and not isinstance(t, sa.Float):
        return str
    if isinstance(t, sa.DateTime) and not t.timezone:
        # a TIMESTAMPTZ value would be cast in the session's TimeZone, not UTC
        return _utc_wall_time
    return None


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
