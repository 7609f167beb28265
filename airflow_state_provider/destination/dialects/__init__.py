"""Per-database behaviour: datasets, the state-commit lock and bulk paths.

A *dataset* is a PostgreSQL/DuckDB schema. SQLite has no schemas, so a dataset is a database file
attached under the dataset's name, next to the main file (``<stem>__<dataset><suffix>``, dlt's
convention); every table of a load then lives in one file and commits atomically.
"""

from __future__ import annotations

import sqlalchemy as sa

from airflow_state_provider.destination.dialects.base import DEFAULT_LOCK_TIMEOUT, Dialect
from airflow_state_provider.destination.dialects.duckdb import DuckDBDialect
from airflow_state_provider.destination.dialects.postgresql import PostgresDialect
from airflow_state_provider.destination.dialects.sqlite import SQLiteDialect

_DIALECTS: dict[str, type[Dialect]] = {
    "sqlite": SQLiteDialect,
    "duckdb": DuckDBDialect,
    "postgresql": PostgresDialect,
}


def dialect_class(engine: sa.Engine | sa.Connection) -> type[Dialect]:
    """The :class:`Dialect` subclass for ``engine``'s database (the generic one if it has none), for its
    class-level facts (:meth:`Dialect.identifier_length`, :meth:`Dialect.existing_columns`) without
    setting the engine up."""
    return dialect_class_named(engine.dialect.name)


def dialect_class_named(backend: str) -> type[Dialect]:
    """The :class:`Dialect` subclass for a SQLAlchemy backend name (``url.get_backend_name()``; the
    generic one if it has none), for its class-level facts about URLs and names before any engine
    exists."""
    return _DIALECTS.get(backend, Dialect)


def dialect_for(
    engine: sa.Engine, *, lock_timeout: float | None = None, pipeline_name: str | None = None
) -> Dialect:
    """The :class:`Dialect` serving ``engine`` (generic SQL for databases without a fast path).

    ``lock_timeout`` (seconds) bounds every lock wait on the engine's connections (default
    :data:`DEFAULT_LOCK_TIMEOUT`); ``pipeline_name`` is named in lock-timeout errors. The dialect works
    on :meth:`Dialect.working_engine` (``Dialect.engine``): ``engine`` itself if the product created
    it, else a private engine opening connections like it, so that a caller's engine is never changed.
    """
    cls = dialect_class(engine)
    return cls(cls.working_engine(engine), lock_timeout=lock_timeout, pipeline_name=pipeline_name)


__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "Dialect",
    "DuckDBDialect",
    "PostgresDialect",
    "SQLiteDialect",
    "dialect_class",
    "dialect_class_named",
    "dialect_for",
]
