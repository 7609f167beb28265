"""The loader on real SQLite, DuckDB and PostgreSQL (DESIGN §7, §12)."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from enum import Enum, IntEnum

import pytest
import sqlalchemy as sa
from dlt.common.normalizers.naming.snake_case import NamingConvention

from airflow_state_provider.destination.dialects import Dialect, dialect_for
from airflow_state_provider.destination.engine import create_engine
from airflow_state_provider.destination.loader import Loader
from airflow_state_provider.destination.store import RESOURCE_TABLES
from airflow_state_provider.exceptions import PipelineStateError, SchemaConflictError

DS = "ds"


@pytest.fixture
def engine(dest_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(dest_url)
    dialect_for(engine).prepare(DS)
    yield engine
    engine.dispose()


def new_loader(conn: sa.Connection, load_id: str = "100.1", dataset: str = DS, **kw) -> Loader:
    return Loader(conn, dialect_for(conn.engine), dataset, load_id, pipeline_name="pipe", **kw)


def load(engine: sa.Engine, table: str, rows, *, load_id: str = "100.1", batch_size: int = 10_000, **kw):
    """One loader, one write, one transaction; the counts of ``finish()``."""
    with engine.begin() as conn:
        loader = new_loader(conn, load_id, batch_size=batch_size)
        loader.write(table, rows, **kw)
        return loader.finish()


def column_types(engine: sa.Engine, table: str, dataset: str = DS) -> dict[str, str]:
    """Column name -> the database's own type name, in table order."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            pragma = f"PRAGMA {_q(dataset)}.table_info({_q(table)})"
            return {r[1]: r[2] for r in conn.exec_driver_sql(pragma)}
        query = sa.text(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = :s AND table_name = :t ORDER BY ordinal_position"
        )
        return dict(conn.execute(query, {"s": dataset, "t": table}).all())


def tables(engine: sa.Engine, dataset: str = DS) -> set[str]:
    """Data tables of the dataset (not the loader's resource-to-table map)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            query = f"SELECT name FROM {_q(dataset)}.sqlite_master WHERE type = 'table'"
            found = {r[0] for r in conn.exec_driver_sql(query)}
        else:
            query = sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s")
            found = {r[0] for r in conn.execute(query, {"s": dataset})}
    return found - {RESOURCE_TABLES}


def fetch(engine: sa.Engine, table: str, columns: dict, order_by: str, dataset: str = DS) -> list[tuple]:
    """Rows read back through SQLAlchemy types (what a user of the table sees)."""
    t = sa.Table(table, sa.MetaData(), *(sa.Column(n, ty) for n, ty in columns.items()), schema=dataset)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(t).order_by(t.c[order_by]))]


def raw(engine: sa.Engine, sql: str, dataset: str = DS) -> list[tuple]:
    """A plain query; ``{ds}`` is the quoted dataset."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql.format(ds=_q(dataset)))]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def as_json(value):
    return json.loads(value) if isinstance(value, str) else value


# -- types ----------------------------------------------------------------------------------------

EXPECTED_TYPES = {
    "postgresql": {
        "i": "bigint",
        "f": "double precision",
        "s": "text",
        "ok": "boolean",
        "ts": "timestamp with time zone",
        "naive": "timestamp with time zone",
        "d": "date",
        "t": "time without time zone",
        "dec": "numeric",
        "b": "bytea",
        "u": "text",
        "tags": "jsonb",
        "_dlt_load_id": "text",
        "_dlt_id": "text",
    },
    "duckdb": {
        "i": "BIGINT",
        "f": "DOUBLE",
        "s": "VARCHAR",
        "ok": "BOOLEAN",
        "ts": "TIMESTAMP WITH TIME ZONE",
        "naive": "TIMESTAMP WITH TIME ZONE",
        "d": "DATE",
        "t": "TIME",
        "dec": "DECIMAL(38,9)",
        "b": "BLOB",
        "u": "VARCHAR",
        "tags": "JSON",
        "_dlt_load_id": "VARCHAR",
        "_dlt_id": "VARCHAR",
    },
    "sqlite": {
        "i": "BIGINT",
        "f": "DOUBLE",
        "s": "TEXT",
        "ok": "BOOLEAN",
        "ts": "DATETIME",
        "naive": "DATETIME",
        "d": "DATE",
        "t": "TIME",
        "dec": "NUMERIC(38, 9)",
        "b": "BLOB",
        "u": "TEXT",
        "tags": "JSON",
        "_dlt_load_id": "TEXT",
        "_dlt_id": "TEXT",
    },
}


