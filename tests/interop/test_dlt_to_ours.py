"""dlt first, then us: our pipeline on a clean worker restores what dlt committed and continues from it."""

from __future__ import annotations

import pytest

from tests.interop.support import (
    TYPED_STATE,
    Feed,
    Seen,
    Shape,
    Warehouse,
    assert_same,
    at,
    cursor_slot,
    dlt_events,
    our_events,
    our_pipeline,
    run_dlt,
    run_ours,
    slot,
    without_local,
)

# two rows on the boundary value at hour 2; then a late row on that boundary and newer rows
FIRST = ((1, 0), (2, 1), (3, 2), (4, 2))
SECOND = ((5, 2), (6, 3), (7, 4))


@pytest.mark.parametrize("shape", list(Shape), ids=lambda s: s.value)
def test_ours_restores_dlt_state_and_continues_from_dlts_cursor(warehouse: Warehouse, shape: Shape) -> None:
    feed, dlt_seen, our_seen = Feed(), list[Seen](), list[Seen]()
    feed.add(*FIRST)
    dlt_run, _ = run_dlt(warehouse, dlt_events(feed, dlt_seen, shape))
    dlt_state = without_local(dlt_run.state)
    key = shape.source_key
    assert warehouse.ids() == [1, 2, 3, 4]
    assert len(cursor_slot(dlt_state, key)["unique_hashes"]) == 2  # both boundary rows

    feed.add(*SECOND)
    ours = our_pipeline(warehouse)
    try:
        restored = ours.state
        assert ours.first_run is False
    finally:
        ours.engine.dispose()
    # everything dlt committed, with its types: incremental slot, typed resource state, source keys
    assert_same(restored["sources"], dlt_state["sources"])
    assert restored["_state_version"] == dlt_state["_state_version"]
    assert restored["_version_hash"] == dlt_state["_version_hash"]
    restored_cursor = cursor_slot(restored, key)
    assert_same(restored_cursor["last_value"], at(2))
    assert restored_cursor["unique_hashes"] == cursor_slot(dlt_state, key)["unique_hashes"]

    ran, info = run_ours(warehouse, our_events(feed, our_seen, shape))

    (seen,) = our_seen
    assert_same(seen.start_value, at(2))
    assert_same(seen.resource_state, slot(dlt_state, key))
    assert seen.source_state == {"last_run": 1}
    # the boundary rows 3 and 4 were deduplicated with dlt's hashes; the late row 5 was not lost
    assert warehouse.ids() == [1, 2, 3, 4, 5, 6, 7]
    assert info.row_counts == {"events": 3}
    after = slot(ran.state, key)
    assert after["runs"] == 2
    assert_same({k: after[k] for k in TYPED_STATE}, TYPED_STATE)
    assert_same(after["incremental"]["updated_at"]["last_value"], at(4))
    assert_same(after["incremental"]["updated_at"]["start_value"], at(2))
    assert ran.state["_state_version"] == dlt_state["_state_version"] + 1


def test_row_hashes_without_primary_key_and_iso_string_cursors_match_dlts(warehouse: Warehouse) -> None:
    """No primary key: both tools hash the whole row for boundary dedup; cursors are ISO strings."""
    feed, seen = Feed(iso=True), list[Seen]()
    feed.add(*FIRST)
    initial = "2024-01-01T00:00:00Z"
    dlt_run, _ = run_dlt(warehouse, dlt_events(feed, seen, primary_key=None, initial_value=initial))
    dlt_cursor = cursor_slot(dlt_run.state)
    assert dlt_cursor["last_value"] == "2024-01-01T02:00:00Z"  # dlt keeps the raw string

    feed.add(*SECOND)
    ours, _ = run_ours(warehouse, our_events(feed, seen, primary_key=None, initial_value=initial))

    assert seen[1].start_value == "2024-01-01T02:00:00Z"
    assert warehouse.ids() == [1, 2, 3, 4, 5, 6, 7]
    cursor = cursor_slot(ours.state)
    assert cursor["last_value"] == "2024-01-01T04:00:00Z"
    assert cursor["start_value"] == "2024-01-01T02:00:00Z"
    assert len(cursor["unique_hashes"]) == 1
