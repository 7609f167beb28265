"""DuckDB: one writer process per file; in-process commits of a pipeline serialized by a lock.

DuckDB's optimistic concurrency does not conflict on plain inserts, so two connections could both
append "version N+1". A process-local lock per (database, dataset, pipeline), held from
:meth:`lock_pipeline` until the transaction ends, serializes them; other processes cannot open the
file for writing at the same time anyway.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

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
