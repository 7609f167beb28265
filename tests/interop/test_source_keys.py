"""Where standalone resources keep their state: under dlt's default schema name, in both tools.

dlt uses the pipeline's default schema name: the one recorded in the state, else the pipeline name
without a ``_pipeline`` suffix, in snake_case. A pipeline moved between the tools must find its slots.
"""

from __future__ import annotations

import pytest
from dlt.extract.utils import make_schema_with_default_name

from airflow_state_provider.pipeline import default_schema_name
from tests.interop.support import (
    SOURCE,
    Feed,
    Seen,
    Shape,
    Warehouse,
    assert_same,
    at,
    cursor_slot,
    dlt_events,
    our_events,
    run_dlt,
    run_ours,
)


@pytest.mark.parametrize(
    "name",
    [
        "crm_pipeline",
        "chess",
        "Orders-Sync",
        "MyApp_pipeline",
        "1st_pipeline",
        "a b.c",
        "Ünï_pipeline",
        "x" * 80,
    ],
)
def test_default_schema_name_is_dlts(name: str) -> None:
    assert default_schema_name(name) == make_schema_with_default_name(name)


def test_pipeline_name_that_is_not_a_schema_name_moves_both_ways(warehouse: Warehouse) -> None:
    """'Orders-Sync' keys standalone resources as 'orders_sync' in both tools (dlt rejects the raw name)."""
    name, key = "Orders-Sync", "orders_sync"
    feed, seen = Feed(), list[Seen]()
    feed.add((1, 0), (2, 1))
    run_ours(warehouse, our_events(feed, seen), pipeline_name=name)
    feed.add((3, 2))
    pipeline, _ = run_dlt(warehouse, dlt_events(feed, seen), pipeline_name=name)
    assert pipeline.default_schema_name == key
    feed.add((4, 3))
    ours, _ = run_ours(warehouse, our_events(feed, seen), pipeline_name=name)

    assert [s.start_value for s in seen] == [at(0), at(1), at(2)]
    assert warehouse.ids() == [1, 2, 3, 4]
    assert list(ours.state["sources"]) == [key]
    assert_same(cursor_slot(ours.state, key)["last_value"], at(3))


def test_standalone_resource_follows_the_default_schema_dlt_recorded(warehouse: Warehouse) -> None:
    """A dlt pipeline that first ran a @source has that source as its default schema; ours keeps it."""
    feed, seen = Feed(), list[Seen]()
    feed.add((1, 0), (2, 1))
    pipeline, _ = run_dlt(warehouse, dlt_events(feed, seen, Shape.SOURCE))
    assert pipeline.default_schema_name == SOURCE

    feed.add((3, 2))
    ours, _ = run_ours(warehouse, our_events(feed, seen, Shape.RESOURCE))

    assert_same(seen[1].start_value, at(1))  # the @source's slot, which standalone "events" shares
    assert warehouse.ids() == [1, 2, 3]
    assert list(ours.state["sources"]) == [SOURCE]
    assert ours.state["default_schema_name"] == SOURCE
