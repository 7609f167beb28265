"""What is measured: our pipeline, dlt's, and each database's raw bulk path, on the same rows.

Every function times only its own work (rows are built before; tables of raw contenders are created
before) and returns seconds. Pipelines start from a new, empty pipelines dir each time, as a task on a
clean Airflow worker does, and close their connections before the clock stops (the end of a task).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.data import COLUMNS, INITIAL_VALUE, pages

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # no network here; never wait on it

PIPELINE = "events_pipeline"
DATASET = "bench"
TABLE = "events"


@dataclass
class Database:
    """One benchmark database, as a SQLAlchemy URL (ours) and as a dlt destination."""

    kind: str  # "duckdb" | "postgresql" | "sqlite"
    url: str

    @property
    def path(self) -> str:
        """The file of a DuckDB or SQLite database."""
        database = sa.make_url(self.url).database
        assert database
        return database

    @property
    def dsn(self) -> str:
        """A libpq connection string of a PostgreSQL database (for psycopg and dlt)."""
        url = sa.make_url(self.url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def dlt_destination(self) -> Any:
        import dlt

        if self.kind == "duckdb":
            return dlt.destinations.duckdb(self.path)
        if self.kind == "postgresql":
            # dlt insists on a password; the throwaway cluster trusts local connections and ignores it
            url = sa.make_url(self.dsn)
            url = url.set(password=url.password or "unused")
            return dlt.destinations.postgres(url.render_as_string(hide_password=False))
        raise ValueError(f"no dlt destination for {self.kind}")

    def count(self, table: str, dataset: str = DATASET) -> int:
        """Rows in ``dataset.table`` (0 when it does not exist)."""
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                if self.kind == "sqlite":
                    from airflow_state_provider.destination.dialects.sqlite import dataset_file

                    conn.exec_driver_sql(f"ATTACH DATABASE '{dataset_file(self.path, dataset)}' AS d")
                    dataset = "d"
                if not sa.inspect(conn).has_table(table, schema=dataset):
                    return 0
                return int(conn.exec_driver_sql(f'SELECT count(*) FROM "{dataset}"."{table}"').scalar())
        finally:
            engine.dispose()


def _fresh_dir(base: Path) -> Path:
    path = base / f"p{time.time_ns()}"
    path.mkdir(parents=True)
    return path


# -- incremental runs: ours vs dlt -----------------------------------------------------------------


def ours_resource(rows: list[dict], **incremental_kw: Any) -> Any:
    from airflow_state_provider import incremental, resource

    @resource(name=TABLE, write_disposition="append")
    def events(updated_at=incremental("updated_at", initial_value=INITIAL_VALUE, **incremental_kw)):
        yield from pages(rows)

    return events


def dlt_resource(rows: list[dict]) -> Any:
    import dlt

    @dlt.resource(name=TABLE, write_disposition="append")
    def events(updated_at=dlt.sources.incremental("updated_at", initial_value=INITIAL_VALUE)):  # noqa: B008
        yield from pages(rows)

    return events


def ours_run(
    db: Database, rows: list[dict], workdir: Path, checkpoint_every: int | None = None, **pipeline_kw: Any
) -> tuple[float, int]:
    """Restore + extract + load + commit with our ``Pipeline``; (seconds, rows loaded).

    With ``checkpoint_every`` the cursor declares ``row_order="asc"`` (its rows arrive ascending), which
    lets checkpoints commit it with its rows."""
    from airflow_state_provider import Pipeline

    pipelines_dir = _fresh_dir(workdir)
    data = ours_resource(rows, row_order="asc") if checkpoint_every else ours_resource(rows)
    start = time.perf_counter()
    p = Pipeline(
        PIPELINE, destination=db.url, dataset_name=DATASET, pipelines_dir=pipelines_dir, **pipeline_kw
    )
    info = p.run(data, checkpoint_every=checkpoint_every)
    p.engine.dispose()
    seconds = time.perf_counter() - start
    if checkpoint_every and len(rows) > checkpoint_every and not info.checkpoints:
        raise RuntimeError(f"a checkpointed run into {db.kind} made no checkpoint")
    return seconds, info.row_counts.get(TABLE, 0)


def dlt_run(db: Database, rows: list[dict], workdir: Path) -> tuple[float, int]:
    """dlt's ``pipeline.run`` of the same resource; (seconds, rows loaded)."""
    import dlt

    pipelines_dir = _fresh_dir(workdir)
    data = dlt_resource(rows)
    start = time.perf_counter()
    p = dlt.pipeline(
        pipeline_name=PIPELINE,
        destination=db.dlt_destination(),
        dataset_name=DATASET,
        pipelines_dir=str(pipelines_dir),
        dev_mode=False,
    )
    p.run(data)
    seconds = time.perf_counter() - start
    trace = p.last_trace
    normalize = trace.last_normalize_info if trace else None
    loaded = normalize.row_counts.get(TABLE, 0) if normalize else 0
    return seconds, loaded


