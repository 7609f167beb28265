"""airflow-state-provider: persistent, scoped pipeline state committed with the loaded rows.

The public API (DESIGN §3). Nothing here imports Airflow.
"""

from airflow_state_provider.extract.incremental import Incremental, incremental
from airflow_state_provider.extract.resource import Resource, resource, transformer
from airflow_state_provider.extract.source import Source, source
from airflow_state_provider.pipeline import LoadInfo, Pipeline
from airflow_state_provider.state.context import current, reset_resource_state

__all__ = [
    "Incremental",
    "LoadInfo",
    "Pipeline",
    "Resource",
    "Source",
    "current",
    "incremental",
    "reset_resource_state",
    "resource",
    "source",
    "transformer",
]
