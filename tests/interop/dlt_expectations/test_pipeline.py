"""dlt's expectations for the state parts of ``tests/pipeline/test_pipeline.py`` (dlt 1.31, Apache-2.0),
re-expressed against this provider's API. Each test names the dlt test whose inputs and values it keeps."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline, current, resource, source
from tests.interop.dlt_expectations.conftest import Warehouse


def test_default_pipeline_dataset_name(wh: Warehouse) -> None:
    """dlt: test_default_pipeline_dataset_name (no dataset_name: ``<pipeline>_dataset``)"""
    assert wh.pipeline("pipe").dataset_name == "pipe_dataset"


def test_run_dev_mode_underscored_dataset(wh: Warehouse) -> None:
    """dlt: test_run_dev_mode_underscored_dataset (dev mode suffixes the dataset)"""
    p = wh.pipeline("pipe", dataset_name="_main_", dev_mode=True)
    assert p.dataset_name.startswith("_main_")
    assert p.dataset_name != "_main_"


@pytest.mark.parametrize("dataset_name", ["my_test_dataset", None])
def test_dev_mode_to_non_dev_resets_state(wh: Warehouse, dataset_name: str | None) -> None:
    """dlt: test_dev_mode_to_non_dev_resets_state"""
    dev = wh.pipeline("pipe_dev_mode", dataset_name=dataset_name, dev_mode=True)
    dev.run([{"id": 1}, {"id": 2}], table_name="items")
    p2 = wh.pipeline("pipe_dev_mode", dataset_name=dataset_name)
    assert p2.dataset_name != dev.dataset_name
    assert p2.first_run is True
    if dataset_name:
        assert p2.dataset_name == dataset_name


def test_invalid_dataset_name(wh: Warehouse, caplog: pytest.LogCaptureFixture) -> None:
    """dlt: test_invalid_dataset_name (normalized within the destination, kept in the state)"""
    caplog.set_level(logging.WARNING, logger="airflow_state_provider")
    p = wh.pipeline("pipe", dataset_name="My!Data")
    assert p.configured_dataset_name == "My!Data"
    assert p.dataset_name == "my_data"
    p.run([{"id": 1}], table_name="items")
    assert wh.pipeline("pipe", dataset_name="My!Data").state["dataset_name"] == "My!Data"
    assert any("dataset name got changed" in r.message for r in caplog.records)


def test_restore_state_on_destination_dataset_name_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """dlt: test_restore_state_on_destination_dataset_name_change (a copied dataset: the user's name wins)"""

    @resource(write_disposition="merge", primary_key="id")
    def items(data: list) -> Any:
        yield data

    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    p = Pipeline("pipe", destination=url, dataset_name="original_dataset", pipelines_dir=tmp_path / "a")
    p.run(items([{"id": 1, "name": "Bob"}]))
    assert p.state["dataset_name"] == "original_dataset"
    p.engine.dispose()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE SCHEMA new_dataset"))
            for table in ("items", "_dlt_loads", "_dlt_pipeline_state"):
                conn.execute(
                    sa.text(f"CREATE TABLE new_dataset.{table} AS SELECT * FROM original_dataset.{table}")
                )
    finally:
        engine.dispose()

    caplog.set_level(logging.WARNING, logger="airflow_state_provider")
    p = Pipeline("pipe", destination=url, dataset_name="new_dataset", pipelines_dir=tmp_path / "b")
    try:
        p.run(items([{"id": 1, "name": "Bob"}, {"id": 2, "name": "Alice"}]))
        assert p.dataset_name == "new_dataset"
        assert p.state["dataset_name"] == "new_dataset"
        with p.sql_client() as client:
            assert client.execute_sql("SELECT id, name FROM original_dataset.items") == [(1, "Bob")]
            assert set(client.execute_sql("SELECT id, name FROM new_dataset.items")) == {
                (1, "Bob"),
                (2, "Alice"),
            }
    finally:
        p.engine.dispose()
    assert any("the remote state contains a different dataset_name" in r.message for r in caplog.records)


def test_first_run_flag(wh: Warehouse) -> None:
    """dlt: test_first_run_flag"""
    p = wh.pipeline("pipe")
    assert p.first_run is True
    p.run([{"v": 1}, {"v": 2}, {"v": 3}], table_name="dummy_table")
    assert p.first_run is False
    assert wh.pipeline("pipe").first_run is False


def test_pipeline_state_on_extract_exception(wh: Warehouse) -> None:
    """dlt: test_pipeline_state_on_extract_exception (a failed first run leaves it a first run)"""

    @resource
    def data_piece_1() -> Any:
        yield [{"v": v} for v in (1, 2, 3)]
        yield [{"v": v} for v in (3, 4, 5)]

    @resource
    def data_piece_2() -> Any:
        current.resource_state()["touched"] = True
        yield [{"v": v} for v in (6, 7, 8)]
        raise NotImplementedError()

    p = wh.pipeline("pipe")
    with pytest.raises(NotImplementedError):
        p.run([data_piece_1, data_piece_2], write_disposition="replace")
    assert p.first_run is True
    assert wh.pipeline("pipe").first_run is True


def test_resource_state_name_not_normalized(wh: Warehouse) -> None:
    """dlt: test_resource_state_name_not_normalized (state keys keep the resource's own name)"""

    @source(name="airtable_emojis")
    def airtable_emojis() -> Any:
        @resource(name="🦚Peacock", table_name="peacock")
        def peacock() -> Any:
            current.resource_state()["🦚🦚🦚"] = "🦚"
            yield {"peacock": [1, 2, 3]}

        return peacock

    wh.pipeline("emojis").run(airtable_emojis())
    state = wh.pipeline("emojis").state
    assert state["sources"]["airtable_emojis"]["resources"] == {"🦚Peacock": {"🦚🦚🦚": "🦚"}}


def test_pipeline_source_state_activation(wh: Warehouse) -> None:
    """dlt: test_pipeline_source_state_activation (each source sees its own state only)"""
    seen: dict[str, Any] = {}

    @source(name="a")
    def source_a() -> Any:
        @resource(name="ra")
        def ra() -> Any:
            current.source_state()["value"] = "a"
            yield {"v": 1}

        return ra

    @source(name="b")
    def source_b() -> Any:
        @resource(name="rb")
        def rb() -> Any:
            seen["b"] = dict(current.source_state())
            yield {"v": 1}

        return rb

    wh.pipeline("pipe").run([source_a(), source_b()])
    assert seen["b"] == {}
    assert wh.pipeline("pipe").state["sources"]["a"] == {"value": "a"}
