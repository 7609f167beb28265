"""The Airflow fixtures of tests/airflow (a private AIRFLOW_HOME, the metadata database, the warehouse)."""

from tests.airflow.conftest import (  # noqa: F401
    airflow_db,
    fresh_pipelines_dir,
    warehouse,
)
