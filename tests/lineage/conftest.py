"""Fixtures of the OpenLineage tests (Airflow 3.3 line, where apache-airflow-providers-openlineage is
pinned). Importing the Airflow tests' conftest gives Airflow its private ``AIRFLOW_HOME`` first."""

from __future__ import annotations

from tests.airflow.conftest import (  # noqa: F401 -- fixtures re-exported to this folder
    AIRFLOW_HOME,
    fresh_pipelines_dir,
)
