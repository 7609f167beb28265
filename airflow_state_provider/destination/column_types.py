"""The one type registry: what each SQLAlchemy column type means to the loader and to the bulk paths.

A column *kind* is the loader's type system, one per dlt data type (plus ``other`` for a column of a
type the loader does not manage). :data:`REGISTRY` maps SQLAlchemy types (created, or reflected from
any of the three databases) to their kind, their PostgreSQL binary ``COPY`` type and the Arrow type
that carries their values to DuckDB; :func:`new_column_type` gives the type of a column the loader
creates for a kind. Per-database choices (the JSON column type) come from the dialect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# column kinds, one per dlt data type (plus "other" for foreign columns)
BOOL, BIGINT, DOUBLE, DECIMAL, TEXT, JSON = "bool", "bigint", "double", "decimal", "text", "json"
TIMESTAMP, DATE, TIME, BINARY, UUID, OTHER = "timestamp", "date", "time", "binary", "uuid", "other"

#: dlt's default: new decimal columns get at least this precision and scale
DECIMAL_PRECISION = (38, 9)


@dataclass(frozen=True)
class ColumnType:
    """One row of :data:`REGISTRY`: a column whose type is an instance of ``match`` (with a time zone
    if ``timezone`` is True, without one if False) has kind ``kind``.

    ``copy`` is the PostgreSQL binary ``COPY`` type name (None: binary COPY must not guess, the text
    format is used); ``arrow`` builds the Arrow type from the ``pyarrow`` module (None: no Arrow type,
    DuckDB's ``UNNEST`` path inserts). Values reach both as the dialect prepared them: decimals and
    JSON as text.
    """

    match: type[sa.types.TypeEngine] | tuple[type[sa.types.TypeEngine], ...]
    kind: str
    copy: str | None
    arrow: Callable[[Any], Any] | None
    timezone: bool | None = None


def _text(pa: Any) -> Any:
    return pa.large_string()


#: first match wins: subclasses come before their bases (Float is a Numeric, Enum a String)
REGISTRY: tuple[ColumnType, ...] = (
    ColumnType(sa.Boolean, BOOL, "bool", lambda pa: pa.bool_()),
    ColumnType(sa.BigInteger, BIGINT, "int8", lambda pa: pa.int64()),
    ColumnType(sa.SmallInteger, BIGINT, "int2", lambda pa: pa.int64()),
    ColumnType(sa.Integer, BIGINT, "int4", lambda pa: pa.int64()),
    ColumnType(sa.Double, DOUBLE, "float8", lambda pa: pa.float64()),
    ColumnType(sa.REAL, DOUBLE, "float4", lambda pa: pa.float64()),
    ColumnType(sa.Float, DOUBLE, None, lambda pa: pa.float64()),
    ColumnType(sa.Numeric, DECIMAL, "numeric", _text),
    ColumnType(sa.Uuid, UUID, "uuid", None),
    ColumnType(postgresql.JSONB, JSON, "jsonb", _text),
    ColumnType(sa.JSON, JSON, "json", _text),
    ColumnType(sa.Enum, OTHER, None, None),
    ColumnType(sa.String, TEXT, "text", _text),
    ColumnType(sa.DateTime, TIMESTAMP, "timestamptz", lambda pa: pa.timestamp("us", tz="UTC"), True),
    ColumnType(sa.DateTime, TIMESTAMP, "timestamp", lambda pa: pa.timestamp("us")),
    ColumnType(sa.Date, DATE, "date", lambda pa: pa.date32()),
    ColumnType(sa.Time, TIME, None, lambda pa: pa.time64("us"), True),
    ColumnType(sa.Time, TIME, "time", lambda pa: pa.time64("us")),
    ColumnType((sa.LargeBinary, sa.BINARY, sa.VARBINARY), BINARY, "bytea", lambda pa: pa.large_binary()),
)
_UNKNOWN = ColumnType(sa.types.TypeEngine, OTHER, None, None)


def lookup(t: sa.types.TypeEngine) -> ColumnType:
    """The :data:`REGISTRY` row of column type ``t`` (kind ``other``, no bulk types, if none matches)."""
    key = (type(t), bool(getattr(t, "timezone", False)))
    found = _FOUND.get(key)
    if found is None:
        cls, timezone = key
        rows = (r for r in REGISTRY if issubclass(cls, r.match) and r.timezone in (None, timezone))
        found = _FOUND[key] = next(rows, _UNKNOWN)
    return found


#: the row of each (type class, time zone) seen: a lookup per column per batch stays a dict access
_FOUND: dict[tuple[type, bool], ColumnType] = {}


def kind_of_sa_type(t: sa.types.TypeEngine) -> str:
    """The column kind of an existing (reflected or created) column type."""
    return lookup(t).kind


def copy_type(t: sa.types.TypeEngine) -> str | None:
    """The PostgreSQL binary ``COPY`` type name of a column, or None if binary COPY should not guess."""
    return lookup(t).copy


def arrow_type(pa: Any, t: sa.types.TypeEngine) -> Any:
    """The Arrow type (from the ``pyarrow`` module ``pa``) carrying values of a column of type ``t``
    to DuckDB, or None if there is none."""
    arrow = lookup(t).arrow
    return None if arrow is None else arrow(pa)


#: the type of a new column of each kind, but JSON (the dialect's :meth:`Dialect.json_column_type`)
_NEW_TYPES: dict[str, Callable[[], sa.types.TypeEngine]] = {
    BOOL: sa.Boolean,
    BIGINT: sa.BigInteger,
    DOUBLE: sa.Double,
    DECIMAL: lambda: sa.Numeric(*DECIMAL_PRECISION),
    TEXT: sa.Text,
    UUID: sa.Text,  # as dlt does
    TIMESTAMP: lambda: sa.DateTime(timezone=True),
    DATE: sa.Date,
    TIME: sa.Time,
    BINARY: sa.LargeBinary,
}


def new_column_type(kind: str, json_type: Callable[[], sa.types.TypeEngine]) -> sa.types.TypeEngine:
    """The type of a column created for ``kind``; a JSON column gets ``json_type()`` (the dialect's).

    Raises ``KeyError`` for ``other`` (the loader never creates such a column).
    """
    if kind == JSON:
        return json_type()
    return _NEW_TYPES[kind]()
