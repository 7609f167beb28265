"""SQLite: datasets are attached files in WAL mode; a write transaction locks its dataset files only.

SQLite has one write lock per database file. A write transaction takes the write lock of the engine's
dataset files first thing (a no-op ``PRAGMA <dataset>.incremental_vacuum(1)`` after a deferred
``BEGIN``), before it reads anything: concurrent writers of a dataset queue there (up to
``lock_timeout``, SQLite's busy timeout) instead of failing later on a stale snapshot. Unlike
``BEGIN IMMEDIATE``, this leaves the main file (and every other dataset file) unlocked, so loads of
pipelines in other datasets of the same main file run at the same time. Dataset files use WAL
journaling: readers never block the writer, nor the writer them, so a restore, ``airflow-state info``
or a resource reading the destination through ``current.pipeline().sql_client()`` during a run does
not wait, and a commit does not wait for open readers. Connections marked ``asp_read_only`` (the
restore, the SQL client) begin deferred and take a write lock only when they write.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from airflow_state_provider.destination import column_types
from airflow_state_provider.destination.dialects.base import Dialect, EngineLockSettings, driver_connection

#: per engine, the datasets its connections attach (kept beside the engine, not set on it)
_prepared: weakref.WeakKeyDictionary[sa.Engine, set[str]] = weakref.WeakKeyDictionary()
_prepare_lock = threading.Lock()
#: ``sqlite3.Error.sqlite_errorcode`` of a lock wait that ran out of busy timeout
_SQLITE_BUSY = 5


def dataset_file(database: str | None, dataset: str) -> str:
    """Path of the file holding ``dataset`` for the main database file ``database``."""
    if not database or database == ":memory:":
        return ":memory:"
    # one file whatever the spelling of the main file (relative, absolute, through a symlink)
    stem, suffix = os.path.splitext(os.path.realpath(database))
    return f"{stem}__{dataset}{suffix or '.sqlite'}"


def existing_datasets(database: str | None) -> list[str]:
    """Names of the datasets that have a file next to the main database file ``database``."""
    if not database or database == ":memory:":
        return []
    stem, suffix = os.path.splitext(database)
    prefix = os.path.basename(stem) + "__"
    directory = os.path.dirname(os.path.abspath(database))
    names = []
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
        name, ext = os.path.splitext(entry)
        if name.startswith(prefix) and ext == (suffix or ".sqlite") and len(name) > len(prefix):
            names.append(name[len(prefix) :])
    return names


_INTEGER_TEXT = re.compile(r"-?[0-9]+")


class SQLiteDialect(Dialect):
    name = "sqlite"
    creates_schemas = False
    file_database = True
    max_decimal_precision = None
    #: a NUMERIC column converts decimal text to REAL, which keeps 15 significant digits
    decimal_significant_digits = 15
    json_as_text = True

    @classmethod
    def in_memory(cls, url: sa.URL) -> bool:
        """``sqlite://``, ``:memory:`` and ``mode=memory`` URIs: each connection has a database of its own."""
        database = url.database or ""
        return (
            database in ("", ":memory:")
            or database.startswith("file::memory:")
            or (url.query.get("mode") == "memory" or "mode=memory" in database)
        )

    @classmethod
    def json_column_type(cls) -> sa.types.TypeEngine:
        """``JSON``, as dlt's SQLAlchemy destination creates: a declared type that reflects as JSON, so
        the column keeps JSON text (a string value is stored as a JSON string, ``'"[1,2]"'``) apart
        from a text column (SQLite has no JSON type; its JSON functions read the text)."""
        return sa.JSON()

    def stored_value_problem(self, kind: str, values: Sequence[Any]) -> tuple[Any, str] | None:
        # a NUMERIC column keeps a decimal as REAL: one outside REAL's range would read back as 0 or
        # inf, a subnormal one with fewer digits; a REAL column stores NaN as NULL
        if kind == "decimal":
            for v in values:
                if v is not None and v.is_finite() and Decimal(format(float(v), ".15g")) != v:
                    kept = format(float(v), ".15g")
                    return v, (
                        f"sqlite keeps decimals as REAL (15 significant digits, magnitudes from about "
                        f"1E-307 to 1E+308), so it would read back as {kept}"
                    )
        elif kind == "double":
            for v in values:
                if v is not None and v != v:
                    return v, "sqlite stores NaN as NULL"
        elif kind == "json":
            # a JSON column has NUMERIC affinity: a bare integer beyond 64 bits would be kept as REAL
            for v in values:
                if v is not None and _INTEGER_TEXT.fullmatch(v) and not -(2**63) <= int(v) < 2**63:
                    return v, "sqlite keeps a bare integer beyond 64 bits in a JSON column as REAL"
        return None

    def prepare(self, dataset: str) -> None:
        """Attach ``dataset``'s file (``<stem>__<dataset><suffix>``, created if missing) on every
        connection of the engine, in WAL mode; the first call registers the engine's connection setup
        (busy timeout of ``lock_timeout`` seconds, per-dataset write lock, "database is locked" as
        :class:`LockTimeoutError`)."""
        engine = self.engine
        with _prepare_lock:
            datasets = _prepared.get(engine)
            if datasets is None:
                # pool-level setup (ATTACH, busy timeout, pysqlite's own BEGIN turned off) stays on every
                # connection for its life: needed, and only on the product's own engine (a caller's
                # engine is used through a private one, Dialect.working_engine)
                datasets = _prepared[engine] = set()
                settings = self.lock_settings
                sa.event.listen(engine, "connect", _on_connect(datasets, engine.url.database, settings))
                sa.event.listen(engine, "begin", _on_begin(datasets))
                sa.event.listen(
                    engine, "handle_error", _lock_timeouts(datasets, engine.url.database, settings)
                )
            if dataset in datasets:
                return
            datasets.add(dataset)
        # connections opened before this dataset was known attach it now
        engine.dispose()

    def prepare_existing(self) -> None:
        """Attach every dataset file found next to the main file."""
        for dataset in existing_datasets(self.engine.url.database):
            self.prepare(dataset)

    @classmethod
    def datasets_with_table(cls, engine: sa.Engine, table: str) -> list[str]:
        """The dataset files next to the main file whose database holds ``table`` (each is opened
        read-only for the look, without attaching it to the engine)."""
        database = engine.url.database
        return [d for d in existing_datasets(database) if cls.dataset_has_table(engine, d, table)]

    @classmethod
    def dataset_has_table(cls, engine: sa.Engine, dataset: str, table: str) -> bool:
        """Looks into the dataset's file, opened read-only (a missing file is no table)."""
        path = dataset_file(engine.url.database, dataset)
        if path == ":memory:" or not os.path.isfile(path):
            return False
        probe = sqlite3.connect("file:" + urllib.parse.quote(path) + "?mode=ro", uri=True)
        try:
            query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
            return probe.execute(query, (table,)).fetchone() is not None
        finally:
            probe.close()

    def create_dataset(self, conn: sa.Connection, dataset: str) -> None:
        """Attached on connect already; nothing to create."""

    def has_dataset(self, conn: sa.Connection, dataset: str) -> bool:
        """Always True: :meth:`prepare` attached (and so created) the dataset's file."""
        return True

    def insert_rows(
        self, conn: sa.Connection, table: sa.Table, columns: list[str], rows: list[tuple]
    ) -> None:
        """``executemany`` on the raw connection, values in the text formats SQLAlchemy reads back.

        Timestamps are stored as UTC with an explicit ``+00:00``; decimals as text (SQLite's NUMERIC
        affinity keeps about 15 significant digits).
        """
        if not rows:
            return
        fixes = [] if isinstance(rows, _Converted) else [_fix_for(table.c[c].type) for c in columns]
        if any(fixes):
            data = [list(col) for col in zip(*rows, strict=True)]
            for i, fix in enumerate(fixes):
                if fix is not None:
                    data[i] = [None if v is None else fix(v) for v in data[i]]
            rows = list(zip(*data, strict=True))
        prep = conn.dialect.identifier_preparer
        statement = "INSERT INTO {} ({}) VALUES ({})".format(
            prep.format_table(table),
            ", ".join(prep.quote_identifier(c) for c in columns),
            ", ".join(["?"] * len(columns)),
        )
        cursor = driver_connection(conn).cursor()
        try:
            cursor.executemany(statement, rows)
        finally:
            cursor.close()

    def insert_columns(
        self, conn: sa.Connection, table: sa.Table, columns: list[str], data: list[Sequence[Any]]
    ) -> None:
        """Convert column by column, then hand the rows to :meth:`insert_rows` marked as converted (the
        loader's batches are columns already: no transposing back and forth)."""
        if not data or not len(data[0]):
            return
        data = list(data)
        for i, name in enumerate(columns):
            fix = _fix_for(table.c[name].type)
            if fix is not None:
                data[i] = [None if v is None else fix(v) for v in data[i]]
        self.insert_rows(conn, table, columns, _Converted(zip(*data, strict=True)))


