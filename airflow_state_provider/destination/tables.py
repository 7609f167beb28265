"""Data tables by resource: which tables a resource loaded, and dropping or emptying them inside the
caller's transaction (what ``drop`` and ``refresh`` do)."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from airflow_state_provider.destination import naming
from airflow_state_provider.destination.store import recorded_resource_tables


def table_name_of(name: str, engine: sa.Engine) -> str:
    """The table a resource (or table hint) ``name`` loads into, normalized as the loader does.

    Raises :class:`~airflow_state_provider.exceptions.InvalidIdentifierError` for a name that
    normalizes to nothing."""
    max_length = None if engine.dialect.name == "duckdb" else engine.dialect.max_identifier_length
    return naming.normalize_path(name, max_length)


def resource_tables(
    conn: sa.Connection,
    dataset: str,
    pipeline_name: str,
    resources: Iterable[str],
    *,
    hints: dict[str, str] | None = None,
) -> dict[str, list[str]]:
    """Resource name -> the tables it loaded in ``dataset``, from the resource-to-table map
    (:data:`~airflow_state_provider.destination.store.RESOURCE_TABLES`).

    A ``hints`` entry (a resource's ``table_name``) that differs from the resource name wins. A
    resource the map does not know (loaded before the map existed, or by dlt) is taken to load the
    table named like it, unless the map records that table as another resource's (then: no table).
    """
    engine = conn.engine
    recorded = recorded_resource_tables(conn, dataset, pipeline_name)
    claimed = {t: r for r, tables in recorded.items() for t in tables}
    out: dict[str, list[str]] = {}
    for name in dict.fromkeys(resources):
        hint = (hints or {}).get(name, name)
        if hint != name:
            out[name] = [table_name_of(hint, engine)]
        elif name in recorded:
            out[name] = list(recorded[name])
        else:
            guess = table_name_of(name, engine)
            out[name] = [] if claimed.get(guess, name) != name else [guess]
    return out


def existing_tables(conn: sa.Connection, dataset: str, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that are tables in ``dataset``, in the given order, without repeats."""
    inspector = sa.inspect(conn)
    return [n for n in dict.fromkeys(names) if inspector.has_table(n, schema=dataset)]


def drop_tables(conn: sa.Connection, dataset: str, names: Iterable[str]) -> None:
    """``DROP TABLE IF EXISTS`` each of ``names`` inside the caller's transaction."""
    for name in names:
        conn.execute(sa.schema.DropTable(sa.Table(name, sa.MetaData(), schema=dataset), if_exists=True))


def truncate_tables(conn: sa.Connection, dataset: str, names: Iterable[str]) -> None:
    """Delete all rows of each of ``names`` inside the caller's transaction (``DELETE``, which is
    transactional on every supported database, unlike ``TRUNCATE`` on some)."""
    for name in names:
        conn.execute(sa.delete(sa.table(name, schema=dataset)))
