"""PostgreSQL keeps one binary COPY open across the batches of a table (the server works on one batch
while Python prepares the next). What must hold whatever the batching: every row lands once, tables
interleave, a failure after some batches rolls everything back and leaves the connection usable, and a
value the server would refuse later is still reported naming its row."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_state_provider import Pipeline, resource
from airflow_state_provider.exceptions import InvalidRowError

pytestmark = pytest.mark.parametrize("dest_url", ["postgresql"], indirect=True)


def _count(p: Pipeline, table: str) -> int:
    with p.sql_client() as client:
        return client.execute_sql(f"SELECT count(*), count(DISTINCT id) FROM {table}")[0]


def test_batches_of_interleaved_tables_all_land(dest_url: str, pipelines_dir: Path) -> None:
    @resource(name="a")
    def a():
        for i in range(25):
            yield {"id": i, "name": f"a{i}", "note": None if i % 4 else "x"}

    @resource(name="b")
    def b():
        for i in range(17):
            yield {"id": i, "payload": {"k": i}}

    p = Pipeline("stream", destination=dest_url, pipelines_dir=pipelines_dir, batch_size=3)
    assert p.run([a(), b()]).row_counts == {"a": 25, "b": 17}
    assert _count(p, "a") == (25, 25)
    assert _count(p, "b") == (17, 17)
    # and again, appending into the existing tables
    p.run([a(), b()])
    assert _count(p, "a") == (50, 25)


def test_a_failure_after_batches_rolls_back_and_the_next_run_works(
    dest_url: str, pipelines_dir: Path
) -> None:
    @resource(name="events")
    def failing():
        for i in range(20):
            yield {"id": i}
        raise RuntimeError("source broke after 20 rows")

    @resource(name="events")
    def fine():
        yield from ({"id": i} for i in range(20))

    p = Pipeline("stream", destination=dest_url, pipelines_dir=pipelines_dir, batch_size=4)
    with pytest.raises(RuntimeError, match="source broke"):
        p.run(failing())
    assert p.run(fine()).row_counts == {"events": 20}
    assert _count(p, "events") == (20, 20)


@pytest.mark.parametrize("value", ["a\x00b", ["x", "a\x00b"]], ids=["text", "json"])
def test_nul_in_a_later_batch_names_its_row_and_nothing_is_written(
    dest_url: str, pipelines_dir: Path, value: object
) -> None:
    rows = [{"id": i, "note": "ok" if isinstance(value, str) else ["ok"]} for i in range(10)]
    rows[7]["note"] = value
    p = Pipeline("stream", destination=dest_url, pipelines_dir=pipelines_dir, batch_size=3)
    with pytest.raises(InvalidRowError, match=r"column 'note'.*NUL") as info:
        p.run(rows, table_name="events", primary_key="id")
    assert "id=7" in str(info.value)
    with p.sql_client() as client:
        assert client.execute_sql(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'events'"
        ) == [(0,)]
