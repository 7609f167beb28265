"""DuckDB: one writer process per file; in-process commits of a pipeline serialized by a lock.

DuckDB's optimistic concurrency does not conflict on plain inserts, so two connections could both
append "version N+1". A process-local lock per (database, dataset, pipeline), held from
:meth:`lock_pipeline` until the transaction ends, serializes them; other processes cannot open the
file for writing at the same time anyway.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa

from airflow_state_provider.destination.dialects.base import Dialect

_locks: dict[tuple[str, str, str], threading.Lock] = {}
_locks_guard = threading.Lock()
_HELD = "asp_held_locks"


def _release(conn: sa.Connection) -> None:
    for lock in conn.info.pop(_HELD, []):
        lock.release()


class DuckDBDialect(Dialect):
    name = "duckdb"

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(engine)
        if not sa.event.contains(engine, "commit", _release):
            sa.event.listen(engine, "commit", _release)
            sa.event.listen(engine, "rollback", _release)

    def lock_pipeline(self, conn: sa.Connection, dataset: str, pipeline_name: str) -> None:
        key = (str(self.engine.url.database), dataset, pipeline_name)
        with _locks_guard:
            lock = _locks.setdefault(key, threading.Lock())
        lock.acquire()
        conn.info.setdefault(_HELD, []).append(lock)

    def use_dataset(self, conn: sa.Connection, dataset: str) -> None:
        conn.exec_driver_sql("SET search_path = " + _quoted(dataset).replace("'", "''").join("''"))
        conn.commit()


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
