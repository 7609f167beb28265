"""Overlapping runs of one pipeline: no duplicates, no lost state, the loser fails and retries
(issue 9 §3).

Both runs restore the same committed version before either extracts (a barrier in the source body,
which runs right after the restore), so their commits really race. Threads share nothing but the
database; the multi-process test runs real OS processes against PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_state_provider import Pipeline, current, resource, source
from airflow_state_provider.destination.dialects import dialect_for
from airflow_state_provider.destination.engine import create_engine
from airflow_state_provider.exceptions import StateConflictError
from tests.reliability import harness, snapshot

PAGE = 40


def feed(total: int | dict[str, int], barrier: threading.Barrier | None = None):
    """A source with resources ``a`` and ``b``: ids up to ``total`` each, high-water mark in state."""

    totals = total if isinstance(total, dict) else {"a": total, "b": total}

    @source(name="feed")
    def _feed():
        if barrier is not None:
            barrier.wait(60)  # every run has restored the same version: now race

        def make(name: str):
            @resource(name=name, primary_key="id")
            def rows() -> Iterator[list[dict]]:
                slot = current.resource_state()
                start = int(slot.get("max_id", 0))
                for low in range(start + 1, totals[name] + 1, PAGE):
                    ids = range(low, min(low + PAGE, totals[name] + 1))
                    yield [{"id": i} for i in ids]
                    slot["max_id"] = ids[-1]

            return rows

        return make("a"), make("b")

    return _feed()


def new_pipeline(url: str, tmp_path: Path) -> Pipeline:
    return Pipeline(
        "overlap", destination=url, dataset_name="ds", pipelines_dir=tmp_path / "w" / str(id(url))
    )


def in_threads(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once; each result is the return value or the exception raised."""
    results: list[Any] = [None] * len(calls)

    def work(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def table_ids(url: str, table: str) -> list[int]:
    engine = create_engine(url)
    dialect_for(engine).prepare("ds")
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.exec_driver_sql(f'SELECT id FROM "ds"."{table}" ORDER BY id')]
    finally:
        engine.dispose()


def test_two_runs_of_the_same_resource_at_once_one_wins_the_loser_retries(dest_url, tmp_path):
    new_pipeline(dest_url, tmp_path).run(feed(100).with_resources("a"))
    barrier = threading.Barrier(2)
    run = lambda: new_pipeline(dest_url, tmp_path).run(feed(500, barrier).with_resources("a"))  # noqa: E731

    results = in_threads(run, run)

    conflicts = [r for r in results if isinstance(r, StateConflictError)]
    wins = [r for r in results if not isinstance(r, BaseException)]
    assert len(conflicts) == 1 and len(wins) == 1, results
    message = str(conflicts[0])
    assert "'overlap'" in message and "Retry" in message
    # the slot that both changed; DuckDB cannot see the other commit from inside its transaction and
    # refuses any overlap of one pipeline's loads in a process instead (single writer plus retry)
    culprit = "DuckDB dataset 'ds'" if dest_url.startswith("duckdb") else "sources.feed.resources.a"
    assert culprit in message
    assert wins[0].row_counts == {"a": 400}
    assert table_ids(dest_url, "a") == list(range(1, 501))  # the loser's 400 rows were rolled back

    before = snapshot.take(dest_url, "ds")
    retry = new_pipeline(dest_url, tmp_path)
    info = retry.run(feed(500).with_resources("a"))  # the retry restores the winner's state
    assert info.row_counts == {}
    assert snapshot.take(dest_url, "ds") == before  # nothing new: nothing written, no duplicate
    info = retry.run(feed(650).with_resources("a"))
    assert info.row_counts == {"a": 150}
    assert table_ids(dest_url, "a") == list(range(1, 651))
    assert retry.state["sources"]["feed"]["resources"]["a"]["max_id"] == 650


def test_overlapping_runs_of_different_resources_both_commit_and_keep_both_slots(dest_url, tmp_path):
    new_pipeline(dest_url, tmp_path).run(feed(10))
    barrier = threading.Barrier(2)
    pipeline_a, pipeline_b = new_pipeline(dest_url, tmp_path), new_pipeline(dest_url, tmp_path)

    run_a = lambda barrier=None: pipeline_a.run(feed({"a": 300, "b": 0}, barrier).with_resources("a"))  # noqa: E731
    run_b = lambda barrier=None: pipeline_b.run(feed({"a": 0, "b": 200}, barrier).with_resources("b"))  # noqa: E731

    results = in_threads(lambda: run_a(barrier), lambda: run_b(barrier))

    failed = [r for r in results if isinstance(r, BaseException)]
    if dest_url.startswith("duckdb"):
        # single writer per pipeline and process: the later commit fails loudly, its retry merges
        assert len(failed) == 1 and isinstance(failed[0], StateConflictError), results
        (run_a if results[0] is failed[0] else run_b)()
    else:
        assert not failed, results  # both merged: PostgreSQL and SQLite see the other commit
    assert table_ids(dest_url, "a") == list(range(1, 301))
    assert table_ids(dest_url, "b") == list(range(1, 201))
    state = new_pipeline(dest_url, tmp_path).state["sources"]["feed"]["resources"]
    assert state["a"]["max_id"] == 300 and state["b"]["max_id"] == 200  # no lost update


@pytest.mark.postgres
def test_processes_hammering_one_pipeline_load_every_row_exactly_once(postgres_url, tmp_path):
    """4 OS processes x 5 rounds, all loading the same growing range into one slot of one pipeline,
    each retrying on ``StateConflictError``: every id ends up in the table exactly once."""
    workers, rounds, step = 4, 5, 150
    ctx = harness.context()
    barrier = ctx.Barrier(workers)
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=harness.hammer,
            args=(postgres_url, str(tmp_path / f"p{i}"), rounds, step, barrier, queue),
            daemon=True,
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    reports = [queue.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    errors = [r for r in reports if "error" in r]
    assert not errors, errors
    conflicts = sum(r["conflicts"] for r in reports)
    loaded = sum(r["rows"] for r in reports)
    seen = harness.observe(postgres_url, pipeline="hammer")
    harness.check_final(seen, rounds * step, "", "append", f"{workers} workers, {conflicts} conflicts")
    assert loaded == rounds * step  # each row was committed by exactly one worker
    assert conflicts >= 1  # the barrier makes the first round race for real
