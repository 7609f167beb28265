"""Locks and concurrency control (issues 13 §5 and 14 §2, §3, §12, §13).

Every lock wait is bounded by ``lock_timeout`` and ends in ``LockTimeoutError`` naming the pipeline,
the database and what was waited for; locks are keyed by the database, whatever the URL's spelling;
the commit reads the newest version whatever the session's isolation level; SQLite locks only the
dataset file it writes and never blocks readers; DuckDB files are waited for across processes and
released when a run or a restore returns. Stalled tasks are real open transactions on another
connection, other task processes are real OS processes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline, current, resource
from airflow_state_provider.destination.dialects.postgresql import advisory_key
from airflow_state_provider.exceptions import LockTimeoutError, StateConflictError
from tests.conftest import make_url
from tests.reliability.test_overlap import feed, in_threads, table_ids

REPO = Path(__file__).resolve().parents[2]


def rows(n: int, start: int = 1) -> list[dict]:
    return [{"id": i} for i in range(start, start + n)]


def pipeline(url: str | sa.Engine, tmp_path: Path, name: str = "locks", **kwargs) -> Pipeline:
    return Pipeline(name, destination=url, dataset_name="ds", pipelines_dir=tmp_path / "w", **kwargs)


def ids(url: str, table: str = "numbers") -> list[int]:
    return table_ids(url, table)


# -- DuckDB across task processes (issue 13 §5) ------------------------------------------------------


class Worker:
    """A task process of ``tests/reliability/lock_worker.py`` that holds the DuckDB file until ``go``."""

    def __init__(self, mode: str, url: str, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.lock_worker", mode, url, str(folder)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while not (folder / "started").exists():
            assert self.proc.poll() is None, self.proc.communicate()
            time.sleep(0.02)

    def finish(self) -> str:
        (self.folder / "go").touch()
        out, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, err
        return out


@resource(name="numbers", primary_key="id")
def numbers(count: int = 50):
    slot = current.resource_state()
    start = slot.get("max_id", 0)
    yield [{"id": i} for i in range(start + 1, start + count + 1)]
    slot["max_id"] = start + count


def can_open_elsewhere(path: Path) -> bool:
    """Whether another process can open the DuckDB file right now."""
    code = f"import duckdb; duckdb.connect({str(path)!r}).close()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_duckdb_a_restore_and_a_run_wait_for_the_task_process_holding_the_file(tmp_path):
    url = f"duckdb:///{tmp_path / 'shared.duckdb'}"
    worker = Worker("run", url, tmp_path / "worker")  # mid-run: has loaded 25 rows, holds the file
    restore = pipeline(url, tmp_path / "a")
    run = pipeline(url, tmp_path / "b")
    results = {}

    def restore_only() -> None:
        results["restored"] = restore.sync_destination()

    def next_run() -> None:
        results["run"] = run.run(numbers())

    threads = [threading.Thread(target=restore_only), threading.Thread(target=next_run)]
    for t in threads:
        t.start()
    time.sleep(1)  # both are waiting for the file now (no assertion on time)
    assert all(t.is_alive() for t in threads) and not results  # waiting, not failed
    assert "{'numbers': 50}" in worker.finish()
    for t in threads:
        t.join(120)
    # the restore waited and read the worker's commit; the run continued after it: every id once
    assert results["restored"] is not None and results["restored"].state["sources"]
    assert results["run"].row_counts == {"numbers": 50}
    assert ids(url) == list(range(1, 101))
    assert can_open_elsewhere(tmp_path / "shared.duckdb")  # nothing keeps it after run() returned


def test_duckdb_lock_timeout_names_pipeline_file_and_what_it_waited_for(tmp_path):
    path = tmp_path / "held.duckdb"
    url = f"duckdb:///{path}"
    worker = Worker("open", url, tmp_path / "worker")  # another program keeps the file open
    p = pipeline(url, tmp_path, lock_timeout=0.5)
    with pytest.raises(LockTimeoutError) as caught:
        p.run(rows(3), table_name="numbers")
    message = str(caught.value)
    assert "pipeline 'locks'" in message and str(path.resolve()) in message
    assert "file lock" in message and "lock_timeout" in message and "Nothing was committed" in message
    worker.finish()
    assert p.run(rows(3), table_name="numbers").row_counts == {"numbers": 3}  # the retry gets in
    assert ids(url) == [1, 2, 3]


def test_duckdb_file_is_released_when_run_and_restore_return(tmp_path):
    path = tmp_path / "released.duckdb"
    p = pipeline(f"duckdb:///{path}", tmp_path)
    p.run(numbers())
    assert can_open_elsewhere(path)  # the Pipeline object is alive, the file is free
    assert p.state["sources"]  # a restore opens the file...
    assert can_open_elsewhere(path)  # ...only while it reads
    with p.sql_client() as client:
        assert client.execute_sql("SELECT count(*) FROM numbers") == [(50,)]
    assert can_open_elsewhere(path)
    assert p.run(numbers()).row_counts == {"numbers": 50}  # and the next run opens it again


# -- one database, two spellings (issue 14 §2) -----------------------------------------------------


def spellings(dialect: str, tmp_path: Path, request, monkeypatch) -> tuple[str, str, str]:
    """Three URLs of one database: as created, another spelling, and a third one."""
    if dialect == "postgresql":
        url = make_url(dialect, tmp_path, request)
        return url, url + "?application_name=second", url.replace("postgres@", "postgres:@")
    suffix = {"sqlite": "sqlite", "duckdb": "duckdb"}[dialect]
    (tmp_path / "dir").mkdir()
    real = tmp_path / "dir" / f"two.{suffix}"
    (tmp_path / f"link.{suffix}").symlink_to(real)
    monkeypatch.chdir(tmp_path / "dir")
    return f"{dialect}:///{real}", f"{dialect}:///two.{suffix}", f"{dialect}:///{tmp_path / f'link.{suffix}'}"


@pytest.mark.parametrize(
    "dialect", ["sqlite", "duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
@pytest.mark.parametrize("second", [1, 2], ids=["relative-or-query", "symlink-or-empty-password"])
def test_one_database_by_two_spellings_in_two_threads_loads_every_row_once(
    dialect, second, tmp_path, request, monkeypatch
):
    urls = spellings(dialect, tmp_path, request, monkeypatch)
    first, other = urls[0], urls[second]
    Pipeline("overlap", destination=first, dataset_name="ds", pipelines_dir=tmp_path / "w0").run(
        feed(100).with_resources("a")
    )
    barrier = threading.Barrier(2)

    def run(url: str, n: int):
        p = Pipeline("overlap", destination=url, dataset_name="ds", pipelines_dir=tmp_path / f"w{n}")
        return p.run(feed(500, barrier).with_resources("a"))

    results = in_threads(lambda: run(first, 1), lambda: run(other, 2))

    conflicts = [r for r in results if isinstance(r, StateConflictError)]
    assert len(conflicts) == 1 and sum(not isinstance(r, BaseException) for r in results) == 1, results
    assert table_ids(first, "a") == list(range(1, 501))
    assert table_ids(other, "a") == list(range(1, 501))  # the same table by the other spelling


# -- PostgreSQL isolation level (issue 14 §3) --------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("level", ["repeatable read", "serializable"])
@pytest.mark.parametrize("where", ["database", "options", "engine"])
def test_overlapping_runs_under_any_default_isolation_load_every_row_once(
    level, where, postgres_url, tmp_path
):
    url = postgres_url
    if where == "database":
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            database = sa.make_url(url).database
            conn.exec_driver_sql(
                f"ALTER DATABASE \"{database}\" SET default_transaction_isolation = '{level}'"
            )
        admin.dispose()
    elif where == "options":
        url = f"{url}?options=-c%20default_transaction_isolation%3D{level.replace(' ', '%5C%20')}"

    def destination():
        if where == "engine":
            return sa.create_engine(url, isolation_level=level.upper())
        return url

    check = sa.create_engine(destination()) if where != "engine" else destination()
    with check.connect() as conn:  # the setting is in force for a plain connection
        assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == level
    check.dispose()

    Pipeline("overlap", destination=destination(), dataset_name="ds", pipelines_dir=tmp_path / "w0").run(
        feed(100).with_resources("a")
    )
    barrier = threading.Barrier(2)

    def run(n: int):
        p = Pipeline(
            "overlap", destination=destination(), dataset_name="ds", pipelines_dir=tmp_path / f"w{n}"
        )
        return p.run(feed(500, barrier).with_resources("a"))

    results = in_threads(lambda: run(1), lambda: run(2))

    conflicts = [r for r in results if isinstance(r, StateConflictError)]
    assert len(conflicts) == 1 and sum(not isinstance(r, BaseException) for r in results) == 1, results
    assert table_ids(postgres_url, "a") == list(range(1, 501))


# -- PostgreSQL: bounded waits (issue 14 §13) ----------------------------------------------------------


@pytest.fixture
def stalled(postgres_url) -> Iterator[sa.Connection]:
    """Another session in an open transaction, as a task stalled mid-load or mid-commit."""
    engine = sa.create_engine(postgres_url)
    conn = engine.connect()
    conn.begin()
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()
        engine.dispose()


@pytest.mark.postgres
def test_a_stalled_commit_lock_ends_loads_drops_and_the_cli_with_lock_timeout_error(
    postgres_url, stalled, tmp_path, monkeypatch, capsys
):
    p = pipeline(postgres_url, tmp_path, lock_timeout=0.5)
    p.run(numbers())
    stalled.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key("ds", "locks")})

    with pytest.raises(LockTimeoutError) as caught:
        p.run(numbers())
    message = str(caught.value)
    assert "pipeline 'locks'" in message and "commit lock of dataset 'ds'" in message
    assert sa.make_url(postgres_url).database in message and "0.5 s" in message
    assert ids(postgres_url) == list(range(1, 51))  # nothing committed
    with pytest.raises(LockTimeoutError, match="commit lock"):
        p.drop("numbers")

    from airflow_state_provider.cli import main

    db = sa.make_url(postgres_url)
    monkeypatch.setenv(
        "AIRFLOW_CONN_WAREHOUSE",
        f'{{"conn_type": "postgres", "host": "{db.host}", "port": {db.port}, "login": "postgres", '
        f'"schema": "{db.database}", "extra": {{"lock_timeout": 0.5}}}}',
    )
    code = main(
        [
            "set",
            "locks",
            "sources.locks.resources.numbers.max_id",
            "7",
            "--conn-id",
            "warehouse",
            "--dataset",
            "ds",
        ]
    )
    err = capsys.readouterr().err
    assert code != 0 and "pipeline 'locks'" in err and "commit lock" in err and "lock_timeout" in err

    stalled.rollback()  # the stalled task ends: everything proceeds
    assert p.run(numbers()).row_counts == {"numbers": 50}


@pytest.mark.postgres
def test_a_stalled_ddl_lock_ends_the_load_with_lock_timeout_error(postgres_url, stalled, tmp_path):
    p = pipeline(postgres_url, tmp_path, lock_timeout=0.5)
    p.run(numbers())
    # a task stalled after changing the table: its DDL lock and the table's ACCESS EXCLUSIVE lock
    stalled.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key("ds", "numbers", "ddl")})
    stalled.exec_driver_sql("ALTER TABLE ds.numbers ADD COLUMN stalled_note text")

    with pytest.raises(LockTimeoutError) as caught:
        p.run([{"id": 1000, "new_column": "x"}], table_name="numbers")  # needs DDL
    assert "pipeline 'locks'" in str(caught.value) and "numbers" in str(caught.value)
    with pytest.raises(LockTimeoutError, match="numbers"):
        p.run([{"id": 1001}], table_name="numbers")  # no DDL, but the table is locked
    stalled.rollback()
    assert p.run([{"id": 1001}], table_name="numbers").row_counts == {"numbers": 1}


@pytest.mark.postgres
def test_drop_racing_a_load_gives_state_conflict_never_a_deadlock(postgres_url, tmp_path):
    """The load has written rows into ``numbers`` (holding its lock) when ``drop`` starts; then the load
    commits. Before, ``drop`` took the commit lock first and waited for the table, the load waited for
    the commit lock: ``DeadlockDetected``. Now ``drop`` waits for the table first, and finds the
    load's commit: ``ConcurrentEditError`` (a ``StateConflictError``), and its rerun drops."""
    pipeline(postgres_url, tmp_path / "base").run(numbers())
    written, go = threading.Event(), threading.Event()

    @resource(name="numbers", primary_key="id")
    def paused():
        slot = current.resource_state()
        yield rows(20, 51)
        written.set()
        go.wait(60)
        yield rows(20, 71)
        slot["max_id"] = 90

    loader = pipeline(postgres_url, tmp_path / "load", batch_size=10)
    dropper = pipeline(postgres_url, tmp_path / "drop", lock_timeout=60)
    results: dict[str, object] = {}

    def load() -> None:
        try:
            results["load"] = loader.run(paused())
        except BaseException as e:
            results["load"] = e

    def drop() -> None:
        try:
            results["drop"] = dropper.drop("numbers")
        except BaseException as e:
            results["drop"] = e

    load_thread = threading.Thread(target=load)
    load_thread.start()
    assert written.wait(60)
    drop_thread = threading.Thread(target=drop)
    drop_thread.start()
    time.sleep(1.5)  # drop is waiting for the table now (PostgreSQL checks deadlocks after 1 s)
    go.set()
    load_thread.join(120)
    drop_thread.join(120)

    assert not isinstance(results["load"], BaseException), results
    assert results["load"].row_counts == {"numbers": 40}
    assert isinstance(results["drop"], StateConflictError), results
    assert "was committed after this drop was planned" in str(results["drop"])
    assert ids(postgres_url) == list(range(1, 91))
    dropper.drop("numbers")  # the rerun plans against the newest version
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("numbers", schema="ds")
    engine.dispose()


