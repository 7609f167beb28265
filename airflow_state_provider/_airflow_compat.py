"""The one place the provider imports Airflow from, so that Airflow 3.1 and 3.3 both work.

Airflow 3.2 moved ``conf``, ``determine_kwargs``, ``AirflowFailException`` and ``AirflowTaskTerminated``
into ``airflow.sdk``; 3.1 still has them in the core package. Everything else comes from ``airflow.sdk``
on every 3.x, except ``DbApiHook``, which is the common-sql provider's.
"""

from __future__ import annotations

try:
    from airflow.sdk import AssetAlias, BaseHook, BaseOperator, Connection, TaskGroup, chain
    from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory
    from airflow.sdk.definitions._internal.types import SET_DURING_EXECUTION
    from airflow.sdk.definitions.context import Context, context_merge
    from airflow.sdk.log import mask_secret
except ModuleNotFoundError as e:  # the core works without Airflow; its Airflow layer does not
    raise ModuleNotFoundError(
        "airflow-state-provider's Airflow layer (hook, operator, @task.stateful_load, decomposition) needs "
        "Apache Airflow 3.1 or newer: install the 'airflow' extra (pip install "
        "'airflow-state-provider[airflow]', or pip install -e '.[airflow]' from a checkout). "
        "The core (Pipeline, @resource, @source, incremental) works without it.",
        name=e.name,
    ) from e

try:
    from airflow.providers.common.sql.hooks.sql import DbApiHook
except ModuleNotFoundError as e:
    raise ModuleNotFoundError(
        "PipelineStateHook is a common-sql DbApiHook: install the 'airflow' extra (pip install "
        "'airflow-state-provider[airflow]', or pip install -e '.[airflow]' from a checkout), "
        "which brings apache-airflow-providers-common-sql.",
        name=e.name,
    ) from e

try:
    from airflow.sdk import conf
    from airflow.sdk.bases.decorator import determine_kwargs
    from airflow.sdk.exceptions import AirflowFailException, AirflowTaskTerminated
except ImportError:  # Airflow 3.1
    from airflow.configuration import conf  # type: ignore[no-redef, assignment]
    from airflow.exceptions import AirflowFailException, AirflowTaskTerminated  # type: ignore[no-redef]
    from airflow.utils.operator_helpers import determine_kwargs  # type: ignore[no-redef]

__all__ = [
    "SET_DURING_EXECUTION",
    "AirflowFailException",
    "AirflowTaskTerminated",
    "AssetAlias",
    "BaseHook",
    "BaseOperator",
    "Connection",
    "Context",
    "DbApiHook",
    "DecoratedOperator",
    "TaskDecorator",
    "TaskGroup",
    "chain",
    "conf",
    "context_merge",
    "determine_kwargs",
    "mask_secret",
    "task_decorator_factory",
]
