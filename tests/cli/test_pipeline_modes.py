"""Refresh modes, dev mode, local state and ``Pipeline.drop`` on real SQLite, DuckDB and PostgreSQL
(issue 6, DESIGN §5.1, §9; dlt semantics from reference/dlt-state.md §6)."""

from __future__ import annotations

import re
import uuid

import pytest

from airflow_state_provider import Pipeline, current, incremental, resource, source
from airflow_state_provider import operations as ops
from tests.cli._support import DATASET, PIPELINE, committed, load, new_pipeline, query, rows, shop, tables


@source(name="crm")
def crm(ids: tuple[int, ...] = (1, 2, 3), legacy: bool = False, fail: bool = False):
    @resource(primary_key="id")
    def contacts(cursor=incremental("id", initial_value=0)):
        yield [{"id": i, **({"legacy": "x"} if legacy else {})} for i in ids]
        if fail:
            raise RuntimeError("source broke after yielding")

    @resource
    def deals():
        st = current.resource_state()
        st["runs"] = st.get("runs", 0) + 1
        current.source_state()["deals_synced"] = True
        yield [{"id": i} for i in ids]

    return contacts, deals


def columns(url: str, table: str) -> list[str]:
    # a SELECT works on every dialect (duckdb-engine cannot reflect columns)
    p = Pipeline("_reader", destination=url, dataset_name=DATASET)
    try:
        with p.sql_client() as c:
            result = c.connection.exec_driver_sql(f'SELECT * FROM "{DATASET}"."{table}" WHERE 1 = 0')
            return list(result.keys())
    finally:
        p.engine.dispose()


def contacts_state(url, pipelines_dir) -> dict | None:
    return committed(url, pipelines_dir).state["sources"]["crm"]["resources"].get("contacts")


# -- refresh -----------------------------------------------------------------------------------------


def test_refresh_drop_resources(dest_url, pipelines_dir):
    load(dest_url, pipelines_dir, data=crm(legacy=True))
    assert "legacy" in columns(dest_url, "contacts")
    info = load(
        dest_url,
        pipelines_dir,
        data=crm(ids=(1, 2, 3, 4)).with_resources("contacts"),
        refresh="drop_resources",
    )
    # the resource's state was wiped first: the cursor restarted from initial_value and loaded everything
    assert info.row_counts == {"contacts": 4}
    assert rows(dest_url, "contacts") == 4
    assert "legacy" not in columns(dest_url, "contacts")  # the table was dropped and created anew
    state = committed(dest_url, pipelines_dir).state["sources"]["crm"]
    assert state["resources"]["contacts"]["incremental"]["id"]["last_value"] == 4
    # resources not extracted and source-level keys are untouched
    assert state["resources"]["deals"] == {"runs": 1} and state["deals_synced"] is True
    assert rows(dest_url, "deals") == 3


def test_refresh_drop_data(dest_url, pipelines_dir):
    load(dest_url, pipelines_dir, data=crm(legacy=True))
    info = load(
        dest_url, pipelines_dir, data=crm(ids=(1, 2, 3, 4)).with_resources("contacts"), refresh="drop_data"
    )
    assert info.row_counts == {"contacts": 4}
    assert rows(dest_url, "contacts") == 4  # emptied, then reloaded from initial_value
    assert "legacy" in columns(dest_url, "contacts")  # truncated, not dropped: the schema stays
    assert query(dest_url, "SELECT count(*) FROM contacts WHERE legacy IS NOT NULL") == [(0,)]
    state = committed(dest_url, pipelines_dir).state["sources"]["crm"]
    assert state["resources"]["deals"] == {"runs": 1} and rows(dest_url, "deals") == 3