def test_types_are_inferred_and_values_round_trip(engine):
    berlin = dt.timezone(dt.timedelta(hours=2))
    u = uuid.uuid4()
    # SQLite's NUMERIC keeps ~15 significant digits; the others keep numeric(38, 9) exactly
    dec = (
        Decimal("12345.678900000")
        if engine.dialect.name == "sqlite"
        else Decimal("12345678901234567890.123456789")
    )
    row = {
        "i": 9_000_000_000_000_000_000,
        "f": 1.25,
        "s": "x'\"; --ü",
        "ok": True,
        "ts": dt.datetime(2024, 3, 3, 12, 30, 15, 123456, tzinfo=berlin),
        "naive": dt.datetime(2024, 3, 3, 12, 30),
        "d": dt.date(2024, 2, 29),
        "t": dt.time(23, 59, 58, 7),
        "dec": dec,
        "b": b"\x00\xffbin",
        "u": u,
        "tags": ["a", {"k": 1}],
        "nothing": None,
    }
    assert load(engine, "all_types", [row]) == {"all_types": 1}

    assert column_types(engine, "all_types") == EXPECTED_TYPES[engine.dialect.name]
    read_types = {
        "i": sa.BigInteger(),
        "f": sa.Double(),
        "s": sa.Text(),
        "ok": sa.Boolean(),
        "ts": sa.DateTime(timezone=True),
        "naive": sa.DateTime(timezone=True),
        "d": sa.Date(),
        "t": sa.Time(),
        "dec": sa.Numeric(38, 9, asdecimal=False),
        "b": sa.LargeBinary(),
        "u": sa.Text(),
        "tags": sa.Text() if engine.dialect.name == "sqlite" else sa.JSON(),
    }
    (got,) = fetch(engine, "all_types", read_types, "i")
    got = dict(zip(read_types, got, strict=True))
    assert got["i"] == row["i"]
    assert got["f"] == 1.25
    assert got["s"] == row["s"]
    assert got["ok"] is True
    assert got["ts"] == row["ts"]  # the same instant
    assert got["ts"].utcoffset() is not None
    assert got["naive"] == row["naive"].replace(tzinfo=dt.UTC)  # naive means UTC, as in dlt
    assert got["d"] == row["d"]
    assert got["t"] == row["t"]
    # read raw: duckdb-engine's Numeric result processor goes through float
    assert Decimal(str(raw(engine, "SELECT dec FROM {ds}.all_types")[0][0])) == dec
    assert bytes(got["b"]) == row["b"]
    assert got["u"] == str(u)
    assert as_json(got["tags"]) == ["a", {"k": 1}]


def test_dlt_columns(engine):
    load(engine, "events", [{"n": i} for i in range(50)], load_id="1712345678.123")
    got = raw(engine, "SELECT _dlt_load_id, _dlt_id FROM {ds}.events")
    assert {r[0] for r in got} == {"1712345678.123"}
    ids = [r[1] for r in got]
    assert len(set(ids)) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9+/]{14}", i) for i in ids)
    assert list(column_types(engine, "events"))[-2:] == ["_dlt_load_id", "_dlt_id"]


def test_null_values_do_not_create_columns_until_a_value_arrives(engine):
    load(engine, "t", [{"id": 1, "later": None}])
    assert "later" not in column_types(engine, "t")
    load(engine, "t", [{"id": 2, "later": 5}])
    assert column_types(engine, "t")["later"].lower() == "bigint"
    assert raw(engine, "SELECT id, later FROM {ds}.t ORDER BY id") == [(1, None), (2, 5)]


