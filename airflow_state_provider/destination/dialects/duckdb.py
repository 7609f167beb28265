"""DuckDB: one process per file at a time; in-process commits of a pipeline serialized by a lock.

A DuckDB file is locked by the process that opens it, for as long as any of its connections is open:
another process cannot open it at all ("Could not set lock on file"). So connections to a file are
never kept in the pool: a connection is closed when it is returned, and a restore holds the file only
while it reads. ``Pipeline.run`` holds the file from its restore to its commit (:meth:`holding`) and
releases it when it returns. A process that finds the file locked waits and retries, for at most
``lock_timeout`` seconds, then raises :class:`LockTimeoutError`: parallel tasks on one file take turns.

DuckDB's optimistic concurrency does not conflict on plain inserts, so two connections could both
append "version N+1". A process-local lock per (database file, dataset, pipeline), held from
:meth:`lock_pipeline` until the transaction has committed (or rolled back), serializes them. The file
is named by its real path, so every spelling of it (relative, absolute, through a symlink) shares one
lock, as the process shares one database instance.

A DuckDB transaction sees a snapshot taken when it started, so under the lock it cannot see a commit
of the same pipeline made while it was loading, and could not merge with it (a lost update, and
the rows of both runs). Such a transaction raises :class:`StateConflictError` instead (single writer
plus retry, DESIGN §5.3); the retry restores the newest state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from airflow_state_provider.destination import column_types
from airflow_state_provider.destination.dialects.base import (
    Dialect,
    EngineLockSettings,
    driver_connection,
    engine_lock_settings,
)
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


class DuckDBDialect(Dialect):
    name = "duckdb"
    file_database = True
    #: no UNIQUE ``_dlt_id`` index by default, as dlt's duckdb destination: it makes bulk inserts ~2.5x slower
    create_indexes = False
    # DuckDB hash-joins the staging table: an index would only cost its build
    indexes_staging = False
    json_as_text = True

    @classmethod
    def identifier_length(cls, engine: sa.Engine) -> int | None:
        """None: DuckDB has no identifier limit (duckdb-engine claims PostgreSQL's 63; dlt uses none)."""
        return None

    def dataset_name_problem(self, name: str) -> str | None:
        """Adds: a dot, which DuckDB reads as ``<database>.<schema>``."""
        if name and "\0" not in name and "." in name:
            return "DuckDB reads a dot in a schema name as <database>.<schema>; use e.g. an underscore"
        return super().dataset_name_problem(name)

    @classmethod
    def existing_columns(
        cls, conn: sa.Connection, dataset: str, table: str
    ) -> dict[str, sa.types.TypeEngine] | None:
        """From ``information_schema.columns``: duckdb-engine's inspector cannot reflect columns under
        SQLAlchemy 2.1. Types DuckDB names that SQLAlchemy has no class for are ``NullType`` (kind
        ``other``: the loader leaves their values to the database)."""
        cols = sa.table(
            "columns",
            sa.column("table_catalog"),
            sa.column("table_schema"),
            sa.column("table_name"),
            sa.column("column_name"),
            sa.column("data_type"),
            sa.column("ordinal_position"),
            schema="information_schema",
        )
        query = (
            sa.select(cols.c.column_name, cols.c.data_type)
            .where(cols.c.table_catalog == sa.func.current_database())
            .where(cols.c.table_schema == dataset, cols.c.table_name == table)
            .order_by(cols.c.ordinal_position)
        )
        found = conn.execute(query).all()
        return {c: _sa_type(t) for c, t in found} if found else None

    @classmethod
    def in_memory(cls, url: sa.URL) -> bool:
        """``duckdb://`` and ``duckdb:///:memory:``: each connection has a database of its own."""
        return not url.database or url.database.startswith(":memory:")

    @classmethod
    def is_file_url(cls, url: sa.URL) -> bool:
        """True for a database file (not ``:memory:`` nor MotherDuck): the process-wide file lock applies."""
        return not cls.in_memory(url) and not str(url.database).startswith(("md:", "motherduck:"))

    @property
    def is_file(self) -> bool:
        """True for a database file (not ``:memory:`` nor MotherDuck): the process-wide file lock applies."""
        return self.is_file_url(self.engine.url)

    @classmethod
    def open_connection(cls, engine: sa.Engine, borrow: Callable[[], Any]) -> Any:
        """For a file: ``borrow`` is retried while another process holds it (see :meth:`install`)."""
        if not cls.is_file_url(engine.url):
            return borrow()
        return _open_waiting(borrow, engine_lock_settings(engine))

    def install(self, engine: sa.Engine) -> None:
        """Commit-lock bookkeeping on every transaction (:meth:`lock_pipeline`). For a file: opening it
        waits (up to ``lock_timeout`` seconds, then :class:`LockTimeoutError`) while another process
        holds it, and a connection returned to the pool is closed.

        The pool-level events (``do_connect``, ``checkin``) are what lets tasks in other processes
        take turns on the file, so they are needed; ``engine`` is the product's own (a caller's engine
        is used through a private one, :meth:`Dialect.working_engine`, whose connections wait in
        :meth:`open_connection` instead of ``do_connect``).
        """
        sa.event.listen(engine, "begin", _began)
        sa.event.listen(engine, "rollback", _release)
        if self.is_file:
            sa.event.listen(engine, "do_connect", _waiting_connect(self.lock_settings))
            sa.event.listen(engine, "checkin", _close_on_checkin)

    def after_commit(self, conn: sa.Connection, committed: bool) -> None:
        """Count the commit (so a run whose snapshot predates it gets :class:`StateConflictError`) and
        release the commit lock, only now that the commit is done: released before, another run could
        still read the old state. A commit that raised releases the lock without counting."""
        if committed:
            with _locks_guard:
                for key, _ in conn.info.get(_HELD, []):
                    _commits[key] = _commits.get(key, 0) + 1
        _release(conn)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Keep one connection to the file open for the block (nothing for an in-memory database)."""
        if not self.is_file:
            yield
            return
        # one open connection keeps the process's database instance (and the file lock) alive, so the
        # run's other connections open in a millisecond and no other process gets in between
        with self.engine.connect():
            yield

    def lock_pipeline(
        self, conn: sa.Connection, dataset: str, pipeline_name: str, timeout: float | None = None
    ) -> None:
        """Take the process-local commit lock of (file, ``dataset``, ``pipeline_name``) until the
        transaction has committed or rolled back, waiting at most ``timeout`` seconds (default
        ``lock_timeout``; then :class:`LockTimeoutError`). Raises :class:`StateConflictError` if another
        run of the pipeline in this process committed after this transaction's snapshot was taken."""
        key = (self.identity, dataset, pipeline_name)
        with _locks_guard:
            lock = _locks.setdefault(key, threading.Lock())
        seconds = self.lock_timeout if timeout is None else timeout
        if not lock.acquire(timeout=seconds):
            what = f"the commit lock of dataset {dataset!r} (another run of the pipeline in this process)"
            raise self.lock_timeout_error(what, pipeline_name, seconds)
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
        """``SET search_path`` to ``dataset`` for the connection's session (committed at once)."""
        conn.exec_driver_sql("SET search_path = " + _quoted(dataset).replace("'", "''").join("''"))
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
        """One ``INSERT ... SELECT`` per batch from an Arrow table of the columns, when pyarrow is
        installed and every column has an Arrow type; else from ``UNNEST(?)`` of each column as a list.

        Measured on 1M rows of 6 mixed columns: ~400k rows/s through Arrow, ~50k rows/s through
        UNNEST (DuckDB converts a bound Python list value by value), ~1.7k rows/s for ``executemany``.
        Decimals travel as text (exact, and 7x faster through UNNEST).
        """
        if not data or not len(data[0]):
            return
        data = list(data)
        for i, name in enumerate(columns):
            fix = _fix_for(table.c[name].type)
            if fix is not None:
                data[i] = [None if v is None else fix(v) for v in data[i]]
        prep = conn.dialect.identifier_preparer
        into = "INSERT INTO {} ({}) ".format(
            prep.format_table(table), ", ".join(prep.quote_identifier(c) for c in columns)
        )
        raw = driver_connection(conn)
        arrow = _arrow_table(table, columns, data)
        if arrow is not None:
            view = f"_asp_arrow_{id(arrow):x}"
            complete = getattr(raw, "complete", None)  # DuckDB >= 2.0 registers only on an idle connection
            if complete is not None:
                complete()  # runs an abandoned earlier result (e.g. of a SELECT) to its end
            raw.register(view, arrow)
            try:
                raw.execute(into + f"SELECT * FROM {view}")
            finally:
                raw.unregister(view)
            return
        raw.execute(into + "SELECT " + ", ".join(["UNNEST(?)"] * len(columns)), [list(c) for c in data])


def _close_on_checkin(_dbapi_connection: Any, record: Any) -> None:
    """A returned connection is closed: the process must not keep the file locked while idle."""
    record.close()


def _is_lock_conflict(error: Exception) -> bool:
    return "Could not set lock on file" in str(error)


def _open_waiting(open_connection: Callable[[], Any], settings: EngineLockSettings) -> Any:
    """``open_connection()``, retried while another process holds the file, for at most ``lock_timeout``."""
    deadline = time.monotonic() + settings.timeout
    pause = 0.02
    while True:
        try:
            return open_connection()
        except Exception as error:
            if not _is_lock_conflict(error):
                raise
            if time.monotonic() >= deadline:
                what = "the file lock (another process has the DuckDB file open)"
                raise settings.error(what) from error
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.5)


