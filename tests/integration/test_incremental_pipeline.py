"""Incremental cursors end to end through real databases (issue 4): the seed's lag example with
datetime, date and integer cursors, boundary dedup across runs, stateless ranges, and a killed
checkpointed backfill that resumes without losing or duplicating a row."""

from __future__ import annotations

import multiprocessing
import os
import signal
import uuid
from datetime import date

import pytest

from airflow_state_provider import Pipeline, incremental, resource
from airflow_state_provider.state.context import external_interval

from .test_pipeline_state import count, new_pipeline, select


def _events_resource(cursor_kind: str, second_run: bool, lag: float):
    """The seed-003 example, with the cursor values of the given kind."""
    values = {
        "datetime": [
            "2023-03-03T01:00:00Z",
            "2023-03-03T02:00:00Z",
            "2023-03-03T02:00:01Z",
            "2023-03-03T03:00:00Z",
        ],
        "date": [date(2023, 3, 1), date(2023, 3, 2), date(2023, 3, 2), date(2023, 3, 3)],
        "int": [100, 200, 201, 300],
    }[cursor_kind]
    first = [
        {"id": 1, "created_at": values[0], "event": "1"},
        {"id": 2, "created_at": values[1], "event": "2"},
    ]
    second = [
        {"id": 1, "created_at": values[0], "event": "1_updated"},
        {"id": 2, "created_at": values[2], "event": "2_updated"},
        {"id": 3, "created_at": values[3], "event": "3"},
    ]

    @resource(name="events", primary_key="id", write_disposition="merge")
    def events_resource(_=incremental("created_at", lag=lag, last_value_func=max)):
        yield from second if second_run else first

    return events_resource


@pytest.mark.parametrize(
    ("cursor_kind", "lag", "last_value"),
    [("datetime", 3600, "2023-03-03T03:00:00Z"), ("date", 1, date(2023, 3, 3)), ("int", 100, 300)],
    ids=["datetime-lag-3600s", "date-lag-1day", "int-lag-100"],
)
def test_seed_lag_example_refreshes_the_window(dest_url, pipelines_dir, cursor_kind, lag, last_value):
    new_pipeline(dest_url, pipelines_dir).run(_events_resource(cursor_kind, False, lag))
    p = new_pipeline(dest_url, pipelines_dir)
    p.run(_events_resource(cursor_kind, True, lag))
    assert select(dest_url, "SELECT id, event FROM events ORDER BY id") == [
        (1, "1_updated"),
        (2, "2_updated"),
        (3, "3"),
    ]
    slot = p.state["sources"]["p"]["resources"]["events"]["incremental"]["created_at"]
    assert slot["last_value"] == last_value


def test_boundary_rows_kept_once_across_runs(dest_url, pipelines_dir):
    batches = [
        [{"id": 1, "ts": 10}, {"id": 2, "ts": 20}, {"id": 3, "ts": 20}],
        [{"id": 2, "ts": 20}, {"id": 3, "ts": 20}, {"id": 4, "ts": 20}, {"id": 5, "ts": 30}],
    ]

    def make(run: int):
        @resource(name="items", primary_key="id")
        def items(ts=incremental("ts")):
            yield batches[run]

        return items

    new_pipeline(dest_url, pipelines_dir).run(make(0))
    p = new_pipeline(dest_url, pipelines_dir)
    p.run(make(1))
    assert [r[0] for r in select(dest_url, "SELECT id FROM items ORDER BY id")] == [1, 2, 3, 4, 5]
    slot = p.state["sources"]["p"]["resources"]["items"]["incremental"]["ts"]
    assert slot["last_value"] == 30 and len(slot["unique_hashes"]) == 1


def test_end_value_range_leaves_state_untouched(dest_url, pipelines_dir):
    @resource(name="rng")
    def rng(n=incremental("n", initial_value=10, end_value=20)):
        yield [{"n": i} for i in range(0, 30, 5)]

    p = new_pipeline(dest_url, pipelines_dir)
    info = p.run(rng)
    assert [r[0] for r in select(dest_url, "SELECT n FROM rng ORDER BY n")] == [10, 15]
    assert "sources" not in p.state  # nothing written: no sources key at all, as in dlt
    assert info.row_counts == {"rng": 2}


def test_external_interval_loads_exactly_its_range_and_manual_runs_use_state(dest_url, pipelines_dir):
    @resource(name="ev", primary_key="id")
    def ev(ts=incremental("ts", initial_value=date(2024, 1, 1), allow_external_schedulers=True)):
        yield [{"id": d, "ts": date(2024, 1, d)} for d in range(1, 10)]

    with external_interval(date(2024, 1, 3), date(2024, 1, 5)):
        new_pipeline(dest_url, pipelines_dir).run(ev)
    assert [r[0] for r in select(dest_url, "SELECT id FROM ev ORDER BY id")] == [3, 4]
    # the interval run recorded its end: a manual run (no interval) continues from there, no row twice
    p = new_pipeline(dest_url, pipelines_dir)
    p.run(ev)
    assert [r[0] for r in select(dest_url, "SELECT id FROM ev ORDER BY id")] == [3, 4, 5, 6, 7, 8, 9]
    assert p.state["sources"]["p"]["resources"]["ev"]["incremental"]["ts"]["last_value"] == date(2024, 1, 9)


# -- a killed checkpointed backfill resumes with no row lost or duplicated -------------------------

TOTAL = 100_000


def _backfill(url: str, pipelines_dir: str, kill_after: int | None) -> None:
    """Load ids 1..TOTAL in pages of 1,000, checkpointing every 10,000 rows; SIGKILL itself midway."""

    @resource(name="backfill", primary_key="id")
    def backfill(cursor=incremental("id", initial_value=0, row_order="asc")):
        start = (cursor.last_value or 0) + 1
        for page_start in range(start, TOTAL + 1, 1000):
            if kill_after is not None and page_start > kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            yield [
                {"id": i, "payload": f"row {i}"} for i in range(page_start, min(page_start + 1000, TOTAL + 1))
            ]

    Pipeline("backfill", destination=url, dataset_name="ds", pipelines_dir=pipelines_dir).run(
        backfill, checkpoint_every=10_000
    )


@pytest.mark.parametrize("dialect_url", ["sqlite", "postgresql"], indirect=False)
def test_killed_checkpointed_backfill_resumes_exactly(dialect_url, tmp_path, request):
    from ..conftest import make_url

    url = make_url(dialect_url, tmp_path, request)
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_backfill, args=(url, str(tmp_path / uuid.uuid4().hex), 45_500))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    committed = count(url, "backfill")
    assert committed == 40_000  # four checkpoints of 10,000 rows committed before the kill
    _backfill(url, str(tmp_path / uuid.uuid4().hex), None)
    total, distinct, low, high = select(
        url, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM backfill"
    )[0]
    assert (total, distinct, low, high) == (TOTAL, TOTAL, 1, TOTAL)