@pytest.mark.postgres
def test_drop_committed_while_a_load_is_open_fails_the_load_with_state_conflict(postgres_url, tmp_path):
    """The other order: the load is open but has not reached ``numbers`` yet when ``drop`` commits."""
    pipeline(postgres_url, tmp_path / "base").run(numbers())
    paused, go = threading.Event(), threading.Event()

    @resource(name="other", primary_key="id")
    def other():
        yield rows(1)
        paused.set()
        go.wait(60)

    @resource(name="numbers", primary_key="id")
    def more():
        yield rows(10, 51)
        current.resource_state()["max_id"] = 60

    from airflow_state_provider import source

    @source(name="locks")
    def both():
        return other(), more()

    result = {}
    loader = pipeline(postgres_url, tmp_path / "load", batch_size=1)
    thread = threading.Thread(target=lambda: result.update(load=in_threads(lambda: loader.run(both()))[0]))
    thread.start()
    assert paused.wait(60)
    pipeline(postgres_url, tmp_path / "drop", lock_timeout=60).drop("numbers")  # does not wait
    go.set()
    thread.join(120)
    assert isinstance(result["load"], StateConflictError), result
    assert "sources.locks.resources.numbers" in str(result["load"])
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("numbers", schema="ds")  # the load's table was rolled back
        assert not sa.inspect(conn).has_table("other", schema="ds")  # nothing of the load committed
    engine.dispose()