def test_mixed_numbers_widen_and_enums_store_their_values(engine):
    class Color(str, Enum):  # noqa: UP042 - the pre-3.11 idiom users still write
        RED = "red"

    class Level(IntEnum):
        HIGH = 3

    load(engine, "t", [{"n": 1, "m": 1, "c": Color.RED, "l": Level.HIGH}, {"n": 2.5, "m": Decimal("1.5")}])
    types = {k: v.lower() for k, v in column_types(engine, "t").items()}
    assert types["n"] in ("double", "double precision")
    assert types["m"].startswith(("numeric", "decimal"))
    got = raw(engine, "SELECT n, m, c, l FROM {ds}.t ORDER BY n")
    assert got[0][0] == 1.0 and got[1][0] == 2.5
    assert Decimal(str(got[1][1])) == Decimal("1.5")
    assert got[0][2:] == ("red", 3)


def test_accepted_conversions_into_existing_columns(engine):
    load(engine, "t", [{"f": 1.5, "ts": dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "s": "text", "j": [1]}])
    # int into double, ISO text into timestamp, UUID and a list into text, a string into JSON
    u = uuid.uuid4()
    load(engine, "t", [{"f": 2, "ts": "2024-01-02T03:04:05Z", "s": u, "j": "plain"}])
    load(engine, "t", [{"f": 3, "ts": "2024-01-03T00:00:00", "s": [1, 2], "j": [{"k": None}]}])
    got = fetch(engine, "t", {"f": sa.Double(), "ts": sa.DateTime(timezone=True), "s": sa.Text()}, "f")
    assert [r[0] for r in got] == [1.5, 2.0, 3.0]
    assert got[1][1] == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert got[2][1] == dt.datetime(2024, 1, 3, tzinfo=dt.UTC)
    assert got[1][2] == str(u)
    assert json.loads(got[2][2]) == [1, 2]
    stored = [r[0] for r in raw(engine, "SELECT j FROM {ds}.t ORDER BY f")]
    if engine.dialect.name == "sqlite":  # JSON text in a column declared JSON: a string stays a JSON string
        assert stored == ["[1]", '"plain"', '[{"k":null}]']
    else:
        assert stored == [[1], "plain", [{"k": None}]]


# -- names ----------------------------------------------------------------------------------------


def test_names_are_snake_case_like_dlt(engine):
    keys = ["CamelCase", "with space", "ÄÖ", "1leading", "getHTTPResponse", "a+b", "trailing_", ""]
    load(engine, "MyEvents Table", [{k: i for i, k in enumerate(keys)}])
    assert tables(engine) == {"my_events_table"}
    dlt_naming = NamingConvention(63 if engine.dialect.name == "postgresql" else None)
    expected = [dlt_naming.normalize_path(k) if k else "_empty" for k in keys]
    assert list(column_types(engine, "my_events_table"))[: len(keys)] == expected
    assert expected[:4] == ["camel_case", "with_space", "x", "_1leading"]


def test_long_names_are_shortened_like_dlt(engine):
    key = "a_very_long_column_name_" * 5
    load(engine, "t", [{key: 1, "nested": {key: 2}}])
    limit = 63 if engine.dialect.name == "postgresql" else None
    dlt_naming = NamingConvention(limit)
    expected = [
        dlt_naming.normalize_path(key),
        dlt_naming.shorten_fragments("nested", dlt_naming.normalize_path(key)),
    ]
    assert list(column_types(engine, "t"))[:2] == expected
    if limit:
        assert all(len(c) == 63 for c in expected)


def test_nested_dicts_flatten_and_lists_become_json(engine):
    row = {
        "id": 1,
        "User": {"Name": "ann", "Address": {"ZipCode": "123", "geo": {"lat": 1.5}}},
        "items": [{"x": 1}],
    }
    load(engine, "orders", [row, {"id": 2, "User": {"Name": "bob"}, "items": []}])
    assert list(column_types(engine, "orders"))[:5] == [
        "id",
        "user__name",
        "user__address__zip_code",
        "user__address__geo__lat",
        "items",
    ]
    assert tables(engine) == {"orders"}  # no child tables
    got = raw(
        engine,
        "SELECT id, user__name, user__address__zip_code, user__address__geo__lat, items"
        " FROM {ds}.orders ORDER BY id",
    )
    assert got[0][:4] == (1, "ann", "123", 1.5)
    assert as_json(got[0][4]) == [{"x": 1}]
    assert got[1][:4] == (2, "bob", None, None)
    assert as_json(got[1][4]) == []