def test_refresh_drop_sources(dest_url, pipelines_dir):
    load(dest_url, pipelines_dir, data=crm())
    info = load(
        dest_url, pipelines_dir, data=crm(ids=(7,)).with_resources("contacts"), refresh="drop_sources"
    )
    assert info.row_counts == {"contacts": 1}
    # every table of the source is dropped, also of resources not run, and the whole source state wiped
    assert "deals" not in tables(dest_url)
    assert rows(dest_url, "contacts") == 1
    state = committed(dest_url, pipelines_dir).state["sources"]["crm"]
    assert set(state) == {"resources"} and set(state["resources"]) == {"contacts"}
    assert state["resources"]["contacts"]["incremental"]["id"]["last_value"] == 7


@pytest.mark.parametrize("mode", ["drop_sources", "drop_resources", "drop_data"])
def test_failed_refresh_run_leaves_tables_and_state_untouched(dest_url, pipelines_dir, mode):
    load(dest_url, pipelines_dir, data=crm(legacy=True))
    before = committed(dest_url, pipelines_dir)
    loads = rows(dest_url, "_dlt_loads")
    with pytest.raises(RuntimeError, match="source broke after yielding"):
        load(dest_url, pipelines_dir, data=crm(ids=(9,), fail=True).with_resources("contacts"), refresh=mode)
    assert rows(dest_url, "contacts") == 3 and rows(dest_url, "deals") == 3
    assert "legacy" in columns(dest_url, "contacts")
    after = committed(dest_url, pipelines_dir)
    assert (after.version, after.load_id) == (before.version, before.load_id)
    assert rows(dest_url, "_dlt_loads") == loads


def test_refresh_without_rows_still_commits_the_drop(dest_url, pipelines_dir):
    load(dest_url, pipelines_dir, data=crm())
    before = committed(dest_url, pipelines_dir).version
    info = load(
        dest_url, pipelines_dir, data=crm(ids=()).with_resources("contacts"), refresh="drop_resources"
    )
    assert info.row_counts == {} and info.state_version == before + 1
    assert "contacts" not in tables(dest_url) and "deals" in tables(dest_url)
    # the wiped cursor is back at its initial value
    assert contacts_state(dest_url, pipelines_dir)["incremental"]["id"]["last_value"] == 0


def test_refresh_rejects_unknown_modes(dest_url, pipelines_dir):
    with pytest.raises(ValueError, match="refresh must be one of drop_sources, drop_resources, drop_data"):
        load(dest_url, pipelines_dir, data=crm(), refresh="drop_everything")


# -- dev mode ----------------------------------------------------------------------------------------


def test_dev_mode_uses_a_fresh_timestamped_dataset(dest_url, pipelines_dir):
    load(dest_url, pipelines_dir, data=crm())
    normal = committed(dest_url, pipelines_dir)

    dev = new_pipeline(dest_url, pipelines_dir, dev_mode=True)
    try:
        assert re.fullmatch(rf"{DATASET}_\d{{14}}", dev.dataset_name)
        assert dev.first_run is True
        assert dev.run(crm()).row_counts == {"contacts": 3, "deals": 3}  # fresh state: all rows
        assert dev.run(crm(ids=(1, 2, 3, 4)).with_resources("contacts")).row_counts == {"contacts": 1}
        assert rows(dest_url, "_dlt_pipeline_state", dev.dataset_name) == 2  # state rows in the dev dataset
        assert rows(dest_url, "contacts", dev.dataset_name) == 4
        assert dev.working_dir.parts[-3:] == (PIPELINE, "dev_mode", dev.dataset_name)
    finally:
        dev.engine.dispose()
    after = committed(dest_url, pipelines_dir)
    assert (after.version, after.load_id) == (normal.version, normal.load_id)
    assert rows(dest_url, "contacts") == 3


def test_full_refresh_is_a_deprecated_alias_of_dev_mode(dest_url, pipelines_dir):
    with pytest.warns(DeprecationWarning, match=r"full_refresh=\.\.\.\) is deprecated; use dev_mode"):
        p = new_pipeline(dest_url, pipelines_dir, full_refresh=True)
    try:
        assert p.dev_mode is True and re.fullmatch(rf"{DATASET}_\d{{14}}", p.dataset_name)
    finally:
        p.engine.dispose()