# -- SQLite lock scope (issue 14 §12) ------------------------------------------------------------------


def test_sqlite_load_of_another_dataset_runs_while_a_long_load_is_open(tmp_path):
    url = f"sqlite:///{tmp_path / 'main.sqlite'}"
    written, go = threading.Event(), threading.Event()

    @resource(name="numbers", primary_key="id")
    def long_load():
        yield rows(20)
        written.set()
        go.wait(60)
        yield rows(20, 21)

    long = Pipeline("long", destination=url, dataset_name="one", pipelines_dir=tmp_path / "w", batch_size=5)
    result = {}
    thread = threading.Thread(target=lambda: result.update(info=long.run(long_load())))
    thread.start()
    try:
        assert written.wait(60)  # the long load holds the write lock of its dataset file
        other = Pipeline(
            "other", destination=url, dataset_name="two", pipelines_dir=tmp_path / "w", lock_timeout=5
        )
        assert other.run(rows(3), table_name="numbers").row_counts == {"numbers": 3}
        assert other.state["_state_version"] == 1  # restores and commits...
        assert thread.is_alive() and not result  # ...while the long load is still open
    finally:
        go.set()
        thread.join(60)
    assert result["info"].row_counts == {"numbers": 40}


def test_sqlite_commit_while_a_reader_is_open(tmp_path):
    url = f"sqlite:///{tmp_path / 'main.sqlite'}"
    p = pipeline(url, tmp_path, lock_timeout=5)
    p.run(numbers())
    reader = sa.create_engine(url)
    p.dialect.__class__(reader).prepare("ds")
    with reader.connect() as conn:
        conn.execution_options(asp_read_only=True)
        conn.begin()
        assert conn.exec_driver_sql('SELECT count(*) FROM "ds"."numbers"').scalar() == 50  # open reader
        assert p.run(numbers()).row_counts == {"numbers": 50}  # commits while the reader is open
        assert conn.exec_driver_sql('SELECT count(*) FROM "ds"."numbers"').scalar() == 50  # its snapshot
        conn.rollback()
    reader.dispose()
    assert ids(url) == list(range(1, 101))


