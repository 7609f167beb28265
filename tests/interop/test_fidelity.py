"""Issue 15's failing inputs, each checked against dlt 1.31's own value.

Where dlt's behaviour is a function we can call (lag), the expected value comes from dlt itself; where it
needs a run, from a real ``dlt.pipeline`` on the same database.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dlt
import pytest
import sqlalchemy as sa
from dlt.extract.incremental.lag import _apply_lag_to_value, _cursor_date_type, apply_lag

from airflow_state_provider import Pipeline, current, incremental, resource, source, transformer
from airflow_state_provider.destination import naming
from airflow_state_provider.exceptions import ReadOnlyStateError
from airflow_state_provider.extract.incremental.lag import declared_lag_unit as _declared_lag_unit
from airflow_state_provider.extract.incremental.lag import lag_value as _lag_value
from tests.interop.support import Warehouse

# -- 1. no empty "resources" key ---------------------------------------------------------------------


def test_new_source_state_is_empty_as_in_dlt(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    @dlt.source(name="crm")
    def dlt_crm() -> Any:
        @dlt.resource(name="contacts")
        def contacts() -> Any:
            seen["dlt"] = dict(dlt.current.source_state())
            yield {"id": 1}

        return contacts

    @source(name="crm")
    def our_crm() -> Any:
        @resource(name="contacts")
        def contacts() -> Any:
            seen["ours"] = dict(current.source_state())
            yield {"id": 1}

        return contacts

    dlt.pipeline(
        "p",
        destination=dlt.destinations.duckdb(str(tmp_path / "d.duckdb")),
        pipelines_dir=str(tmp_path / "d"),
    ).extract(dlt_crm())
    Pipeline("p", destination=f"duckdb:///{tmp_path / 'o.duckdb'}", pipelines_dir=tmp_path / "o").run(
        our_crm()
    )
    assert seen == {"dlt": {}, "ours": {}}
    assert not seen["ours"]  # `if not state:` works as in dlt


# -- 2. dataset names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "physical"),
    [("MyData", "my_data"), ("crm-data", "crm_data"), ("CRM Data 2", "crm_data_2"), ("crm_data", "crm_data")],
)
def test_dataset_names_normalize_as_dlt(configured: str, physical: str) -> None:
    from dlt.common.normalizers.naming.snake_case import NamingConvention

    assert NamingConvention().normalize_table_identifier(configured) == physical
    assert naming.normalize_dataset_name(configured) == physical


def _dlt_run(wh: Warehouse, dataset: str, rows: list[dict]) -> dlt.Pipeline:
    @dlt.resource(name="events", primary_key="id")
    def events(n: Any = dlt.sources.incremental("n")) -> Any:  # noqa: B008
        yield rows

    pipeline = dlt.pipeline(
        "crm_pipeline",
        destination=wh.dlt_destination(),
        dataset_name=dataset,
        pipelines_dir=wh.fresh_dir("d"),
    )
    pipeline.run(events()).raise_on_failed_jobs()
    return pipeline


@resource(name="events", primary_key="id")
def our_events(n: Any = incremental("n")) -> Any:
    yield [{"id": i, "n": i} for i in range(1, 6)]


def test_mixed_case_dataset_continues_dlts_pipeline(
    warehouse: Warehouse, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15 input 2: dlt wrote ``MyData`` into schema ``my_data``; we restore it, load new rows only."""
    _dlt_run(warehouse, "MyData", [{"id": i, "n": i} for i in range(1, 4)])
    caplog.set_level(logging.INFO, logger="airflow_state_provider")
    pipeline = Pipeline(
        "crm_pipeline",
        destination=warehouse.url,
        dataset_name="MyData",
        pipelines_dir=warehouse.fresh_dir("o"),
    )
    try:
        assert pipeline.dataset_name == "my_data"
        assert pipeline.first_run is False
        info = pipeline.run(our_events)
        assert info.row_counts == {"events": 2}  # 4 and 5; 3 sits on the boundary and is deduplicated
        assert pipeline.state["dataset_name"] == "MyData"  # the configured spelling, as dlt records it
    finally:
        pipeline.engine.dispose()
    assert any("dataset name got changed from 'MyData' to 'my_data'" in r.message for r in caplog.records)
    engine = sa.create_engine(warehouse.url)
    try:
        with engine.connect() as conn:
            ids = conn.execute(sa.text("SELECT id FROM my_data.events ORDER BY id")).scalars().all()
    finally:
        engine.dispose()
    assert ids == [1, 2, 3, 4, 5]


