"""``PipelineStateHook``: an Airflow connection → a SQLAlchemy engine → a :class:`Pipeline`.

The hook is a common-sql ``DbApiHook``: the same connection runs ``SQLExecuteQueryOperator``,
``@task.sql`` and the SQL sensors against the destination.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from airflow_state_provider._airflow_compat import DbApiHook, conf, mask_secret
from airflow_state_provider.destination.dialects import dialect_class_named, dialect_for
from airflow_state_provider.destination.engine import (
    SUPPORTED_DIALECTS,
    create_engine,
    install_hint,
    mask_url,
    scrub,
    url_secrets,
)
from airflow_state_provider.exceptions import ConfigurationError
from airflow_state_provider.get_provider_info import CONFIG_SECTION, get_provider_info

if TYPE_CHECKING:
    from airflow_state_provider.pipeline import Pipeline

#: Airflow connection types the hook understands, and the SQLAlchemy dialect each one means.
CONN_TYPE_DIALECTS = {"postgres": "postgresql", "sqlite": "sqlite", "duckdb": "duckdb"}
#: what the extra ``dialect`` may also say (Airflow's connection type name)
_DIALECT_ALIASES = {"postgres": "postgresql"}
#: ``Pipeline`` settings that come from connection extras, else from the ``[state_provider]`` config.
STATE_SETTINGS = ("max_state_versions", "max_state_bytes", "warn_state_bytes")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
#: DB-API ``paramstyle`` → the placeholder ``DbApiHook.insert_rows`` writes.
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


class PipelineStateHook(DbApiHook):
    """Connects to the destination database that holds the data and the pipeline state.

    A ``pipeline_state`` connection reads the extra ``sqlalchemy_url`` (a full URL that overrides
    everything else), else the extra ``dialect`` (one of :data:`SUPPORTED_DIALECTS`) and optional
    ``driver`` with host, port, login, password and ``schema`` as the database name; for SQLite and
    DuckDB the file path goes in host. Connections of type ``postgres``, ``sqlite`` and ``duckdb`` map
    the same way. The extras ``dataset_name``, ``restore_from_destination``, ``max_state_versions``,
    ``max_state_bytes``, ``warn_state_bytes`` and ``lock_timeout`` give the defaults of the pipelines the
    hook builds.

    As a common-sql ``DbApiHook`` it has ``sqlalchemy_url``, ``get_conn()`` (a DB-API connection from
    the hook's engine pool) and the inherited ``get_sqlalchemy_engine``, ``run``, ``get_records`` and
    ``get_first``. Engines never put bound values into error messages (``hide_parameters``).

    :param destination_conn_id: the Airflow connection id.
    :raises ConfigurationError: (when the URL is first built) a connection that names no or an
        unsupported dialect, has another type, or has an extra of the wrong kind.
    """

    conn_name_attr = "destination_conn_id"
    default_conn_name = "pipeline_state_default"
    conn_type = "pipeline_state"
    hook_name = "Pipeline State (SQL destination)"

    def __init__(self, destination_conn_id: str = default_conn_name, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, destination_conn_id=destination_conn_id, **kwargs)
        self._engine: sa.Engine | None = None

    @classmethod
    def outside_task(cls, destination_conn_id: str) -> PipelineStateHook:
        """A hook for a command line or a script: the connection is looked up as Airflow's CLI does.

        That is the configured ``[secrets] backend``, then ``AIRFLOW_CONN_*`` variables, then the
        metadata database (connections made in the UI or with ``airflow connections add``).
        ``BaseHook.get_connection`` outside a task sees no metadata database. Inside a task this
        goes through the Task SDK as usual. Raises ``AirflowNotFoundException`` for an unknown id.
        """
        from airflow.models.connection import Connection as MetadataConnection

        hook = cls(destination_conn_id=destination_conn_id)
        # DbApiHook's connection property reads _connection first
        hook._connection = MetadataConnection.get_connection_from_secrets(destination_conn_id)
        return hook

    def _extra(self, key: str) -> Any:
        """An extra, also in the ``extra__pipeline_state__<key>`` form older UIs saved."""
        extra = self.connection.extra_dejson
        value = extra.get(key, extra.get(f"extra__{self.connection.conn_type}__{key}"))
        return None if value == "" else value

    def _config_error(self, message: str) -> ConfigurationError:
        return ConfigurationError(f"connection {self.destination_conn_id!r}: {message}")

    # -- URL and engine ---------------------------------------------------------------------------
    @property
    def sqlalchemy_url(self) -> URL:
        """The destination's SQLAlchemy URL (what common-sql builds engines from)."""
        return self.get_sqlalchemy_url()

    def get_sqlalchemy_url(self) -> URL:
        """The SQLAlchemy URL of the destination, built with ``URL.create`` (no string escaping)."""
        conn = self.connection
        raw_url = self._extra("sqlalchemy_url")
        if raw_url:
            url = make_url(raw_url)
            for secret in url_secrets(url):
                mask_secret(secret)  # the extra's name does not look secret to Airflow
            return url
        dialect = self._dialect()
        database = dialect_class_named(dialect)
        driver = self._extra("driver") or database.default_driver
        return database.url_from_settings(
            f"{dialect}+{driver}" if driver else dialect,
            host=conn.host,
            port=conn.port,
            username=conn.login,
            password=conn.password,
            database=conn.schema,  # a file database's URI path arrives here, not in host
            settings={k: self._extra(k) for k in database.url_query_settings},
        )

    def _dialect(self) -> str:
        conn_type = self.connection.conn_type
        supported = ", ".join(SUPPORTED_DIALECTS)
        if conn_type == self.conn_type:
            dialect = self._extra("dialect")
            if not dialect:
                raise self._config_error(f"set the extra 'dialect' ({supported}) or 'sqlalchemy_url'")
        elif conn_type in CONN_TYPE_DIALECTS:
            dialect = CONN_TYPE_DIALECTS[conn_type]
        else:
            raise self._config_error(
                f"has type {conn_type!r}; PipelineStateHook reads types {self.conn_type!r}, "
                f"{', '.join(map(repr, CONN_TYPE_DIALECTS))}"
            )
        name = str(dialect).strip().lower()
        name = _DIALECT_ALIASES.get(name, name)
        if name not in SUPPORTED_DIALECTS:
            raise self._config_error(f"extra 'dialect' is {dialect!r}; supported dialects: {supported}")
        return name

    def get_uri(self) -> str:
        """The SQLAlchemy URL as a string, password included (what common-sql callers expect)."""
        return self.get_sqlalchemy_url().render_as_string(hide_password=False)

    @property
    def dialect_name(self) -> str:  # type: ignore[override]
        """The SQLAlchemy backend name: ``sqlite``, ``duckdb`` or ``postgresql``."""
        return self.get_sqlalchemy_url().get_backend_name()

    @property
    def placeholder(self) -> str:  # type: ignore[override]
        """The driver's parameter marker (``?`` for SQLite and DuckDB, ``%s`` for psycopg)."""
        paramstyle = getattr(self.get_engine().dialect.dbapi, "paramstyle", "qmark")
        return _PLACEHOLDERS.get(paramstyle, "?")

    def get_sqlalchemy_engine(self, engine_kwargs: dict[str, Any] | None = None) -> sa.Engine:
        """A new engine on the destination from the product's one engine factory (bound values hidden
        from error messages, pre-ping); ``engine_kwargs`` go to ``sqlalchemy.create_engine``.

        :raises UnsupportedDestinationError: a database other than SQLite, DuckDB or PostgreSQL.
        """
        return create_engine(self.sqlalchemy_url, **(engine_kwargs or {}))

    def get_engine(self) -> sa.Engine:
        """The destination engine, created once per hook (pipelines and ``get_conn`` share it)."""
        if self._engine is None:
            engine = self.get_sqlalchemy_engine()
            self.log.info("Destination %s (connection %r)", mask_url(engine.url), self.destination_conn_id)
            self._engine = engine
        return self._engine

    def get_conn(self) -> Any:
        """A DB-API connection from the hook's engine pool; ``close()`` returns it to the pool.

        SQL reads tables as ``<dataset>.<table>`` on every dialect: on SQLite, where each dataset is a
        file next to the main one, the connection has every existing dataset file attached.
        """
        engine = self.get_engine()
        dialect_for(engine).prepare_existing()
        return engine.raw_connection()

    def dispose(self) -> None:
        """Close the engine's pooled connections (file databases release their locks)."""
        if self._engine is not None:
            self._engine.dispose()

    # -- lineage and assets ------------------------------------------------------------------------
    def lineage_namespace(self) -> str:
        """The destination database as a URI: OpenLineage's namespace and the prefix of asset URIs.

        ``postgres://<host>:<port>`` for PostgreSQL (OpenLineage's naming; the database goes in the
        dataset name), ``sqlite://localhost<absolute file path>`` and ``duckdb://localhost<absolute
        file path>`` for file databases (an empty host would not survive Airflow's URI normalization:
        ``sqlite:///x`` becomes ``sqlite:/x``). Never holds credentials.
        """
        url = self.get_sqlalchemy_url()
        return dialect_class_named(url.get_backend_name()).lineage_namespace(url)

    def lineage_name(self, dataset_name: str, table_name: str) -> str:
        """A table's OpenLineage dataset name: ``<database>.<dataset>.<table>`` on PostgreSQL (as
        the Postgres provider reports it), ``<dataset>.<table>`` in a file database."""
        url = self.get_sqlalchemy_url()
        return ".".join(
            dialect_class_named(url.get_backend_name()).lineage_path(url, dataset_name, table_name)
        )

    def table_asset_uri(self, dataset_name: str, table_name: str) -> str:
        """The stable Airflow asset URI of a loaded table: the database, then dataset and table.

        ``postgres://db.internal:5432/analytics/raw/events`` (the Postgres provider's asset form),
        ``sqlite://localhost/data/warehouse.sqlite/raw/events``,
        ``duckdb://localhost/data/w.duckdb/raw/events``.
        """
        url = self.get_sqlalchemy_url()
        path = dialect_class_named(url.get_backend_name()).lineage_path(url, dataset_name, table_name)
        return "/".join([self.lineage_namespace(), *path])

    def table_asset(self, dataset_name: str, table_name: str) -> Any:
        """The :class:`airflow.sdk.Asset` of a loaded table (what a downstream DAG schedules on).

        Reads the connection: called in a DAG file, that happens when the file is parsed.
        """
        from airflow.sdk import Asset

        return Asset(self.table_asset_uri(dataset_name, table_name))

    # -- pipelines ---------------------------------------------------------------------------------
    @property
    def restore_from_destination(self) -> bool:
        value = self._extra("restore_from_destination")
        if value is None or isinstance(value, bool):
            return value is not False
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise self._config_error(f"extra 'restore_from_destination' must be true or false, got {value!r}")

    def state_settings(self) -> dict[str, int]:
        """State limits: connection extras first, then the ``[state_provider]`` Airflow config."""
        options = get_provider_info()["config"][CONFIG_SECTION]["options"]
        settings = {}
        for key in STATE_SETTINGS:
            value = self._extra(key)
            if value is None:
                # Airflow 3.1 processes do not always load provider config defaults: fall back to ours
                value = conf.get(CONFIG_SECTION, key, fallback=options[key]["default"])
            number = _whole_number(value)
            if number is None or number < 1:
                raise self._config_error(f"{key} must be an integer >= 1, got {value!r}")
            settings[key] = number
        return settings

    def lock_timeout(self) -> float:
        """Seconds any lock wait may take: the extra ``lock_timeout``, else ``[state_provider]
        lock_timeout``, else 300. Raises ``ValueError`` unless it is a positive number."""
        from airflow_state_provider.destination.dialects.base import DEFAULT_LOCK_TIMEOUT, check_lock_timeout

        value = self._extra("lock_timeout")
        if value is None:
            value = conf.get(CONFIG_SECTION, "lock_timeout", fallback=DEFAULT_LOCK_TIMEOUT)
        try:
            return check_lock_timeout(value, f"connection {self.destination_conn_id!r}: lock_timeout")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None

    def get_pipeline(self, pipeline_name: str, dataset_name: str | None = None, **kwargs: Any) -> Pipeline:
        """A :class:`Pipeline` writing to this destination.

        ``dataset_name`` defaults to the connection's extra ``dataset_name``; ``kwargs`` go to
        ``Pipeline`` and override the connection's ``restore_from_destination`` and state limits.
        """
        # imported here: the providers manager imports this module in every Airflow process
        from airflow_state_provider.pipeline import Pipeline

        kwargs.setdefault("restore_from_destination", self.restore_from_destination)
        for key, value in self.state_settings().items():
            kwargs.setdefault(key, value)
        kwargs.setdefault("lock_timeout", self.lock_timeout())
        return Pipeline(
            pipeline_name,
            destination=self,
            dataset_name=dataset_name or self._extra("dataset_name"),
            **kwargs,
        )

    # -- UI ---------------------------------------------------------------------------------------
    def validate_extras(self) -> list[str]:
        """What is wrong with the connection's extras, one message per problem (empty: nothing).

        Checks that the dialect is supported, that number extras are whole numbers, that
        ``restore_from_destination`` is a boolean and ``lock_timeout`` a positive number of seconds,
        and imports the dialect's driver: a missing one names the package extra that installs it.
        """
        problems: list[str] = []
        prefix = f"connection {self.destination_conn_id!r}: "
        try:
            url = self.get_sqlalchemy_url()
        except Exception as exc:
            return [self._scrub(str(exc)).removeprefix(prefix)]
        backend = url.get_backend_name()
        if backend not in SUPPORTED_DIALECTS:
            problems.append(
                f"the URL's dialect {backend!r} is not supported; supported dialects: "
                f"{', '.join(SUPPORTED_DIALECTS)}"
            )
        problems += self._number_problems(dialect_class_named(backend).integer_url_query_settings)
        problems += self._setting_problems(prefix)
        if backend in SUPPORTED_DIALECTS:
            problem = _driver_problem(url)
            if problem:
                problems.append(problem)
        return problems

    def _number_problems(self, url_integers: tuple[str, ...]) -> list[str]:
        """The whole-number extras (state settings; the database's ``url_integers``, such as libpq's
        ``connect_timeout``) that are not one."""
        minimums = dict.fromkeys(STATE_SETTINGS, 1)
        minimums.update(dict.fromkeys(url_integers, 0))
        problems = []
        for key, minimum in minimums.items():
            value = self._extra(key)
            number = _whole_number(value)
            if value is not None and (number is None or number < minimum):
                problems.append(f"{key} must be an integer >= {minimum}, got {value!r}")
        return problems

    def _setting_problems(self, prefix: str) -> list[str]:
        """What reading ``restore_from_destination`` and ``lock_timeout`` raises, without ``prefix``."""
        problems = []
        for setting in ("restore_from_destination", "lock_timeout"):
            try:
                value = getattr(self, setting)
                if callable(value):
                    value()
            except ConfigurationError as exc:
                problems.append(str(exc).removeprefix(prefix))
        return problems

    def test_connection(self) -> tuple[bool, str]:  # type: ignore[override]  # the UI reads (ok, message)
        """Validate the extras, then connect and run ``SELECT 1``; the message never has the password.

        Backs the connection form's Test button (``[core] test_connection = Enabled``). A SQLite or
        DuckDB file that does not exist yet is not created: only its directory is checked.
        """
        problems = self.validate_extras()
        if problems:
            return False, f"connection {self.destination_conn_id!r}: " + "; ".join(problems)
        url = self.get_sqlalchemy_url()
        shown = mask_url(url)
        database = dialect_class_named(url.get_backend_name())
        if database.file_database and url.database and not database.in_memory(url):
            path = os.path.abspath(url.database)
            if not os.path.exists(path):
                # connecting would create the file: only check that it can be created
                parent = os.path.dirname(path)
                if os.access(parent, os.W_OK):
                    return True, f"{shown}: the file does not exist yet; the first load creates it"
                return False, f"{shown}: the directory {parent} does not exist or is not writable"
        engine = create_engine(database.with_connect_timeout(url, 10), poolclass=sa.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception as exc:
            return False, self._scrub(f"Cannot connect to {shown}: {type(exc).__name__}: {exc}")
        finally:
            engine.dispose()
        return True, f"Connected to {shown}"

    def _scrub(self, message: str) -> str:
        """Drop any password from a driver's error message."""
        secrets = [self.connection.password or ""]
        raw_url = self._extra("sqlalchemy_url")
        if raw_url:
            secrets += url_secrets(raw_url)
        return scrub(message, secrets)


def _whole_number(value: Any) -> int | None:
    """``value`` as an int if it is one (``7``, ``"7"``), else None (``"lots"``, ``7.5``, ``True``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _driver_problem(url: URL) -> str | None:
    """Why the URL's DB-API driver cannot be imported, naming the extra to install; None if it can."""
    backend = url.get_backend_name()
    hint = install_hint(backend)
    try:
        url.get_dialect().import_dbapi()
    except sa.exc.NoSuchModuleError:
        return f"no SQLAlchemy dialect {url.drivername!r} is installed{hint}"
    except ImportError as exc:
        return f"the {backend} driver {url.drivername!r} cannot be imported ({exc}){hint}"
    return None
