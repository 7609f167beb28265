"""The generic dialect: portable SQLAlchemy Core, used as is by databases without a fast path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa


class Dialect:
    """Database-specific operations used by the state store and the loader.

    One instance per engine. Subclasses override what their database does better or differently.
    """

    name = "generic"
    #: a commit needs the dataset to exist first (schemas); SQLite attaches instead
    creates_schemas = True
    #: the largest precision of a DECIMAL column (None: no limit)
    max_decimal_precision: int | None = 38
    #: significant digits a stored decimal keeps exactly (None: all of its precision)
    decimal_significant_digits: int | None = None

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # -- datasets ---------------------------------------------------------------------------------
    def prepare(self, dataset: str) -> None:
        """Called once per Pipeline before the first connection is used (e.g. SQLite ATTACH)."""

    def create_dataset(self, conn: sa.Connection, dataset: str) -> None:
        conn.execute(sa.schema.CreateSchema(dataset, if_not_exists=True))

    def has_dataset(self, conn: sa.Connection, dataset: str) -> bool:
        return dataset in sa.inspect(conn).get_schema_names()

    # -- locking ----------------------------------------------------------------------------------
    def lock_pipeline(self, conn: sa.Connection, dataset: str, pipeline_name: str) -> None:
        """Serialize state commits of one pipeline until the transaction ends (DESIGN §5.3).

        The generic fallback relies on the database's own write serialization.
        """

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

        This is what the loader calls. The default hands the rows to :meth:`insert_rows`; dialects
        whose bulk path is columnar override it.
        """
        if data and len(data[0]):
            self.insert_rows(conn, table, columns, list(zip(*data, strict=True)))

    # -- plain SQL ---------------------------------------------------------------------------------
    def use_dataset(self, conn: sa.Connection, dataset: str) -> None:
        """Make unqualified table names resolve in ``dataset`` on this connection."""
