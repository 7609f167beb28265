"""The "Pipeline state" UI plugin as Airflow loads it (run on the Airflow 3.1 and 3.3 lines; the
plugin's pages and API are tested against a running api-server in tests/ui/test_plugin_e2e.py)."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

pytestmark = pytest.mark.airflow


def test_the_entry_point_registers_the_plugin():
    from airflow.plugins_manager import AirflowPlugin

    (ep,) = [ep for ep in entry_points(group="airflow.plugins") if ep.name == "pipeline_state"]
    plugin = ep.load()
    assert issubclass(plugin, AirflowPlugin) and plugin.name == "pipeline_state"
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/pipeline-state"
    paths = {route.path for route in app["app"].routes}
    assert {"/api/pipelines", "/ui/", "/ui/ti"} <= paths


def test_external_views_are_valid_for_the_ui():
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    from airflow_state_provider.plugins.plugin import PipelineStatePlugin

    views = [ExternalViewResponse(**view) for view in PipelineStatePlugin.external_views]
    assert [(v.destination, v.url_route) for v in views] == [
        ("nav", "pipeline-state"),
        ("task_instance", "pipeline-state-ti"),
    ]
    # the UI fills these in for a task-instance view
    assert all(f"{{{key}}}" in views[1].href for key in ("DAG_ID", "RUN_ID", "TASK_ID", "MAP_INDEX"))
