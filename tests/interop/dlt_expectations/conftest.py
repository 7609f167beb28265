"""Fixtures for the ported dlt expectations: an in-process SQLite destination per test."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from airflow_state_provider import Pipeline

PIPELINE = "p"
#: the default schema name of pipeline "p": the source key of resources run without a source
SCHEMA = "p"


class Warehouse:
    """A SQLite file and a way to open the pipeline on it from a clean worker."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"sqlite:///{root / 'warehouse.db'}"
        self._dirs = itertools.count()

    def pipeline(self, name: str = PIPELINE, **options: Any) -> Pipeline:
        """The pipeline on a new, empty pipelines dir: its state comes from the destination only."""
        options.setdefault("pipelines_dir", self.root / f"worker{next(self._dirs)}")
        return Pipeline(name, destination=self.url, **options)

    def query(self, sql: str, name: str = PIPELINE) -> list[tuple]:
        """Rows of ``sql`` run in the pipeline's dataset."""
        pipeline = self.pipeline(name)
        try:
            with pipeline.sql_client() as client:
                return client.execute_sql(sql)
        finally:
            pipeline.engine.dispose()


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path)


def cursor_state(pipeline: Pipeline, resource: str, cursor: str, source_key: str = SCHEMA) -> dict:
    """``sources.<source_key>.resources.<resource>.incremental.<cursor>`` of the committed state."""
    return pipeline.state["sources"][source_key]["resources"][resource]["incremental"][cursor]
