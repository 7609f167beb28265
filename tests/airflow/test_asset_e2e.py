"""A DAG scheduled on a loaded table's Asset runs after the load, on the real scheduler (issue 17).

``eco_assets_load`` loads ``orders`` and ``customers``; ``eco_assets_report`` is scheduled on the
``orders`` Asset (``PipelineStateHook.table_asset``). The api-server, scheduler and dag-processor run
as in production (LocalExecutor); the test triggers only the load and waits for the scheduler to start
the report from the asset event the load emitted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.airflow.conftest import REPO, conn_env
from tests.airflow_stack import FINISHED, AirflowStack, running_stack

pytestmark = [pytest.mark.airflow, pytest.mark.e2e]

ECO_DAGS = Path(__file__).parent / "eco_dags"
STARTUP_TIMEOUT, RUN_TIMEOUT = 180, 240


def test_a_dag_scheduled_on_a_loaded_table_runs_after_the_load(tmp_path, monkeypatch):
    from airflow_state_provider.hooks.pipeline_state import PipelineStateHook

    dags, warehouse, result = tmp_path / "dags", tmp_path / "warehouse.sqlite", tmp_path / "result.json"
    dags.mkdir()
    shutil.copy(ECO_DAGS / "assets.py", dags)
    connection = json.dumps(
        {"conn_type": "pipeline_state", "host": str(warehouse), "extra": {"dialect": "sqlite"}}
    )
    monkeypatch.setenv(conn_env("eco_dest"), connection)  # for the URI the test expects
    env = {
        conn_env("eco_dest"): connection,
        "AIRFLOW_STATE_PIPELINES_DIR": str(tmp_path / "pipelines"),
        "ECO_RESULT": str(result),
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "180",
        "PYTHONPATH": str(REPO),
    }
    stack = AirflowStack(tmp_path, dags, f"sqlite:///{warehouse}", env)
    with running_stack(stack, ["eco_assets_load", "eco_assets_report"], STARTUP_TIMEOUT, stop_timeout=10):
        runs_path = "/api/v2/dags/eco_assets_report/dagRuns"
        assert stack.get(runs_path)["dag_runs"] == []  # nothing scheduled it before the load
        load_run = stack.trigger("eco_assets_load")
        assert stack.wait_for_run("eco_assets_load", load_run, RUN_TIMEOUT) == "success"

        def finished_report() -> list[dict] | None:
            runs = stack.get(runs_path)["dag_runs"]
            return runs if runs and all(r["state"] in FINISHED for r in runs) else None

        (report,) = stack.wait_for("the asset-triggered report run", finished_report, RUN_TIMEOUT)
    logs = stack.run_logs("eco_assets_report", report["dag_run_id"])
    tails = [f.read_text(errors="replace")[-3000:] for f in sorted(logs.glob("task_id=*/attempt=*.log"))]
    assert (report["run_type"], report["state"]) == ("asset_triggered", "success"), "\n".join(tails)
    (event,) = json.loads(result.read_text())
    orders = PipelineStateHook(destination_conn_id="eco_dest").table_asset_uri("eco_data", "orders")
    assert event["uri"] == orders
    assert event["extra"] == {"load_id": event["extra"]["load_id"], "row_count": 3, "state_version": 1}
