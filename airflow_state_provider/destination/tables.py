"""Data tables: the table a resource name loads into, and dropping or emptying tables inside the
caller's transaction (what ``drop`` and ``refresh`` do). Which tables a resource loaded is
:func:`airflow_state_provider.operations.resource_tables` (it reads the resource-to-table map)."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from airflow_state_provider.destination import naming
from airflow_state_provider.destination.dialects import dialect_class
from airflow_state_provider.destination.store import forget_tables


def table_name_of(name: str, engine: sa.Engine) -> str:
    """The table a resource (or table hint) ``name`` loads into, normalized as the loader does.

    Raises :class:`~airflow_state_provider.exceptions.InvalidIdentifierError` for a name that
    normalizes to nothing."""
    return naming.normalize_path(name, dialect_class(engine).identifier_length(engine))


def existing_tables(conn: sa.Connection, dataset: str, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that are tables in ``dataset``, in the given order, without repeats."""
    inspector = sa.inspect(conn)
    return [n for n in dict.fromkeys(names) if inspector.has_table(n, schema=dataset)]


def drop_tables(conn: sa.Connection, dataset: str, names: Iterable[str]) -> None:
    """``DROP TABLE IF EXISTS`` each of ``names`` inside the caller's transaction, and the tables' rows
    in the resource-to-table map (no resource's rows are in them any more)."""
    names = list(names)
    for name in names:
        conn.execute(sa.schema.DropTable(sa.Table(name, sa.MetaData(), schema=dataset), if_exists=True))
    forget_tables(conn, dataset, names)


def truncate_tables(conn: sa.Connection, dataset: str, names: Iterable[str]) -> None:
    """Delete all rows of each of ``names`` inside the caller's transaction (``DELETE``, which is
    transactional on every supported database, unlike ``TRUNCATE`` on some)."""
    for name in names:
        conn.execute(sa.delete(sa.table(name, schema=dataset)))