def test_hostile_identifiers_are_quoted(engine):
    dataset = 'we"ird; DROP SCHEMA x; --'
    dialect_for(engine).prepare(dataset)
    load(engine, "canary", [{"id": 1}])
    table = 't"; DELETE FROM canary; --'
    # quotes, injections, unicode, and words reserved in some of the databases
    keys = ['a"; DROP TABLE canary; --', "b' OR '1'='1", "sel;ect", "ümlaut", "at", "order", "pivot", "group"]
    row = {k: f"v'{i}\"" for i, k in enumerate(keys)}
    with engine.begin() as conn:
        loader = new_loader(conn, dataset=dataset)
        loader.write(table, [row], write_disposition="merge", primary_key="sel;ect")
        loader.write(table, [row], write_disposition="merge", primary_key="sel;ect")
        assert loader.finish() == {"t_delete_from_canaryxxx": 1}
    assert tables(engine) == {"canary"}
    assert raw(engine, "SELECT id FROM {ds}.canary") == [(1,)]
    assert tables(engine, dataset) == {"t_delete_from_canaryxxx"}
    columns = [NamingConvention().normalize_path(k) for k in keys]
    assert columns[:4] == ["a_drop_table_canaryxxx", "b_or_1_1", "sel_ect", "_mlaut"]
    assert list(column_types(engine, "t_delete_from_canaryxxx", dataset))[: len(keys)] == columns
    select = "SELECT " + ", ".join(_q(c) for c in columns) + " FROM {ds}.t_delete_from_canaryxxx"
    assert raw(engine, select, dataset) == [tuple(row.values())]


@pytest.mark.parametrize("key", ["__", "____"])
def test_keys_that_normalize_to_nothing_are_rejected(engine, key):
    with pytest.raises(PipelineStateError, match=r"table 't'.*not usable"):
        load(engine, "t", [{"id": 1, key: 2}])
    assert tables(engine) == set()


def test_table_name_that_normalizes_to_nothing_is_rejected(engine):
    with pytest.raises(PipelineStateError, match="not usable"):
        load(engine, "  ", [{"id": 1}])


# -- schema evolution and conflicts ---------------------------------------------------------------


def test_schema_evolution_adds_columns(engine):
    load(engine, "t", [{"id": 1}])
    load(engine, "t", [{"id": 2, "extra": "x", "deep": {"er": True}}])
    assert list(column_types(engine, "t")) == ["id", "_dlt_load_id", "_dlt_id", "extra", "deep__er"]
    got = raw(engine, "SELECT id, extra, deep__er FROM {ds}.t ORDER BY id")
    assert [g[:2] for g in got] == [(1, None), (2, "x")]
    assert got[0][2] is None and bool(got[1][2]) is True


def test_type_conflict_names_table_column_types_and_rolls_back(engine):
    load(engine, "t", [{"id": 1, "name": "a"}])
    with pytest.raises(SchemaConflictError) as err, engine.begin() as conn:
        loader = new_loader(conn, batch_size=2)
        loader.write("t", [{"id": 2, "new_col": 1}, {"id": 3}])  # a full batch: written, column added
        loader.write("t", [{"id": "four", "name": "d"}])
        loader.finish()
    message = str(err.value)
    for part in ("'pipe'", "'id'", "ds.t", "bigint", "text", "'four'"):
        assert part in message
    assert list(column_types(engine, "t")) == ["id", "name", "_dlt_load_id", "_dlt_id"]
    assert raw(engine, "SELECT id, name FROM {ds}.t") == [(1, "a")]


