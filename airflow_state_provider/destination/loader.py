"""Loading rows into data tables: schema inference and evolution, append / replace / merge (DESIGN §7).

Rows are dicts. Their keys are normalized to snake_case exactly as dlt does
(:mod:`~airflow_state_provider.destination.naming`), nested dicts are flattened into
``parent__child`` columns at every level, and lists are stored whole in one JSON column:
unlike dlt, no child tables are created, so a resource always maps to exactly one table.

Column types come from the Python values (see :data:`KIND_OF_TYPE`); ``None`` never decides a type, so a
column appears with its first non-null value. Every table also gets dlt's ``_dlt_load_id`` and
``_dlt_id`` (random 10 bytes, base64 without padding). A value that does not fit its existing column
raises :class:`SchemaConflictError` before anything of its batch is written.

The loader never begins, commits or rolls back: the caller's transaction holds everything, DDL
included, so a rollback leaves the destination exactly as it was. After a rollback, discard the loader
(its picture of the tables may be stale).
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from operator import attrgetter, itemgetter
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from airflow_state_provider.destination import naming
from airflow_state_provider.destination.column_types import (
    BIGINT,
    BINARY,
    BOOL,
    DATE,
    DECIMAL,
    DECIMAL_PRECISION,
    DOUBLE,
    JSON,
    OTHER,
    TEXT,
    TIME,
    TIMESTAMP,
    UUID,
    kind_of_sa_type,
    new_column_type,
)
from airflow_state_provider.destination.dialects.base import Dialect
from airflow_state_provider.destination.store import (
    RESOURCE_TABLES,
    has_source_column,
    recorded_resource_tables,
    resource_tables_table,
    upgrade_resource_tables,
)
from airflow_state_provider.exceptions import InvalidRowError, PipelineStateError, SchemaConflictError

C_LOAD_ID = "_dlt_load_id"
C_ID = "_dlt_id"
#: dlt's name for an empty (or blank) key
EMPTY_KEY = "_empty"
# Staging-only names. snake_case never produces a trailing "_", so no data column can clash.
_SEQ = "_asp_seq_"
_ROW_NUMBER = "_asp_rn_"

WRITE_DISPOSITIONS = ("append", "replace", "merge")

#: who wrote rows to a table: (source key, resource name); the source is None for plain rows
Writer = tuple[str | None, str]

#: value kinds of the exact Python types; subclasses are resolved by :func:`value_kind`
KIND_OF_TYPE: dict[type, str] = {
    bool: BOOL,
    int: BIGINT,
    float: DOUBLE,
    str: TEXT,
    Decimal: DECIMAL,
    dt.datetime: TIMESTAMP,
    dt.date: DATE,
    dt.time: TIME,
    bytes: BINARY,
    uuid.UUID: UUID,
    list: JSON,
    tuple: JSON,
    dict: JSON,
}
_KIND_OF_SUBCLASS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (dt.datetime, TIMESTAMP),  # before date: datetime is a date
    (dt.date, DATE),
    (dt.time, TIME),
    (Decimal, DECIMAL),
    (uuid.UUID, UUID),
    (int, BIGINT),  # IntEnum
    (float, DOUBLE),
    (str, TEXT),  # StrEnum
    ((bytes, bytearray, memoryview), BINARY),
    ((Mapping, list, tuple), JSON),
)
_INT64 = (-(2**63), 2**63 - 1)


def value_kind(t: type) -> str | None:
    """The column kind a Python value of type ``t`` creates, or None if it cannot be stored."""
    kind = KIND_OF_TYPE.get(t)
    if kind is None:
        for base, candidate in _KIND_OF_SUBCLASS:
            if issubclass(t, base):
                return candidate
    return kind


def infer_kind(kinds: set[str]) -> str | None:
    """The kind of a new column whose first values have ``kinds``; None if they cannot share one."""
    if len(kinds) == 1:
        (kind,) = kinds
        return TEXT if kind == UUID else kind
    if kinds <= {BIGINT, DOUBLE, DECIMAL}:
        return DECIMAL if DECIMAL in kinds else DOUBLE
    if JSON in kinds and kinds <= {JSON, TEXT, BIGINT, DOUBLE, BOOL}:
        return JSON
    if kinds <= {TEXT, UUID}:
        return TEXT
    return None


# -- value conversion -----------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (dt.date, dt.time)):  # only reached by the stdlib fallback
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class _NestedTooDeep(ValueError):
    """A JSON value nested deeper than Python's recursion limit."""


def dump_json(value: Any) -> str:
    """JSON text of a column value (Decimal as string, bytes as base64, datetimes in ISO format)."""
    try:
        return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:  # integers beyond 64 bits, nesting over 254; anything else fails too
        try:
            return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))
        except RecursionError:
            raise _NestedTooDeep("it nests lists and dicts deeper than Python's recursion limit") from None


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _parse_timestamp(value: str) -> dt.datetime:
    return _aware(dt.datetime.fromisoformat(value))


def _exact_float(value: int) -> float:
    """An integer for a double column, refused when the double would round it (beyond 2**53)."""
    f = float(value)
    if int(f) != value:
        raise ValueError(f"a double keeps it as {int(f)}; store it in an integer or decimal column")
    return f


def _raw_value(raw: Sequence[Any], converted: Sequence[Any], value: Any) -> Any:
    """The value the resource gave for ``value``, one of ``converted`` (``raw`` converted one by one)."""
    for given, stored in zip(raw, converted, strict=True):
        if stored is value:
            return given
    return value


def _wall_time(value: dt.time) -> dt.time:
    """A naive time as is; an aware one as its UTC time of day, naive (as dlt normalizes it, on the
    date 1970-01-01 for a zone whose offset varies): the columns hold no offset, and dropping it
    would store another instant (10:00+02:00 is 08:00 UTC, not 10:00)."""
    if value.tzinfo is None:
        return value
    moment = dt.datetime.combine(_EPOCH_DAY, value).astimezone(dt.UTC)
    return moment.time()


_EPOCH_DAY = dt.date(1970, 1, 1)