def test_restoring_another_datasets_state_warns_as_dlt(
    warehouse: Warehouse, caplog: pytest.LogCaptureFixture
) -> None:
    """dlt warns when the restored state names a different dataset; the pipeline's own name wins."""
    _dlt_run(warehouse, "MyData", [{"id": 1, "n": 1}])
    caplog.set_level(logging.WARNING, logger="airflow_state_provider")
    pipeline = Pipeline(
        "crm_pipeline",
        destination=warehouse.url,
        dataset_name="my_data",
        pipelines_dir=warehouse.fresh_dir("o"),
    )
    try:
        state = pipeline.state
    finally:
        pipeline.engine.dispose()
    assert state["dataset_name"] == "my_data"
    (warning,) = [r.message for r in caplog.records if "different dataset_name" in r.message]
    assert "'MyData'" in warning and "'my_data'" in warning and "crm_pipeline" in warning


# -- 3. lag units ----------------------------------------------------------------------------------------


def test_lag_unit_follows_initial_value_not_the_values() -> None:
    """Issue 15 input 3: dlt 1.31 lags the date string 28 *seconds* (a datetime initial_value)."""
    initial = "2026-01-01T00:00:00Z"
    expected = apply_lag(28, initial, "2026-08-27", max)
    assert expected == "2026-08-26"
    assert _lag_value("2026-08-27", 28, True, _declared_lag_unit(initial)) == expected


LAG_VALUES = [
    "2026-08-27",
    "20260827",
    "2026-08-27T10:11:12Z",
    "2026-08-27T10:11:12",
    "2026-08-27T10:11:12+02:00",
    datetime(2026, 8, 27, 10, 11, 12, tzinfo=UTC),
    datetime(2026, 8, 27, 10, 11, 12),
    date(2026, 8, 27),
    17,
    2.5,
]
LAG_INITIALS = [
    None,
    "2026-01-01T00:00:00Z",
    "2026-01-01",
    "20260101",
    datetime(2026, 1, 1, tzinfo=UTC),
    date(2026, 1, 1),
    1,
]


@pytest.mark.parametrize("func", [max, min], ids=["max", "min"])
@pytest.mark.parametrize("initial", LAG_INITIALS, ids=repr)
@pytest.mark.parametrize("value", LAG_VALUES, ids=repr)
def test_lag_matches_dlt_for_every_declared_type(value: Any, initial: Any, func: Any) -> None:
    """Our lag is dlt 1.31's for each pair of (declared type, value type) dlt accepts."""
    # dlt takes the declared type from the incremental's type argument, else from initial_value
    declared = _cursor_date_type(type(initial) if initial is not None else None, initial)
    expected = _apply_lag_to_value(86_400 * 2 + 30, value, func, declared)
    ours = _lag_value(value, 86_400 * 2 + 30, func is max, _declared_lag_unit(initial))
    assert ours == expected
    assert type(ours) is type(expected)


# -- 4./5. transformers ----------------------------------------------------------------------------------


def _descending_transformer() -> Any:
    @resource(name="packages")
    def packages() -> Any:
        yield from [3, 2, 1]

    @transformer(data_from=packages, name="descending")
    def descending(
        package: int,
        updated_at: Any = incremental(
            "updated_at", initial_value=10, row_order="desc", primary_key="updated_at"
        ),
    ) -> Any:
        for top in range(48, -1, -10):
            yield [{"updated_at": i, "package": package} for i in range(top, max(top - 10, -1), -1)]

    return descending


def test_transformer_incremental_binds_per_parent_item(dest_url: str, pipelines_dir: Path) -> None:
    """Issue 15 input 4 (dlt's ``test_transformer_row_order_out_of_range``): 48..10 once, not 59 rows."""
    info = Pipeline("p", destination=dest_url, pipelines_dir=pipelines_dir).run(_descending_transformer())
    assert info.row_counts == {"descending": 48 - 10 + 1}


