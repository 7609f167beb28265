"""``PipelineStateHook``: an Airflow connection → a SQLAlchemy engine → a :class:`Pipeline`."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from airflow_state_provider._airflow_compat import BaseHook, conf, mask_secret
from airflow_state_provider.destination.engine import (
    check_supported,
    create_engine,
    mask_url,
    scrub,
    url_secrets,
)
from airflow_state_provider.get_provider_info import CONFIG_SECTION, get_provider_info

if TYPE_CHECKING:
    from airflow_state_provider._airflow_compat import Connection
    from airflow_state_provider.pipeline import Pipeline

#: Airflow connection types the hook understands, and the SQLAlchemy dialect each one means.
CONN_TYPE_DIALECTS = {"postgres": "postgresql", "sqlite": "sqlite", "duckdb": "duckdb"}
#: Databases kept in one file whose path is the connection's host (or, from a URI, its path).
FILE_DIALECTS = frozenset({"sqlite", "duckdb"})
#: SQLAlchemy would pick psycopg2 for a bare ``postgresql``; the provider depends on psycopg 3.
DEFAULT_DRIVERS = {"postgresql": "psycopg"}
_DIALECT_ALIASES = {"postgres": "postgresql"}
#: Extras of a ``postgres`` connection passed on to libpq as URL query parameters.
LIBPQ_EXTRAS = (
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
#: ``Pipeline`` settings that come from connection extras, else from the ``[state_provider]`` config.
STATE_SETTINGS = ("max_state_versions", "max_state_bytes", "warn_state_bytes")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class PipelineStateHook(BaseHook):
    """Connects to the destination database that holds the data and the pipeline state.

    A ``pipeline_state`` connection reads the extra ``sqlalchemy_url`` (a full URL that overrides
    everything else), else the extra ``dialect`` and optional ``driver`` with host, port, login,
    password and ``schema`` as the database name; for SQLite and DuckDB the file path goes in host.
    Connections of type ``postgres``, ``sqlite`` and ``duckdb`` map the same way. The extras
    ``dataset_name``, ``restore_from_destination``, ``max_state_versions``, ``max_state_bytes``,
    ``warn_state_bytes`` and ``lock_timeout`` give the defaults of the pipelines the hook builds.

    :param destination_conn_id: the Airflow connection id.
    """

    conn_name_attr = "destination_conn_id"
    default_conn_name = "pipeline_state_default"
    conn_type = "pipeline_state"
    hook_name = "Pipeline State (SQL destination)"

    def __init__(self, destination_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.destination_conn_id = destination_conn_id
        self._engine: sa.Engine | None = None

    @cached_property
    def connection(self) -> Connection:
        return self.get_connection(self.destination_conn_id)

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
        hook.connection = MetadataConnection.get_connection_from_secrets(destination_conn_id)
        return hook

    def _extra(self, key: str) -> Any:
        """An extra, also in the ``extra__pipeline_state__<key>`` form older UIs saved."""
        extra = self.connection.extra_dejson
        value = extra.get(key, extra.get(f"extra__{self.connection.conn_type}__{key}"))
        return None if value == "" else value

    # -- URL and engine ---------------------------------------------------------------------------
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
        driver = self._extra("driver") or DEFAULT_DRIVERS.get(dialect)
        drivername = f"{dialect}+{driver}" if driver else dialect
        if dialect in FILE_DIALECTS:
            # a URI such as sqlite:////data/x.db reaches Airflow's parser as schema, not host
            path = conn.host or conn.schema
            return URL.create(drivername, database=os.path.expanduser(path) if path else None)
        query = {}
        if dialect == "postgresql":
            query = {k: str(self._extra(k)) for k in LIBPQ_EXTRAS if self._extra(k) is not None}
        return URL.create(
            drivername,
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port or None,
            database=conn.schema or None,
            query=query,
        )

    def _dialect(self) -> str:
        conn_type = self.connection.conn_type
        if conn_type == self.conn_type:
            dialect = self._extra("dialect")
            if not dialect:
                raise ValueError(
                    f"connection {self.destination_conn_id!r}: set the extra 'dialect' (postgresql, sqlite, "
                    "duckdb, ...) or 'sqlalchemy_url'"
                )
        elif conn_type in CONN_TYPE_DIALECTS:
            dialect = CONN_TYPE_DIALECTS[conn_type]
        else:
            raise ValueError(
                f"connection {self.destination_conn_id!r} has type {conn_type!r}; PipelineStateHook "
                f"reads types {self.conn_type!r}, {', '.join(map(repr, CONN_TYPE_DIALECTS))}"
            )
        dialect = str(dialect).lower()
        return _DIALECT_ALIASES.get(dialect, dialect)

    def get_engine(self) -> sa.Engine:
        """The destination engine, created once per hook."""
        if self._engine is None:
            url = self.get_sqlalchemy_url()
            self.log.info("Destination %s (connection %r)", mask_url(url), self.destination_conn_id)
            self._engine = create_engine(url)
        return self._engine

    def dispose(self) -> None:
        """Close the engine's pooled connections (file databases release their locks)."""
        if self._engine is not None:
            self._engine.dispose()

    # -- pipelines --------------------------------------------------------------------------------
    @property
    def restore_from_destination(self) -> bool:
        value = self._extra("restore_from_destination")
        if value is None or isinstance(value, bool):
            return value is not False
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ValueError(
            f"connection {self.destination_conn_id!r}: extra 'restore_from_destination' must be true or "
            f"false, got {value!r}"
        )

    def state_settings(self) -> dict[str, int]:
        """State limits: connection extras first, then the ``[state_provider]`` Airflow config."""
        options = get_provider_info()["config"][CONFIG_SECTION]["options"]
        settings = {}
        for key in STATE_SETTINGS:
            value = self._extra(key)
            if value is None:
                # Airflow 3.1 processes do not always load provider config defaults: fall back to ours
                value = conf.get(CONFIG_SECTION, key, fallback=options[key]["default"])
            try:
                settings[key] = int(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"connection {self.destination_conn_id!r}: {key} must be an integer, got {value!r}"
                ) from None
        return settings

    def lock_timeout(self) -> float:
        """Seconds any lock wait may take: the extra ``lock_timeout``, else ``[state_provider]
        lock_timeout``, else 300. Raises ``ValueError`` unless it is a positive number."""
        from airflow_state_provider.destination.dialects.base import DEFAULT_LOCK_TIMEOUT, check_lock_timeout

        value = self._extra("lock_timeout")
        if value is None:
            value = conf.get(CONFIG_SECTION, "lock_timeout", fallback=DEFAULT_LOCK_TIMEOUT)
        return check_lock_timeout(value, f"connection {self.destination_conn_id!r}: lock_timeout")

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
    def test_connection(self) -> tuple[bool, str]:
        """Connect and run ``SELECT 1``; the message never contains the password."""
        try:
            url = self.get_sqlalchemy_url()
            check_supported(url)
        except Exception as exc:
            return False, self._scrub(f"{type(exc).__name__}: {exc}")
        shown = mask_url(url)
        if url.get_backend_name() in FILE_DIALECTS and url.database and url.database != ":memory:":
            path = os.path.abspath(url.database)
            if not os.path.exists(path):
                # connecting would create the file: only check that it can be created
                parent = os.path.dirname(path)
                if os.access(parent, os.W_OK):
                    return True, f"{shown}: the file does not exist yet; the first load creates it"
                return False, f"{shown}: the directory {parent} does not exist or is not writable"
        if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
            url = url.update_query_dict({"connect_timeout": "10"})
        engine = create_engine(url, poolclass=sa.NullPool)
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