def _enum_text(value: Any) -> str:
    return value.value if isinstance(value, Enum) else str(value)


# Which value kinds each column kind accepts, and how each is converted (None: as is).
_ACCEPTS: dict[str, dict[str, Callable[[Any], Any] | None]] = {
    BOOL: {BOOL: None},
    BIGINT: {BIGINT: None},
    DOUBLE: {DOUBLE: None, BIGINT: _exact_float},
    DECIMAL: {DECIMAL: None, BIGINT: Decimal, DOUBLE: lambda v: Decimal(repr(v))},
    TEXT: {TEXT: None, UUID: str, JSON: dump_json},
    JSON: {JSON: dump_json, TEXT: dump_json, BIGINT: dump_json, DOUBLE: dump_json, BOOL: dump_json},
    TIMESTAMP: {TIMESTAMP: _aware, TEXT: _parse_timestamp},
    DATE: {DATE: None, TEXT: dt.date.fromisoformat},
    TIME: {TIME: _wall_time, TEXT: lambda v: _wall_time(dt.time.fromisoformat(v))},
    BINARY: {BINARY: None},
    UUID: {UUID: None, TEXT: uuid.UUID},
}
# subclass instances (IntEnum, StrEnum, bytearray, ...) become their base type first
_TO_BASE: dict[str, Callable[[Any], Any]] = {
    BIGINT: int,
    DOUBLE: float,
    TEXT: _enum_text,
    BINARY: bytes,
    JSON: lambda v: dict(v) if isinstance(v, Mapping) else list(v),
}


#: the converters of a timestamp column that received stdlib datetimes only
_AWARE_ONLY: dict[type, Callable[[Any], Any] | None] = {dt.datetime: _aware}
_TZINFO = attrgetter("tzinfo")


def _compose(
    first: Callable[[Any], Any] | None, then: Callable[[Any], Any] | None
) -> Callable[[Any], Any] | None:
    if first is None or then is None:
        return first or then
    return lambda v: then(first(v))


#: the base64 alphabet in ASCII order: a counter written with it sorts like the number it counts
_ORDERED_B64 = "+/0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_B64_PAIRS = [a + b for a in _ORDERED_B64 for b in _ORDERED_B64]
_COUNTER_SPAN = 64**5