@pytest.mark.parametrize(
    ("first", "second", "expected", "found"),
    [
        (1, "x", "bigint", "text"),
        ("x", 1, "text", "bigint"),
        (1.5, True, "double", "bool"),
        (True, 1, "bool", "bigint"),
        (dt.date(2024, 1, 1), dt.datetime(2024, 1, 1), "date", "timestamp"),
        ("a", b"b", "text", "binary"),
        ([1], dt.date(2024, 1, 1), "(json|text)", "date"),  # JSON is text on SQLite
        (dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "not a date", "timestamp", "text"),
    ],
)
def test_conflicts_between_loads(engine, first, second, expected, found):
    load(engine, "t", [{"v": first}])
    with pytest.raises(
        SchemaConflictError, match=rf"has type {expected} but a row has a value of type {found}"
    ):
        load(engine, "t", [{"v": second}])
    assert len(raw(engine, "SELECT * FROM {ds}.t")) == 1


def test_conflict_within_a_new_column_names_both_types(engine):
    with pytest.raises(
        SchemaConflictError,
        match=r"new column 'v' of table ds.t got values of incompatible types bigint and text",
    ):
        load(engine, "t", [{"v": 1}, {"v": "x"}])
    assert tables(engine) == set()


def test_integers_beyond_64_bits_conflict(engine):
    with pytest.raises(SchemaConflictError, match="integer beyond 64 bits"):
        load(engine, "t", [{"v": 1}, {"v": 2**64}])


def test_rows_that_are_not_dicts_are_rejected(engine):
    with pytest.raises(PipelineStateError, match=r"'pipe'.*table 'events' received a row of type list"):
        load(engine, "events", [{"id": 1}, [("id", 2)]])
    assert tables(engine) == set()


def test_values_of_unsupported_types_are_rejected(engine):
    with pytest.raises(PipelineStateError, match=r"column 'v' of table 't' got a value of type object"):
        load(engine, "t", [{"v": object()}])


# -- transactions ---------------------------------------------------------------------------------


def test_rollback_leaves_nothing(engine):
    with engine.connect() as conn:
        conn.begin()
        loader = new_loader(conn)
        loader.write("fresh", [{"id": 1, "j": {"a": [1]}}])
        loader.write("merged", [{"id": 1}], write_disposition="merge", primary_key="id")
        assert loader.finish() == {"fresh": 1, "merged": 1}
        if engine.dialect.name != "sqlite":  # SQLite would wait for the writer's lock
            assert tables(engine) == set()  # not visible outside, before commit
        conn.rollback()
    assert tables(engine) == set()
    if engine.dialect.name != "sqlite":
        assert (
            raw(engine, "SELECT schema_name FROM information_schema.schemata WHERE schema_name = 'ds'") == []
        )


def test_rollback_undoes_alter_and_replace(engine):
    load(engine, "t", [{"id": 1}, {"id": 2}])
    with pytest.raises(RuntimeError), engine.begin() as conn:
        loader = new_loader(conn, "200.1")
        loader.write("t", [{"id": 3, "added": "x"}], write_disposition="replace")
        loader.finish()
        raise RuntimeError("crash before commit")
    assert list(column_types(engine, "t")) == ["id", "_dlt_load_id", "_dlt_id"]
    assert raw(engine, "SELECT id FROM {ds}.t ORDER BY id") == [(1,), (2,)]


# -- dispositions ---------------------------------------------------------------------------------


def test_append_keeps_earlier_loads(engine):
    load(engine, "t", [{"id": 1}], load_id="1.0")
    assert load(engine, "t", [{"id": 1}, {"id": 2}], load_id="2.0") == {"t": 2}
    assert raw(engine, "SELECT _dlt_load_id, id FROM {ds}.t ORDER BY _dlt_load_id, id") == [
        ("1.0", 1),
        ("2.0", 1),
        ("2.0", 2),
    ]


