"""Airflow's run model, exactly once: mapped task instances and data intervals, with ``dag.test()``.

The DAGs are in ``tests/airflow/dags/run_model.py``; the destination is the SQLite file behind
``pipeline_state_default``. Every test checks the rows (each exactly once) and the committed slots.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from tests.airflow.conftest import DAGS_FOLDER, committed_state, load_dag, sql

pytestmark = pytest.mark.airflow

TEST_DAGS = DAGS_FOLDER.parent / "tests" / "airflow" / "dags"
#: Airflow 3.1's ``dag.test()`` prints no operator (``self.log``) lines, only module loggers' (stderr)
OPERATOR_LOGS_SHOWN = tuple(int(x) for x in __import__("airflow").__version__.split(".")[:2]) >= (3, 2)


def output(capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> str:
    """What ``dag.test()`` logged, lines joined: printed on 3.3, through stdlib logging on 3.1."""
    captured = capfd.readouterr()
    return (captured.out + captured.err + caplog.text).replace("\n", " ")


@pytest.fixture
def run_model_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Add ``tests/airflow/dags`` as a DAG bundle, so ``dag.test()`` runs its DAGs."""
    bundles = [
        {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(DAGS_FOLDER)},
        },
        {
            "name": "run-model-tests",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(TEST_DAGS)},
        },
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))


@pytest.fixture
def url(airflow_db, warehouse, fresh_pipelines_dir, run_model_bundle) -> str:
    fresh_pipelines_dir()
    return f"sqlite:///{warehouse}"


def get_dag(dag_id: str):
    return load_dag(dag_id, TEST_DAGS)


def task_states(dag_run) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}


def exactly_once(url: str, dataset: str, table: str) -> list[str]:
    ids = [r[0] for r in sql(url, dataset, f"SELECT id FROM {table} ORDER BY id")]
    assert len(ids) == len(set(ids)), f"duplicate rows in {table}: {ids}"
    return ids


def orders(region: str, upto: int) -> list[str]:
    return [f"{region}-{n}" for n in range(1, upto + 1)]


# -- mapping --------------------------------------------------------------------------------------------


def test_mapped_decorator_instances_keep_their_own_slots_keyed_by_value(url, capfd, caplog):
    dag = get_dag("mapped_decorator")
    run = dag.test(logical_date=None, run_conf={"regions": ["eu", "us"], "upto": 5})
    assert run.state == "success", task_states(run)
    assert exactly_once(url, "orders_dataset", "orders") == sorted(orders("eu", 5) + orders("us", 5))
    slots = committed_state(url, "orders", "orders_dataset")["sources"]["orders"]["resources"]
    assert sorted(slots) == ["orders__region_eu", "orders__region_us"]
    out = output(capfd, caplog)
    assert "orders keeps its state in slot sources.orders.resources.orders__region_us" in out
    if OPERATOR_LOGS_SHOWN:
        assert "State slots of this task (mapped instance 1): each resource keeps its state under" in out

    # the upstream list reorders and grows: each region continues from its own cursor
    run = dag.test(logical_date=None, run_conf={"regions": ["ap", "us", "eu"], "upto": 7})
    assert run.state == "success", task_states(run)
    expected = sorted(orders("eu", 7) + orders("us", 7) + orders("ap", 7))
    assert exactly_once(url, "orders_dataset", "orders") == expected
    slots = committed_state(url, "orders", "orders_dataset")["sources"]["orders"]["resources"]
    assert sorted(slots) == ["orders__region_ap", "orders__region_eu", "orders__region_us"]
    assert {k: v["incremental"]["seq"]["last_value"] for k, v in slots.items()} == dict.fromkeys(slots, 7)


