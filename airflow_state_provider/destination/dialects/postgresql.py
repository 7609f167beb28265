"""PostgreSQL: transaction-scoped advisory lock per pipeline, bounded waits, READ COMMITTED.

Advisory locks are scoped to the current database, so every spelling of a database URL (host alias,
IP, socket) meets the same lock. Every connection of the pipeline's engine gets ``lock_timeout`` as a
session setting, so any lock wait (the commit lock, a table's DDL lock, a table locked by a stalled or
dropping transaction) ends with :class:`LockTimeoutError` instead of waiting forever. Every transaction
runs at READ COMMITTED whatever the database's, role's or connection's
``default_transaction_isolation``: the commit reads the newest version after taking the lock, which
needs a fresh snapshot per statement (under REPEATABLE READ the snapshot of the load's first
statement would hide a concurrent commit).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from airflow_state_provider.destination import column_types
from airflow_state_provider.destination.dialects.base import (
    WAITING_FOR,
    Dialect,
    EngineLockSettings,
    driver_connection,
)
from airflow_state_provider.exceptions import LockTimeoutError, PipelineStateError

#: SQLSTATE of "canceling statement due to lock timeout"
LOCK_NOT_AVAILABLE = "55P03"


def advisory_key(dataset: str, pipeline_name: str, kind: str = "state") -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock``."""
    digest = hashlib.blake2b(f"asp:{kind}:{dataset}:{pipeline_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresDialect(Dialect):
    name = "postgresql"
    #: SQLAlchemy would pick psycopg2 for a bare ``postgresql``; the provider depends on psycopg 3
    default_driver = "psycopg"
    #: libpq parameters a connection may set (passed on as URL query parameters)
    url_query_settings = (
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "application_name",
        "connect_timeout",
        "options",
        "target_session_attrs",
        "keepalives",
        "keepalives_idle",
    )
    integer_url_query_settings = ("connect_timeout", "keepalives", "keepalives_idle")
    #: OpenLineage's and the Postgres provider's naming
    lineage_scheme = "postgres"
    default_port = 5432
    max_decimal_precision = 1000
    text_holds_nul = False
    json_as_text = True

    @classmethod
    def with_connect_timeout(cls, url: sa.URL, seconds: int) -> sa.URL:
        """Adds libpq's ``connect_timeout`` unless the URL has one."""
        if "connect_timeout" in url.query:
            return url
        return url.update_query_dict({"connect_timeout": str(seconds)})

    @classmethod
    def json_column_type(cls) -> sa.types.TypeEngine:
        """``jsonb``, as dlt creates."""
        return postgresql.JSONB()

    def install(self, engine: sa.Engine) -> None:
        """Every new connection gets ``lock_timeout`` (milliseconds of the dialect's seconds) as a session
        setting and begins its transactions at READ COMMITTED; SQLSTATE 55P03 (lock timeout) is raised
        as :class:`LockTimeoutError` naming what was waited for.

        Session settings on the pool's connections and the dialect-wide ``handle_error`` are fine here
        because ``engine`` is the product's own (a caller's engine is used through a private one, see
        :meth:`Dialect.working_engine`), so they never reach a connection the caller uses."""
        sa.event.listen(engine, "connect", _session_setup(self.lock_settings))
        sa.event.listen(engine, "handle_error", _lock_timeouts(self.lock_settings))
        # a binary COPY stays open across the batches of one table (see insert_columns): it ends before
        # any other statement, the commit, or a rollback of the connection
        sa.event.listen(engine, "before_cursor_execute", _end_copy_before_execute)
        sa.event.listen(engine, "commit", _end_copy)
        sa.event.listen(engine, "rollback", _abort_copy)
        sa.event.listen(engine, "reset", _abort_copy_on_reset)

    def lock_pipeline(
        self, conn: sa.Connection, dataset: str, pipeline_name: str, timeout: float | None = None
    ) -> None:
        """Take the pipeline's commit lock until the transaction ends, waiting at most ``timeout``
        seconds (default ``lock_timeout``); raises :class:`LockTimeoutError`."""
        what = f"the commit lock of dataset {dataset!r}"
        isolation = self._advisory_lock(
            conn, advisory_key(dataset, pipeline_name), what, pipeline_name, timeout
        )
        if isolation != "read committed":
            # only an engine whose own execution options force another level gets here
            raise PipelineStateError(
                f"pipeline {pipeline_name!r}: the commit transaction runs at isolation level {isolation!r}; "
                "the commit must read the newest state after taking its lock, which needs READ COMMITTED. "
                "Remove the isolation_level execution option from the engine. Nothing was committed."
            )

    def lock_table_ddl(self, conn: sa.Connection, dataset: str, table: str) -> bool:
        """A transaction-scoped advisory lock per (dataset, table); always True. Waits at most
        ``lock_timeout`` seconds, then :class:`LockTimeoutError`."""
        # two transactions creating one table: the second would fail on the catalog's unique index
        what = f"the DDL lock of table {dataset}.{table}"
        self._advisory_lock(conn, advisory_key(dataset, table, "ddl"), what, None, None)
        return True

    def lock_tables(
        self,
        conn: sa.Connection,
        dataset: str,
        tables: Sequence[str],
        pipeline_name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """``LOCK TABLE ... NOWAIT`` on all of them at once, retried until ``timeout``: never waits
        while holding some of them, so a load writing to them cannot deadlock with this transaction."""
        inspector = sa.inspect(conn)
        existing = sorted(t for t in set(tables) if inspector.has_table(t, schema=dataset))
        if not existing:
            return
        names = ", ".join(f"{_quoted(dataset)}.{_quoted(t)}" for t in existing)
        seconds = self.lock_timeout if timeout is None else timeout
        deadline = time.monotonic() + seconds
        pause = 0.02
        while True:
            savepoint = conn.begin_nested()
            try:
                conn.exec_driver_sql(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE NOWAIT")
            except LockTimeoutError:  # 55P03: another transaction holds one of them
                savepoint.rollback()
                if time.monotonic() >= deadline:
                    what = f"the locks of tables {', '.join(existing)} (a load is writing to them)"
                    raise self.lock_timeout_error(what, pipeline_name, seconds) from None
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 0.5)
            else:
                savepoint.commit()
                return

    def _advisory_lock(
        self, conn: sa.Connection, key: int, what: str, pipeline_name: str | None, timeout: float | None
    ) -> str:
        """Wait for a transaction-scoped advisory lock; the transaction's isolation level."""
        seconds = self.lock_timeout if timeout is None else timeout
        return conn.execute(
            sa.text(
                "SELECT set_config('lock_timeout', :t, true), pg_advisory_xact_lock(:k), "
                "current_setting('transaction_isolation')"
            ),
            {"t": f"{_milliseconds(seconds)}ms", "k": key},
            execution_options={WAITING_FOR: (what, pipeline_name, seconds)},
        ).one()[2]

    def use_dataset(self, conn: sa.Connection, dataset: str) -> None:
        """``search_path`` = ``dataset``, then ``public``, for the session (committed at once)."""
        conn.execute(
            sa.text("SELECT set_config('search_path', :p, false)"), {"p": _quoted(dataset) + ", public"}
        )
        conn.commit()

    def insert_rows(
        self, conn: sa.Connection, table: sa.Table, columns: list[str], rows: list[tuple]
    ) -> None:
        """Insert ``rows`` (tuples in ``columns`` order) through :meth:`insert_columns`."""
        if rows:
            self.insert_columns(conn, table, columns, [list(col) for col in zip(*rows, strict=True)])

    def insert_columns(
        self, conn: sa.Connection, table: sa.Table, columns: list[str], data: list[Sequence[Any]]
    ) -> None:
        """``COPY ... FROM STDIN``: binary when every column has a known type, text otherwise.

        A binary COPY stays open for the next batch of the same table and columns, so the server works
        on one batch while Python prepares the next (one COPY per batch waited for the server at every
        end); it ends before the connection runs anything else (events installed by :meth:`install`).
        Values the server would refuse there, after other batches (NUL characters), are checked here
        first, so the loader still names the row. JSON values arrive as JSON text; naive ``timestamp``
        columns get UTC wall times (fixed column by column, before the rows are formed).
        """
        if not data or not len(data[0]):
            return
        from psycopg import sql

        types = [table.c[c].type for c in columns]
        copy_types = [column_types.copy_type(t) for t in types]
        data = list(data)
        for i, t in enumerate(types):
            fix = _fix_for(t)
            if fix is not None:
                data[i] = [None if v is None else fix(v) for v in data[i]]
            nul = _NUL_IN.get(copy_types[i] or "")
            if nul is not None and nul in _joined(data[i]):
                raise ValueError(f"column {columns[i]!r} holds text PostgreSQL cannot store (NUL)")
        rows = zip(*data, strict=True)
        binary = None not in copy_types
        key = (table.schema, table.name, tuple(columns), tuple(copy_types))
        stream = conn.info.get(_COPY)
        if binary and stream is not None and stream.key == key:
            stream.write(rows)
            return
        _end_copy(conn)
        target = sql.Identifier(*((table.schema,) if table.schema else ()), table.name)
        statement = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
            target,
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(" (FORMAT BINARY)" if binary else ""),
        )
        stream = _CopyStream(driver_connection(conn), statement, copy_types if binary else None, key)
        if not binary:  # text COPY: the server parses every value; its errors belong to this batch
            with contextlib.closing(stream):
                stream.write(rows)
            return
        conn.info[_COPY] = stream
        stream.write(rows)


_COPY = "asp_open_copy"
#: what a column of each COPY type must not hold: PostgreSQL refuses NUL in text, \u0000 in JSON
_NUL_IN = {"text": "\x00", "json": "\\u0000", "jsonb": "\\u0000"}


class _CopyStream:
    """One open ``COPY ... FROM STDIN`` on a psycopg connection, fed batch by batch."""

    def __init__(self, driver_conn: Any, statement: Any, types: list[str | None] | None, key: tuple) -> None:
        from psycopg.types.json import set_json_dumps

        self.key = key
        self._stack = contextlib.ExitStack()
        cursor = self._stack.enter_context(driver_conn.cursor())
        set_json_dumps(_as_is, context=cursor)  # JSON values are JSON text already
        self._copy = self._stack.enter_context(cursor.copy(statement))
        if types is not None:
            self._copy.set_types(types)

    def write(self, rows: Any) -> None:
        write_row = self._copy.write_row
        for row in rows:
            write_row(row)

    def close(self) -> None:
        """End the COPY and wait for the server (raises what the server refused)."""
        self._stack.close()

    def abort(self) -> None:
        """End the COPY with an error (the transaction is being rolled back)."""
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("rolled back"), None)


