"""PostgreSQL: transaction-scoped advisory lock per pipeline."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from airflow_state_provider.destination.dialects.base import Dialect


def advisory_key(dataset: str, pipeline_name: str, kind: str = "state") -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock``."""
    digest = hashlib.blake2b(f"asp:{kind}:{dataset}:{pipeline_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresDialect(Dialect):
    name = "postgresql"
    max_decimal_precision = 1000

    def lock_pipeline(self, conn: sa.Connection, dataset: str, pipeline_name: str) -> None:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key(dataset, pipeline_name)})

    def lock_table_ddl(self, conn: sa.Connection, dataset: str, table: str) -> bool:
        # two transactions creating one table: the second would fail on the catalog's unique index
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key(dataset, table, "ddl")})
        return True

    def use_dataset(self, conn: sa.Connection, dataset: str) -> None:
        conn.execute(
            sa.text("SELECT set_config('search_path', :p, false)"), {"p": _quoted(dataset) + ", public"}
        )
        conn.commit()

    def insert_rows(
        self, conn: sa.Connection, table: sa.Table, columns: list[str], rows: list[tuple]
    ) -> None:
        """``COPY ... FROM STDIN``: binary when every column has a known type, text otherwise.

        JSON values arrive as JSON text; naive ``timestamp`` columns get UTC wall times.
        """
        if not rows:
            return
        from psycopg import sql
        from psycopg.types.json import set_json_dumps

        types = [table.c[c].type for c in columns]
        fixes = [_fix_for(t) for t in types]
        if any(fixes):
            data = [list(col) for col in zip(*rows, strict=True)]
            for i, fix in enumerate(fixes):
                if fix is not None:
                    data[i] = [None if v is None else fix(v) for v in data[i]]
            rows = list(zip(*data, strict=True))
        copy_types = [_copy_type(t) for t in types]
        binary = None not in copy_types
        target = sql.Identifier(*((table.schema,) if table.schema else ()), table.name)
        statement = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
            target,
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(" (FORMAT BINARY)" if binary else ""),
        )
        with conn.connection.driver_connection.cursor() as cursor:
            set_json_dumps(_as_is, context=cursor)  # JSON values are JSON text already
            with cursor.copy(statement) as copy:
                if binary:
                    copy.set_types(copy_types)
                write_row = copy.write_row
                for row in rows:
                    write_row(row)


def _as_is(value: Any) -> Any:
    return value


def _utc_wall_time(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def _fix_for(t: sa.types.TypeEngine) -> Callable[[Any], Any] | None:
    if isinstance(t, sa.DateTime) and not t.timezone:
        return _utc_wall_time
    return None


def _copy_type(t: sa.types.TypeEngine) -> str | None:
    """The binary COPY type of a column, or None if binary COPY should not guess."""
    if isinstance(t, sa.Boolean):
        return "bool"
    if isinstance(t, sa.BigInteger):
        return "int8"
    if isinstance(t, sa.SmallInteger):
        return "int2"
    if isinstance(t, sa.Integer):
        return "int4"
    if isinstance(t, sa.Double):
        return "float8"
    if isinstance(t, sa.REAL):
        return "float4"
    if isinstance(t, sa.Float):
        return None
    if isinstance(t, sa.Numeric):
        return "numeric"
    if isinstance(t, postgresql.JSONB):
        return "jsonb"
    if isinstance(t, sa.JSON):
        return "json"
    if isinstance(t, sa.Uuid):
        return "uuid"
    if isinstance(t, sa.Enum):
        return None
    if isinstance(t, sa.String):
        return "text"
    if isinstance(t, sa.DateTime):
        return "timestamptz" if t.timezone else "timestamp"
    if isinstance(t, sa.Date):
        return "date"
    if isinstance(t, sa.Time):
        return None if t.timezone else "time"
    if isinstance(t, sa.LargeBinary):
        return "bytea"
    return None


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
