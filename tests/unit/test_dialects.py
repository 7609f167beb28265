"""Each :class:`Dialect` method on real SQLite, DuckDB and PostgreSQL, and the one type registry.

The loader, the store and the operations never branch on a database name: what differs per database
is asked of the dialect. These tests pin each answer where it differs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal

import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from airflow_state_provider.destination import column_types as ct
from airflow_state_provider.destination.dialects import (
    Dialect,
    dialect_class,
    dialect_class_named,
    dialect_for,
)
from airflow_state_provider.destination.engine import create_engine
from airflow_state_provider.destination.naming import InvalidIdentifierError
from airflow_state_provider.exceptions import LockTimeoutError

DS = "ds"


@pytest.fixture
def engine(dest_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(dest_url)
    yield engine
    engine.dispose()


@pytest.fixture
def dialect(engine: sa.Engine) -> Dialect:
    dialect = dialect_for(engine, pipeline_name="pipe")
    dialect.prepare(DS)
    with engine.begin() as conn:
        if dialect.creates_schemas and not dialect.has_dataset(conn, DS):
            dialect.create_dataset(conn, DS)
    return dialect


def _table(name: str = "t") -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("i", sa.BigInteger()),
        sa.Column("d", sa.Numeric(38, 9)),
        sa.Column("s", sa.Text()),
        sa.Column("ts", sa.DateTime(timezone=True)),
        sa.Column("b", sa.Boolean()),
        schema=DS,
    )


def test_dialect_class_and_instance_agree(engine: sa.Engine, dialect: Dialect):
    assert type(dialect) is dialect_class(engine)
    assert dialect.name == engine.dialect.name


def test_identifier_length(engine: sa.Engine, dialect: Dialect):
    expected = {"postgresql": 63, "duckdb": None, "sqlite": engine.dialect.max_identifier_length}
    assert dialect.identifier_length(engine) == expected[engine.dialect.name]


def test_check_dataset_name(engine: sa.Engine, dialect: Dialect):
    dialect.check_dataset_name("my_data")
    for bad, why in (("", "empty"), ("a\0b", "NUL")):
        with pytest.raises(InvalidIdentifierError, match=why):
            dialect.check_dataset_name(bad)
    long = "x" * 64
    if engine.dialect.name == "postgresql":
        with pytest.raises(InvalidIdentifierError, match="64 bytes long in UTF-8, over the 63 postgresql"):
            dialect.check_dataset_name(long)
    else:
        dialect.check_dataset_name(long)
    if engine.dialect.name == "duckdb":
        with pytest.raises(InvalidIdentifierError, match="reads a dot"):
            dialect.check_dataset_name("a.b")
    else:
        dialect.check_dataset_name("a.b")


def test_json_column_type_holds_json(engine: sa.Engine, dialect: Dialect):
    json_type = dialect.json_column_type()
    expected = {"postgresql": postgresql.JSONB, "duckdb": sa.JSON, "sqlite": sa.JSON}
    assert isinstance(json_type, expected[engine.dialect.name])
    table = sa.Table("j", sa.MetaData(), sa.Column("v", json_type), schema=DS)
    with engine.begin() as conn:
        table.create(conn)
        dialect.insert_columns(conn, table, ["v"], [['{"a": [1, 2]}']])
        (value,) = conn.execute(sa.select(table.c.v)).scalars()
    assert (json.loads(value) if isinstance(value, str) else value) == {"a": [1, 2]}


def test_existing_columns_reflects_kinds(engine: sa.Engine, dialect: Dialect):
    with engine.begin() as conn:
        assert dialect.existing_columns(conn, DS, "t") is None
        _table().create(conn)
    with engine.connect() as conn:
        columns = dialect.existing_columns(conn, DS, "t")
    assert columns is not None
    assert list(columns) == ["i", "d", "s", "ts", "b"]
    kinds = {name: ct.kind_of_sa_type(t) for name, t in columns.items()}
    assert kinds == {"i": ct.BIGINT, "d": ct.DECIMAL, "s": ct.TEXT, "ts": ct.TIMESTAMP, "b": ct.BOOL}


def test_insert_columns_and_rows_round_trip(engine: sa.Engine, dialect: Dialect):
    table = _table()
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    with engine.begin() as conn:
        table.create(conn)
        dialect.insert_columns(
            conn,
            table,
            ["i", "d", "s", "ts", "b"],
            [[1, None], [Decimal("1.5"), None], ["x", None], [when, None], [True, None]],
        )
        dialect.insert_rows(conn, table, ["i", "s"], [(2, "y")])
        dialect.insert_columns(conn, table, ["i"], [[]])  # an empty batch is a no-op
        rows = conn.execute(sa.select(table).order_by(table.c.i.nulls_last())).all()
    assert len(rows) == 3
    first = rows[0]
    assert (first.i, first.d, first.s, first.b) == (1, Decimal("1.5"), "x", True)
    assert first.ts.replace(tzinfo=first.ts.tzinfo or dt.UTC) == when
    assert (rows[1].i, rows[1].s) == (2, "y")
    assert rows[2].i is None


def test_datasets_with_table_and_use_dataset(engine: sa.Engine, dialect: Dialect):
    with engine.begin() as conn:
        _table("marker").create(conn)
    assert DS in dialect_class(engine).datasets_with_table(engine, "marker")
    assert dialect_class(engine).datasets_with_table(engine, "no_such_table") == []
    with engine.connect() as conn:
        dialect.use_dataset(conn, DS)
        assert conn.exec_driver_sql('SELECT count(*) FROM "marker"').scalar() == 0


def test_prepare_existing_makes_datasets_readable_on_a_new_engine(dest_url: str, dialect: Dialect):
    with dialect.engine.begin() as conn:
        _table("seen").create(conn)
    dialect.engine.dispose()
    other = create_engine(dest_url)
    try:
        dialect_for(other).prepare_existing()
        with other.connect() as conn:
            assert conn.exec_driver_sql(f'SELECT count(*) FROM "{DS}"."seen"').scalar() == 0
    finally:
        other.dispose()


def test_locks_inside_a_transaction(engine: sa.Engine, dialect: Dialect):
    with engine.begin() as conn:
        _table("locked").create(conn)
    with engine.connect() as conn:
        conn.begin()
        dialect.lock_tables(conn, DS, ["locked", "missing"], pipeline_name="pipe")
        dialect.lock_pipeline(conn, DS, "pipe")
        took = dialect.lock_table_ddl(conn, DS, "locked")
        conn.commit()
        dialect.after_commit(conn, True)  # as the commit function reports a commit
    assert took is (engine.dialect.name == "postgresql")
    # the pipeline lock is released once the commit is done: it can be taken again at once
    with engine.connect() as conn:
        conn.begin()
        dialect.lock_pipeline(conn, DS, "pipe", timeout=1)
        conn.rollback()  # ... and by a rollback
    with engine.begin() as conn:
        dialect.lock_pipeline(conn, DS, "pipe", timeout=1)
        conn.rollback()


def test_lock_timeout_error_names_pipeline_database_and_wait(engine: sa.Engine, dialect: Dialect):
    error = dialect.lock_timeout_error("the commit lock", "pipe", 2.5)
    assert isinstance(error, LockTimeoutError)
    message = str(error)
    assert "pipeline 'pipe'" in message and "waited 2.5 s" in message and "the commit lock" in message
    assert engine.dialect.name in message


def test_holding_keeps_the_database_for_a_run(engine: sa.Engine, dialect: Dialect):
    with dialect.holding(), engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    with engine.connect() as conn:  # released: still usable afterwards
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


# -- the type registry (no database) ----------------------------------------------------------------

REGISTRY_CASES = [
    # type, kind, PostgreSQL COPY type, Arrow type
    (sa.Boolean(), ct.BOOL, "bool", pa.bool_()),
    (sa.BigInteger(), ct.BIGINT, "int8", pa.int64()),
    (sa.Integer(), ct.BIGINT, "int4", pa.int64()),
    (sa.SmallInteger(), ct.BIGINT, "int2", pa.int64()),
    (sa.Double(), ct.DOUBLE, "float8", pa.float64()),
    (sa.REAL(), ct.DOUBLE, "float4", pa.float64()),
    (sa.Float(), ct.DOUBLE, None, pa.float64()),
    (sa.Numeric(10, 2), ct.DECIMAL, "numeric", pa.large_string()),
    (sa.Uuid(), ct.UUID, "uuid", None),
    (postgresql.JSONB(), ct.JSON, "jsonb", pa.large_string()),
    (sa.JSON(), ct.JSON, "json", pa.large_string()),
    (sa.Enum("a", "b"), ct.OTHER, None, None),
    (sa.Text(), ct.TEXT, "text", pa.large_string()),
    (sa.String(20), ct.TEXT, "text", pa.large_string()),
    (sa.DateTime(timezone=True), ct.TIMESTAMP, "timestamptz", pa.timestamp("us", tz="UTC")),
    (sa.DateTime(), ct.TIMESTAMP, "timestamp", pa.timestamp("us")),
    (postgresql.TIMESTAMP(timezone=True), ct.TIMESTAMP, "timestamptz", pa.timestamp("us", tz="UTC")),
    (sa.Date(), ct.DATE, "date", pa.date32()),
    (sa.Time(), ct.TIME, "time", pa.time64("us")),
    (sa.Time(timezone=True), ct.TIME, None, pa.time64("us")),
    (sa.LargeBinary(), ct.BINARY, "bytea", pa.large_binary()),
    (postgresql.BYTEA(), ct.BINARY, "bytea", pa.large_binary()),
    (sa.types.NullType(), ct.OTHER, None, None),
]


@pytest.mark.parametrize(("sa_type", "kind", "copy", "arrow"), REGISTRY_CASES, ids=lambda v: repr(v)[:30])
def test_registry(sa_type, kind, copy, arrow):
    assert ct.kind_of_sa_type(sa_type) == kind
    assert ct.copy_type(sa_type) == copy
    assert ct.arrow_type(pa, sa_type) == arrow


NEW_KINDS = (ct.BOOL, ct.BIGINT, ct.DOUBLE, ct.DECIMAL, ct.TEXT, ct.TIMESTAMP, ct.DATE, ct.TIME, ct.BINARY)


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_a_new_column_reads_back_as_its_kind(kind):
    assert ct.kind_of_sa_type(ct.new_column_type(kind, sa.JSON)) == kind


def test_new_uuid_and_json_columns():
    assert ct.kind_of_sa_type(ct.new_column_type(ct.UUID, sa.JSON)) == ct.TEXT  # as dlt stores them
    assert isinstance(ct.new_column_type(ct.JSON, postgresql.JSONB), postgresql.JSONB)
    with pytest.raises(KeyError):
        ct.new_column_type(ct.OTHER, sa.JSON)


# -- class-level facts the Airflow layer asks for (no engine) ------------------------------------------


@pytest.mark.parametrize(
    ("backend", "url", "namespace", "path"),
    [
        ("sqlite", "sqlite:////data/w.sqlite", "sqlite://localhost/data/w.sqlite", ["raw", "t"]),
        ("duckdb", "duckdb:////data/w.duckdb", "duckdb://localhost/data/w.duckdb", ["raw", "t"]),
        (
            "postgresql",
            "postgresql+psycopg://u:secret@db.internal:6543/analytics?sslmode=require",
            "postgres://db.internal:6543",
            ["analytics", "raw", "t"],
        ),
    ],
)
def test_urls_from_settings_and_lineage_names(backend, url, namespace, path):
    cls = dialect_class_named(backend)
    built = cls.url_from_settings(
        sa.make_url(url).drivername,
        host=None if cls.file_database else "db.internal",
        port=None if cls.file_database else 6543,
        username="u",
        password="secret",
        database=sa.make_url(url).database,
        settings={"sslmode": "require", "keepalives": None, "not_a_libpq_setting": "x"},
    )
    assert built.render_as_string(hide_password=False) == url
    assert cls.lineage_namespace(built) == namespace and "secret" not in namespace
    assert cls.lineage_path(built, "raw", "t") == path
    bounded = cls.with_connect_timeout(built, 10)
    assert bounded.query.get("connect_timeout") == (None if cls.file_database else "10")
    given = built.update_query_dict({"connect_timeout": "3"})
    assert cls.with_connect_timeout(given, 10) == given  # a bound the URL sets is kept
    assert not cls.in_memory(built)


def test_in_memory_urls_and_the_generic_class():
    assert dialect_class_named("sqlite").in_memory(sa.make_url("sqlite://"))
    assert dialect_class_named("duckdb").in_memory(sa.make_url("duckdb:///:memory:"))
    assert (
        dialect_class_named("mysql") is Dialect
        and dialect_class_named("postgresql").default_driver == "psycopg"
    )


def test_a_factory_engine_is_worked_on_as_it_is(engine: sa.Engine, dialect: Dialect):
    assert dialect.engine is engine  # the product created it: the dialect's events go on it
    assert Dialect.working_engine(engine) is engine


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.datetimes(timezones=st.one_of(st.just(dt.UTC), st.timezones())),
        ),
        max_size=20,
    )
)
def test_duckdb_arrow_timestamps_are_the_instants_arrow_makes_of_aware_datetimes(values):
    from airflow_state_provider.destination.dialects.duckdb import _arrow_timestamps

    t = pa.timestamp("us", tz="UTC")
    assert _arrow_timestamps(pa, values, t).equals(pa.array(values, type=t))


@given(st.lists(st.one_of(st.none(), st.datetimes()), max_size=20))
def test_duckdb_arrow_timestamps_of_naive_datetimes_keep_their_wall_time(values):
    from airflow_state_provider.destination.dialects.duckdb import _arrow_timestamps

    t = pa.timestamp("us")
    assert _arrow_timestamps(pa, values, t).equals(pa.array(values, type=t))