def test_replace_through_a_transformer_reloads_all(dest_url: str, pipelines_dir: Path) -> None:
    """Issue 15 input 5: the parent's incremental state is reset, so every row loads again (dlt)."""

    @resource(name="parents")
    def parents(n: Any = incremental("n")) -> Any:
        yield from [{"n": i} for i in range(1, 4)]

    @transformer(data_from=parents, name="kids")
    def kids(parent: dict) -> Any:
        yield {"n": parent["n"]}

    pipeline = Pipeline("p", destination=dest_url, pipelines_dir=pipelines_dir)
    assert pipeline.run(kids).row_counts == {"kids": 3}
    assert pipeline.run(kids).row_counts == {}  # incremental parent: nothing new
    info = pipeline.run(kids, write_disposition="replace")
    assert info.row_counts == {"kids": 3}


# -- 6. plain value ---------------------------------------------------------------------------------------


def test_plain_value_for_an_incremental_argument_is_its_initial_value(
    dest_url: str, pipelines_dir: Path
) -> None:
    """Issue 15 input 6 (dlt's ``test_override_initial_value_from_config``-style call)."""

    @resource(name="some_data")
    def some_data(created_at: Any = incremental("created_at")) -> Any:
        seen.append((created_at.initial_value, created_at.start_value))
        yield [{"created_at": v} for v in (4241, 4242, 4243)]

    seen: list[tuple] = []
    pipeline = Pipeline("p", destination=dest_url, pipelines_dir=pipelines_dir)
    info = pipeline.run(some_data(created_at=4242))
    assert seen == [(4242, 4242)]
    assert info.row_counts == {"some_data": 2}
    slot = pipeline.state["sources"]["p"]["resources"]["some_data"]["incremental"]["created_at"]
    assert slot["initial_value"] == 4242 and slot["last_value"] == 4243


# -- 7. generator sources ---------------------------------------------------------------------------------


def test_generator_source_runs_in_the_source_scope(dest_url: str, pipelines_dir: Path) -> None:
    """Issue 15 input 7: a ``yield`` body reads the restored state and may not write it (as ``return``)."""
    seen: list[Any] = []

    @source(name="crm")
    def crm(write: bool = False) -> Any:
        state = current.source_state()
        seen.append(state.get("runs"))
        if write:
            state["runs"] = 99

        @resource(name="contacts")
        def contacts() -> Any:
            current.source_state()["runs"] = current.source_state().get("runs", 0) + 1
            yield {"id": 1}

        yield contacts

    pipeline = Pipeline("p", destination=dest_url, pipelines_dir=pipelines_dir)
    pipeline.run(crm())
    pipeline.run(crm())
    assert seen[-1] == 1  # the second run's body saw the first run's state
    with pytest.raises(ReadOnlyStateError, match="read-only"):
        pipeline.run(crm(write=True))
    assert pipeline.state["sources"]["crm"]["runs"] == 2


# -- 9. non-ISO string cursors -----------------------------------------------------------------------------


def test_a_non_iso_string_cursor_warns_naming_resource_and_value(
    dest_url: str, pipelines_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    @resource(name="orders")
    def orders(day: Any = incremental("day")) -> Any:
        yield [{"day": "12/31/2024"}, {"day": "01/01/2025"}]

    caplog.set_level(logging.WARNING, logger="airflow_state_provider")
    pipeline = Pipeline("p", destination=dest_url, pipelines_dir=pipelines_dir)
    pipeline.run(orders)
    warnings = [r.message for r in caplog.records if "not an ISO 8601" in r.message]
    assert len(warnings) == 1  # once per run, not per row
    assert "`orders`" in warnings[0] and "'12/31/2024'" in warnings[0]
    # compared as text, as dlt does: "12/31/2024" > "01/01/2025"
    slot = pipeline.state["sources"]["p"]["resources"]["orders"]["incremental"]["day"]
    assert slot["last_value"] == "12/31/2024"


@pytest.mark.parametrize("func", [max, min], ids=["max", "min"])
@pytest.mark.parametrize("declared", [date, datetime, int], ids=lambda t: t.__name__)
@pytest.mark.parametrize("value", LAG_VALUES, ids=repr)
def test_lag_matches_dlt_for_a_declared_type_argument(value: Any, declared: type, func: Any) -> None:
    """``incremental[T]`` declares the unit as ``dlt.sources.incremental[T]`` does."""
    expected = _apply_lag_to_value(86_400 * 2 + 30, value, func, _cursor_date_type(declared, None))
    ours = _lag_value(
        value, 86_400 * 2 + 30, func is max, _declared_lag_unit(incremental[declared].cursor_type)
    )
    assert ours == expected
    assert type(ours) is type(expected)
