"""Review (adversary) of issue 14: the one-transaction promise with an Engine the user built.

``Pipeline(destination=<Engine>)`` is documented; an engine made with ``isolation_level="AUTOCOMMIT"``
(common for engines that also run DDL or maintenance) is not refused.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline, resource, source
from tests.edges.support import DATASET, query


def shop(a_id: int, b_value: object):
    @source(name="s")
    def s():
        @resource(name="a")
        def a():
            yield [{"id": a_id}]

        @resource(name="b")
        def b():
            yield [{"id": a_id, "x": b_value}]

        return a, b

    return s()


def run(engine: sa.Engine, tmp_path, data) -> None:
    pipelines_dir = tmp_path / uuid.uuid4().hex
    Pipeline("ac", destination=engine, dataset_name=DATASET, pipelines_dir=pipelines_dir).run(data)


@pytest.mark.postgres
def test_an_autocommit_engine_never_commits_part_of_a_failed_load(postgres_url, tmp_path):
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    run(sa.create_engine(postgres_url), tmp_path, shop(1, 1))  # the autocommit engine is refused up front
    try:
        run(engine, tmp_path, shop(2, "text"))  # table b's column x is bigint: SchemaConflictError
    except Exception as exc:
        assert "Nothing" in str(exc) or "isolation_level" in str(exc), repr(exc)
    # refusing the engine up front (naming isolation_level) would also leave a == [1]
    assert query(postgres_url, f'SELECT id FROM "{DATASET}".a ORDER BY id') == [(1,)]


def test_duckdb_autocommit_engine_is_refused_with_a_clear_error(tmp_path):
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with pytest.raises(Exception) as failure:
        run(engine, tmp_path, shop(1, 1))
    assert "isolation" in str(failure.value).lower(), repr(failure.value)
    assert not isinstance(failure.value, AttributeError)


@pytest.mark.parametrize("how", ["create_engine", "execution_options"])
def test_an_autocommit_engine_is_refused_on_every_database_naming_the_option(dest_url, tmp_path, how):
    from airflow_state_provider.exceptions import ConfigurationError

    if how == "create_engine":
        engine = sa.create_engine(dest_url, isolation_level="AUTOCOMMIT")
    else:
        engine = sa.create_engine(dest_url).execution_options(isolation_level="AUTOCOMMIT")
    with pytest.raises(ConfigurationError, match="isolation_level"):
        run(engine, tmp_path, shop(1, 1))
    inspector = sa.inspect(sa.create_engine(dest_url))
    assert DATASET not in inspector.get_schema_names() or not inspector.get_table_names(schema=DATASET)
