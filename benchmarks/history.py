"""A long state history, inserted by bulk SQL, and the query plans of restore and prune on it."""

from __future__ import annotations

import sqlalchemy as sa

from benchmarks.contenders import DATASET, PIPELINE, Database

#: historical load ids: 10-digit unix times from 2017 on, all older than any load id of a real run
_OLD_LOAD_ID = {
    "postgresql": "(1500000000 + g)::text || '.0000000'",
    "duckdb": "CAST(1500000000 + g AS VARCHAR) || '.0000000'",
    "sqlite": "CAST(1500000000 + g AS TEXT) || '.0000000'",
}
_SERIES = {
    "postgresql": "generate_series(1, :n) AS s(g)",
    "duckdb": "range(1, :n + 1) AS s(g)",
    "sqlite": (
        "(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < :n) SELECT g FROM s)"
    ),
}


def seed_history(engine: sa.Engine, kind: str, versions: int) -> None:
    """Add ``versions`` older committed versions of the pipeline's newest state row.

    One ``INSERT ... SELECT`` per table from a generated series (no Python loop): each version gets its
    own ``_dlt_loads`` row with status 0 and the newest row's state blob. Version numbers are 1..N
    (restore orders by load id, as dlt does). PostgreSQL then gets the ``VACUUM ANALYZE`` autovacuum
    would give it shortly after.
    """
    q = f'"{DATASET}".'
    load_id, series = _OLD_LOAD_ID[kind], _SERIES[kind]
    with engine.begin() as conn:
        newest = conn.execute(
            sa.text(
                f"SELECT engine_version, state, version_hash FROM {q}_dlt_pipeline_state "
                "WHERE pipeline_name = :p ORDER BY _dlt_load_id DESC LIMIT 1"
            ),
            {"p": PIPELINE},
        ).one()
        conn.execute(
            sa.text(
                f"INSERT INTO {q}_dlt_loads (load_id, schema_name, status, inserted_at, schema_version_hash) "
                f"SELECT {load_id}, :p, 0, CURRENT_TIMESTAMP, NULL FROM {series}"
            ),
            {"n": versions, "p": PIPELINE},
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {q}_dlt_pipeline_state (version, engine_version, pipeline_name, state, "
                "created_at, version_hash, _dlt_load_id, _dlt_id) "
                f"SELECT g, :ev, :p, :state, CURRENT_TIMESTAMP, :vh, {load_id}, 'h' || g FROM {series}"
            ),
            {
                "n": versions,
                "p": PIPELINE,
                "ev": newest.engine_version,
                "state": newest.state,
                "vh": newest.version_hash,
            },
        )
    if kind == "postgresql":
        # what autovacuum does soon after such an insert; done now, so it cannot run mid-measurement
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM ANALYZE {q}_dlt_pipeline_state")
            conn.exec_driver_sql(f"VACUUM ANALYZE {q}_dlt_loads")


def state_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f'SELECT count(*) FROM "{DATASET}"._dlt_pipeline_state').scalar())


def query_plans(db: Database, max_versions: int = 100) -> dict[str, str]:
    """``EXPLAIN`` (with actual row counts where the database has them) of the restore query and of the
    retention query a commit runs, on ``db`` as it is."""
    from airflow_state_provider import Pipeline

    p = Pipeline(PIPELINE, destination=db.url, dataset_name=DATASET, max_state_versions=max_versions)
    store = p.store
    s = store.state_table
    prune_cutoff = (
        sa.select(s.c._dlt_load_id)
        .where(s.c.pipeline_name == PIPELINE)
        .order_by(s.c._dlt_load_id.desc())
        .offset(max_versions - 1)
        .limit(1)
    )
    queries = {
        "restore: the newest state row, if committed": store._newest_row_query(),
        "restore fallback: newest committed state row (when the newest row's load is not committed)": (
            store._newest_query()
        ),
        "prune: retention cutoff": prune_cutoff,
    }
    prefix = {
        "postgresql": "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) ",
        "duckdb": "EXPLAIN ",
        "sqlite": "EXPLAIN QUERY PLAN ",
    }[db.kind]
    plans: dict[str, str] = {}
    try:
        with p.engine.connect() as conn:
            for label, query in queries.items():
                sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
                rows = conn.exec_driver_sql(prefix + sql).all()
                column = 0 if db.kind == "postgresql" else -1
                text = "\n".join(str(r[column]) for r in rows)
                plans[label] = f"{sql}\n--\n{text}"
    finally:
        p.engine.dispose()
    return plans