def _waiting_connect(settings: EngineLockSettings) -> Callable[..., Any]:
    def connect(dialect: Any, _record: Any, cargs: tuple, cparams: dict[str, Any]) -> Any:
        """Open the file, retrying while another process holds it, for at most ``lock_timeout``."""
        # duckdb_engine pops keys off the dicts it is given: every attempt gets fresh copies
        return _open_waiting(
            lambda: dialect.connect(
                *cargs, **{k: dict(v) if isinstance(v, dict) else v for k, v in cparams.items()}
            ),
            settings,
        )

    return connect


def _arrow_table(table: sa.Table, columns: list[str], data: list[Sequence[Any]]) -> Any:
    """The batch as a ``pyarrow.Table``, or None (no pyarrow, a column without an Arrow type, or a value
    Arrow does not take: the UNNEST path then inserts, or reports the database's own error)."""
    try:
        import pyarrow as pa
    except ImportError:
        return None
    types = [column_types.arrow_type(pa, table.c[name].type) for name in columns]
    if None in types:
        return None
    try:
        arrays = [
            _arrow_timestamps(pa, values, t) if pa.types.is_timestamp(t) else pa.array(values, type=t)
            for values, t in zip(data, types, strict=True)
        ]
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    return pa.Table.from_arrays(arrays, names=[f"c{i}" for i in range(len(arrays))])


