"""The PostgreSQL server goes down in the middle of a load and comes back (issue 9 §2).

The throwaway server of the test session is stopped for real (``pg_ctl stop -m fast``: every session is
terminated) while the resource generator is paused, then started again. The run must fail with the
database's error, leave the destination exactly as it was, and the retry must load every row once.
Other tests share the server: it is restarted in a ``finally``, and they open new connections per test.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline, current, resource
from tests.reliability import snapshot

pytestmark = pytest.mark.postgres

PAGE = 50


@pytest.fixture
def server(postgres_server):
    if isinstance(postgres_server, str):
        pytest.skip("stopping the server needs the session's own cluster (ASP_TEST_POSTGRES_URL is set)")
    return postgres_server


def events_resource(total: int, pause_after_pages: int | None = None, paused=None, resume=None):
    """ids 1..total in pages; optionally waits (as a slow API would) after some pages were yielded."""

    @resource(name="events", primary_key="id")
    def events() -> Iterator[list[dict]]:
        slot = current.resource_state()
        start = int(slot.get("max_id", 0))
        for page, low in enumerate(range(start + 1, total + 1, PAGE)):
            if page == pause_after_pages:
                paused.set()
                assert resume.wait(60), "the outage thread never resumed the generator"
            ids = range(low, min(low + PAGE, total + 1))
            yield [{"id": i, "body": f"event {i}"} for i in ids]
            slot["max_id"] = ids[-1]

    return events()


def pipeline(url: str, tmp_path: Path, name: str = "outage") -> Pipeline:
    # batch_size below the page size: rows reach the server (COPY) long before the commit
    return Pipeline(name, destination=url, dataset_name="ds", pipelines_dir=tmp_path / "w", batch_size=20)


def ids(url: str) -> list[int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.exec_driver_sql('SELECT id FROM "ds".events ORDER BY id')]
    finally:
        engine.dispose()


class Outage:
    """Stops the server when the generator pauses, then lets the generator go on against a dead server."""

    def __init__(self, server) -> None:
        self.server = server
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.stopped = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            if self.paused.wait(60):
                self.server.stop("fast")
                self.stopped = True
        except BaseException as e:  # pragma: no cover - reported by the test
            self.error = e
        finally:
            self.resume.set()

    def __enter__(self) -> Outage:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.paused.set()  # never leave the thread waiting
        self.thread.join(60)
        if self.stopped:
            self.server.start()


def test_server_stopped_mid_load_fails_clearly_writes_nothing_and_the_retry_loads_once(server, tmp_path):
    url = server.url(server.create_database())
    first = pipeline(url, tmp_path).run(events_resource(100))
    assert first.row_counts == {"events": 100}
    before = snapshot.take(url)

    with Outage(server) as outage, pytest.raises(Exception) as failure:
        # 3 pages (150 rows) reach the server inside the load transaction, then the server goes away
        pipeline(url, tmp_path).run(events_resource(1000, 3, outage.paused, outage.resume))
    assert outage.error is None and outage.stopped
    # the database's own error surfaces, not a secondary one from the rollback of a dead connection
    message = str(failure.value)
    assert "terminating connection due to administrator command" in message or (
        "server closed the connection" in message
    ), message
    assert isinstance(failure.value, sa.exc.OperationalError | psycopg.OperationalError)

    assert snapshot.take(url) == before  # nothing half-written
    retry = pipeline(url, tmp_path).run(events_resource(1000))
    assert retry.row_counts == {"events": 900}
    assert ids(url) == list(range(1, 1001))


def test_server_stopped_at_commit_rolls_everything_back(server, tmp_path):
    """The outage hits while the commit is about to be sent: the load transaction is lost as a whole."""
    url = server.url(server.create_database())
    pipeline(url, tmp_path).run(events_resource(100))
    before = snapshot.take(url)

    p = pipeline(url, tmp_path)
    outage = Outage(server)

    @sa.event.listens_for(p.engine, "commit")
    def _pause_at_commit(conn: sa.Connection) -> None:
        outage.paused.set()
        outage.resume.wait(60)

    with outage, pytest.raises(sa.exc.OperationalError) as failure:
        p.run(events_resource(400))
    assert outage.stopped
    assert "terminating connection" in str(failure.value) or "closed" in str(failure.value)
    assert snapshot.take(url) == before

    retry = pipeline(url, tmp_path).run(events_resource(400))
    assert retry.row_counts == {"events": 300}
    assert ids(url) == list(range(1, 401))


def test_server_down_at_task_start_fails_before_anything_runs(server, tmp_path):
    url = server.url(server.create_database())
    pipeline(url, tmp_path).run(events_resource(100))
    before = snapshot.take(url)
    extracted: list[int] = []

    @resource(name="events")
    def spy():
        extracted.append(1)
        yield {"id": 0}

    server.stop("fast")
    try:
        with pytest.raises(sa.exc.OperationalError, match=r"127\.0\.0\.1"):
            pipeline(url, tmp_path).run(spy)
    finally:
        server.start()
    assert extracted == []  # restore failed first: no user code ran on a missing state
    assert snapshot.take(url) == before


def test_a_pipeline_that_lived_through_the_outage_loads_after_the_restart(server, tmp_path):
    """A long-lived ``Pipeline`` whose engine pools a connection the restart killed (as after a
    failover or a proxy's idle timeout) restores on a fresh connection instead of failing the run."""
    url = server.url(server.create_database())
    p = pipeline(url, tmp_path)
    p.run(events_resource(10))
    server.stop("fast")
    server.start()
    info = p.run(events_resource(20))
    assert info.row_counts == {"events": 10}
    assert ids(url) == list(range(1, 21))
