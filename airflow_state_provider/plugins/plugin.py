"""``PipelineStatePlugin``: the "Pipeline state" page and task-instance tab in the Airflow UI.

Registered through the ``airflow.plugins`` entry point. Needs Airflow 3.1+ (``fastapi_apps`` and
``external_views`` with a ``task_instance`` destination); on older versions Airflow ignores what it
does not know. The FastAPI app is imported only when the api-server asks for it, so schedulers and
workers that load plugins do not import the web stack.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/pipeline-state"


class _FastAPIApps:
    """``fastapi_apps``, built on first access (the api-server mounts them at start)."""

    def __get__(self, instance: Any, owner: type) -> list[dict[str, Any]]:
        from airflow_state_provider.plugins.app import app

        return [{"app": app, "url_prefix": URL_PREFIX, "name": "Pipeline state"}]


class PipelineStatePlugin(AirflowPlugin):
    name = "pipeline_state"
    fastapi_apps = _FastAPIApps()
    external_views = [
        {
            "name": "Pipeline state",
            "href": f"{URL_PREFIX}/ui/",
            "destination": "nav",
            "url_route": "pipeline-state",
        },
        {
            "name": "Pipeline state",
            "href": (
                f"{URL_PREFIX}/ui/ti?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}"
                "&map_index={MAP_INDEX}"
            ),
            "destination": "task_instance",
            "url_route": "pipeline-state-ti",
        },
    ]
