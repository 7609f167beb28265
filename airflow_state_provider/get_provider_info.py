"""The provider description Airflow reads through the ``apache_airflow_provider`` entry point.

Pure data: Airflow imports this module in every process that loads providers, so it imports nothing
but the package version.
"""

from __future__ import annotations

from typing import Any

from airflow_state_provider import __version__

#: Section of ``airflow.cfg`` / ``AIRFLOW__STATE_PROVIDER__*`` holding the provider's defaults.
CONFIG_SECTION = "state_provider"
#: Where the documentation is (the README, rendered on the package page).
DOCUMENTATION_URL = "https://pypi.org/project/airflow-state-provider/#description"
#: The Airflow versions the provider supports: the ``airflow`` extra requires exactly this.
AIRFLOW_REQUIREMENT = "apache-airflow>=3.1"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-state-provider",
        "name": "Pipeline State",
        "description": (
            "Persistent, scoped pipeline state that lives in the destination database and is committed "
            "in the same transaction as the loaded rows (dlt-compatible). "
            f"Supported Airflow versions: {AIRFLOW_REQUIREMENT.split('>=')[1]} and newer. "
            f"Documentation: {DOCUMENTATION_URL}"
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Pipeline State",
                "external-doc-url": DOCUMENTATION_URL,
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Pipeline State",
                "python-modules": ["airflow_state_provider.hooks.pipeline_state"],
            }
        ],
        "operators": [
            {
                "integration-name": "Pipeline State",
                "python-modules": ["airflow_state_provider.operators.stateful_load"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "pipeline_state",
                "hook-class-name": "airflow_state_provider.hooks.pipeline_state.PipelineStateHook",
                "hook-name": "Pipeline State (SQL destination)",
                "conn-fields": {
                    "dialect": {
                        "label": "Dialect",
                        "description": "The destination database: sqlite, duckdb or postgresql "
                        "(not needed with a SQLAlchemy URL).",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["sqlite", "duckdb", "postgresql", None],
                        },
                    },
                    "driver": {
                        "label": "Driver",
                        "description": "Optional DBAPI driver, e.g. psycopg (the default for postgresql).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "dataset_name": {
                        "label": "Dataset name",
                        "description": "Default dataset (schema) for pipelines that do not name one.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "restore_from_destination": {
                        "label": "Restore state from destination",
                        "description": "Restore the newest committed state when a task starts.",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                    "sqlalchemy_url": {
                        "label": "SQLAlchemy URL",
                        "description": "A full SQLAlchemy URL; when set it overrides every other field.",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "max_state_versions": {
                        "label": "State versions kept",
                        "description": "Committed state versions kept per pipeline (default from config).",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                    },
                    "max_state_bytes": {
                        "label": "Maximum state size (bytes)",
                        "description": "A larger state document fails the load before anything is written.",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                    },
                    "warn_state_bytes": {
                        "label": "State size warning (bytes)",
                        "description": "A larger state document logs a warning naming its biggest paths.",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                    },
                    "lock_timeout": {
                        "label": "Lock timeout (seconds)",
                        "description": "Longest wait for a lock (commit lock, a DuckDB file another task "
                        "has open, ...) before the task fails with LockTimeoutError (default from config).",
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": [],
                    "relabeling": {"host": "Host or file path", "schema": "Database"},
                    "placeholders": {
                        "host": "db.example.com, or /data/warehouse.duckdb for SQLite and DuckDB",
                        "port": "5432",
                        "schema": "analytics (empty for SQLite and DuckDB)",
                        "login": "loader",
                        "password": "secret",
                        "dialect": "postgresql",
                        "driver": "psycopg",
                        "dataset_name": "github_data",
                        "sqlalchemy_url": "postgresql+psycopg://user:password@host:5432/database",
                    },
                },
            }
        ],
        # ``airflow state ...`` (airflow_state_provider.cli): read by Airflow 3.2+, ignored by 3.1
        "cli": ["airflow_state_provider.cli.get_airflow_cli_commands"],
        "task-decorators": [
            {
                "name": "stateful_load",
                "class-name": "airflow_state_provider.decorators.stateful_load.stateful_load_task",
            }
        ],
        "config": {
            CONFIG_SECTION: {
                "description": "Defaults for pipeline state kept by airflow-state-provider.",
                "options": {
                    "max_state_versions": {
                        "description": "Committed state versions kept per pipeline; older ones are pruned "
                        "in the commit transaction.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "100",
                        "default": "100",
                    },
                    "max_state_bytes": {
                        "description": "Size limit of one encoded state document; a larger one fails the "
                        "load before anything is written.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "16777216",
                        "default": "16777216",
                    },
                    "warn_state_bytes": {
                        "description": "Size of a state document above which the task log warns and "
                        "names the biggest state paths.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "1048576",
                        "default": "1048576",
                    },
                    "lock_timeout": {
                        "description": "Seconds a task waits for a lock (the pipeline's commit lock, a "
                        "table's DDL lock, a DuckDB file another task has open, a SQLite write lock) "
                        "before it fails with LockTimeoutError, which a retry usually gets past.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "300",
                        "default": "300",
                    },
                },
            }
        },
    }
