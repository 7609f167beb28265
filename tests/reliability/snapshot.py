"""A byte-for-byte picture of a destination, to prove that a failed run changed nothing."""

from __future__ import annotations

import sqlalchemy as sa

from airflow_state_provider.destination.dialects import dialect_for
from airflow_state_provider.destination.engine import create_engine

Snapshot = dict[str, list[str]]

_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def tables(conn: sa.Connection) -> list[tuple[str, str]]:
    """Every user table as ``(schema, table)``: all schemas, or all attached SQLite files."""
    name = conn.dialect.name
    if name == "sqlite":
        found = []
        for _, schema, _ in conn.exec_driver_sql("PRAGMA database_list").all():
            if schema == "temp":
                continue
            master = f"{_quote(schema)}.sqlite_master"
            rows = conn.exec_driver_sql(f"SELECT name FROM {master} WHERE type = 'table'").all()
            found += [(schema, r[0]) for r in rows if not r[0].startswith("sqlite_")]
        return sorted(found)
    query = sa.text(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN :system"
    ).bindparams(sa.bindparam("system", expanding=True))
    return sorted((s, t) for s, t in conn.execute(query, {"system": list(_SYSTEM_SCHEMAS)}).all())


def tables_of(url: str, *datasets: str) -> list[tuple[str, str]]:
    """:func:`tables` of the database at ``url`` (on SQLite with ``datasets`` attached)."""
    engine = create_engine(url)
    for dataset in datasets:
        dialect_for(engine).prepare(dataset)
    try:
        with engine.connect() as conn:
            return [(s, t) for s, t in tables(conn) if not datasets or s in datasets]
    finally:
        engine.dispose()


def take(engine_or_url: sa.Engine | str, *datasets: str) -> Snapshot:
    """All rows of all user tables, each rendered with ``repr`` and sorted.

    On SQLite a dataset is a separate file: name the ``datasets`` to attach (a URL only).
    """
    engine = create_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    for dataset in datasets:
        dialect_for(engine).prepare(dataset)
    try:
        with engine.connect() as conn:
            out: Snapshot = {}
            for schema, table in tables(conn):
                rows = conn.exec_driver_sql(f"SELECT * FROM {_quote(schema)}.{_quote(table)}").all()
                out[f"{schema}.{table}"] = sorted(repr(tuple(r)) for r in rows)
            return out
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()
