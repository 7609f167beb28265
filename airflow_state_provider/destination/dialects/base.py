"""The generic dialect: portable SQLAlchemy Core, used as is by databases without a fast path."""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from airflow_state_provider.destination import engine as destination_engine
from airflow_state_provider.destination.naming import InvalidIdentifierError
from airflow_state_provider.exceptions import ConfigurationError, LockTimeoutError

#: seconds any lock wait may take before :class:`LockTimeoutError` (``lock_timeout``)
DEFAULT_LOCK_TIMEOUT = 300.0
#: execution option naming what a statement waits for, for the :class:`LockTimeoutError` message
WAITING_FOR = "asp_waiting_for"

#: per engine, kept beside it rather than set on it (the engine may be the caller's)
_lock_settings: weakref.WeakKeyDictionary[sa.Engine, EngineLockSettings] = weakref.WeakKeyDictionary()
_settings_guard = threading.Lock()


class EngineLockSettings:
    """Per engine: the lock timeout of its connections and the pipelines using it (for messages).

    Several ``Pipeline`` objects may share one engine; the timeout set last applies to waits that
    happen below the pipeline (opening a DuckDB file, SQLite's busy timeout, PostgreSQL's session
    ``lock_timeout``), while each pipeline's own lock calls use its own timeout.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.timeout = DEFAULT_LOCK_TIMEOUT
        self.pipelines: dict[str, None] = {}
        self.installed = False
        self.dialect_name = engine.dialect.name
        self.identity = database_identity(engine.url)

    def owner(self) -> str:
        """``pipeline 'x'`` (or several) for error messages."""
        names = list(self.pipelines)
        if not names:
            return "this destination"
        if len(names) == 1:
            return f"pipeline {names[0]!r}"
        return "pipelines " + ", ".join(map(repr, names))

    def error(
        self, what: str, pipeline_name: str | None = None, seconds: float | None = None
    ) -> LockTimeoutError:
        """The :class:`LockTimeoutError` for a wait of ``seconds`` (default: the engine's) for ``what``."""
        owner = f"pipeline {pipeline_name!r}" if pipeline_name else self.owner()
        seconds = self.timeout if seconds is None else seconds
        return LockTimeoutError(
            f"{owner}: waited {seconds:g} s (lock_timeout) for {what} in {self.dialect_name} database "
            f"{self.identity}, and another task still holds it. Nothing was committed. Retry the task; "
            "if the holder is a long load, raise lock_timeout (connection extra or [state_provider] "
            "lock_timeout); if it is stalled, end that task."
        )


def engine_lock_settings(engine: sa.Engine) -> EngineLockSettings:
    """The :class:`EngineLockSettings` of ``engine`` (created with the default timeout)."""
    with _settings_guard:
        settings = _lock_settings.get(engine)
        if settings is None:
            settings = _lock_settings[engine] = EngineLockSettings(engine)
        return settings


def check_lock_timeout(value: Any, where: str = "lock_timeout") -> float:
    """``value`` as seconds (> 0); raises ``ValueError`` naming ``where`` otherwise."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number of seconds, got {value!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{where} must be a positive, finite number of seconds, got {value!r}")
    return seconds


def driver_connection(conn: sa.Connection) -> Any:
    """The driver's own connection under ``conn`` (sqlite3, duckdb or psycopg), for the bulk paths."""
    driver = conn.connection.driver_connection
    if driver is None:
        raise sa.exc.InvalidRequestError("the connection is closed")
    return driver


def database_identity(url: sa.URL) -> str:
    """The database a URL reaches, the same for every spelling of it: the real path of a database
    file (relative, absolute, through symlinks), else the URL without its password."""
    if url.get_backend_name() in ("sqlite", "duckdb"):
        database = url.database
        if not database or database == ":memory:" or database.startswith(("md:", "motherduck:")):
            return url.render_as_string(hide_password=True)
        return os.path.realpath(os.path.expanduser(database))
    return url.set(password=None, query={}).render_as_string(hide_password=True)


class Dialect:
    """Database-specific operations used by the state store and the loader.

    One instance per ``Pipeline``. Subclasses override what their database does better or
    differently. ``lock_timeout`` (seconds, default :data:`DEFAULT_LOCK_TIMEOUT`) bounds every lock
    wait; ``pipeline_name`` only names the pipeline in :class:`LockTimeoutError` messages.
    """

    #: the SQLAlchemy backend name, for messages only: callers never branch on it
    name = "generic"
    #: a commit needs the dataset to exist first (schemas); SQLite attaches instead
    creates_schemas = True
    #: the largest precision of a DECIMAL column (None: no limit)
    max_decimal_precision: int | None = 38
    #: significant digits a stored decimal keeps exactly (None: all of its precision)
    decimal_significant_digits: int | None = None
    #: dlt's ``create_indexes`` default: new tables get a UNIQUE index on ``_dlt_id``
    create_indexes = True
    #: text columns hold a NUL character (PostgreSQL's refuse it)
    text_holds_nul = True
    #: a merge indexes its staging table on the merge keys (else the database scans it per target row)
    indexes_staging = True
    #: the bulk path takes JSON values as JSON text (the portable path binds through ``sa.JSON``, which
    #: serializes by itself)
    json_as_text = False

    #: the database is one file named by the URL's path (no server, no schemas of its own)
    file_database = False
    #: the DB-API driver a URL built without one names (SQLAlchemy's own default otherwise)
    default_driver: str | None = None
    #: connection settings that go into the URL's query as they are (libpq's ``sslmode``, ...)
    url_query_settings: tuple[str, ...] = ()
    #: of :attr:`url_query_settings`, those that must be whole numbers >= 0
    integer_url_query_settings: tuple[str, ...] = ()
    #: the scheme and default port of the database's OpenLineage namespace (server databases)
    lineage_scheme: str | None = None
    default_port: int | None = None

    # -- URLs from connection settings and lineage names (class methods: plain values in and out) ---
    @classmethod
    def url_from_settings(
        cls,
        drivername: str,
        *,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        database: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> sa.URL:
        """The URL of a database given by parts (an Airflow connection's fields, in the hook).

        A file database's path is ``host``, else ``database`` (a URI such as ``sqlite:////data/x.db``
        arrives that way), with ``~`` expanded; a server database takes every part, and those of
        ``settings`` named in :attr:`url_query_settings` (not None) as query parameters, as text.
        Built with ``URL.create``: nothing is escaped by hand.
        """
        if cls.file_database:
            path = host or database
            return sa.URL.create(drivername, database=os.path.expanduser(path) if path else None)
        given = settings or {}
        query = {k: str(given[k]) for k in cls.url_query_settings if given.get(k) is not None}
        return sa.URL.create(
            drivername,
            username=username or None,
            password=password or None,
            host=host or None,
            port=port or None,
            database=database or None,
            query=query,
        )

    @classmethod
    def with_connect_timeout(cls, url: sa.URL, seconds: int) -> sa.URL:
        """``url`` bounded to ``seconds`` for connecting, unless it sets a bound itself (libpq's
        ``connect_timeout`` on PostgreSQL; file databases open at once: unchanged)."""
        return url

    @classmethod
    def lineage_namespace(cls, url: sa.URL) -> str:
        """The database as a URI without credentials (OpenLineage's namespace): ``<scheme>://<host>:<port>``
        for a server database, ``<backend>://localhost<absolute file path>`` for a file database (an empty
        host would not survive Airflow's URI normalization: ``sqlite:///x`` becomes ``sqlite:/x``)."""
        backend = url.get_backend_name()
        if cls.file_database:
            # a query string inside the path (MotherDuck's ?motherduck_token=...) is never part of a name
            path = (url.database or ":memory:").split("?", 1)[0]
            return f"{backend}://localhost{os.path.abspath(path)}"
        return f"{cls.lineage_scheme or backend}://{url.host or 'localhost'}:{url.port or cls.default_port}"

    @classmethod
    def lineage_path(cls, url: sa.URL, dataset: str, table: str) -> list[str]:
        """A table's name in the database at ``url``, part by part: ``[<database>, dataset, table]`` on a
        server (which holds several databases), ``[dataset, table]`` in a file."""
        return [dataset, table] if cls.file_database else [url.database or "", dataset, table]

    @classmethod
    def identifier_length(cls, engine: sa.Engine) -> int | None:
        """dlt's limit on identifier length, in bytes of UTF-8, for ``engine``'s database; None: no limit.

        A class method: the pipeline normalizes names before it sets up a dialect instance.
        """
        return engine.dialect.max_identifier_length

    @classmethod
    def json_column_type(cls) -> sa.types.TypeEngine:
        """The type of a new JSON column (values are JSON text or Python lists and dicts)."""
        return sa.JSON()

    @classmethod
    def datasets_with_table(cls, engine: sa.Engine, table: str) -> list[str]:
        """The datasets of ``engine``'s database that hold a table named ``table``, sorted (for browsing:
        the UI and the CLI list pipelines by their state and audit tables)."""
        query = sa.text(
            "SELECT DISTINCT table_schema FROM information_schema.tables WHERE table_name = :t"
        ).bindparams(t=table)
        with engine.connect() as conn:
            return sorted(conn.execute(query).scalars())

    @classmethod
    def dataset_has_table(cls, engine: sa.Engine, dataset: str, table: str) -> bool:
        """Whether ``dataset`` holds a table named ``table``, looked up without creating anything (on
        SQLite, attaching a dataset would create its file)."""
        query = sa.text(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = :s AND table_name = :t"
        ).bindparams(s=dataset, t=table)
        with engine.connect() as conn:
            return conn.execute(query).first() is not None

    @classmethod
    def working_engine(cls, engine: sa.Engine) -> sa.Engine:
        """The engine a :class:`Dialect` for ``engine`` works on: ``engine`` itself if the product
        created it (:func:`~airflow_state_provider.destination.engine.create_engine`), else a private
        engine that opens its connections like ``engine``
        (:func:`~airflow_state_provider.destination.engine.borrowing_engine`).

        The dialects set their engine up with events (connection setup, lock waits, DuckDB's file
        handling, SQLite's attached datasets); on the caller's engine these would change everything
        else the caller does with it, so they go on the private engine. Raises
        :class:`ConfigurationError` for the caller's in-memory database, which exists only inside the
        connections of the caller's pool, and what ``check_supported`` raises.
        """
        if destination_engine.created_here(engine):
            return engine
        if cls.in_memory(engine.url):
            raise ConfigurationError(
                f"destination {destination_engine.mask_url(engine.url)}: an in-memory {engine.dialect.name} "
                "database passed as an Engine lives only in that engine's connections, and the pipeline "
                "opens connections of its own (so as not to change yours). Pass the URL instead (the "
                "pipeline's engine then holds the database: read it through pipeline.engine or "
                "pipeline.sql_client()), or use a database file."
            )
        private_ref: weakref.ref[sa.Engine] | None = None

        def open_connection(borrow: Callable[[], Any]) -> Any:
            private = private_ref() if private_ref is not None else None
            return borrow() if private is None else cls.open_connection(private, borrow)

        # a weak reference: the private engine's pool holds this function, and a reference cycle would
        # keep its connections open until the cyclic garbage collector runs
        private = destination_engine.borrowing_engine(engine, open_connection)
        private_ref = weakref.ref(private)
        return private

    @classmethod
    def in_memory(cls, url: sa.URL) -> bool:
        """True for a URL whose database lives in the memory of each connection (SQLite, DuckDB)."""
        return False

    @classmethod
    def open_connection(cls, engine: sa.Engine, borrow: Callable[[], Any]) -> Any:
        """Open a DBAPI connection of a private engine (:meth:`working_engine`) by calling ``borrow``;
        DuckDB retries it while another process holds the file."""
        return borrow()

    def prepare_existing(self) -> None:
        """Make every existing dataset readable as ``<dataset>.<table>`` on the engine's connections
        (SQLite attaches the dataset files it finds; schemas need nothing)."""

    def check_dataset_name(self, name: str) -> None:
        """Raise :class:`InvalidIdentifierError` for a dataset name the database would not keep as given.

        Checked before any DDL: PostgreSQL silently cuts a schema name past 63 bytes (catalog lookups
        then miss the schema it created). Dialects with more rules extend :meth:`dataset_name_problem`.
        """
        problem = self.dataset_name_problem(name)
        if problem:
            shown = f"{name[:80]!r}"
            raise InvalidIdentifierError(f"dataset name {shown} is not usable on {self.name}: {problem}")

    def dataset_name_problem(self, name: str) -> str | None:
        """Why ``name`` is not usable as a dataset name here (a clause for a message), or None."""
        if not name:
            return "it is empty"
        if "\0" in name:
            return "it contains a NUL character"
        max_bytes = self.identifier_length(self.engine)
        size = len(name.encode("utf-8", "surrogatepass"))
        if max_bytes and size > max_bytes:
            return f"it is {size} bytes long in UTF-8, over the {max_bytes} {self.name} keeps"
        return None

    @classmethod
    def existing_columns(
        cls, conn: sa.Connection, dataset: str, table: str
    ) -> dict[str, sa.types.TypeEngine] | None:
        """The columns of table ``dataset.table`` and their SQLAlchemy types, in table order; None if the
        table does not exist. A class method so readers without a pipeline (OpenLineage facets) can
        reflect through :func:`~airflow_state_provider.destination.dialects.dialect_class`."""
        inspector = sa.inspect(conn)
        if not inspector.has_table(table, schema=dataset):
            return None
        return {c["name"]: c["type"] for c in inspector.get_columns(table, schema=dataset)}

    def stored_value_problem(self, kind: str, values: Sequence[Any]) -> tuple[Any, str] | None:
        """The first of ``values`` (a batch of one column of loader kind ``kind``: "decimal",
        "double"...) the database would not store as it is, with why; None if it keeps them all. The
        loader refuses such a batch (:class:`SchemaConflictError`) instead of letting the database
        change the value silently."""
        return None

    def __init__(
        self, engine: sa.Engine, *, lock_timeout: float | None = None, pipeline_name: str | None = None
    ) -> None:
        self.engine = engine
        self.lock_timeout = DEFAULT_LOCK_TIMEOUT if lock_timeout is None else check_lock_timeout(lock_timeout)
        self.lock_settings = engine_lock_settings(engine)
        self.identity = self.lock_settings.identity
        with _settings_guard:
            if lock_timeout is not None or not self.lock_settings.pipelines:
                self.lock_settings.timeout = self.lock_timeout
            if pipeline_name:
                self.lock_settings.pipelines[pipeline_name] = None
            install = not self.lock_settings.installed
            self.lock_settings.installed = True
        if install:
            self.install(engine)

    def install(self, engine: sa.Engine) -> None:
        """Register the engine's connection setup (once per engine, from ``__init__``; ``engine`` is one
        the product created, see :meth:`working_engine`): lock timeouts
        of ``lock_timeout`` seconds, the isolation level, errors of a lock wait raised as
        :class:`LockTimeoutError`. The generic dialect sets nothing up."""

    def after_commit(self, conn: sa.Connection, committed: bool) -> None:
        """Called by the commit function once ``conn.commit()`` has returned (``committed``) or raised
        (not ``committed``): DuckDB releases its commit lock here, after the commit is done rather
        than when it starts. Nothing in the generic dialect."""

    def lock_timeout_error(
        self, what: str, pipeline_name: str | None = None, timeout: float | None = None
    ) -> LockTimeoutError:
        """The :class:`LockTimeoutError` for a wait of ``timeout`` seconds (default ``lock_timeout``)."""
        return self.lock_settings.error(
            what, pipeline_name, self.lock_timeout if timeout is None else timeout
        )

    # -- datasets ---------------------------------------------------------------------------------
    def prepare(self, dataset: str) -> None:
        """Make ``dataset`` usable on the engine's connections; called once per ``Pipeline`` before
        its first connection (SQLite attaches the dataset's file; schemas need nothing here)."""

    def create_dataset(self, conn: sa.Connection, dataset: str) -> None:
        """Create schema ``dataset`` if it does not exist, in ``conn``'s open transaction (so a rollback
        removes it again). Only called when :attr:`creates_schemas` is set."""
        conn.execute(sa.schema.CreateSchema(dataset, if_not_exists=True))

    def has_dataset(self, conn: sa.Connection, dataset: str) -> bool:
        """True if schema ``dataset`` exists (as seen by ``conn``'s transaction)."""
        return dataset in sa.inspect(conn).get_schema_names()

    # -- locking ----------------------------------------------------------------------------------
    def lock_pipeline(
        self, conn: sa.Connection, dataset: str, pipeline_name: str, timeout: float | None = None
    ) -> None:
        """Serialize state commits of one pipeline until the transaction ends (DESIGN §5.3).

        Waits at most ``timeout`` seconds (default ``lock_timeout``), then raises
        :class:`LockTimeoutError`. The generic fallback relies on the database's own write
        serialization.
        """

    def lock_tables(
        self,
        conn: sa.Connection,
        dataset: str,
        tables: Sequence[str],
        pipeline_name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Lock ``tables`` (about to be dropped) until the transaction ends; call it *before*
        :meth:`lock_pipeline`. A load holds its tables' locks when it asks for the commit lock, so
        taking them in the other order would deadlock. Raises :class:`LockTimeoutError`."""

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Hold the database for a whole ``Pipeline.run``. Dialects whose database is a file locked by
        the process that opens it (DuckDB) close every connection as soon as it is returned, so a
        restore holds the file only while it reads; inside this block they keep one connection open,
        so the run's restore, load and commit happen without another process getting in between and
        without reopening the file. The file is released when the block ends."""
        yield

    def lock_table_ddl(self, conn: sa.Connection, dataset: str, table: str) -> bool:
        """Serialize DDL on ``table`` across concurrent transactions until this one ends.

        Returns True when a lock was taken: the caller must then re-read the table, which a
        concurrent transaction may have created or altered while this one waited.
        """
        return False

    # -- bulk loading -----------------------------------------------------------------------------
    def insert_rows(
        self, conn: sa.Connection, table: sa.Table, columns: list[str], rows: list[tuple]
    ) -> None:
        """Insert ``rows`` (tuples in ``columns`` order) into ``table``: portable executemany."""
        if not rows:
            return
        stmt = sa.insert(table).values({c: sa.bindparam(c) for c in columns})
        conn.execute(stmt, [dict(zip(columns, r, strict=True)) for r in rows])

    def insert_columns(
        self, conn: sa.Connection, table: sa.Table, columns: list[str], data: list[Sequence[Any]]
    ) -> None:
        """Insert a batch given column by column: ``data[i]`` holds the values of ``columns[i]``.

        This is what the loader calls, with values already converted to the column's kind (see
        :mod:`~airflow_state_provider.destination.column_types`; JSON as text when :attr:`json_as_text`).
        All ``data`` lists have one length; an empty batch is a no-op. A value the database refuses
        raises the driver's error (wrapped by SQLAlchemy) and leaves the transaction to the caller. The
        default hands the rows to :meth:`insert_rows`; dialects whose bulk path is columnar override it.
        """
        if data and len(data[0]):
            self.insert_rows(conn, table, columns, list(zip(*data, strict=True)))

    # -- plain SQL ---------------------------------------------------------------------------------
    def use_dataset(self, conn: sa.Connection, dataset: str) -> None:
        """Make unqualified table names resolve in ``dataset`` on this connection."""
