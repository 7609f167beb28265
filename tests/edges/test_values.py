"""Issue 14 items 9, 10, 14, 15: numbers, colliding keys and invalid values, on every database.

Each bad input fails with a clear error naming where, and the destination is left exactly as it was.
"""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from airflow_state_provider import current, resource
from airflow_state_provider.exceptions import InvalidRowError, SchemaConflictError, StateNotSerializableError
from tests.edges.support import DATASET, NAME, new_pipeline, query
from tests.reliability import snapshot


@resource(name="events", primary_key="id")
def seed():
    yield [{"id": i, "note": f"n{i}"} for i in range(5)]


@pytest.fixture
def seeded(dest_url, tmp_path):
    new_pipeline(dest_url, tmp_path).run(seed)
    return dest_url, snapshot.take(dest_url, DATASET)


def unchanged(url: str, before: snapshot.Snapshot) -> None:
    assert snapshot.take(url, DATASET) == before, "the failed run changed the destination"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_nan_and_infinity_in_state_raise_naming_the_path(seeded, tmp_path, value):
    url, before = seeded

    @resource(name="events", primary_key="id")
    def events():
        current.resource_state()["ratio"] = value
        yield {"id": 100}

    with pytest.raises(StateNotSerializableError) as failure:
        new_pipeline(url, tmp_path).run(events)
    message = str(failure.value)
    assert f"pipeline {NAME!r}" in message and f"sources.{NAME}.resources.events.ratio" in message
    unchanged(url, before)


# -- decimals (item 9) -------------------------------------------------------------------------------


def read_decimals(url: str, table: str, column: str) -> list[Decimal]:
    """Raw values as the database holds them (duckdb-engine's Numeric goes through float)."""
    rows = query(url, f'SELECT CAST("{column}" AS TEXT) FROM "{DATASET}"."{table}" ORDER BY 1')
    return [Decimal(r[0]) for r in rows]


def test_decimals_with_more_than_nine_fractional_digits_are_stored_exactly(dest_url, tmp_path):
    values = [Decimal("1.0000000001"), Decimal("1.0000000002"), Decimal("-0.000000000012")]

    @resource(name="prices", primary_key="key", write_disposition="merge")
    def prices():
        yield [{"key": v, "amount": v * 3} for v in values]

    info = new_pipeline(dest_url, tmp_path).run(prices)
    assert info.row_counts == {"prices": 3}  # distinct keys, three rows
    assert read_decimals(dest_url, "prices", "key") == sorted(values)
    assert read_decimals(dest_url, "prices", "amount") == sorted(v * 3 for v in values)
    # the merge matches the exact keys: a second load replaces, never duplicates
    assert new_pipeline(dest_url, tmp_path).run(prices).row_counts == {"prices": 3}
    assert len(query(dest_url, f'SELECT * FROM "{DATASET}".prices')) == 3


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (Decimal("1.0000000000001"), "fractional digits, over the column's scale of 10"),
        (Decimal("123456789012345678901234567890"), "integer digits"),
        (Decimal("NaN"), "not a finite number"),
    ],
    ids=["more_scale", "more_integer_digits", "nan"],
)
def test_a_decimal_that_does_not_fit_its_column_raises_naming_it(dest_url, tmp_path, value, why):
    @resource(name="prices")
    def first():
        yield {"id": 1, "amount": Decimal("1.0000000001")}  # creates numeric(38, 10)

    new_pipeline(dest_url, tmp_path).run(first)
    before = snapshot.take(dest_url, DATASET)

    @resource(name="prices")
    def second():
        yield {"id": 2, "amount": value}

    url_kind = dest_url.split(":")[0]
    with pytest.raises(SchemaConflictError) as failure:
        new_pipeline(dest_url, tmp_path).run(second)
    message = str(failure.value)
    assert f"column 'amount' of table {DATASET}.prices" in message
    if url_kind == "sqlite" and why == "integer digits":
        why = "significant digits; sqlite keeps 15 exactly"
    assert why in message
    unchanged(dest_url, before)