_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=dt.UTC)


def _arrow_timestamps(pa: Any, values: Sequence[Any], t: Any) -> Any:
    """Datetimes as an Arrow timestamp array of type ``t``, through their distances from the epoch.

    Arrow converts an aware datetime with a Python call to its ``utcoffset()`` (~1 us each); the
    ``timedelta`` of ``value - epoch`` is the same instant in microseconds and converts in C
    (10,000 values: ~10 ms -> ~1 ms). Aware and naive values mixed: Arrow's own conversion decides.
    """
    epoch = _EPOCH if t.tz is None else _EPOCH_UTC
    try:
        deltas = [None if v is None else v - epoch for v in values]
        return pa.array(deltas, type=pa.duration(t.unit)).view(t)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return pa.array(values, type=t)


def _utc_wall_time(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def _fix_for(t: sa.types.TypeEngine) -> Callable[[Any], Any] | None:
    row = column_types.lookup(t)
    if row.kind == column_types.DECIMAL:
        return str
    if row.kind == column_types.TIMESTAMP and row.timezone is not True:
        # a TIMESTAMPTZ value would be cast in the session's TimeZone, not UTC
        return _utc_wall_time
    return None


_DUCKDB_TYPES: dict[str, Callable[[], sa.types.TypeEngine]] = {
    "BOOLEAN": sa.Boolean,
    "TINYINT": sa.SmallInteger,
    "SMALLINT": sa.SmallInteger,
    "INTEGER": sa.Integer,
    "BIGINT": sa.BigInteger,
    "UTINYINT": sa.SmallInteger,
    "USMALLINT": sa.Integer,
    "UINTEGER": sa.BigInteger,
    "FLOAT": sa.REAL,
    "DOUBLE": sa.Double,
    "VARCHAR": sa.Text,
    "DATE": sa.Date,
    "TIME": sa.Time,
    "TIMESTAMP": sa.DateTime,
    "TIMESTAMP_S": sa.DateTime,
    "TIMESTAMP_MS": sa.DateTime,
    "TIMESTAMP_NS": sa.DateTime,
    "TIMESTAMP WITH TIME ZONE": lambda: sa.DateTime(timezone=True),
    "BLOB": sa.LargeBinary,
    "UUID": sa.Uuid,
    "JSON": sa.JSON,
}


def _sa_type(data_type: str) -> sa.types.TypeEngine:
    """The SQLAlchemy type of a DuckDB ``data_type`` name (``NullType`` for one it has no class for)."""
    name = data_type.upper()
    if name.startswith("DECIMAL(") and name.endswith(")"):
        precision, _, scale = name[len("DECIMAL(") : -1].partition(",")
        return sa.Numeric(int(precision), int(scale or 0))
    factory = _DUCKDB_TYPES.get(name)
    return factory() if factory is not None else sa.types.NullType()


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
