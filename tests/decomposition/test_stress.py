"""8 processes x 25 commits of one pipeline against PostgreSQL, as parallel decomposed tasks make them.

All processes start together on an empty database, so their first runs also race to create the state
and data tables. Disjoint resources: every update survives (the per-slot merge, DESIGN §5.3). One
resource, written by every process: each overlapping commit fails with ``StateConflictError`` and
leaves no rows behind.
"""

from __future__ import annotations

import multiprocessing
import time

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline
from tests.decomposition import stress_worker
from tests.decomposition.stress_worker import DATASET, PIPELINE, ROWS_PER_RUN, SOURCE, Outcome

pytestmark = pytest.mark.postgres

WORKERS, RUNS = 8, 25


def run_workers(url: str, resource_names: list[str]) -> list[Outcome]:
    """Start one process per resource name, released together by a barrier; collect their outcomes."""
    ctx = multiprocessing.get_context("spawn")  # no state inherited from the test process
    barrier, results = ctx.Barrier(len(resource_names)), ctx.Queue()
    processes = [
        ctx.Process(target=stress_worker.work, args=(url, i, name, RUNS, barrier, results))
        for i, name in enumerate(resource_names)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=240) for _ in processes]
        for process in processes:
            process.join(timeout=30)
            assert process.exitcode == 0
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    commits = sum(len(o.committed) for o in outcomes)
    conflicts = sum(o.conflicts for o in outcomes)
    merges = sum(o.merges for o in outcomes)
    print(
        f"\nstress {sorted(set(resource_names))}: {commits} commits, {conflicts} StateConflictError, "
        f"{merges} merges with a concurrent version, {time.monotonic() - started:.1f}s"
    )
    assert [e for o in outcomes for e in o.errors] == []
    return sorted(outcomes, key=lambda o: o.worker)


def newest_state(url: str) -> dict:
    pipeline = Pipeline(PIPELINE, destination=url, dataset_name=DATASET)
    try:
        return pipeline.state
    finally:
        pipeline.engine.dispose()


def rows(url: str, table: str) -> list[tuple[str, str]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(f'SELECT row_id, run FROM {DATASET}."{table}"'))]
    finally:
        engine.dispose()


def test_disjoint_resources_lose_no_update(postgres_url):
    names = [f"r{i}" for i in range(WORKERS)]  # r0 is the state writer of the source
    outcomes = run_workers(postgres_url, names)
    assert [o.conflicts for o in outcomes] == [0] * WORKERS
    assert [len(o.committed) for o in outcomes] == [RUNS] * WORKERS
    assert sum(o.merges for o in outcomes) > 0, "no commit ever met a concurrent one: not a stress"

    state = newest_state(postgres_url)
    source = state["sources"][SOURCE]
    assert source["writer_commits"] == RUNS
    for outcome, name in zip(outcomes, names, strict=True):
        assert source["resources"][name]["commits"] == RUNS
        loaded = rows(postgres_url, name)
        assert len(loaded) == len({row_id for row_id, _ in loaded}) == RUNS * ROWS_PER_RUN
        assert {run for _, run in loaded} == set(outcome.committed)
    assert state["_state_version"] == WORKERS * RUNS


def test_overlapping_resources_conflict_loudly_and_roll_back(postgres_url):
    outcomes = run_workers(postgres_url, ["shared"] * WORKERS)
    committed = [tag for o in outcomes for tag in o.committed]
    conflicts = sum(o.conflicts for o in outcomes)
    assert len(committed) + conflicts == WORKERS * RUNS
    assert conflicts > 0, "no two commits overlapped: not a stress"

    slot = newest_state(postgres_url)["sources"][SOURCE]["resources"]["shared"]
    assert slot["commits"] == len(committed)
    assert slot["last_run"] in committed
    loaded = rows(postgres_url, "shared")
    assert len(loaded) == len({row_id for row_id, _ in loaded}) == len(committed) * ROWS_PER_RUN
    assert {run for _, run in loaded} == set(committed)  # a conflicting run left no row behind
