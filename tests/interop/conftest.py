"""Fixtures for the dlt interoperability tests: the same warehouse on DuckDB and on PostgreSQL."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.support import Warehouse


@pytest.fixture(scope="session", autouse=True)
def _quiet_dlt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No telemetry and no Airflow Variables config provider in dlt.

    dlt imports Airflow when it is installed, for that provider; should it still do so, it gets a private
    AIRFLOW_HOME (unless tests/airflow already configured Airflow in this session).
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
        mp.setenv("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")
        if "airflow" not in sys.modules and "AIRFLOW_HOME" not in os.environ:
            mp.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
        yield


@pytest.fixture(params=["duckdb", "postgresql"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Warehouse:
    """An empty destination database, once on DuckDB (a file) and once on PostgreSQL (a real server)."""
    monkeypatch.chdir(tmp_path)  # dlt looks for .dlt/ config in the working directory
    if request.param == "postgresql":
        request.applymarker(pytest.mark.postgres)
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    return Warehouse(request.param, url, tmp_path)