def test_mapped_instances_that_would_share_a_slot_fail_at_start_naming_both(url, capfd, caplog):
    dag = get_dag("mapped_decorator")
    run = dag.test(logical_date=None, run_conf={"regions": ["eu", "us", "eu"], "upto": 3})
    assert run.state == "failed"
    states = task_states(run)
    assert states[("orders", 0)] == states[("orders", 2)] == "failed"
    out = output(capfd, caplog)
    assert "mapped instances 0 and 2 would share one state slot (suffix '__region_eu'" in out
    # only the instance with its own slot loaded
    assert exactly_once(url, "orders_dataset", "orders") == orders("us", 3)


def test_mapped_operator_expand_and_expand_kwargs_keep_their_own_slots(url):
    dag = get_dag("mapped_operator")
    for _ in range(2):
        run = dag.test(logical_date=None)
        assert run.state == "success", task_states(run)
    assert exactly_once(url, "orders_op_dataset", "orders") == sorted(orders("eu", 5) + orders("us", 5))
    slots = committed_state(url, "orders_op", "orders_op_dataset")["sources"]["orders_op"]["resources"]
    assert sorted(slots) == ["orders__region_eu", "orders__region_us"]
    assert exactly_once(url, "orders_kw_dataset", "orders") == sorted(orders("ap", 5) + orders("eu", 5))
    slots = committed_state(url, "orders_kw", "orders_kw_dataset")["sources"]["orders_kw"]["resources"]
    # how to load (write_disposition, primary_key, ...) never keys a slot; the data's arguments do
    assert sorted(slots) == ["orders__region_ap", "orders__region_eu"]


# -- intervals ------------------------------------------------------------------------------------------
def day_ids(first: int, last: int) -> list[str]:
    """Event ids of March 2024 days ``first`` to ``last`` inclusive."""
    return [date(2024, 3, d).isoformat() for d in range(first, last + 1)]


def cursor(url: str) -> str:
    slots = committed_state(url, "events", "events_dataset")["sources"]["events"]["resources"]
    return slots["events"]["incremental"]["at"]["last_value"]


def test_zero_length_intervals_continue_from_the_committed_cursor_and_say_so(url, capfd, caplog):
    """``schedule="@daily"`` is CronTriggerTimetable on Airflow 3: every run's interval is a point."""
    dag = get_dag("daily_points")
    run = dag.test(logical_date=datetime(2024, 3, 5, tzinfo=UTC))
    assert run.state == "success"
    assert run.data_interval_start == run.data_interval_end  # what Airflow gives: a point
    out = output(capfd, caplog)
    assert "The data interval of this run is zero-length" in out
    assert "CronDataIntervalTimetable, or [scheduler] create_cron_data_intervals = True" in out
    assert "Incremental 'at' of events continues from its committed cursor instead." in out
    assert exactly_once(url, "events_dataset", "events") == day_ids(1, 20)

    run = dag.test(logical_date=datetime(2024, 3, 6, tzinfo=UTC))  # the next point: nothing new
    assert run.state == "success"
    assert exactly_once(url, "events_dataset", "events") == day_ids(1, 20)
    assert cursor(url) == "2024-03-20T12:00:00+00:00"


def test_zero_length_intervals_raise_when_asked_naming_the_timetable(url, capfd, caplog):
    run = get_dag("daily_points_strict").test(logical_date=datetime(2024, 3, 5, tzinfo=UTC))
    assert run.state == "failed"
    out = output(capfd, caplog)
    assert "IncrementalNoIntervalError" in out
    assert "has allow_external_schedulers=True and was asked to raise without a range" in out
    assert "CronDataIntervalTimetable" in out
    assert sql(url, "main", "SELECT name FROM sqlite_master WHERE name = 'events'") == []


