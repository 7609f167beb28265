"""Helpers shared by the edge-case tests (issue 14)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from airflow_state_provider import Pipeline
from airflow_state_provider.destination.dialects import dialect_for
from airflow_state_provider.destination.engine import create_engine
from airflow_state_provider.destination.store import loads_table, state_table
from airflow_state_provider.state import codec

NAME = "edges"
DATASET = "ds"


def new_pipeline(url: str, tmp_path: Path, **kw: Any) -> Pipeline:
    """A Pipeline on a clean pipelines dir, as on a fresh worker."""
    kw.setdefault("dataset_name", DATASET)
    return Pipeline(kw.pop("name", NAME), destination=url, pipelines_dir=tmp_path / uuid.uuid4().hex, **kw)


def engine(url: str, dataset: str = DATASET) -> sa.Engine:
    eng = create_engine(url)
    dialect_for(eng).prepare(dataset)
    return eng


def execute(url: str, statement: Any, dataset: str = DATASET) -> None:
    eng = engine(url, dataset)
    with eng.begin() as conn:
        conn.execute(statement)
    eng.dispose()


def query(url: str, sql: str, dataset: str = DATASET) -> list[tuple]:
    eng = engine(url, dataset)
    with eng.connect() as conn:
        rows = [tuple(r) for r in conn.exec_driver_sql(sql)]
    eng.dispose()
    return rows


def dlt_restore_version(url: str, pipeline_name: str = NAME, dataset: str = DATASET) -> int | None:
    """The state version dlt 1.31 restores: its query (``get_stored_state``) orders the committed
    state rows by ``_dlt_loads.load_id`` as text, descending."""
    rows = query(
        url,
        f'SELECT s.version FROM "{dataset}"."_dlt_pipeline_state" AS s JOIN "{dataset}"."_dlt_loads" AS l '
        f"ON l.load_id = s._dlt_load_id WHERE s.pipeline_name = '{pipeline_name}' AND l.status = 0 "
        "ORDER BY l.load_id DESC LIMIT 1",
        dataset,
    )
    return rows[0][0] if rows else None


def insert_state_row(url: str, state: dict, load_id: str, *, committed: bool, dataset: str = DATASET) -> None:
    """A state row written by another writer (dlt, an older version); with ``committed`` its load row."""
    metadata = sa.MetaData()
    eng = engine(url, dataset)
    with eng.begin() as conn:
        if committed:
            conn.execute(
                sa.insert(loads_table(metadata, dataset)).values(
                    load_id=load_id, schema_name=NAME, status=0, inserted_at=datetime.now(UTC)
                )
            )
        conn.execute(
            sa.insert(state_table(metadata, dataset)).values(
                version=int(state["_state_version"]),
                engine_version=4,
                pipeline_name=NAME,
                state=codec.encode_state(state),
                created_at=datetime.now(UTC),
                version_hash=state["_version_hash"],
                _dlt_load_id=load_id,
                _dlt_id=uuid.uuid4().hex[:14],
            )
        )
    eng.dispose()
