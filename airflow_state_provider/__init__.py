"""airflow-state-provider: persistent, scoped pipeline state committed with the loaded rows.

The public API (DESIGN §3). Attributes load on first use, so importing a submodule (or Airflow's
provider discovery importing ``get_provider_info``) stays cheap; nothing here imports Airflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: the one place the version is written; packaging (pyproject) and the provider info read it
__version__ = "0.1.0"

_EXPORTS = {
    "Incremental": "airflow_state_provider.extract.incremental",
    "incremental": "airflow_state_provider.extract.incremental",
    "Resource": "airflow_state_provider.extract.resource",
    "resource": "airflow_state_provider.extract.resource",
    "transformer": "airflow_state_provider.extract.resource",
    "Source": "airflow_state_provider.extract.source",
    "source": "airflow_state_provider.extract.source",
    "LoadInfo": "airflow_state_provider.pipeline",
    "Pipeline": "airflow_state_provider.pipeline",
    "current": "airflow_state_provider.state.context",
    "reset_resource_state": "airflow_state_provider.state.context",
}

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

if TYPE_CHECKING:
    from airflow_state_provider.extract.incremental import Incremental, incremental
    from airflow_state_provider.extract.resource import Resource, resource, transformer
    from airflow_state_provider.extract.source import Source, source
    from airflow_state_provider.pipeline import LoadInfo, Pipeline
    from airflow_state_provider.state.context import current, reset_resource_state


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'airflow_state_provider' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