def _joined(texts: Sequence[str | None]) -> str:
    try:
        return "".join(texts)  # type: ignore[arg-type]  # no NULL: one C call
    except TypeError:
        return "".join(v for v in texts if v is not None)


def _end_copy(conn: Any) -> None:
    stream = conn.info.pop(_COPY, None)
    if stream is not None:
        stream.close()


def _end_copy_before_execute(conn: Any, *_args: Any) -> None:
    if _COPY in conn.info:
        _end_copy(conn)


def _abort_copy(conn: Any) -> None:
    stream = conn.info.pop(_COPY, None)
    if stream is not None:
        stream.abort()


def _abort_copy_on_reset(dbapi_connection: Any, connection_record: Any, reset_state: Any) -> None:
    stream = connection_record.info.pop(_COPY, None)
    if stream is not None:
        stream.abort()


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _session_setup(settings: EngineLockSettings) -> Callable[[Any, Any], None]:
    def setup(dbapi_connection: Any, _record: Any) -> None:
        """``lock_timeout`` for the session; every transaction begins at READ COMMITTED (psycopg then
        sends ``BEGIN ISOLATION LEVEL READ COMMITTED``), whatever the session's default."""
        if hasattr(dbapi_connection, "isolation_level"):
            from psycopg import IsolationLevel

            dbapi_connection.isolation_level = IsolationLevel.READ_COMMITTED
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET lock_timeout = {_milliseconds(settings.timeout)}")
        finally:
            cursor.close()
        dbapi_connection.commit()

    return setup


def _lock_timeouts(settings: EngineLockSettings) -> Callable[[Any], None]:
    def convert(context: Any) -> None:
        """PostgreSQL's "canceling statement due to lock timeout" becomes :class:`LockTimeoutError`."""
        orig = context.original_exception
        if getattr(orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            return
        options = context.execution_context.execution_options if context.execution_context else {}
        what, pipeline_name, seconds = options.get(WAITING_FOR) or (None, None, None)
        if what is None:
            statement = " ".join((context.statement or "").split())
            what = f"a table lock needed by `{statement[:160]}`"
        raise settings.error(what, pipeline_name, seconds) from orig

    return convert


def _as_is(value: Any) -> Any:
    return value


def _utc_wall_time(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def _fix_for(t: sa.types.TypeEngine) -> Callable[[Any], Any] | None:
    row = column_types.lookup(t)
    if row.kind == column_types.TIMESTAMP and row.timezone is not True:
        return _utc_wall_time
    return None


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
