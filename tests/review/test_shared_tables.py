"""Review (adversary) of issue 14: a table loaded by more than one resource or pipeline.

The review of issue 14 refused ``drop`` and ``refresh`` of one of several resources loading one table;
``write_disposition="replace"`` empties that table just the same and is not refused.
"""

from __future__ import annotations

import pytest

from airflow_state_provider import incremental, resource, source
from tests.edges.support import DATASET, new_pipeline, query


def orders_resource(rows: list[dict]):
    @resource(name="orders", table_name="events")
    def orders(ts=incremental("ts", initial_value=0)):
        yield [r for r in rows if r["ts"] > ts.start_value]

    return orders


@resource(name="snapshot", table_name="events", write_disposition="replace")
def snapshot_rows():
    yield {"id": 100, "ts": 0}


@pytest.mark.parametrize("shared_by", ["pipeline", "resource"])
def test_replace_of_a_table_another_resource_loads_never_loses_its_rows(dest_url, tmp_path, shared_by):
    rows = [{"id": i, "ts": i} for i in range(1, 4)]
    orders = orders_resource(rows)

    @source(name="shop")
    def shop(with_snapshot: bool):
        return (orders, snapshot_rows) if with_snapshot else (orders,)

    if shared_by == "pipeline":
        new_pipeline(dest_url, tmp_path, name="a").run(orders)
        replace = lambda: new_pipeline(dest_url, tmp_path, name="b").run(snapshot_rows)  # noqa: E731
        again = lambda: new_pipeline(dest_url, tmp_path, name="a").run(orders)  # noqa: E731
    else:
        new_pipeline(dest_url, tmp_path).run(shop(False))
        replace = lambda: new_pipeline(dest_url, tmp_path).run(shop(True))  # noqa: E731
        again = lambda: new_pipeline(dest_url, tmp_path).run(shop(False))  # noqa: E731
    try:
        replace()
    except Exception as exc:  # refusing, naming the table and the other loader, is the fix
        assert "events" in str(exc)
    rows.append({"id": 4, "ts": 4})
    again()
    ids = {r[0] for r in query(dest_url, f'SELECT id FROM "{DATASET}".events')}
    assert {1, 2, 3, 4} <= ids, f"rows 1-3 lost while the cursor says they were loaded: {sorted(ids)}"


def test_replace_of_a_table_another_pipeline_loads_is_refused_naming_both(dest_url, tmp_path):
    from airflow_state_provider.exceptions import ConfigurationError

    new_pipeline(dest_url, tmp_path, name="a").run(orders_resource([{"id": 1, "ts": 1}]))
    with pytest.raises(ConfigurationError) as failure:
        new_pipeline(dest_url, tmp_path, name="b").run(snapshot_rows)
    message = str(failure.value)
    assert "'snapshot'" in message and "'orders'" in message and "'a'" in message, message
    assert "replace" in message and "Nothing was written" in message, message
    assert query(dest_url, f'SELECT id FROM "{DATASET}".events') == [(1,)]