def new_dlt_ids(n: int) -> list[str]:
    """``n`` unique ``_dlt_id`` values in dlt's shape: 14 base64 characters.

    Each call draws a random 9-character prefix (54 bits) and appends a 5-character counter, so the ids
    of one batch sort together: the UNIQUE index on ``_dlt_id`` (PostgreSQL, SQLite) takes a batch as one
    ordered run instead of ``n`` random inserts (1M rows into SQLite: 14.6 s -> 7.2 s), and generating
    them costs ~0.2 us each instead of ~1.7 us. Two ids collide only if two calls draw the same prefix.
    """
    ids: list[str] = []
    while len(ids) < n:
        prefix = base64.b64encode(secrets.token_bytes(7)).decode("ascii")[:9]
        want = min(n - len(ids), _COUNTER_SPAN)
        # the prefix and the counter's first 3 characters, as many as needed; then one list display
        # appends the last 2 (4096 ids per head): ~0.2 us per id, not 0.6
        heads = (prefix + a + b + c for a in _ORDERED_B64 for b in _ORDERED_B64 for c in _ORDERED_B64)
        chunk = [head + pair for head in itertools.islice(heads, -(-want // 4096)) for pair in _B64_PAIRS]
        del chunk[want:]
        ids += chunk
    return ids


# -- DDL ------------------------------------------------------------------------------------------


class _AddColumn(sa.schema.ExecutableDDLElement):
    """``ALTER TABLE t ADD COLUMN c type``; the column must already be appended to ``table``."""

    inherit_cache = False

    def __init__(self, table: sa.Table, column: sa.Column) -> None:
        self.table = table
        self.column = column


@compiles(_AddColumn)
def _compile_add_column(element: _AddColumn, compiler: Any, **kw: Any) -> str:
    table = compiler.preparer.format_table(element.table)
    return f"ALTER TABLE {table} ADD COLUMN {compiler.get_column_specification(element.column)}"


def _column(name: str, type_: sa.types.TypeEngine, **kw: Any) -> sa.Column:
    # quote=True: always quoted, so words reserved only in one database (DuckDB's AT, PIVOT...) work too
    return sa.Column(name, type_, quote=True, **kw)


def _table(name: str, columns: Iterable[sa.Column], schema: str | None) -> sa.Table:
    return sa.Table(name, sa.MetaData(), *columns, schema=schema, quote=True, quote_schema=True)


class _DecimalExtent:
    """The most integer, fractional and significant digits seen in a column's decimals, and a value
    showing each (for the error message)."""

    def __init__(self) -> None:
        self.int_digits = self.frac_digits = self.significant = 0
        self.worst: dict[str, Decimal] = {}

    def add(self, value: Decimal) -> None:
        i, f, n = _decimal_digits(value)
        if i > self.int_digits:
            self.int_digits, self.worst["int"] = i, value
        if f > self.frac_digits:
            self.frac_digits, self.worst["frac"] = f, value
        if n > self.significant:
            self.significant, self.worst["significant"] = n, value


# -- the loader -----------------------------------------------------------------------------------


@dataclass(eq=False)
class _TableState:
    name: str
    disposition: str
    primary_key: tuple[str, ...]
    merge_key: tuple[str, ...]
    resource_name: str | None
    #: column -> kind, once reflected (None before)
    kinds: dict[str, str] | None = None
    #: the table as it is in the database, None while it does not exist
    table: sa.Table | None = None
    #: raw key -> (normalized key, column name), per nesting path
    names: dict[tuple[str, ...], dict[Any, tuple[str, str]]] = field(default_factory=dict)
    #: top-level keys that are their own column name: rows with only these are buffered as copies
    plain_keys: set[str] = field(default_factory=set)
    buffer: list[dict[str, Any]] = field(default_factory=list)
    emptied: bool = False
    staging: sa.Table | None = None
    seq: int = 0
    #: rows loaded in the current chunk
    loaded: int = 0
    #: this transaction holds the dialect's DDL lock on the table (see Dialect.lock_table_ddl)
    ddl_locked: bool = False
    #: (precision, scale) of decimal columns about to be created, sized to fit their first values
    decimal_types: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: (source, resource) pairs that wrote rows to it since they were last moved into the table
    #: (staging mode): two sources of one run may have resources of the same name
    writers: set[Writer] = field(default_factory=set)


class Loader:
    """Streams rows into the data tables of one dataset, inside the caller's transaction.

    ``write`` buffers up to ``batch_size`` normalized rows per table and writes full batches through the
    dialect's bulk path; ``finish`` writes the rest, applies merges and replaces, and returns the rows
    loaded per table. A loader may then take the next chunk (checkpoint) on the same connection; what it
    knows about each table, and that a ``replace`` table was emptied, lasts for its whole lifetime.
    """

    def __init__(
        self,
        conn: sa.Connection,
        dialect: Dialect,
        dataset: str,
        load_id: str,
        *,
        pipeline_name: str,
        batch_size: int = 10_000,
        stage: bool = False,
        create_indexes: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.conn = conn
        self.dialect = dialect
        self.dataset = dataset
        self.load_id = load_id
        #: load ids under which this loader moved rows into tables: rows of earlier checkpoints of this
        #: run, which merge_key deletes spare
        self._moved_ids: set[str] = set()
        #: rows of every disposition wait in session staging tables until ``finish`` moves them
        self.stage = stage
        self.pipeline_name = pipeline_name
        self.batch_size = batch_size
        #: a UNIQUE index on ``_dlt_id`` of the tables this loader creates (None: the dialect's default)
        self.create_indexes = dialect.create_indexes if create_indexes is None else create_indexes
        #: normalized names of the tables this loader created, changed or wrote rows to
        self.tables_written: set[str] = set()
        #: (source, resource, table) triples loaded, and those already in the resource-to-table map
        self._resource_tables: set[tuple[str | None, str, str]] = set()
        self._recorded: set[tuple[str | None, str, str]] | None = None
        self._tables: dict[str, _TableState] = {}
        self._table_names: dict[str, str] = {}
        self._chunk: dict[str, None] = {}  # tables written since the last finish(), in order
        self._dataset_ready = False
        self._max_length = dialect.identifier_length(dialect.engine)
        self._json_as_text = dialect.json_as_text

    # -- public API -------------------------------------------------------------------------------
    def write(
        self,
        table_name: str,
        rows: Iterable[dict],
        *,
        write_disposition: str = "append",
        primary_key: str | Sequence[str] | None = None,
        merge_key: str | Sequence[str] | None = None,
        resource_name: str | None = None,
        source_name: str | None = None,
    ) -> None:
        """Buffer ``rows`` for ``table_name``, writing a batch whenever ``batch_size`` rows are buffered.

        The first write of a table fixes its disposition and keys. ``merge`` needs a primary key.
        ``resource_name`` and ``source_name`` (its source's key in the state) go to the
        resource-to-table map.
        """
        state = self._table(table_name, write_disposition, primary_key, merge_key, resource_name)
        self._chunk[state.name] = None
        if resource_name is not None:
            self._resource_tables.add((source_name, resource_name, state.name))
        state.writers.add((source_name, resource_name or table_name))
        flatten, batch_size = self._flatten, self.batch_size
        plain = state.plain_keys.issuperset
        if type(rows) is list and _all_dicts(rows) and plain(itertools.chain.from_iterable(rows)):
            # a page of dicts whose keys are all their own column names (the common case, once the first
            # rows taught the names): copied in C, batch by batch, without a Python step per row
            start = 0
            while start < len(rows):
                room = batch_size - len(state.buffer)
                state.buffer.extend(map(dict.copy, rows[start : start + room]))
                start += room
                if len(state.buffer) >= batch_size:
                    self._flush(state)
            return
        buffer = state.buffer
        for row in rows:
            if type(row) is dict and plain(row):
                # every key is its own column: a shallow copy is the flattened row, unless a value is a
                # dict, which _flush flattens (only such rows can hold dict values)
                buffer.append(row.copy())
            else:
                if not isinstance(row, dict):
                    raise PipelineStateError(
                        f"Pipeline {self.pipeline_name!r}: table {state.name!r} received a row of type "
                        f"{type(row).__name__} ({_preview(row)}); rows must be dicts. Yield dicts, or lists "
                        "of dicts, from the resource."
                    )
                out: dict[str, Any] = {}
                flatten(state, row, (), out)
                buffer.append(out)
            if len(buffer) >= batch_size:
                self._flush(state)
                buffer = state.buffer

    def finish(self, resources: set[Writer] | None = None) -> dict[str, int]:
        """Write what is buffered, apply replaces and merges; rows loaded per table since the last call.

        Merge counts the rows inserted after deduplication. In staging mode, rows are moved from the
        staging tables only for tables whose writers since the last move are all in ``resources``
        ((source, resource) pairs; ``None``: every table; ``replace`` tables only then); the others
        keep waiting.
        """
        counts: dict[str, int] = {}
        for name in list(self._chunk):
            state = self._tables[name]
            self._flush(state)
            if resources is not None and not self._movable(state, resources):
                continue
            if state.disposition == "replace" and not state.emptied:
                self._reflect(state)
                self._empty(state)
            if state.staging is not None:
                state.loaded += self._merge(state) if state.disposition == "merge" else self._move(state)
            counts[name] = state.loaded
            state.loaded = 0
            state.writers.clear()
            del self._chunk[name]
        self._record_resource_tables()
        for state in self._tables.values():
            state.ddl_locked = False  # the caller commits next: the lock ends with the transaction
        return counts

    def _record_resource_tables(self) -> None:
        """Add the new (resource, table) pairs to the resource-to-table map, in this transaction."""
        if not self._resource_tables:
            return  # nothing loaded (a run with no new rows): no catalog lookups
        if self._recorded is not None and self._resource_tables <= self._recorded:
            return
        self._ensure_dataset()
        table = resource_tables_table(sa.MetaData(), self.dataset)
        if self._recorded is None:
            exists = sa.inspect(self.conn).has_table(RESOURCE_TABLES, schema=self.dataset)
            current = exists and has_source_column(self.conn, self.dataset)
            if not current and self.dialect.lock_table_ddl(self.conn, self.dataset, RESOURCE_TABLES):
                # only a first load (or the first after an upgrade) takes the lock: another may have
                # created or upgraded the table meanwhile
                exists = sa.inspect(self.conn).has_table(RESOURCE_TABLES, schema=self.dataset)
            if not exists:
                self.conn.execute(sa.schema.CreateTable(table))
            elif not current:
                upgrade_resource_tables(self.conn, self.dataset)
            known = recorded_resource_tables(self.conn, self.dataset)
            self._recorded = {
                (k.source_name, k.resource_name, k.table_name)
                for k in known
                if k.pipeline_name == self.pipeline_name
            }
        new = sorted(self._resource_tables - self._recorded, key=lambda k: tuple(x or "" for x in k))
        if new:
            self.conn.execute(
                sa.insert(table),
                [
                    {
                        "pipeline_name": self.pipeline_name,
                        "source_name": s,
                        "resource_name": r,
                        "table_name": t,
                        "_dlt_load_id": self.load_id,
                    }
                    for s, r, t in new
                ],
            )
            self._recorded.update(new)

    def _movable(self, state: _TableState, resources: set[Writer]) -> bool:
        return state.disposition != "replace" and state.writers <= resources

    def flushable(self, resources: set[Writer]) -> set[Writer]:
        """Those of ``resources`` whose tables :meth:`finish` would move with ``resources``: a table also
        written by a resource outside the set keeps all of its writers waiting."""
        ready = set(resources)
        while True:
            blocked = {
                w
                for state in self._tables.values()
                if state.writers & ready and not self._movable(state, ready)
                for w in state.writers
            }
            if not blocked & ready:
                return ready
            ready -= blocked

    def pending(self, resources: set[Writer]) -> bool:
        """Whether rows of ``resources`` wait to be moved into their tables."""
        return any(state.writers & resources for state in self._tables.values())

    def _move(self, state: _TableState) -> int:
        """Insert the staged rows into the table under the current load id; drop the staging table."""
        target, staging = state.table, state.staging
        assert target is not None and staging is not None
        names = [c.name for c in target.c]
        load_id = sa.literal(self.load_id, sa.Text()).label(C_LOAD_ID)
        rows = sa.select(*(load_id if n == C_LOAD_ID else staging.c[n] for n in names))
        insert = sa.insert(target).from_select(names, rows).execution_options(preserve_rowcount=True)
        moved = self.conn.execute(insert).rowcount
        self.conn.execute(sa.schema.DropTable(staging))
        state.staging = None
        self._moved_ids.add(self.load_id)
        return moved

    def restamp(self, new_load_id: str) -> None:
        """Move the rows written under the current load id to ``new_load_id``, and use it from now on."""
        old = self.load_id
        if new_load_id != old:
            for name in sorted(self.tables_written):
                state = self._tables[name]
                for table in (state.table, state.staging):
                    if table is not None:
                        stmt = sa.update(table).where(table.c[C_LOAD_ID] == old)
                        self.conn.execute(stmt.values({C_LOAD_ID: new_load_id}))
            if self._recorded:
                recorded = resource_tables_table(sa.MetaData(), self.dataset)
                stmt = sa.update(recorded).where(
                    recorded.c.pipeline_name == self.pipeline_name, recorded.c[C_LOAD_ID] == old
                )
                self.conn.execute(stmt.values({C_LOAD_ID: new_load_id}))
            if old in self._moved_ids:
                self._moved_ids.discard(old)
                self._moved_ids.add(new_load_id)
        self.load_id = new_load_id

    # -- tables -----------------------------------------------------------------------------------
    def _table(
        self,
        table_name: str,
        disposition: str,
        primary_key: str | Sequence[str] | None,
        merge_key: str | Sequence[str] | None,
        resource_name: str | None,
    ) -> _TableState:
        name = self._table_names.get(table_name)
        if name is None:
            name = self._normalize(table_name, what="table name", table=table_name)
            self._table_names[table_name] = name
        state = self._tables.get(name)
        if state is not None:
            return state
        if disposition not in WRITE_DISPOSITIONS:
            raise PipelineStateError(
                f"Pipeline {self.pipeline_name!r}: table {name!r} has write_disposition {disposition!r}; "
                f"use one of {', '.join(WRITE_DISPOSITIONS)}."
            )
        pk = self._key_columns(primary_key, name)
        mk = self._key_columns(merge_key, name)
        if disposition == "merge" and not pk and not mk:
            raise PipelineStateError(
                f"Pipeline {self.pipeline_name!r}: table {name!r} has write_disposition 'merge' but no "
                "primary_key or merge_key; give the resource a primary_key (a column or tuple of columns)."
            )
        state = _TableState(name, disposition, pk, mk, resource_name)
        self._tables[name] = state
        return state

    def _key_columns(self, key: str | Sequence[str] | None, table: str) -> tuple[str, ...]:
        if not key:
            return ()
        keys = (key,) if isinstance(key, str) else tuple(key)
        return tuple(self._normalize(k, what="key column", table=table) for k in keys)

    def _normalize(self, name: Any, *, what: str, table: str) -> str:
        if not isinstance(name, str):
            raise PipelineStateError(
                f"Pipeline {self.pipeline_name!r}: table {table!r}: {what} {name!r} is a "
                f"{type(name).__name__}; names must be strings."
            )
        try:
            return naming.normalize_path(name, self._max_length)
        except naming.InvalidIdentifierError as e:
            raise PipelineStateError(
                f"Pipeline {self.pipeline_name!r}: table {table!r}: {what} {name!r} is not usable: {e}. "
                "Rename it in the resource."
            ) from None

    def _flatten(self, state: _TableState, row: dict, path: tuple[str, ...], out: dict[str, Any]) -> None:
        if not path:
            try:
                self._flatten_into(state, row, path, out)
            except RecursionError:
                raise InvalidRowError(
                    f"Pipeline {self.pipeline_name!r}: table {self.dataset}.{state.name}: a row nests dicts "
                    f"deeper than the loader follows ({_row_ref(state, row)}). Nothing of this load is "
                    "committed. Flatten it in the resource, or store the deep part as a JSON string."
                ) from None
            return
        self._flatten_into(state, row, path, out)

    def _flatten_into(
        self, state: _TableState, row: dict, path: tuple[str, ...], out: dict[str, Any]
    ) -> None:
        names = state.names.get(path)
        if names is None:
            names = state.names[path] = {}
        for key, value in row.items():
            entry = names.get(key)
            if entry is None:
                entry = names[key] = self._column_name(state, path, key)
            if type(value) is dict:  # exactly dict, as dlt: other mappings are stored as JSON
                self._flatten_into(state, value, (*path, entry[0]), out)
            elif entry[1] in out:
                raise self._collision(state, entry[1], out)
            else:
                out[entry[1]] = value

    def _column_name(self, state: _TableState, path: tuple[str, ...], key: Any) -> tuple[str, str]:
        if isinstance(key, str) and not key.strip():
            part = EMPTY_KEY
        else:
            part = self._normalize(key, what="column", table=state.name)
        if not path:
            if part == key:
                state.plain_keys.add(part)
            return part, part
        return part, naming.make_path(*path, part, max_length=self._max_length)

    def _ensure_dataset(self) -> None:
        if self._dataset_ready:
            return
        if self.dialect.creates_schemas and not self.dialect.has_dataset(self.conn, self.dataset):
            self.dialect.create_dataset(self.conn, self.dataset)
        self._dataset_ready = True

    def _reflect(self, state: _TableState) -> dict[str, str]:
        """Learn the table's columns from the database, once per loader; the column kinds."""
        if state.kinds is not None:
            return state.kinds
        self._ensure_dataset()
        types = self._existing_columns(state.name)
        state.kinds = {}
        if types is not None:
            columns = [_column(n, t) for n, t in types.items()]
            state.table = _table(state.name, columns, self.dataset)
            state.kinds = {n: kind_of_sa_type(t) for n, t in types.items()}
        return state.kinds

    def _existing_columns(self, name: str) -> dict[str, sa.types.TypeEngine] | None:
        return self.dialect.existing_columns(self.conn, self.dataset, name)

    def _ensure_columns(self, state: _TableState, new: dict[str, str]) -> None:
        """Create the table, or add the columns it lacks (schema evolution)."""
        kinds = state.kinds
        assert kinds is not None
        if not state.ddl_locked and self.dialect.lock_table_ddl(self.conn, self.dataset, state.name):
            # a concurrent transaction may have created or extended the table while we waited
            state.ddl_locked = True
            if state.staging is None:
                state.kinds, state.table = None, None
                kinds = self._reflect(state)
                new = {n: k for n, k in new.items() if n not in kinds}
                if state.table is not None and not new and {C_LOAD_ID, C_ID} <= kinds.keys():
                    return
        if state.table is None:
            columns = [_column(n, self._new_type(state, n, k)) for n, k in new.items()]
            columns += [
                _column(C_LOAD_ID, sa.Text(), nullable=False),
                _column(C_ID, sa.Text(), nullable=False, unique=self.create_indexes),
            ]
            state.table = _table(state.name, columns, self.dataset)
            self.conn.execute(sa.schema.CreateTable(state.table))
            kinds.update({c.name: kind_of_sa_type(c.type) for c in columns})
            self.tables_written.add(state.name)
            return
        missing = {c: TEXT for c in (C_LOAD_ID, C_ID) if c not in kinds}
        for name, kind in {**new, **missing}.items():
            for table in (state.table, state.staging):
                if table is not None:
                    column = _column(name, self._new_type(state, name, kind))
                    table.append_column(column)
                    self.conn.execute(_AddColumn(table, column))
            kinds[name] = kind_of_sa_type(state.table.c[name].type)
            self.tables_written.add(state.name)

    def _empty(self, state: _TableState) -> None:
        if state.table is not None:
            self.conn.execute(sa.delete(state.table))
            self.tables_written.add(state.name)
        state.emptied = True

    # -- batches ----------------------------------------------------------------------------------
    def _flush(self, state: _TableState) -> None:
        rows, state.buffer = state.buffer, []
        if not rows:
            return
        self._reflect(state)
        rows, columns, batch, seen = self._columns(state, rows)
        new, values = self._checked(state, rows, columns, batch, seen)

        self._ensure_columns(state, new)
        if state.disposition == "replace" and not state.emptied and not self.stage:
            self._empty(state)
        n = len(rows)
        values += [[self.load_id] * n, new_dlt_ids(n)]
        columns += [C_LOAD_ID, C_ID]
        target = state.table
        if state.disposition == "merge" or self.stage:
            target = self._staging(state)
            values.append(list(range(state.seq, state.seq + n)))
            columns.append(_SEQ)
            state.seq += n
        else:
            state.loaded += n
        assert target is not None
        try:
            self.dialect.insert_columns(self.conn, target, columns, values)
        except Exception as exc:
            culprit = self._bad_text(state, columns, values, rows)
            if culprit is not None:
                raise culprit from exc
            raise
        self.tables_written.add(state.name)

    def _checked(
        self,
        state: _TableState,
        rows: list[dict],
        columns: list[str],
        batch: list[Sequence[Any]],
        seen: list[set[type]],
    ) -> tuple[dict[str, str], list[Sequence[Any]]]:
        """Decide and check every column before anything of the batch is written: (the kinds of the new
        columns, the values converted). Raises :class:`SchemaConflictError` naming the first misfit."""
        assert state.kinds is not None
        new: dict[str, str] = {}
        values: list[Sequence[Any]] = []
        for name, column, types in zip(columns, batch, seen, strict=True):
            kinds = {t: self._value_kind(state, name, t, rows) for t in types}
            kind = state.kinds.get(name)
            if kind is None:
                inferred = infer_kind(set(kinds.values()))
                if inferred is None:
                    found = sorted(set(kinds.values()))
                    raise self._conflict(state, name, found[0], found[1], None, new_column=True)
                kind = new[name] = kind_of_sa_type(new_column_type(inferred, self.dialect.json_column_type))
            converted = self._convert(state, name, kind, kinds, column)
            if kind == DECIMAL:
                self._check_decimals(state, name, converted, column, new=name in new)
            problem = self.dialect.stored_value_problem(kind, converted)
            if problem is not None:
                raw = _raw_value(column, converted, problem[0])
                raise self._conflict(state, name, kind, type(raw).__name__, raw, reason=problem[1])
            values.append(converted)
        if state.disposition == "merge":
            self._check_keys(state, columns, values)
        return new, values

    def _columns(
        self, state: _TableState, rows: list[dict]
    ) -> tuple[list[dict], list[str], list[Sequence[Any]], list[set[type]]]:
        """The batch column by column: (rows, names, values, non-null value types).

        Columns come in the order their first non-null value appears (row by row, key by key); columns
        with only nulls, and dlt's own columns, are left out. Rows buffered as copies that hold a dict
        value are flattened here first.
        """
        while True:
            names, batch = _transpose(rows)
            seen = [set(map(type, column)) for column in batch]
            if not any(dict in types for types in seen):
                break
            rows = [self._flattened(state, row) for row in rows]
        firsts: dict[int, tuple[int, int]] = {}
        for i, (name, column, types) in enumerate(zip(names, batch, seen, strict=True)):
            types.discard(type(None))
            if types and name not in (C_LOAD_ID, C_ID):  # dlt's columns are ours to set
                first = next(r for r, v in enumerate(column) if v is not None)
                firsts[i] = (first, list(rows[first]).index(name))
        order = sorted(firsts, key=firsts.__getitem__)
        return rows, [names[i] for i in order], [batch[i] for i in order], [seen[i] for i in order]

    def _flattened(self, state: _TableState, row: dict) -> dict:
        if not any(type(value) is dict for value in row.values()):
            return row
        out: dict[str, Any] = {}
        self._flatten(state, row, (), out)
        return out

    def _value_kind(self, state: _TableState, column: str, t: type, rows: list[dict]) -> str:
        kind = value_kind(t)
        if kind is None:
            example = next(r[column] for r in rows if type(r.get(column)) is t)
            raise PipelineStateError(
                f"Pipeline {self.pipeline_name!r}: column {column!r} of table {state.name!r} got a value "
                f"of type {t.__name__} ({_preview(example)}), which cannot be stored. Convert it in the "
                "resource to str, int, float, bool, Decimal, datetime, date, time, bytes, UUID, dict or list."
            )
        return kind

    def _convert(
        self, state: _TableState, column: str, kind: str, kinds: dict[type, str], values: Sequence[Any]
    ) -> Sequence[Any]:
        """``values`` converted to what a ``kind`` column stores; SchemaConflictError if one does not fit."""
        if kind == OTHER:  # a column of a type we do not manage: the database decides
            return values
        converters = self._converters(state, column, kind, kinds, values)
        if converters == _AWARE_ONLY and None not in set(map(_TZINFO, filter(None, values))):
            return values  # datetimes that all carry a time zone already: nothing to convert
        if any(converters.values()):
            try:
                if len(converters) == 1:
                    (convert,) = converters.values()
                    assert convert is not None
                    values = [None if v is None else convert(v) for v in values]
                else:
                    values = [None if v is None else _apply(converters[type(v)], v) for v in values]
            except (ValueError, TypeError, ArithmeticError):
                self._raise_unconvertible(state, column, kind, kinds, converters, values)
        if kind == BIGINT:
            self._check_int64(state, column, values)
        return values

    def _converters(
        self, state: _TableState, column: str, kind: str, kinds: dict[type, str], values: Sequence[Any]
    ) -> dict[type, Callable[[Any], Any] | None]:
        """The converter of each value type into a ``kind`` column (None: as is)."""
        accepts = _ACCEPTS[kind]
        if kind == JSON and not self._json_as_text:
            accepts = dict.fromkeys(accepts)
        converters: dict[type, Callable[[Any], Any] | None] = {}
        for t, value_kind_ in kinds.items():
            if value_kind_ not in accepts:
                example = next(v for v in values if type(v) is t)
                raise self._conflict(state, column, kind, value_kind_, example)
            to_base = _TO_BASE.get(value_kind_) if t not in KIND_OF_TYPE else None
            converters[t] = _compose(to_base, accepts[value_kind_])
        return converters

    def _check_int64(self, state: _TableState, column: str, values: Sequence[Any]) -> None:
        try:
            ints = values
            low, high = min(ints), max(ints)  # no None among them: no filtered copy
        except (TypeError, ValueError):  # None among them (or no values)
            ints = [v for v in values if v is not None]
            low, high = (min(ints), max(ints)) if ints else (0, 0)
        if ints and (low < _INT64[0] or high > _INT64[1]):
            bad = next(v for v in ints if not _INT64[0] <= v <= _INT64[1])
            raise self._conflict(state, column, BIGINT, "integer beyond 64 bits", bad)

    def _raise_unconvertible(
        self,
        state: _TableState,
        column: str,
        kind: str,
        kinds: dict[type, str],
        converters: dict[type, Callable[[Any], Any] | None],
        values: Sequence[Any],
    ) -> None:
        for v in values:
            if v is None:
                continue
            try:
                _apply(converters[type(v)], v)
            except (ValueError, TypeError, ArithmeticError) as e:
                if isinstance(e, _NestedTooDeep):
                    raise InvalidRowError(
                        f"Pipeline {self.pipeline_name!r}: column {column!r} of table "
                        f"{self.dataset}.{state.name}: a row has a {type(v).__name__} value that {e}."
                        " Nothing of this load is committed. Flatten it in the resource, or store it as"
                        " a JSON string."
                    ) from None
                raise self._conflict(state, column, kind, kinds[type(v)], v, reason=str(e)) from e
        raise AssertionError("a conversion failed but no value fails again")  # pragma: no cover

    def _check_keys(self, state: _TableState, columns: list[str], values: list[Sequence[Any]]) -> None:
        for key in state.primary_key:
            if key not in columns or any(v is None for v in values[columns.index(key)]):
                raise PipelineStateError(
                    f"Pipeline {self.pipeline_name!r}: table {state.name!r} is merged on primary key "
                    f"{', '.join(state.primary_key)} but a row has no value for {key!r}. Every row of a "
                    "merge table needs its primary key."
                )

    def _conflict(
        self,
        state: _TableState,
        column: str,
        expected: str,
        found: str,
        value: Any,
        *,
        new_column: bool = False,
        reason: str | None = None,
    ) -> SchemaConflictError:
        where = f"column {column!r} of table {self.dataset}.{state.name}"
        if new_column:
            what = f"new {where} got values of incompatible types {expected} and {found} in one batch"
        else:
            what = f"{where} has type {expected} but a row has a value of type {found} ({_preview(value)})"
            if reason:
                what += f": {reason}"
        return SchemaConflictError(
            f"Pipeline {self.pipeline_name!r}: {what}. Nothing of this load is committed. Convert the "
            "value in the resource, or load it under another column name."
        )

    def _collision(self, state: _TableState, column: str, out: dict[str, Any]) -> SchemaConflictError:
        """Two keys of one row normalize to ``column``: name both (re-walking the row's keys)."""
        keys = [
            "".join(f"[{k!r}]" for k in (*path, key))
            for path, names in state.names.items()
            for key, (_, name) in names.items()
            if name == column
        ]
        both = " and ".join(keys[:2]) if len(keys) >= 2 else f"{keys[0] if keys else column!r} twice"
        return SchemaConflictError(
            f"Pipeline {self.pipeline_name!r}: table {self.dataset}.{state.name}: the row keys {both} both "
            f"normalize to column {column!r}, so one value would be lost. Nothing of this load is committed. "
            "Rename one of the keys in the resource."
        )

    def _new_type(self, state: _TableState, name: str, kind: str) -> sa.types.TypeEngine:
        sized = state.decimal_types.get(name) if kind == DECIMAL else None
        if sized is not None:
            return sa.Numeric(*sized)
        return new_column_type(kind, self.dialect.json_column_type)

    def _check_decimals(
        self, state: _TableState, column: str, values: Sequence[Any], raw: Sequence[Any], *, new: bool
    ) -> None:
        """Decimals are stored exactly or refused: each value must fit the column's precision and scale
        (a new column is sized to fit them, from dlt's (38, 9) up) and the database's limits. ``raw``:
        the values as the resource gave them (an error names the type and value it gave)."""
        extent = _DecimalExtent()
        for v in values:
            if v is None:
                continue
            if not v.is_finite():
                given = _raw_value(raw, values, v)
                what = f"{type(given).__name__} that is not a finite number"
                raise self._conflict(state, column, DECIMAL, what, given)
            extent.add(v)
        limit = self.dialect.decimal_significant_digits
        if limit is not None and extent.significant > limit:
            why = f"it has {extent.significant} significant digits; {self.dialect.name} keeps {limit} exactly"
            given = _raw_value(raw, values, extent.worst["significant"])
            raise self._conflict(state, column, DECIMAL, type(given).__name__, given, reason=why)
        if new:
            state.decimal_types[column] = self._new_decimal_type(state, column, extent, raw, values)
            return
        assert state.table is not None
        column_type = state.table.c[column].type
        precision = getattr(column_type, "precision", None)
        if precision is None:
            return  # an unconstrained numeric column keeps every digit
        scale = getattr(column_type, "scale", None) or 0
        if extent.frac_digits > scale:
            found = extent.worst["frac"]
            why = f"it has {extent.frac_digits} fractional digits, over the column's scale of {scale}"
        elif extent.int_digits > precision - scale:
            found = extent.worst["int"]
            why = f"it has {extent.int_digits} integer digits, over the {precision - scale} the column allows"
        else:
            return
        given = _raw_value(raw, values, found)
        raise self._conflict(
            state, column, f"numeric({precision}, {scale})", type(given).__name__, given, reason=why
        )

    def _new_decimal_type(
        self,
        state: _TableState,
        column: str,
        extent: _DecimalExtent,
        raw: Sequence[Any],
        values: Sequence[Any],
    ) -> tuple[int, int]:
        """(precision, scale) of a new decimal column holding values of ``extent``, from dlt's (38, 9) up;
        :class:`SchemaConflictError` if the database's largest precision is too small."""
        int_digits, frac_digits = extent.int_digits, extent.frac_digits
        scale = max(DECIMAL_PRECISION[1], frac_digits)
        precision = max(DECIMAL_PRECISION[0], int_digits + scale)
        maximum = self.dialect.max_decimal_precision
        if maximum is not None and precision > maximum:
            bad = extent.worst["int"] if int_digits + DECIMAL_PRECISION[1] > maximum else extent.worst["frac"]
            given = _raw_value(raw, values, bad)
            raise self._conflict(
                state,
                column,
                DECIMAL,
                type(given).__name__,
                given,
                reason=f"{int_digits} integer and {frac_digits} fractional digits need a precision of "
                f"{precision}, over {self.dialect.name}'s maximum of {maximum}",
            )
        return precision, scale

    def _bad_text(
        self, state: _TableState, columns: list[str], values: list[Sequence[Any]], rows: list[dict]
    ) -> InvalidRowError | None:
        """After a failed insert: the first text value no database takes (a lone surrogate), or that
        PostgreSQL refuses (NUL), as an error naming the column and the row; None if there is none."""
        no_nul = not self.dialect.text_holds_nul
        for name, column in zip(columns, values, strict=False):
            if name in (C_LOAD_ID, C_ID):
                continue
            for i, v in enumerate(column):
                if not isinstance(v, str):
                    continue
                problem = None
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError as e:
                    problem = f"a lone surrogate {v[e.start]!r} at character {e.start}"
                if problem is None and no_nul and ("\x00" in v or "\\u0000" in v):
                    problem = "a NUL character, which PostgreSQL text cannot hold"
                if problem is None:
                    continue
                row = rows[i] if i < len(rows) else {}
                return InvalidRowError(
                    f"Pipeline {self.pipeline_name!r}: column {name!r} of table {self.dataset}.{state.name}: "
                    f"{_row_ref(state, row)} has {problem}. Nothing of this load is committed. Clean the "
                    "text in the resource."
                )
        return None

    # -- merge ------------------------------------------------------------------------------------
    def _staging(self, state: _TableState) -> sa.Table:
        """A temporary table shaped like the target, plus the row order; dropped by :meth:`_merge`."""
        if state.staging is None:
            assert state.table is not None
            name = sa.sql.quoted_name(f"_asp_stage_{secrets.token_hex(4)}", quote=True)
            order = sa.cast(sa.null(), sa.BigInteger).label(_SEQ)
            shape = sa.select(*state.table.c, order).where(sa.false())
            self.conn.execute(sa.schema.CreateTableAs(shape, name, temporary=True))
            columns = [_column(c.name, c.type) for c in state.table.c]
            state.staging = _table(name, [*columns, _column(_SEQ, sa.BigInteger())], None)
        return state.staging

    def _merge(self, state: _TableState) -> int:
        """Upsert the staged rows: delete matching keys, insert the last row of each primary key (all
        staged rows when only a merge_key is given)."""
        target, staging = state.table, state.staging
        assert target is not None and staging is not None
        for keys, partition in ((state.primary_key, False), (state.merge_key, True)):
            missing = [k for k in keys if k not in staging.c]
            if missing:
                raise PipelineStateError(
                    f"Pipeline {self.pipeline_name!r}: table {state.name!r} is merged on "
                    f"{', '.join(keys)} but no row has {', '.join(missing)}."
                )
            if keys:
                if self.dialect.indexes_staging:
                    index_name = sa.sql.quoted_name(f"{staging.name}_{len(staging.indexes)}", quote=True)
                    sa.Index(index_name, *(staging.c[k] for k in keys)).create(self.conn)
                match = sa.and_(*(staging.c[k] == target.c[k] for k in keys))
                delete = sa.delete(target).where(sa.exists().where(match))
                if partition:
                    # a merge_key partition is replaced once per run: rows that earlier checkpoints of
                    # this run moved into it stay
                    delete = delete.where(target.c[C_LOAD_ID].not_in(sorted(self._moved_ids)))
                self.conn.execute(delete)
        names = [c.name for c in target.c]
        # rows staged before a checkpoint carry an older id: they are committed with this load
        load_id = sa.literal(self.load_id, sa.Text()).label(C_LOAD_ID)
        if state.primary_key:
            rank = sa.func.row_number().over(
                partition_by=[staging.c[k] for k in state.primary_key], order_by=staging.c[_SEQ].desc()
            )
            ranked = sa.select(*(staging.c[n] for n in names), rank.label(_ROW_NUMBER)).subquery()
            rows = sa.select(*(load_id if n == C_LOAD_ID else ranked.c[n] for n in names)).where(
                ranked.c[_ROW_NUMBER] == 1
            )
        else:
            # merge_key only (dlt's delete-insert): every staged row replaces the deleted partition
            rows = sa.select(*(load_id if n == C_LOAD_ID else staging.c[n] for n in names))
        insert = sa.insert(target).from_select(names, rows).execution_options(preserve_rowcount=True)
        inserted = self.conn.execute(insert).rowcount
        self.conn.execute(sa.schema.DropTable(staging))
        state.staging = None
        self._moved_ids.add(self.load_id)
        return inserted


def _transpose(rows: list[dict]) -> tuple[list[str], list[Sequence[Any]]]:
    """Column names (in order of first appearance) and the values of each column (None where a row lacks
    the key). Rows that all have the same keys take a path that runs in C."""
    names = list(rows[0])
    if sum(map(len, rows)) == len(names) * len(rows):
        try:
            return names, [list(map(itemgetter(name), rows)) for name in names]
        except KeyError:
            pass  # same sizes, other keys
    names = list(dict.fromkeys(itertools.chain.from_iterable(rows)))
    return names, [[row.get(name) for row in rows] for name in names]


def _all_dicts(rows: list[Any]) -> bool:
    """Whether every item of ``rows`` is exactly a dict (one C pass)."""
    return set(map(type, rows)) == {dict}


def _apply(convert: Callable[[Any], Any] | None, value: Any) -> Any:
    return value if convert is None else convert(value)


def _preview(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except RecursionError:
        return f"a {type(value).__name__} nested too deep to show"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _row_ref(state: _TableState, row: dict) -> str:
    """How an error names a row: its primary key when it has one, else a preview of it."""
    key = {k: row.get(k) for k in state.primary_key if isinstance(row, dict) and k in row}
    if key:
        return "the row with " + ", ".join(f"{k}={_preview(v, 40)}" for k, v in key.items())
    return f"the row {_preview(row)}"


def _decimal_digits(value: Decimal) -> tuple[int, int, int]:
    """(integer digits, fractional digits, significant digits) of a finite decimal, trailing
    fractional zeros not counted: ``Decimal("0120.50")`` -> (3, 1, 4)."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    digits = tuple(digits)
    while exponent < 0 and len(digits) > 1 and digits[-1] == 0:
        digits, exponent = digits[:-1], exponent + 1
    if not any(digits):
        return 0, 0, 0
    significant = len(digits)
    while significant > 1 and digits[len(digits) - significant] == 0:
        significant -= 1
    if exponent >= 0:
        return len(digits) + exponent, 0, significant
    return max(0, len(digits) + exponent), -exponent, significant