def ours_restore(db: Database, workdir: Path, **pipeline_kw: Any) -> tuple[float, int]:
    """A clean worker's restore: build the pipeline, read the newest state; (seconds, state version)."""
    from airflow_state_provider import Pipeline

    pipelines_dir = _fresh_dir(workdir)
    start = time.perf_counter()
    p = Pipeline(
        PIPELINE, destination=db.url, dataset_name=DATASET, pipelines_dir=pipelines_dir, **pipeline_kw
    )
    stored = p.sync_destination()
    p.engine.dispose()
    seconds = time.perf_counter() - start
    return seconds, stored.version if stored else 0


def dlt_restore(db: Database, workdir: Path) -> tuple[float, int]:
    """dlt's ``sync_destination`` on an empty pipelines dir; (seconds, state version)."""
    import dlt

    pipelines_dir = _fresh_dir(workdir)
    start = time.perf_counter()
    p = dlt.pipeline(
        pipeline_name=PIPELINE,
        destination=db.dlt_destination(),
        dataset_name=DATASET,
        pipelines_dir=str(pipelines_dir),
        dev_mode=False,
    )
    p.sync_destination()
    seconds = time.perf_counter() - start
    return seconds, int(p.state.get("_state_version", 0))


# -- bulk loads: ours vs the raw path of each database ----------------------------------------------


def ours_bulk(db: Database, rows: list[dict], dataset: str, workdir: Path, **pipeline_kw: Any) -> float:
    """``Pipeline.run(rows, table_name=...)``: the whole run, including its restore and commit."""
    from airflow_state_provider import Pipeline

    pipelines_dir = _fresh_dir(workdir)
    start = time.perf_counter()
    p = Pipeline("bulk", destination=db.url, dataset_name=dataset, pipelines_dir=pipelines_dir, **pipeline_kw)
    info = p.run(rows, table_name="t")
    p.engine.dispose()
    seconds = time.perf_counter() - start
    if info.row_counts.get("t") != len(rows):
        raise RuntimeError(f"our bulk load into {db.kind} loaded {info.row_counts}, expected {len(rows)}")
    return seconds


#: the raw paths again, into the table shape our loader creates: the 6 columns, dlt's ``_dlt_load_id`` and
#: ``_dlt_id`` (UNIQUE on PostgreSQL and SQLite, as the loader creates it); ids are made before the clock
FLOOR_LABEL = "floor: same raw path into our table shape"
FLOOR_DDL = {
    "postgresql": (
        "CREATE TABLE {} (id BIGINT, updated_at TIMESTAMPTZ, name TEXT, amount DOUBLE PRECISION, "
        "active BOOLEAN, quantity BIGINT, _dlt_load_id TEXT NOT NULL, _dlt_id TEXT NOT NULL UNIQUE)"
    ),
    "duckdb": (
        "CREATE TABLE {} (id BIGINT, updated_at TIMESTAMPTZ, name VARCHAR, amount DOUBLE, "
        "active BOOLEAN, quantity BIGINT, _dlt_load_id VARCHAR NOT NULL, _dlt_id VARCHAR NOT NULL)"
    ),
    "sqlite": (
        "CREATE TABLE {} (id INTEGER, updated_at TIMESTAMP, name TEXT, amount REAL, active BOOLEAN, "
        "quantity INTEGER, _dlt_load_id TEXT NOT NULL, _dlt_id TEXT NOT NULL UNIQUE)"
    ),
}


def dlt_columns(n: int) -> tuple[list[str], list[str]]:
    """A load id column and ``_dlt_id`` values as our loader makes them (batches of 10,000)."""
    from airflow_state_provider.destination.loader import new_dlt_ids

    ids = [i for start in range(0, n, 10_000) for i in new_dlt_ids(min(10_000, n - start))]
    return ["1763700000.0000000"] * n, ids


def floor_ddl(kind: str, table: str, unique: bool) -> str:
    """Our table shape; ``unique=False``: without the UNIQUE ``_dlt_id`` index (``create_indexes=False``)."""
    ddl = FLOOR_DDL[kind].format(table)
    return ddl if unique else ddl.replace(" UNIQUE", "")


def floor_pg_copy(
    db: Database, rows: list[dict], extra: tuple[list[str], list[str]], table: str, unique: bool = True
) -> float:
    """Binary COPY of the rows plus our two dlt columns into our table shape."""
    import psycopg

    with psycopg.connect(db.dsn) as conn:
        conn.execute(floor_ddl("postgresql", table, unique))
        conn.commit()
        start = time.perf_counter()
        statement = f"COPY {table} FROM STDIN (FORMAT BINARY)"
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types([*_PG_BINARY_TYPES, "text", "text"])
            write_row = copy.write_row
            for row, load_id, dlt_id in zip(rows, *extra, strict=True):
                write_row((*row.values(), load_id, dlt_id))
        conn.commit()
        return time.perf_counter() - start


