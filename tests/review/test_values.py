"""Review (adversary) of issue 14: values changed silently on their way to the destination or the state.

Each test writes a value, reads it back and compares exactly; each is a fault found in review, marked
xfail(strict=True) until the lead assigns the fix.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from airflow_state_provider import current, resource
from airflow_state_provider.exceptions import StateNotSerializableError
from tests.edges.support import DATASET, new_pipeline, query


def test_int_keys_in_state_survive_a_restore_so_nothing_loads_twice(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    pages = {1: [{"id": 1}, {"id": 2}], 2: [{"id": 3}]}

    @resource(name="pages")
    def load_pages():
        seen = current.resource_state().setdefault("seen", {})
        for page, rows in pages.items():
            if page not in seen:  # a realistic "already fetched" check keyed by page number
                seen[page] = True
                yield rows

    try:
        new_pipeline(url, tmp_path).run(load_pages)
    except StateNotSerializableError as exc:  # refused at the first commit: nothing written
        assert "seen.1" in str(exc) and "int" in str(exc) and "str(key)" in str(exc), str(exc)
        assert query(url, "SELECT name FROM sqlite_master WHERE name = 'pages'") == []
        return
    new_pipeline(url, tmp_path).run(load_pages)
    ids = [r[0] for r in query(url, f'SELECT id FROM "{DATASET}".pages ORDER BY id')]
    # either refused loudly at the first run (StateNotSerializableError) or kept as int keys: never twice
    assert ids == [1, 2, 3]


def test_a_time_with_an_offset_is_stored_exactly_or_refused(dest_url, tmp_path):
    value = dt.time(10, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))

    @resource(name="slots")
    def slots():
        yield {"id": 1, "starts": value}

    try:
        new_pipeline(dest_url, tmp_path).run(slots)
    except Exception as exc:  # a clear refusal naming the column is acceptable
        assert "starts" in str(exc)
        return
    text = query(dest_url, f'SELECT CAST(starts AS TEXT) FROM "{DATASET}".slots')[0][0]
    stored = dt.time.fromisoformat(text)
    # 10:00+02:00 is 08:00 UTC; a naive 10:00 is neither
    assert stored.tzinfo is not None or stored == dt.time(8, 0), text


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (dt.time(10, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))), dt.time(8, 0)),
        (dt.time(1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))), dt.time(23, 30)),
        (dt.time(23, 0, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5))), dt.time(4, 0, 0, 5)),
        ("10:00:00+02:00", dt.time(8, 0)),  # ISO text into an existing time column
        (dt.time(10, 0), dt.time(10, 0)),
    ],
    ids=["plus2", "wraps", "minus5-micro", "iso-text", "naive"],
)
def test_times_with_an_offset_are_stored_as_their_utc_time_as_dlt_does(dest_url, tmp_path, given, expected):
    @resource(name="slots")
    def slots(value):
        yield {"id": 1, "starts": value}

    new_pipeline(dest_url, tmp_path).run(slots(dt.time(0, 0)))
    new_pipeline(dest_url, tmp_path).run(slots(given))
    texts = [r[0] for r in query(dest_url, f'SELECT CAST(starts AS TEXT) FROM "{DATASET}".slots')]
    assert {dt.time.fromisoformat(t) for t in texts} == {dt.time(0, 0), expected}, texts


def test_sqlite_json_column_keeps_a_string_apart_from_json(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"

    @resource(name="docs")
    def docs():
        yield [{"id": 1, "body": [1, 2]}, {"id": 2, "body": "[1,2]"}, {"id": 3, "body": "null"}]

    new_pipeline(url, tmp_path).run(docs)
    stored = dict(query(url, f'SELECT id, body FROM "{DATASET}".docs'))
    assert json.loads(stored[1]) == [1, 2]
    assert json.loads(stored[2]) == "[1,2]"
    assert json.loads(stored[3]) == "null"


def test_sqlite_json_column_refuses_a_bare_integer_it_would_keep_as_real(tmp_path):
    from airflow_state_provider.exceptions import SchemaConflictError

    url = f"sqlite:///{tmp_path / 'd.db'}"

    @resource(name="docs")
    def docs():
        yield [{"id": 1, "body": [1, 2]}, {"id": 2, "body": 2**64}]

    with pytest.raises(SchemaConflictError, match="body") as failure:
        new_pipeline(url, tmp_path).run(docs)
    assert str(2**64) in str(failure.value)


def test_a_float_a_decimal_column_refuses_is_named_as_a_float(dest_url, tmp_path):
    from decimal import Decimal

    from airflow_state_provider.exceptions import SchemaConflictError

    @resource(name="prices")
    def prices(value):
        yield {"id": 1, "amount": value}

    new_pipeline(dest_url, tmp_path).run(prices(Decimal("1.5")))
    with pytest.raises(SchemaConflictError, match="amount") as failure:
        new_pipeline(dest_url, tmp_path).run(prices(1e-10))
    assert "value of type float (1e-10)" in str(failure.value), str(failure.value)