def test_a_resource_reads_the_destination_through_sql_client_during_the_run(dest_url, tmp_path):
    p = pipeline(dest_url, tmp_path, lock_timeout=5, batch_size=500)
    # the column exists already: a run that alters a table holds its DDL lock until the commit, and
    # on PostgreSQL a read of that table (even from inside the run) waits for it
    p.run([{"id": i, "payload": ""} for i in range(1, 51)], table_name="numbers")
    if dest_url.startswith("sqlite"):
        # a long load outgrows SQLite's page cache and spills into the file mid-transaction; in a
        # rollback journal that takes the EXCLUSIVE lock, which blocked every reader until the commit
        sa.event.listen(p.engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA ds.cache_size = 10"))
        p.engine.dispose()
    seen = []

    @resource(name="numbers", primary_key="id")
    def reading():
        yield [{"id": i, "payload": "x" * 200} for i in range(51, 3051)]
        with current.pipeline().sql_client() as client:  # the committed rows, not the open load's
            seen.append(client.execute_sql("SELECT count(*), max(id) FROM numbers")[0])
        yield rows(10, 3051)

    assert p.run(reading()).row_counts == {"numbers": 3010}
    assert seen == [(50, 50)]
    assert ids(dest_url) == list(range(1, 3061))


# -- where lock_timeout comes from ---------------------------------------------------------------------


@pytest.mark.airflow
def test_lock_timeout_from_connection_extra_then_config_then_default(tmp_path, monkeypatch):
    import json

    from airflow_state_provider.get_provider_info import get_provider_info
    from airflow_state_provider.hooks.pipeline_state import PipelineStateHook

    def hook(extra: dict) -> PipelineStateHook:
        conn = {"conn_type": "sqlite", "host": str(tmp_path / "w.sqlite"), "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps(conn))
        return PipelineStateHook(destination_conn_id="warehouse")

    monkeypatch.delenv("AIRFLOW__STATE_PROVIDER__LOCK_TIMEOUT", raising=False)
    assert hook({}).get_pipeline("p").dialect.lock_timeout == 300
    monkeypatch.setenv("AIRFLOW__STATE_PROVIDER__LOCK_TIMEOUT", "42")
    assert hook({}).get_pipeline("p").dialect.lock_timeout == 42
    assert hook({"lock_timeout": 2.5}).get_pipeline("p").dialect.lock_timeout == 2.5
    assert hook({"lock_timeout": 2.5}).get_pipeline("p", lock_timeout=9).dialect.lock_timeout == 9
    with pytest.raises(ValueError, match="connection 'warehouse': extra 'lock_timeout' must be a positive"):
        hook({"lock_timeout": -1}).get_pipeline("p")
    with pytest.raises(ValueError, match="extra 'lock_timeout' must be a number of seconds, got 'soon'"):
        hook({"lock_timeout": "soon"}).get_pipeline("p")
    info = get_provider_info()
    assert info["config"]["state_provider"]["options"]["lock_timeout"]["default"] == "300"
    assert "lock_timeout" in info["connection-types"][0]["conn-fields"]