# -- local state -------------------------------------------------------------------------------------


def test_local_state_writes_no_state_rows_and_continues_across_objects(dest_url, pipelines_dir):
    worker = pipelines_dir / "persistent"
    local = {"restore_from_destination": False, "pipelines_dir": worker}
    first = load(dest_url, pipelines_dir, data=crm(), **local)
    assert first.row_counts == {"contacts": 3, "deals": 3} and first.state_version == 1
    assert "_dlt_pipeline_state" not in tables(dest_url)
    assert rows(dest_url, "_dlt_loads") == 1  # loads are recorded, state is not

    p = new_pipeline(dest_url, pipelines_dir, **local)
    try:
        assert p.first_run is False
        info = p.run(crm(ids=(1, 2, 3, 4, 5)).with_resources("contacts"))
        assert info.row_counts == {"contacts": 2} and info.state_version == 2  # continued from the file
        assert p.state["sources"]["crm"]["resources"]["contacts"]["incremental"]["id"]["last_value"] == 5
    finally:
        p.engine.dispose()
    assert "_dlt_pipeline_state" not in tables(dest_url)

    elsewhere = load(
        dest_url,
        pipelines_dir,
        data=crm(ids=(1, 2, 3, 4, 5)).with_resources("contacts"),
        **{
            **local,
            "pipelines_dir": pipelines_dir / "another-worker",
        },
    )
    assert elsewhere.row_counts == {"contacts": 5}  # a worker without the file starts fresh
    assert "_dlt_pipeline_state" not in tables(dest_url)


# -- Pipeline.drop -----------------------------------------------------------------------------------


def test_pipeline_drop_api(dest_url, pipelines_dir):
    load(dest_url, pipelines_dir)
    events = shop().resources["events"]  # table_name="event_log"
    p = new_pipeline(dest_url, pipelines_dir)
    try:
        dry = p.drop(resources=[events], dry_run=True)
        assert dry.committed is False and dry.plan.drop_tables == ["event_log"]
        assert [c.path for c in dry.plan.changes] == ["sources.shop.resources.events"]
        assert "event_log" in tables(dest_url) and committed(dest_url, pipelines_dir).version == 1

        with pytest.raises(ops.ConcurrentEditError, match="expected state version 7"):
            p.drop(events, expect_version=7)
        with pytest.raises(ops.StateOperationError, match="nothing to drop"):
            p.drop()

        result = p.drop(resources=events, state_paths="last_sync")
        assert result.committed and result.version == 2
        assert result.dropped_tables == ["event_log"]
        assert result.changed_paths == ["sources.shop.last_sync", "sources.shop.resources.events"]
        assert p.state["_state_version"] == 2 and "events" not in p.state["sources"]["shop"]["resources"]
        # the pipeline's own working dir follows the edit (what airflow-state sync would write)
        assert (p.working_dir / "state.json").exists()
    finally:
        p.engine.dispose()
    assert "event_log" not in tables(dest_url) and {"orders", "customers"} <= tables(dest_url)
    assert committed(dest_url, pipelines_dir).version == 2


def test_pipeline_drop_on_local_state(dest_url, pipelines_dir):
    local = {"restore_from_destination": False, "pipelines_dir": pipelines_dir / uuid.uuid4().hex}
    load(dest_url, pipelines_dir, **local)
    p = new_pipeline(dest_url, pipelines_dir, **local)
    try:
        result = p.drop("orders")
        assert result.dropped_tables == ["orders"] and result.version == 2
    finally:
        p.engine.dispose()
    again = new_pipeline(dest_url, pipelines_dir, **local)
    try:
        assert "orders" not in again.state["sources"]["shop"]["resources"]
        assert again.state["_state_version"] == 2
    finally:
        again.engine.dispose()
    assert "orders" not in tables(dest_url) and "_dlt_pipeline_state" not in tables(dest_url)