def test_sqlite_refuses_decimals_it_would_round_as_real(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.sqlite'}"

    @resource(name="prices")
    def prices():
        yield {"id": 1, "amount": Decimal("1234567890.1234567")}  # 17 significant digits

    with pytest.raises(SchemaConflictError) as failure:
        new_pipeline(url, tmp_path).run(prices)
    assert "column 'amount' of table ds.prices" in str(failure.value)
    assert "17 significant digits; sqlite keeps 15 exactly" in str(failure.value)


# -- colliding keys (item 10) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "keys", "column"),
    [
        ({"id": 9, "userId": 1, "user_id": 2}, ("['userId']", "['user_id']"), "user_id"),
        ({"id": 9, "na!e": 1, "na%e": 2}, ("['na!e']", "['na%e']"), "na_e"),
        ({"id": 9, "a": {"b": 1}, "a__b": 2}, ("['a']['b']", "['a__b']"), "a__b"),
        ({"id": 9, "a__b": 2, "a": {"b": 1}}, ("['a']['b']", "['a__b']"), "a__b"),
    ],
    ids=["camel_and_snake", "punctuation", "nested_then_flat", "flat_then_nested"],
)
def test_colliding_keys_raise_naming_the_table_and_both_keys(seeded, tmp_path, row, keys, column):
    url, before = seeded

    @resource(name="events", primary_key="id")
    def events():
        yield [{"id": 100 + i, "note": "fine"} for i in range(20)]  # a batch that reaches the database
        yield row

    with pytest.raises(SchemaConflictError) as failure:
        new_pipeline(url, tmp_path, batch_size=5).run(events)
    message = str(failure.value)
    assert f"table {DATASET}.events" in message and f"column {column!r}" in message
    assert all(k in message for k in keys), message
    unchanged(url, before)


def test_keys_that_normalize_alike_in_different_rows_share_their_column(dest_url, tmp_path):
    """Nothing is lost when each row has one of them: dlt loads them into one column too."""

    @resource(name="users")
    def users():
        yield [{"userId": 1}, {"user_id": 2}]

    assert new_pipeline(dest_url, tmp_path).run(users).row_counts == {"users": 2}
    assert sorted(r[0] for r in query(dest_url, f'SELECT user_id FROM "{DATASET}".users')) == [1, 2]


# -- invalid text and nesting (item 15) ------------------------------------------------------------


def deep(levels: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(levels):
        value = {"k": value}
    return value


def deep_list(levels: int) -> object:
    value: object = [1]
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bad \ud800 text", ["column 'note'", "lone surrogate", "id=77"]),
        (["ok", "bad \udfff"], ["column 'note'", "lone surrogate", "id=77"]),
        (deep(3000), ["nests dicts deeper", "id=77"]),
        (deep_list(3000), ["column 'note'", "deeper than Python's recursion limit"]),
    ],
    ids=["surrogate_text", "surrogate_in_json", "deep_dict", "deep_list"],
)
def test_invalid_values_name_table_column_and_row(seeded, tmp_path, value, expected):
    url, before = seeded

    @resource(name="events", primary_key="id")
    def events():
        yield [{"id": 100 + i, "note": "fine"} for i in range(10)]
        yield {"id": 77, "note": value}

    with pytest.raises(InvalidRowError) as failure:
        new_pipeline(url, tmp_path, batch_size=5).run(events)
    message = str(failure.value)
    assert f"Pipeline {NAME!r}" in message and f"table {DATASET}.events" in message
    assert all(e in message for e in expected), message
    unchanged(url, before)


@pytest.mark.postgres
@pytest.mark.parametrize("value", ["a\x00b", ["x", "a\x00b"]], ids=["text", "json"])
def test_nul_on_postgresql_names_table_column_and_row(postgres_url, tmp_path, value):
    new_pipeline(postgres_url, tmp_path).run(seed)
    before = snapshot.take(postgres_url, DATASET)

    @resource(name="events", primary_key="id")
    def events():
        yield {"id": 77, "note2": value}

    with pytest.raises(InvalidRowError) as failure:
        new_pipeline(postgres_url, tmp_path).run(events)
    message = str(failure.value)
    assert "column 'note2' of table ds.events" in message and "NUL" in message and "id=77" in message
    assert snapshot.take(postgres_url, DATASET) == before


