"""Issue 14 item 8: identifiers shortened by bytes, dataset names checked before any DDL."""

from __future__ import annotations

import pytest
from dlt.common.normalizers.naming.snake_case import NamingConvention

from airflow_state_provider import resource
from airflow_state_provider.destination import naming
from tests.edges.support import DATASET, new_pipeline, query

FULLWIDTH = "\uff12" * 25  # 75 bytes of UTF-8: PostgreSQL would cut it at 63


def test_long_ascii_names_are_shortened_exactly_as_dlt_does():
    dlt_naming = NamingConvention(max_length=63)
    for name in ["x" * 64, "a_very_long_column_" * 5, "CamelCaseName" * 7, "deep__" * 20 + "leaf"]:
        assert naming.normalize_path(name, 63) == dlt_naming.normalize_path(name)


@pytest.mark.parametrize(
    "name",
    [FULLWIDTH, "é" * 40, "日本語の列名" * 6, "a" * 62 + "é"],
    ids=["fullwidth", "e_acute", "cjk", "edge"],
)
def test_shortened_names_fit_63_bytes_and_stay_distinct(name):
    short = naming.normalize_path(name, 63)
    assert len(short.encode("utf-8")) <= 63
    other = naming.normalize_path(name + "x", 63)
    assert other != short and len(other.encode("utf-8")) <= 63


def test_a_fullwidth_table_and_column_name_load_every_run(dest_url, tmp_path):
    @resource(name="wide", table_name=FULLWIDTH)
    def wide(n=0):
        yield {"id": n, FULLWIDTH: n, FULLWIDTH + "1": n}

    for n in range(3):
        info = new_pipeline(dest_url, tmp_path).run(wide(n))
        (table,) = info.row_counts
        assert info.row_counts == {table: 1}, f"run {n}"
        assert len(table.encode("utf-8")) <= (63 if dest_url.startswith("postgresql") else 10**4)
    rows = query(dest_url, f'SELECT id FROM "{DATASET}"."{table}" ORDER BY id')
    assert rows == [(0,), (1,), (2,)]


@pytest.mark.parametrize("dataset", ["dot.raw", "a.b"])
def test_dataset_names_with_a_dot_load_into_dlts_normalized_schema(dest_url, tmp_path, dataset):
    # a dot once committed one load and failed every later one; dlt normalizes dataset names
    # (issue 15), so the schema is the normalized name on every database, run after run
    @resource(name="events")
    def events(n=0):
        yield {"id": n}

    for n in range(3):
        pipeline = new_pipeline(dest_url, tmp_path, dataset_name=dataset)
        assert pipeline.run(events(n)).row_counts == {"events": 1}
    physical = pipeline.dataset_name
    assert "." not in physical
    assert len(query(dest_url, f'SELECT id FROM "{physical}".events', physical)) == 3


@pytest.mark.postgres
def test_a_dataset_name_over_postgresqls_limit_is_shortened_by_bytes(postgres_url, tmp_path):
    # 64 bytes would be cut by PostgreSQL itself; the normalized name fits its 63 bytes
    for _ in range(2):
        pipeline = new_pipeline(postgres_url, tmp_path, dataset_name="events_" + "x" * 57)
        pipeline.run([{"id": 1}], table_name="t")
    assert len(pipeline.dataset_name.encode("utf-8")) <= 63
    physical = pipeline.dataset_name
    assert query(postgres_url, f'SELECT count(*) FROM "{physical}".t', physical) == [(2,)]