def test_replace_empties_once_per_loader(engine):
    load(engine, "t", [{"id": i} for i in range(5)])
    with engine.connect() as conn:
        conn.begin()
        loader = new_loader(conn, "2.0", batch_size=2)
        loader.write("t", [{"id": 10}, {"id": 11}, {"id": 12}], write_disposition="replace")
        assert loader.finish() == {"t": 3}
        conn.commit()  # a checkpoint: the next chunk keeps what this one wrote
        conn.begin()
        loader.load_id = "3.0"
        loader.write("t", [{"id": 13}], write_disposition="replace")
        assert loader.finish() == {"t": 1}
        conn.commit()
    assert raw(engine, "SELECT id FROM {ds}.t ORDER BY id") == [(10,), (11,), (12,), (13,)]


def test_replace_with_no_rows_empties_the_table(engine):
    load(engine, "t", [{"id": 1}])
    assert load(engine, "t", [], write_disposition="replace") == {"t": 0}
    assert raw(engine, "SELECT count(*) FROM {ds}.t") == [(0,)]


def test_merge_dedups_within_the_load_and_upserts(engine):
    assert load(
        engine, "t", [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}], write_disposition="merge", primary_key="id"
    ) == {"t": 2}
    counts = load(
        engine,
        "t",
        [
            {"id": 2, "v": "b1"},
            {"id": 3, "v": "c"},
            {"id": 2, "v": "b2"},
            {"id": 3, "v": "c1"},
            {"id": 4, "v": "d"},
        ],
        write_disposition="merge",
        primary_key="id",
        batch_size=2,
        load_id="200.1",
    )
    assert counts == {"t": 3}
    assert raw(engine, "SELECT id, v, _dlt_load_id FROM {ds}.t ORDER BY id") == [
        (1, "a", "100.1"),
        (2, "b2", "200.1"),
        (3, "c1", "200.1"),
        (4, "d", "200.1"),
    ]


def test_merge_into_a_new_table_with_a_composite_key(engine):
    rows = [{"Org": "x", "Repo": 1, "v": 1}, {"Org": "x", "Repo": 2, "v": 2}, {"Org": "x", "Repo": 1, "v": 3}]
    assert load(engine, "t", rows, write_disposition="merge", primary_key=("Org", "Repo")) == {"t": 2}
    load(
        engine,
        "t",
        [{"Org": "y", "Repo": 1, "v": 4}, {"Org": "x", "Repo": 2, "v": 5}],
        write_disposition="merge",
        primary_key=("Org", "Repo"),
    )
    assert raw(engine, "SELECT org, repo, v FROM {ds}.t ORDER BY org, repo") == [
        ("x", 1, 3),
        ("x", 2, 5),
        ("y", 1, 4),
    ]


def test_merge_key_replaces_matching_partitions(engine):
    first = [{"id": 1, "day": 1}, {"id": 2, "day": 1}, {"id": 3, "day": 2}]
    load(engine, "t", first, write_disposition="merge", primary_key="id", merge_key="day")
    load(
        engine,
        "t",
        [{"id": 1, "day": 1, "v": "new"}],
        write_disposition="merge",
        primary_key="id",
        merge_key="day",
    )
    assert raw(engine, "SELECT id, day, v FROM {ds}.t ORDER BY id") == [(1, 1, "new"), (3, 2, None)]


def test_merge_across_checkpoints_on_one_loader(engine):
    with engine.connect() as conn:
        conn.begin()
        loader = new_loader(conn, "1.0")
        loader.write("t", [{"id": 1, "v": "a"}], write_disposition="merge", primary_key="id")
        assert loader.finish() == {"t": 1}
        conn.commit()
        conn.begin()
        loader.load_id = "2.0"
        loader.write("t", [{"id": 1, "v": "b", "extra": 1}], write_disposition="merge", primary_key="id")
        assert loader.finish() == {"t": 1}
        conn.commit()
    assert raw(engine, "SELECT id, v, extra, _dlt_load_id FROM {ds}.t") == [(1, "b", 1, "2.0")]


def test_merge_needs_a_primary_key_or_merge_key(engine):
    with pytest.raises(
        PipelineStateError, match="table 't' has write_disposition 'merge' but no primary_key or merge_key"
    ):
        load(engine, "t", [{"id": 1}], write_disposition="merge")
    with pytest.raises(PipelineStateError, match=r"merged on primary key id but a row has no value for 'id'"):
        load(engine, "t", [{"id": 1}, {"id": None, "v": 1}], write_disposition="merge", primary_key="id")
    assert tables(engine) == set()