def floor_duckdb_arrow(path: str, rows: list[dict], extra: tuple[list[str], list[str]]) -> float:
    """The Arrow scan with our two dlt columns."""
    import duckdb
    import pyarrow as pa

    conn = duckdb.connect(path)
    try:
        conn.execute(FLOOR_DDL["duckdb"].format("t"))
        start = time.perf_counter()
        conn.execute("BEGIN")
        columns = {c: [row[c] for row in rows] for c in COLUMNS}
        arrow_rows = pa.Table.from_pydict({**columns, "_dlt_load_id": extra[0], "_dlt_id": extra[1]})
        conn.register("arrow_rows", arrow_rows)
        conn.execute("INSERT INTO t SELECT * FROM arrow_rows")
        conn.execute("COMMIT")
        conn.close()
        return time.perf_counter() - start
    finally:
        conn.close()


def floor_sqlite_executemany(
    path: str, rows: list[dict], extra: tuple[list[str], list[str]], unique: bool = True
) -> float:
    """``executemany`` with our two dlt columns into our table shape."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(floor_ddl("sqlite", "t", unique))
        start = time.perf_counter()
        conn.execute("BEGIN")
        data = ((*row.values(), load_id, dlt_id) for row, load_id, dlt_id in zip(rows, *extra, strict=True))
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)", data)
        conn.execute("COMMIT")
        conn.close()
        return time.perf_counter() - start
    finally:
        conn.close()


RAW_DDL = {
    "postgresql": (
        "CREATE TABLE {} (id BIGINT, updated_at TIMESTAMPTZ, name TEXT, amount DOUBLE PRECISION, "
        "active BOOLEAN, quantity BIGINT)"
    ),
    "duckdb": (
        "CREATE TABLE {} (id BIGINT, updated_at TIMESTAMPTZ, name VARCHAR, amount DOUBLE, "
        "active BOOLEAN, quantity BIGINT)"
    ),
    "sqlite": (
        "CREATE TABLE {} (id INTEGER, updated_at TIMESTAMP, name TEXT, amount REAL, "
        "active BOOLEAN, quantity INTEGER)"
    ),
}
_PG_BINARY_TYPES = ["int8", "timestamptz", "text", "float8", "bool", "int8"]


def raw_pg_copy(db: Database, rows: list[dict], table: str, *, binary: bool) -> float:
    """psycopg 3 ``COPY ... FROM STDIN`` of the rows' values in one transaction."""
    import psycopg

    with psycopg.connect(db.dsn) as conn:
        conn.execute(RAW_DDL["postgresql"].format(table))
        conn.commit()
        statement = f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN"
        start = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy(statement + (" (FORMAT BINARY)" if binary else "")) as copy:
            if binary:
                copy.set_types(_PG_BINARY_TYPES)
            write_row = copy.write_row
            for row in rows:
                write_row(tuple(row.values()))
        conn.commit()
        return time.perf_counter() - start


def raw_duckdb_unnest(path: str, rows: list[dict]) -> float:
    """DuckDB without extra libraries: one ``INSERT ... SELECT UNNEST(?), ...`` of Python column lists."""
    import duckdb

    conn = duckdb.connect(path)
    try:
        conn.execute(RAW_DDL["duckdb"].format("t"))
        start = time.perf_counter()
        conn.execute("BEGIN")
        columns = [[row[c] for row in rows] for c in COLUMNS]
        conn.execute("INSERT INTO t SELECT " + ", ".join(["UNNEST(?)"] * len(COLUMNS)), columns)
        conn.execute("COMMIT")
        conn.close()
        return time.perf_counter() - start
    finally:
        conn.close()


def raw_duckdb_arrow(path: str, rows: list[dict]) -> float:
    """DuckDB's Arrow scan: Python column lists -> ``pyarrow.Table`` -> ``INSERT ... SELECT *``."""
    import duckdb
    import pyarrow as pa

    conn = duckdb.connect(path)
    try:
        conn.execute(RAW_DDL["duckdb"].format("t"))
        start = time.perf_counter()
        conn.execute("BEGIN")
        arrow_rows = pa.Table.from_pydict({c: [row[c] for row in rows] for c in COLUMNS})
        conn.register("arrow_rows", arrow_rows)
        conn.execute("INSERT INTO t SELECT * FROM arrow_rows")
        conn.execute("COMMIT")
        conn.close()
        return time.perf_counter() - start
    finally:
        conn.close()


def raw_sqlite_executemany(path: str, rows: list[dict]) -> float:
    """The standard library's ``executemany`` in one transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(RAW_DDL["sqlite"].format("t"))
        start = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", (tuple(row.values()) for row in rows))
        conn.execute("COMMIT")
        conn.close()
        return time.perf_counter() - start
    finally:
        conn.close()


def has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True
