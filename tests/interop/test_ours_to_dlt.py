"""Us first, then dlt: a dlt pipeline on a clean working dir restores our state and continues from it."""

from __future__ import annotations

import dlt
import pytest

from tests.interop.support import (
    DATASET,
    DEFAULT_SCHEMA,
    PIPELINE,
    TYPED_STATE,
    Feed,
    Seen,
    Shape,
    Warehouse,
    assert_same,
    at,
    cursor_slot,
    dlt_events,
    dlt_pipeline,
    our_events,
    run_dlt,
    run_ours,
    slot,
    without_local,
)

FIRST = ((1, 0), (2, 1), (3, 2), (4, 2))
SECOND = ((5, 2), (6, 3), (7, 4))


@pytest.mark.parametrize("shape", list(Shape), ids=lambda s: s.value)
def test_dlt_restores_our_state_and_continues_from_our_cursor(warehouse: Warehouse, shape: Shape) -> None:
    feed, our_seen, dlt_seen = Feed(), list[Seen](), list[Seen]()
    feed.add(*FIRST)
    ours, _ = run_ours(warehouse, our_events(feed, our_seen, shape))
    our_state = ours.state
    key = shape.source_key
    assert len(cursor_slot(our_state, key)["unique_hashes"]) == 2
    assert "_dlt_version" not in warehouse.tables()  # we do not write dlt's schema table

    pipeline = dlt_pipeline(warehouse)
    pipeline.sync_destination()
    assert pipeline.first_run is False
    restored = without_local(pipeline.state)
    # same values and types; dlt adopts our version and hash as they are (no re-versioning)
    assert_same(restored["sources"], our_state["sources"])
    assert restored["_state_version"] == our_state["_state_version"]
    assert restored["_version_hash"] == our_state["_version_hash"]
    assert pipeline.default_schema_name == DEFAULT_SCHEMA

    feed.add(*SECOND)
    info = pipeline.run(dlt_events(feed, dlt_seen, shape))
    info.raise_on_failed_jobs()

    (seen,) = dlt_seen
    assert_same(seen.start_value, at(2))
    assert_same(seen.resource_state, slot(our_state, key))
    assert seen.source_state == {"last_run": 1}
    # dlt skipped the boundary rows 3 and 4 by our hashes, kept the late row 5, and loaded into our table
    assert warehouse.ids() == [1, 2, 3, 4, 5, 6, 7]
    after = without_local(pipeline.state)
    assert after["_state_version"] == our_state["_state_version"] + 1
    assert slot(after, key)["runs"] == 2
    assert_same({k: slot(after, key)[k] for k in TYPED_STATE}, TYPED_STATE)
    assert_same(cursor_slot(after, key)["last_value"], at(4))
    assert "_dlt_version" in warehouse.tables()  # dlt created its schema table next to ours


def test_dlt_attach_restores_our_state_and_runs_on(warehouse: Warehouse) -> None:
    feed, seen = Feed(), list[Seen]()
    feed.add(*FIRST)
    ours, _ = run_ours(warehouse, our_events(feed, seen))

    attached = dlt.attach(
        PIPELINE,
        pipelines_dir=warehouse.fresh_dir("dlt"),
        destination=warehouse.dlt_destination(),
        dataset_name=DATASET,
    )

    assert attached.first_run is False
    assert attached.dataset_name == DATASET
    assert_same(without_local(attached.state)["sources"], ours.state["sources"])
    feed.add(*SECOND)
    attached.run(dlt_events(feed, seen)).raise_on_failed_jobs()
    assert_same(seen[1].start_value, at(2))
    assert warehouse.ids() == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("shape", list(Shape), ids=lambda s: s.value)
def test_round_trip_dlt_ours_dlt_ours(warehouse: Warehouse, shape: Shape) -> None:
    """Move a dlt pipeline onto this provider and back, twice: every run continues where the last stopped."""
    feed, seen = Feed(), list[Seen]()
    key = shape.source_key
    batches = [((1, 0), (2, 1), (3, 1)), ((4, 1), (5, 2)), ((6, 2), (7, 3), (8, 3)), ((9, 3), (10, 4))]
    runners = [
        lambda: run_dlt(warehouse, dlt_events(feed, seen, shape))[0].state,
        lambda: run_ours(warehouse, our_events(feed, seen, shape))[0].state,
    ]
    expected_ids: list[int] = []
    versions: list[int] = []
    for n, batch in enumerate(batches):
        feed.add(*batch)
        expected_ids += [row_id for row_id, _ in batch]
        state = runners[n % 2]()
        assert warehouse.ids() == expected_ids, f"run {n + 1}"
        assert slot(state, key)["runs"] == n + 1
        versions.append(state["_state_version"])
        # each run started from the previous run's cursor, whichever tool wrote it
        assert_same(seen[n].start_value, at(batches[n - 1][-1][1]) if n else at(0))
    assert versions == [1, 2, 3, 4]
    rows = warehouse.state_rows()
    assert [r.version for r in rows] == [1, 2, 3, 4] and all(r.committed for r in rows)


def test_dlt_with_its_old_working_dir_adopts_our_newer_state(warehouse: Warehouse) -> None:
    """Moving back to a machine that kept dlt's working dir: dlt takes the newer version from the table."""
    feed, seen = Feed(), list[Seen]()
    workdir = warehouse.fresh_dir("dlt-kept")

    def dlt_run() -> dlt.Pipeline:
        pipeline = dlt.pipeline(
            pipeline_name=PIPELINE,
            destination=warehouse.dlt_destination(),
            dataset_name=DATASET,
            pipelines_dir=workdir,
        )
        pipeline.run(dlt_events(feed, seen)).raise_on_failed_jobs()
        return pipeline

    feed.add((1, 0), (2, 1))
    assert dlt_run().state["_state_version"] == 1
    feed.add((3, 2))
    run_ours(warehouse, our_events(feed, seen))  # version 2, unknown to dlt's working dir
    feed.add((4, 3))
    pipeline = dlt_run()

    assert_same(seen[2].start_value, at(2))  # our cursor, not the one in dlt's local state.json
    assert warehouse.ids() == [1, 2, 3, 4]
    assert pipeline.state["_state_version"] == 3
