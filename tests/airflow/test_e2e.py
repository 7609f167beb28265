"""The real stack: ``airflow api-server``, ``scheduler`` and ``dag-processor`` with the LocalExecutor.

One run of ``e2e_dags/stateful_retry.py``: its stateful task fails on try 1 after loading a page and
succeeds on try 2. Asserted from the task log files, the REST API (what the UI shows), the destination
and XCom; a headless Chromium opens the UI's log view of try 2. One run of ``stateful_kill.py``: the
task is marked failed while it loads, the supervisor kills it, nothing is committed. And issue 17's
Asset case (``eco_dags/assets.py``): the test triggers only ``eco_assets_load``; the scheduler starts
``eco_assets_report``, scheduled on the loaded ``orders`` table's Asset, from the event the load emitted.
The tests share one stack: starting one takes minutes on two cores.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.airflow.conftest import REPO, committed_state, conn_env, sql, sqlite_conn_json
from tests.airflow_stack import FINISHED, AirflowStack, running_stack

pytestmark = [pytest.mark.airflow, pytest.mark.e2e]

DAG_IDS = ("stateful_retry", "stateful_kill", "eco_assets_load", "eco_assets_report")
ECO_DAGS = Path(__file__).parent / "eco_dags"
ARTIFACTS = REPO / "test-artifacts"
STARTUP_TIMEOUT = 180
RUN_TIMEOUT = 240
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Run:
    """One DAG run, its REST API and its task logs."""

    stack: AirflowStack
    dag_id: str
    run_id: str

    @classmethod
    def trigger(cls, stack: AirflowStack, dag_id: str) -> Run:
        return cls(stack, dag_id, stack.trigger(dag_id))

    @property
    def path(self) -> str:
        return self.stack.run_path(self.dag_id, self.run_id)

    def api(self, path: str = "") -> dict:
        return self.stack.get(f"{self.path}{path}")

    def wait(self, what: str, check: Callable[[], Any], timeout: float = RUN_TIMEOUT) -> Any:
        return self.stack.wait_for(f"{what} ({self.dag_id})", check, timeout)

    def finished(self) -> str:
        return self.stack.wait_for_run(self.dag_id, self.run_id, RUN_TIMEOUT)

    def log_file(self, task_id: str, try_number: int) -> Path:
        return self.stack.log_file(self.dag_id, self.run_id, task_id, try_number)

    def log_file_events(self, task_id: str, try_number: int) -> list[str]:
        lines = self.log_file(task_id, try_number).read_text().splitlines()
        return [line_text(json.loads(line)) for line in lines if line.strip()]

    def api_log_events(self, task_id: str, try_number: int) -> list[str]:
        content = self.stack.get(
            f"{self.path}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": True},
            headers={"Accept": "application/json"},
        )["content"]
        return [line_text(item) for item in content if isinstance(item, dict)]


def line_text(record: dict) -> str:
    """A structured log line as text: the message, then any exception type and message."""
    errors = [f"{e.get('exc_type')}: {e.get('exc_value')}" for e in record.get("error_detail") or ()]
    return " | ".join([str(record.get("event", "")), *errors])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """Start the services and wait until the api-server answers and the DAGs are parsed."""
    root = tmp_path_factory.mktemp("e2e")
    dags, warehouse = root / "dags", root / "warehouse.sqlite"
    shutil.copytree(Path(__file__).parent / "e2e_dags", dags)
    shutil.copy(ECO_DAGS / "assets.py", dags)
    env = {
        "AIRFLOW_CONN_PIPELINE_STATE_DEFAULT": sqlite_conn_json(warehouse),
        conn_env("eco_dest"): sqlite_conn_json(root / "eco_warehouse.sqlite"),
        "AIRFLOW_STATE_PIPELINES_DIR": str(root / "pipelines"),
        "ECO_RESULT": str(root / "eco_result.json"),
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "180",
        "PYTHONPATH": str(REPO),
    }
    airflow = AirflowStack(root, dags, f"sqlite:///{warehouse}", env)
    with running_stack(airflow, DAG_IDS, STARTUP_TIMEOUT, stop_timeout=30):
        yield airflow


@pytest.fixture(scope="module")
def retry_run(stack: AirflowStack) -> Run:
    """One run of ``stateful_retry``, finished."""
    started = time.monotonic()
    run = Run.trigger(stack, "stateful_retry")
    print(f"e2e: retry DAG run {run.finished()} after {time.monotonic() - started:.1f}s")
    return run


def test_failed_try_commits_nothing_and_the_retry_continues(retry_run: Run):
    assert retry_run.api()["state"] == "success"
    ti = retry_run.api("/taskInstances/events")
    assert (ti["state"], ti["try_number"]) == ("success", 2)

    first, second = retry_run.log_file_events("events", 1), retry_run.log_file_events("events", 2)
    bind = (
        "Bind incremental on events with initial_value: 2024-01-01T00:00:00+00:00, "
        "start_value: 2024-01-01T00:00:00+00:00, end_value: None, func: max"
    )
    for events in (first, second):
        # the failed try left nothing behind: the retry restores "first run" and binds the same start
        assert any(
            "No committed state of pipeline 'retry_events' in dataset 'retry_data': first run" in e
            for e in events
        )
        assert any(e.startswith(bind) for e in events)
    assert any("simulated outage after the first page (try 1)" in e for e in first)
    assert not any(e.startswith(("Loaded ", "Committed ")) for e in first)
    assert "Loaded 10 rows into retry_data.events" in second
    commits = [e for e in second if e.startswith("Committed state version 1 of pipeline 'retry_events'")]
    assert len(commits) == 1 and "sources.retry_events" in commits[0]

    # the REST API serves the same lines the UI shows
    for try_number, from_file in ((1, first), (2, second)):
        from_api = retry_run.api_log_events("events", try_number)
        for line in (bind, "No committed state of pipeline 'retry_events'", "Committed state version 1"):
            assert any(line in e for e in from_api) == any(line in e for e in from_file), (try_number, line)

    url = retry_run.stack.warehouse_url
    counts = "SELECT count(*), count(DISTINCT id), count(DISTINCT _dlt_load_id) FROM events"
    assert sql(url, "retry_data", counts) == [(10, 10, 1)]
    slot = committed_state(url, "retry_events", "retry_data")["sources"]["retry_events"]["resources"][
        "events"
    ]
    assert slot["loaded_by_try"] == 2
    assert slot["incremental"]["updated_at"]["last_value"] == "2024-01-01T10:00:00+00:00"


def test_no_xcom_holds_state(retry_run: Run):
    assert retry_run.api("/taskInstances/events/xcomEntries")["total_entries"] == 0
    entries = retry_run.api("/taskInstances/audit/xcomEntries")["xcom_entries"]
    assert [e["key"] for e in entries] == ["return_value"]
    value = retry_run.api("/taskInstances/audit/xcomEntries/return_value")["value"]
    summary = value if isinstance(value, dict) else json.loads(value)
    assert summary["row_counts"] == {"audit": 1}
    assert set(summary) <= {
        "pipeline_name",
        "dataset_name",
        "load_id",
        "row_counts",
        "state_version",
        "state_changed",
        "changed_paths",
        "checkpoints",
    }
    assert "loaded_by_try" not in json.dumps(summary)


def test_killed_task_commits_nothing(stack: AirflowStack):
    """Marking a running task failed makes the supervisor SIGTERM it: on_kill rolls the load back."""
    run = Run.trigger(stack, "stateful_kill")
    run.wait(
        "the first page to be loaded",
        lambda: (
            run.log_file("slow", 1).exists()
            and any("waiting to be killed" in e for e in run.log_file_events("slow", 1))
        ),
    )
    response = stack.client.patch(f"{run.path}/taskInstances/slow", json={"new_state": "failed"})
    response.raise_for_status()
    run.wait(
        "the task process to end",
        lambda: (
            any(
                e.startswith("Task killed: aborting pipeline 'killed'")
                for e in run.log_file_events("slow", 1)
            )
            and any("AirflowTaskTerminated" in e for e in run.log_file_events("slow", 1))
        ),
        timeout=60,
    )
    events = run.log_file_events("slow", 1)
    assert not any(e.startswith(("Loaded ", "Committed ")) for e in events)
    url = stack.warehouse_url
    assert committed_state(url, "killed", "killed_data")["_state_version"] == 0
    tables = sql(url, "killed_data", "SELECT name FROM sqlite_master WHERE type = 'table'")
    assert ("slow_pages",) not in tables


def test_ui_log_view_shows_the_bind_line(retry_run: Run):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    view = f"/dags/stateful_retry/runs/{quote(retry_run.run_id, safe='')}/tasks/events?try_number=2"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            # the simple auth manager (all admins) logs the browser in and redirects to the view
            page.goto(f"{retry_run.stack.base_url}/auth/token/login?next={quote(view, safe='')}")
            line = page.get_by_text("Bind incremental on events").first
            line.wait_for(timeout=60_000)
            assert "start_value: 2024-01-01T00:00:00+00:00" in line.inner_text()
            page.screenshot(path=ARTIFACTS / "ui-task-log-bind-incremental.png", full_page=True)
        finally:
            browser.close()


def test_a_dag_scheduled_on_a_loaded_table_runs_after_the_load(stack: AirflowStack, monkeypatch):
    """Issue 17: the report DAG runs from the asset event of the load, not from a trigger."""
    from airflow_state_provider.hooks.pipeline_state import PipelineStateHook

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
    (event,) = json.loads(Path(stack.env["ECO_RESULT"]).read_text())
    monkeypatch.setenv(conn_env("eco_dest"), stack.env[conn_env("eco_dest")])  # the URI the DAG saw
    orders = PipelineStateHook(destination_conn_id="eco_dest").table_asset_uri("eco_data", "orders")
    assert event["uri"] == orders
    assert event["extra"] == {"load_id": event["extra"]["load_id"], "row_count": 3, "state_version": 1}
