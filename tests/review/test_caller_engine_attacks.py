"""Review (adversary) of issue 16: ``Pipeline(destination=<a caller's Engine>)`` on a private engine.

The private engine opens its connections through a copy of the caller's pool, so whatever the caller's
``creator``, ``connect_args`` and connect hooks do to a DBAPI connection, the pipeline's connections get
too. ``check_transactional`` refuses ``isolation_level="AUTOCOMMIT"`` only; a psycopg connection made
with ``autocommit=True`` (``connect_args``, a ``creator``, or a connect hook) passes, and every
statement of a load then commits by itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline, resource
from airflow_state_provider.exceptions import ConfigurationError


@resource(name="good", primary_key="id")
def good():
    yield [{"id": i} for i in range(50)]


@resource(name="bad", primary_key="id")
def bad(fail: bool = True):
    for i in range(25):
        yield {"id": i}
    if fail:
        raise RuntimeError("the source broke")


def _counts(engine: sa.Engine) -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    with engine.connect() as conn:
        for table in ("good", "_dlt_pipeline_state", "_dlt_loads"):
            try:
                found[table] = conn.exec_driver_sql(f'SELECT count(*) FROM "ds".{table}').scalar()
            except sa.exc.DBAPIError:
                conn.rollback()
                found[table] = None
    return found


def _autocommit_by_connect_args(url: str) -> sa.Engine:
    return sa.create_engine(url, connect_args={"autocommit": True})


def _autocommit_by_connect_hook(url: str) -> sa.Engine:
    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _autocommit(dbapi_connection, _record):  # e.g. a caller's engine also used for VACUUM
        dbapi_connection.autocommit = True

    return engine


@pytest.mark.postgres
@pytest.mark.parametrize("make", [_autocommit_by_connect_args, _autocommit_by_connect_hook])
def test_a_callers_autocommit_driver_connection_is_refused_or_neutralised(
    make, postgres_url: str, tmp_path: Path
):
    user = make(postgres_url)
    try:
        try:
            p = Pipeline("p", destination=user, dataset_name="ds", pipelines_dir=tmp_path, batch_size=10)
            p.run([good(), bad()])
        except ConfigurationError as e:
            assert "autocommit" in str(e)  # refused up front, as isolation_level="AUTOCOMMIT" is
            assert _counts(user)["good"] is None  # nothing was written
            return
        except RuntimeError:
            pass
        # the failed run must have committed nothing: no rows without their state
        assert _counts(user)["good"] in (None, 0), _counts(user)
        p.run([good(), bad(fail=False)])
        assert _counts(user)["good"] == 50  # not loaded twice
    finally:
        user.dispose()


# -- a caller's StaticPool: the private engine copies the pool class, so every connection of a run is
# -- one DBAPI connection; a resource reading the destination during the run (documented:
# -- ``current.pipeline().sql_client()``) then shares the load's connection

_READ_DURING_RUN = """
import sys, sqlalchemy as sa
from sqlalchemy.pool import StaticPool
from airflow_state_provider import Pipeline, current, resource
from airflow_state_provider.exceptions import ConfigurationError

@resource(name="good", primary_key="id")
def good():
    yield [{"id": i} for i in range(50)]

@resource(name="peek", primary_key="id")
def peek():
    with current.pipeline().sql_client() as client:
        seen = client.execute_sql("SELECT 1")[0][0]
    yield {"id": 1, "seen": seen}

user = sa.create_engine(sys.argv[1], poolclass=StaticPool)
try:
    p = Pipeline("p", destination=user, dataset_name="ds", pipelines_dir=sys.argv[2], batch_size=10,
                 lock_timeout=5)
    print(p.run([good(), peek()]).row_counts)
except ConfigurationError as e:
    print("refused:", e)
"""


def test_reading_the_destination_during_a_run_on_a_callers_static_pool(dest_url: str, tmp_path: Path):
    import subprocess
    import sys

    try:
        done = subprocess.run(
            [sys.executable, "-c", _READ_DURING_RUN, dest_url, str(tmp_path / "w")],
            capture_output=True,
            text=True,
            timeout=90,  # a hang detector, not a speed assertion
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the run hung")
    out = done.stdout.strip().splitlines()
    assert done.returncode == 0 and out, done.stderr[-2000:]
    # either it works as with a URL, or it is refused up front naming the pool
    assert out[-1] == "{'good': 50, 'peek': 1}" or ("refused:" in out[-1] and "StaticPool" in out[-1])