def test_a_run_without_interval_continues_after_the_newest_interval_loaded(url):
    """Two daily runs then a manual run: no row twice (the issue's 54 rows, 46 distinct)."""
    dag = get_dag("daily_ranges")
    run = dag.test(logical_date=datetime(2024, 3, 5, tzinfo=UTC))
    assert run.state == "success"
    assert (run.data_interval_start, run.data_interval_end) == (
        datetime(2024, 3, 4, tzinfo=UTC),
        datetime(2024, 3, 5, tzinfo=UTC),
    )
    assert exactly_once(url, "events_dataset", "events") == day_ids(4, 4)
    assert cursor(url) == "2024-03-05T00:00:00+00:00"  # the interval end, recorded
    assert get_dag("daily_ranges").test(logical_date=datetime(2024, 3, 6, tzinfo=UTC)).state == "success"
    assert exactly_once(url, "events_dataset", "events") == day_ids(4, 5)
    assert cursor(url) == "2024-03-06T00:00:00+00:00"

    # a run without an interval continues after the newest interval: every later day once
    assert get_dag("daily_ranges").test(logical_date=None).state == "success"
    assert exactly_once(url, "events_dataset", "events") == day_ids(4, 20)
    assert cursor(url) == "2024-03-20T12:00:00+00:00"


def test_clearing_an_interval_run_reloads_its_interval_idempotently_with_merge(url):
    dag = get_dag("daily_ranges_merge")
    for day in (5, 6):
        assert dag.test(logical_date=datetime(2024, 3, day, tzinfo=UTC)).state == "success"
    loads = sql(url, "events_dataset", "SELECT id, _dlt_load_id FROM events ORDER BY id")
    # reprocess the first interval again: the same rows, loaded again and merged on the primary key
    assert (
        get_dag("daily_ranges_merge").test(logical_date=datetime(2024, 3, 5, tzinfo=UTC)).state == "success"
    )
    reloaded = sql(url, "events_dataset", "SELECT id, _dlt_load_id FROM events ORDER BY id")
    assert [r[0] for r in reloaded] == day_ids(4, 5)
    assert reloaded[0][1] > loads[0][1] and reloaded[1] == loads[1]  # day 4 reloaded, day 5 untouched
    assert cursor(url) == "2024-03-06T00:00:00+00:00"  # never moved back by the older interval


def test_date_cursors_take_the_interval_in_the_dag_timezone(url, capfd, caplog):
    """Local 2024-03-10 00:00 .. 03-11 00:00 in Tokyo is 03-09 15:00 .. 03-10 15:00 UTC."""
    run = get_dag("tokyo_days").test(logical_date=datetime(2024, 3, 10, 15, tzinfo=UTC))
    assert run.state == "success"
    assert run.data_interval_start == datetime(2024, 3, 9, 15, tzinfo=UTC)
    assert run.data_interval_end == datetime(2024, 3, 10, 15, tzinfo=UTC)
    if OPERATOR_LOGS_SHOWN:
        assert "(timezone Asia/Tokyo)" in output(capfd, caplog)
    assert exactly_once(url, "tokyo_dataset", "days") == ["2024-03-10"]


def test_reprocessing_a_cursor_bound_task_with_the_documented_set_recipe(url):
    """README recipe: move the cursor back with ``airflow-state set``, then run the task again."""
    from airflow_state_provider.cli import main

    dag = get_dag("cursor_events")
    assert dag.test(logical_date=None).state == "success"
    before = dict(sql(url, "events_dataset", "SELECT id, _dlt_load_id FROM events"))
    assert sorted(before) == day_ids(1, 20)
    path = "sources.events.resources.cursor_events.incremental.at.last_value"
    assert main(["set", "events", path, '"2024-03-15T00:00:00+00:00"', "--url", url]) == 0
    assert get_dag("cursor_events").test(logical_date=None).state == "success"
    after = dict(sql(url, "events_dataset", "SELECT id, _dlt_load_id FROM events"))
    assert sorted(after) == day_ids(1, 20)  # merged: nothing twice
    reloaded = sorted(k for k in after if after[k] != before[k])
    assert reloaded == day_ids(15, 20)  # exactly the days after the value set
    slots = committed_state(url, "events", "events_dataset")["sources"]["events"]["resources"]
    assert slots["cursor_events"]["incremental"]["at"]["last_value"] == "2024-03-20T12:00:00+00:00"