class _Converted(list):
    """Rows whose values :func:`_fix_for` already converted (conversions are idempotent anyway)."""


def _utc_text(value: dt.datetime | str) -> str:
    if isinstance(value, str):
        return value  # converted already
    if value.tzinfo is dt.UTC:
        return value.isoformat(" ", "microseconds")  # ends in +00:00
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds") + "+00:00"


def _fix_for(t: sa.types.TypeEngine) -> Callable[[Any], Any] | None:
    return _FIXES.get(column_types.lookup(t).kind)


def _isoformat(value: dt.date | dt.time | str) -> str:
    if isinstance(value, str):
        return value  # converted already
    return value.isoformat()


#: values in the text formats SQLAlchemy reads back, per column kind
_FIXES: dict[str, Callable[[Any], Any]] = {
    column_types.TIMESTAMP: _utc_text,
    column_types.DATE: _isoformat,
    column_types.TIME: _isoformat,
    column_types.DECIMAL: str,
}


def _on_connect(
    datasets: set[str], database: str | None, settings: EngineLockSettings
) -> Callable[[Any, Any], None]:
    def attach(dbapi_conn: Any, _record: Any) -> None:
        # let SQLAlchemy's "begin" event emit the BEGIN instead of pysqlite's own
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {max(1, round(settings.timeout * 1000))}")
        for dataset in sorted(datasets):
            if dataset != "main":
                cur.execute("ATTACH DATABASE ? AS " + _quote(dataset), (dataset_file(database, dataset),))
            # persistent in the file; a no-op once set
            cur.execute(f"PRAGMA {_quote(dataset)}.journal_mode = WAL")
        cur.close()

    return attach


def _on_begin(datasets: set[str]) -> Callable[[sa.Connection], None]:
    def begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")
        if conn.get_execution_options().get("asp_read_only", False):
            return
        for dataset in sorted(datasets):  # one order everywhere: no deadlock between two writers
            # starts a write transaction on that file only (no-op unless auto_vacuum=incremental)
            conn.exec_driver_sql(f"PRAGMA {_quote(dataset)}.incremental_vacuum(1)")

    return begin


def _lock_timeouts(
    datasets: set[str], database: str | None, settings: EngineLockSettings
) -> Callable[[Any], None]:
    def convert(context: Any) -> None:
        """SQLite's "database is locked" after the busy timeout becomes :class:`LockTimeoutError`."""
        orig = context.original_exception
        if (
            not isinstance(orig, sqlite3.OperationalError)
            or getattr(orig, "sqlite_errorcode", None) != _SQLITE_BUSY
        ):
            return
        files = ", ".join(
            dataset_file(database, d) if d != "main" else str(database) for d in sorted(datasets)
        )
        raise settings.error(
            f"the write lock of {files or database} (SQLite allows one writer per file)"
        ) from orig

    return convert


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
