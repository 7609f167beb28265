"""Provider registration as Airflow sees it: entry point, connection form, decorator, config."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_state_provider.get_provider_info import get_provider_info

pytestmark = pytest.mark.airflow

AIRFLOW_VERSION = tuple(int(p) for p in importlib.metadata.version("apache-airflow").split(".")[:2])
needs_declarative_forms = pytest.mark.skipif(
    AIRFLOW_VERSION < (3, 2), reason="conn-fields / ui-field-behaviour are read from provider info since 3.2"
)


def airflow_cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=os.environ, capture_output=True, text=True, check=True
    )
    return result.stdout


def test_provider_info_matches_distribution_and_airflow_schema():
    import airflow
    import jsonschema

    info = get_provider_info()
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    dist = importlib.metadata.distribution("airflow-state-provider")
    assert info["package-name"] == dist.metadata["Name"]
    assert info["versions"][0] == dist.version
    entry_points = [ep for ep in dist.entry_points if ep.group == "apache_airflow_provider"]
    assert [ep.value for ep in entry_points] == ["airflow_state_provider.get_provider_info:get_provider_info"]


def runtime_providers_manager():
    """What a task process consults: the Task SDK's manager (3.2+), else the core one (3.1)."""
    try:
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    except ImportError:  # Airflow 3.1
        from airflow.providers_manager import ProvidersManager as ProvidersManagerTaskRuntime
    return ProvidersManagerTaskRuntime()


def test_providers_manager_registers_hook_decorator_and_config():
    from airflow.providers_manager import ProvidersManager

    manager = runtime_providers_manager()
    assert "airflow-state-provider" in manager.providers
    hook = manager.hooks["pipeline_state"]
    assert hook.hook_class_name == "airflow_state_provider.hooks.pipeline_state.PipelineStateHook"
    assert hook.connection_id_attribute_name == "destination_conn_id"
    assert hook.connection_testable
    from airflow_state_provider.decorators.stateful_load import stateful_load_task

    assert manager.taskflow_decorators["stateful_load"] is stateful_load_task
    configs = dict(ProvidersManager().provider_configs)
    assert (
        configs["airflow-state-provider"]["state_provider"]["options"]["max_state_versions"]["default"]
        == "100"
    )


def test_task_sdk_runtime_sees_the_provider():
    from airflow.sdk import task

    from airflow_state_provider.decorators.stateful_load import stateful_load_task

    assert task.stateful_load is stateful_load_task


@needs_declarative_forms
def test_connection_form_metadata():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    behaviour = manager.field_behaviours["pipeline_state"]
    assert behaviour["relabeling"] == {"host": "Host or file path", "schema": "Database"}
    assert behaviour["placeholders"]["extra__pipeline_state__dialect"] == "postgresql"
    widgets = {
        k: v for k, v in manager.connection_form_widgets.items() if k.startswith("extra__pipeline_state__")
    }
    assert set(widgets) == {
        f"extra__pipeline_state__{name}"
        for name in (
            "dialect",
            "driver",
            "dataset_name",
            "restore_from_destination",
            "sqlalchemy_url",
            "max_state_versions",
            "max_state_bytes",
            "warn_state_bytes",
            "lock_timeout",
        )
    }
    # a full URL may carry a password: the form treats it as a secret
    assert widgets["extra__pipeline_state__sqlalchemy_url"].is_sensitive
    assert not widgets["extra__pipeline_state__dialect"].is_sensitive
    assert widgets["extra__pipeline_state__restore_from_destination"].field["value"] is True
    assert widgets["extra__pipeline_state__max_state_versions"].field["schema"]["type"] == ["integer", "null"]
    assert widgets["extra__pipeline_state__lock_timeout"].field["schema"]["type"] == ["number", "null"]


def test_cli_lists_provider_hook_and_config():
    assert "airflow-state-provider" in airflow_cli("providers", "list")
    hooks = json.loads(airflow_cli("providers", "hooks", "-o", "json"))
    ours = [h for h in hooks if h["connection_type"] == "pipeline_state"]
    assert ours and ours[0]["class"] == "airflow_state_provider.hooks.pipeline_state.PipelineStateHook"
    assert airflow_cli("config", "get-value", "state_provider", "max_state_versions").strip() == "100"


@needs_declarative_forms
def test_cli_lists_form_fields_and_behaviours():
    assert "extra__pipeline_state__sqlalchemy_url" in airflow_cli("providers", "widgets")
    assert "pipeline_state" in airflow_cli("providers", "behaviours")