@pytest.mark.parametrize("url_kind", ["sqlite", "duckdb"])
def test_nul_is_kept_where_the_database_stores_it(tmp_path, url_kind):
    url = f"{url_kind}:///{tmp_path / 'w.db'}"

    @resource(name="events")
    def events():
        yield {"id": 1, "note": "a\x00b"}

    new_pipeline(url, tmp_path).run(events)
    assert query(url, f'SELECT note FROM "{DATASET}".events') == [("a\x00b",)]


# -- review of issue 14: values the database would change are stored exactly or refused, never changed


EDGE_NUMBERS = [
    Decimal("1E-400"),  # under REAL's range: SQLite read it back as 0
    Decimal("1E+400"),  # over it: inf
    Decimal("1.5E-320"),  # a subnormal REAL keeps fewer digits
    Decimal("-1E-307"),
    Decimal("9.99999999999999E+307"),
    Decimal("1E+20"),
    Decimal("-0"),
    math.nan,  # SQLite stores NaN as NULL
    math.inf,
    -math.inf,
]


@pytest.mark.parametrize("value", EDGE_NUMBERS, ids=[repr(v) for v in EDGE_NUMBERS])
def test_edge_numbers_are_stored_exactly_or_refused_naming_the_column(dest_url, tmp_path, value):
    new_pipeline(dest_url, tmp_path).run(seed)
    before = snapshot.take(dest_url, DATASET)

    @resource(name="events", primary_key="id")
    def events():
        yield [{"id": 10, "amount": value}]

    kind = dest_url.split(":")[0]
    try:
        new_pipeline(dest_url, tmp_path).run(events)
    except SchemaConflictError as exc:
        message = str(exc)
        assert f"column 'amount' of table {DATASET}.events" in message and repr(value) in message
        unchanged(dest_url, before)
        refused = True
    else:
        refused = False
        text = query(dest_url, f'SELECT CAST(amount AS TEXT) FROM "{DATASET}".events WHERE id = 10')[0][0]
        if isinstance(value, Decimal):
            assert Decimal(text) == value
        else:
            got = float({"Infinity": "inf", "-Infinity": "-inf"}.get(text, text))
            assert got == value or (math.isnan(value) and math.isnan(got))
    # the databases that can hold a value exactly must not refuse it
    sqlite_cannot = {"1E-400", "1E+400", "1.5E-320", "nan"}
    duckdb_cannot = {"1E-400", "1E+400", "1.5E-320", "-1E-307", "9.99999999999999E+307"}  # precision 38
    cannot = {"sqlite": sqlite_cannot, "duckdb": duckdb_cannot}.get(kind, set())
    assert refused == (str(value) in cannot), (kind, value, refused)


@pytest.mark.parametrize("value", [2**53 + 1, -(2**60) - 1, 10**400], ids=["2**53+1", "-2**60-1", "10**400"])
def test_an_integer_a_double_column_would_round_is_refused(dest_url, tmp_path, value):
    """Sibling of the SQLite decimals: an int into a double column was converted with float(), which
    rounds beyond 2**53 on every database."""

    @resource(name="ratios")
    def first():
        yield [{"id": 1, "ratio": 0.5}, {"id": 2, "ratio": 2**53}]  # 2**53 is exact

    new_pipeline(dest_url, tmp_path).run(first)
    before = snapshot.take(dest_url, DATASET)

    @resource(name="ratios")
    def second():
        yield {"id": 3, "ratio": value}

    with pytest.raises(SchemaConflictError) as failure:
        new_pipeline(dest_url, tmp_path).run(second)
    assert f"column 'ratio' of table {DATASET}.ratios" in str(failure.value)
    unchanged(dest_url, before)
