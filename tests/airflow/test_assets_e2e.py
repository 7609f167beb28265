"""The real scheduler runs a DAG scheduled on a loaded table's Asset after a load (issue 17).

``eco_dags/assets.py`` on the stack of ``tests/airflow_stack.py`` (api-server, scheduler,
dag-processor, LocalExecutor): a triggered ``eco_assets_load`` emits one asset event per table, and the
scheduler starts ``eco_assets_report``, which records the events it was triggered by.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.airflow_stack import AirflowStack, running_stack

pytestmark = [pytest.mark.airflow, pytest.mark.e2e]

STARTUP_TIMEOUT = 300
RUN_TIMEOUT = 240


def test_a_dag_scheduled_on_a_table_asset_runs_after_a_load(tmp_path: Path):
    dags, warehouse, result = tmp_path / "dags", tmp_path / "warehouse.sqlite", tmp_path / "result.json"
    dags.mkdir()
    shutil.copy(Path(__file__).parent / "eco_dags" / "assets.py", dags)
    conn = {"conn_type": "pipeline_state", "host": str(warehouse), "extra": {"dialect": "sqlite"}}
    env = {
        "AIRFLOW_CONN_ECO_DEST": json.dumps(conn),
        "AIRFLOW_STATE_PIPELINES_DIR": str(tmp_path / "pipelines"),
        "ECO_RESULT": str(result),
    }
    stack = AirflowStack(tmp_path, dags, f"sqlite:///{warehouse}", env)
    with running_stack(stack, ("eco_assets_load", "eco_assets_report"), STARTUP_TIMEOUT, stop_timeout=30):
        started = time.monotonic()
        load_run = stack.trigger("eco_assets_load")
        assert stack.wait_for_run("eco_assets_load", load_run, RUN_TIMEOUT) == "success"

        def report_runs() -> list[dict] | None:
            runs = stack.get("/api/v2/dags/eco_assets_report/dagRuns")["dag_runs"]
            return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else None

        runs = stack.wait_for("eco_assets_report to run", report_runs, RUN_TIMEOUT)
        print(f"e2e: load and downstream run finished after {time.monotonic() - started:.1f}s")
    assert [(r["run_type"], r["state"]) for r in runs] == [("asset_triggered", "success")]
    (event,) = json.loads(result.read_text())
    assert event["uri"] == f"sqlite://localhost{warehouse}/eco_data/orders"
    assert event["extra"]["row_count"] == 3 and event["extra"]["state_version"] == 1
    assert event["extra"]["load_id"]
