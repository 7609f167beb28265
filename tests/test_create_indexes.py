"""``Pipeline(create_indexes=...)``: dlt's destination option of that name, the UNIQUE index on ``_dlt_id``.

The index is observed by what it does: a second row with an existing ``_dlt_id`` is refused with it and
accepted without it, on SQLite, DuckDB and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline

#: dlt's defaults: postgres creates the index, duckdb does not; SQLite keeps the index it always had
DEFAULTS = {"postgresql": True, "duckdb": False, "sqlite": True}

ROWS = [{"id": i, "name": f"n{i}"} for i in range(5)]


def _duplicate_accepted(p: Pipeline) -> bool:
    """Insert a copy of a loaded row, ``_dlt_id`` included; True if the database accepted it."""
    with p.sql_client() as client:
        try:
            client.execute_sql(
                "INSERT INTO events (id, name, _dlt_load_id, _dlt_id) "
                "SELECT id, name, _dlt_load_id, _dlt_id FROM events WHERE id = 0"
            )
        except sa.exc.DBAPIError as e:
            assert "_dlt_id" in str(e) or "unique" in str(e).lower() or "duplicate" in str(e).lower(), e
            client.connection.rollback()
            return False
        return True


@pytest.mark.parametrize("create_indexes", [None, True, False])
def test_create_indexes_decides_the_unique_dlt_id_index(
    dest_url: str, pipelines_dir: Path, create_indexes: bool | None
) -> None:
    p = Pipeline("idx", destination=dest_url, pipelines_dir=pipelines_dir, create_indexes=create_indexes)
    info = p.run(ROWS, table_name="events")
    assert info.row_counts == {"events": 5}
    kind = p.engine.dialect.name
    indexed = DEFAULTS[kind] if create_indexes is None else create_indexes
    assert _duplicate_accepted(p) is not indexed
    with p.sql_client() as client:
        assert client.execute_sql("SELECT count(*) FROM events")[0][0] == (5 if indexed else 6)


def test_an_existing_table_keeps_its_index(dest_url: str, pipelines_dir: Path) -> None:
    """The option applies to tables a run creates; later runs with another value change nothing."""
    Pipeline("idx", destination=dest_url, pipelines_dir=pipelines_dir, create_indexes=True).run(
        ROWS, table_name="events"
    )
    p = Pipeline("idx", destination=dest_url, pipelines_dir=pipelines_dir, create_indexes=False)
    assert p.run([{"id": 9, "name": "n9", "extra": 1.5}], table_name="events").row_counts == {"events": 1}
    assert _duplicate_accepted(p) is False