def test_unknown_write_disposition_is_rejected(engine):
    with pytest.raises(PipelineStateError, match="write_disposition 'upsert'"):
        load(engine, "t", [{"id": 1}], write_disposition="upsert")


# -- batches and streaming ------------------------------------------------------------------------


def _varied_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        row: dict = {"id": i, "maybe": None if i < 7 else i * 0.5}
        if i % 3 == 0:
            row["sometimes"] = {"nested": f"s{i}"}
        if i >= 11:
            row["late"] = [i]
        rows.append(row)
    return rows


@pytest.mark.parametrize("disposition", ["append", "merge"])
def test_batch_size_does_not_change_the_result(engine, disposition):
    rows = _varied_rows(25) + ([{"id": 3, "maybe": 9.0}] if disposition == "merge" else [])
    results = []
    for i, batch_size in enumerate((1, 4, 10_000)):
        table = f"t{i}"
        counts = load(
            engine, table, rows, batch_size=batch_size, write_disposition=disposition, primary_key="id"
        )
        assert counts == {table: 25 if disposition == "merge" else len(rows)}
        results.append(
            raw(engine, f"SELECT id, maybe, sometimes__nested, late FROM {{ds}}.{table} ORDER BY id, maybe")
        )
        names = list(column_types(engine, table))
        assert sorted(names) == ["_dlt_id", "_dlt_load_id", "id", "late", "maybe", "sometimes__nested"]
        if batch_size > len(rows):  # one batch: columns in the order of their first non-null value
            assert names[:4] == ["id", "sometimes__nested", "maybe", "late"]
    assert results[0] == results[1] == results[2]
    assert results[0][3][1] == (9.0 if disposition == "merge" else None)


def test_rows_stream_to_the_database_in_batches(engine):
    seen_in_db: list[int] = []
    with engine.begin() as conn:
        loader = new_loader(conn, batch_size=100)

        def rows():
            for i in range(1000):
                if i == 550:
                    seen_in_db.append(conn.exec_driver_sql('SELECT count(*) FROM "ds"."t"').scalar())
                yield {"id": i}

        loader.write("t", rows())
        assert loader.finish() == {"t": 1000}
    assert seen_in_db == [500]  # full batches were written while the generator was still running
    assert raw(engine, "SELECT count(*), count(DISTINCT _dlt_id) FROM {ds}.t") == [(1000, 1000)]


# -- restamp --------------------------------------------------------------------------------------


def test_restamp_moves_only_the_current_chunk(engine):
    with engine.connect() as conn:
        conn.begin()
        loader = new_loader(conn, "1.0")
        loader.write("a", [{"id": 1}])
        loader.finish()
        conn.commit()
        conn.begin()
        loader.load_id = "2.0"
        loader.write("a", [{"id": 2}])
        loader.write("b", [{"id": 3}], write_disposition="merge", primary_key="id")
        loader.finish()
        loader.restamp("3.0")
        assert loader.load_id == "3.0"
        loader.write("b", [{"id": 4}])
        loader.finish()
        conn.commit()
    assert raw(engine, "SELECT id, _dlt_load_id FROM {ds}.a ORDER BY id") == [(1, "1.0"), (2, "3.0")]
    assert raw(engine, "SELECT id, _dlt_load_id FROM {ds}.b ORDER BY id") == [(3, "3.0"), (4, "3.0")]
    assert loader.tables_written == {"a", "b"}


# -- existing tables ------------------------------------------------------------------------------


def test_tables_created_by_others_are_reflected_and_extended(engine):
    """Narrower and naive types, no dlt columns: values still fit, the dlt columns are added."""
    md = sa.MetaData()
    foreign = sa.Table(
        "legacy",
        md,
        sa.Column("id", sa.Integer),
        sa.Column("name", sa.String(20)),
        sa.Column("at_local", sa.DateTime(timezone=False)),
        sa.Column("amount", sa.Numeric(10, 2)),
        schema=DS,
    )
    with engine.begin() as conn:
        dialect = dialect_for(engine)
        if dialect.creates_schemas:
            dialect.create_dataset(conn, DS)
        md.create_all(conn)
    at = dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    load(engine, "legacy", [{"id": 7, "name": "n", "at_local": at, "amount": Decimal("3.25")}])
    assert list(column_types(engine, "legacy")) == [
        "id",
        "name",
        "at_local",
        "amount",
        "_dlt_load_id",
        "_dlt_id",
    ]
    with engine.connect() as conn:
        (got,) = conn.execute(sa.select(foreign)).all()
    assert got.id == 7 and got.name == "n" and got.amount == Decimal("3.25")
    assert got.at_local.replace(tzinfo=None) == dt.datetime(2024, 5, 1, 10)  # stored as UTC wall time


def test_tables_created_by_dlt_take_our_rows(dest_url, tmp_path, engine):
    dlt = pytest.importorskip("dlt")
    name = engine.dialect.name
    if name == "duckdb":
        destination = dlt.destinations.duckdb(engine.url.database)
    elif name == "postgresql":
        url = engine.url.set(drivername="postgresql", password="unused-with-trust-auth")
        destination = dlt.destinations.postgres(url.render_as_string(hide_password=False))
    else:
        destination = dlt.destinations.sqlalchemy(dest_url)
    engine.dispose()  # dlt writes through its own connections
    pipeline = dlt.pipeline(
        "from_dlt", destination=destination, dataset_name=DS, pipelines_dir=str(tmp_path / "dlt")
    )
    pipeline.run(
        [{"id": 1, "created_at": "2024-01-01T00:00:00Z", "amount": Decimal("1.5"), "meta": {"a": 1}}],
        table_name="events",
    )
    dlt_types = column_types(engine, "events")
    load(
        engine,
        "events",
        [{"id": 2, "created_at": "2024-01-02T00:00:00+00:00", "amount": 2, "meta": {"a": 2}}],
    )
    assert column_types(engine, "events") == dlt_types  # nothing added or changed
    got = raw(engine, "SELECT id, meta__a, _dlt_load_id FROM {ds}.events ORDER BY id")
    assert [g[:2] for g in got] == [(1, 1), (2, 2)]
    assert got[1][2] == "100.1"
    with pytest.raises(SchemaConflictError, match="column 'created_at'"):
        load(engine, "events", [{"id": 3, "created_at": "yesterday"}])


# -- the portable path ----------------------------------------------------------------------------


@pytest.mark.postgres
def test_generic_dialect_path_round_trips(postgres_url):
    engine = sa.create_engine(postgres_url)
    dialect = Dialect(engine)  # no bulk path: SQLAlchemy executemany
    with engine.begin() as conn:
        loader = Loader(conn, dialect, DS, "1.0", pipeline_name="pipe", batch_size=1)
        loader.write("t", [{"id": 1, "j": [1, {"a": "b"}], "s": "a"}, {"id": 2, "j": "x", "s": [2]}])
        loader.write("m", [{"id": 1, "v": 1}, {"id": 1, "v": 2}], write_disposition="merge", primary_key="id")
        assert loader.finish() == {"t": 2, "m": 1}
    assert raw(engine, "SELECT id, j, s FROM {ds}.t ORDER BY id") == [
        (1, [1, {"a": "b"}], "a"),
        (2, "x", "[2]"),
    ]
    assert raw(engine, "SELECT id, v FROM {ds}.m") == [(1, 2)]
    engine.dispose()


def test_merge_on_merge_key_only_replaces_whole_partitions(engine):
    rows = [{"day": 1, "n": 1}, {"day": 1, "n": 2}, {"day": 2, "n": 3}]
    load(engine, "t", rows, write_disposition="merge", merge_key="day")
    load(engine, "t", [{"day": 1, "n": 7}, {"day": 1, "n": 8}], write_disposition="merge", merge_key="day")
    assert raw(engine, "SELECT day, n FROM {ds}.t ORDER BY day, n") == [(1, 7), (1, 8), (2, 3)]
