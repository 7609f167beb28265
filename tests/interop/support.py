"""Helpers for the dlt interoperability tests: one warehouse, two tools, clean workers.

Every run of either tool gets a new, empty pipelines dir, as on an ephemeral Airflow worker, so the
state a run sees can only come from the destination. The same logical resource ("events" with an
``updated_at`` incremental, typed resource state and a source-level key) is written once with dlt's
decorators and once with ours; :class:`Feed` plays the API both read from.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

import dlt
import sqlalchemy as sa
from dlt.common.pipeline import LoadInfo as DltLoadInfo

from airflow_state_provider import LoadInfo, Pipeline, current, incremental, resource, source

PIPELINE = "crm_pipeline"
#: dlt's default schema name of PIPELINE ("_pipeline" dropped): the source key of standalone resources
DEFAULT_SCHEMA = "crm"
DATASET = "crm_data"
SOURCE = "crm_source"
RESOURCE = "events"
CURSOR = "updated_at"
T0 = datetime(2024, 1, 1, tzinfo=UTC)

#: resource-state values of every type both tools store with a typed marker, plus plain JSON
TYPED_STATE: dict[str, Any] = {
    "synced_at": datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
    "local_at": datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
    "naive_at": datetime(2024, 5, 1, 10, 0, 0, 123456),
    "day": date(2024, 5, 1),
    "amount": Decimal("10.25"),
    "tiny": Decimal("1E-30"),
    "at": time(10, 30, 15),
    "raw": b"\x00\x01hello",
    "nested": {"pages": [1, 2, 3], "cursor": None, "done": False, "ratio": 0.5, "label": "ünï ✓"},
}


def at(hours: int) -> datetime:
    """``T0`` plus ``hours``: the cursor values of the feed."""
    return T0 + timedelta(hours=hours)


class Shape(StrEnum):
    """How the resource is run: standalone (source key = default schema) or inside a source."""

    RESOURCE = "resource"
    SOURCE = "source"

    @property
    def source_key(self) -> str:
        return DEFAULT_SCHEMA if self is Shape.RESOURCE else SOURCE


# ------------------------------------------------------------------------------------------- data


@dataclass
class Feed:
    """A fake API: rows by id with a cursor; ``since`` returns the boundary rows again, as APIs do."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    iso: bool = False

    def add(self, *id_hours: tuple[int, int]) -> None:
        for row_id, hours in id_hours:
            value: Any = at(hours)
            if self.iso:
                value = value.strftime("%Y-%m-%dT%H:%M:%SZ")
            self.rows.append({"id": row_id, CURSOR: value, "name": f"event {row_id}"})

    def since(self, start: Any) -> list[dict[str, Any]]:
        start_key = _instant(start)
        return [dict(r) for r in self.rows if _instant(r[CURSOR]) >= start_key]


def _instant(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


@dataclass
class Seen:
    """What one run's resource saw before changing anything."""

    start_value: Any
    resource_state: dict[str, Any]
    source_state: dict[str, Any]


def _visit(resource_state: dict, source_state: dict, cursor: Any, seen: list[Seen], extra: dict) -> None:
    seen.append(
        Seen(
            cursor.start_value,
            copy.deepcopy(dict(resource_state)),
            copy.deepcopy({k: v for k, v in source_state.items() if k != "resources"}),
        )
    )
    resource_state.update(copy.deepcopy(TYPED_STATE))
    resource_state.update(copy.deepcopy(extra))
    resource_state["runs"] = resource_state.get("runs", 0) + 1
    source_state["last_run"] = resource_state["runs"]


def dlt_events(
    feed: Feed,
    seen: list[Seen],
    shape: Shape = Shape.RESOURCE,
    *,
    primary_key: str | None = "id",
    initial_value: Any = T0,
    extra_state: dict | None = None,
) -> Any:
    """The resource written with dlt's decorators."""

    @dlt.resource(name=RESOURCE, primary_key=primary_key)
    def events(
        updated_at: Any = dlt.sources.incremental(CURSOR, initial_value=initial_value),  # noqa: B008 (dlt's idiom)
    ) -> Any:
        _visit(dlt.current.resource_state(), dlt.current.source_state(), updated_at, seen, extra_state or {})
        yield feed.since(updated_at.start_value)

    if shape is Shape.RESOURCE:
        return events()

    @dlt.source(name=SOURCE)
    def crm() -> Any:
        return events

    return crm()


def our_events(
    feed: Feed,
    seen: list[Seen],
    shape: Shape = Shape.RESOURCE,
    *,
    primary_key: str | None = "id",
    initial_value: Any = T0,
    extra_state: dict | None = None,
) -> Any:
    """The same resource written with this provider's decorators."""

    @resource(name=RESOURCE, primary_key=primary_key)
    def events(updated_at: Any = incremental(CURSOR, initial_value=initial_value)) -> Any:
        _visit(current.resource_state(), current.source_state(), updated_at, seen, extra_state or {})
        yield feed.since(updated_at.start_value)

    if shape is Shape.RESOURCE:
        return events

    @source(name=SOURCE)
    def crm() -> Any:
        return events

    return crm()


# -------------------------------------------------------------------------------------- warehouse

_dirs = itertools.count()


@dataclass
class StateRow:
    """One row of ``_dlt_pipeline_state``, with whether its load is committed in ``_dlt_loads``."""

    version: int
    engine_version: int
    pipeline_name: str
    state: str
    version_hash: str | None
    load_id: str
    committed: bool


@dataclass
class Warehouse:
    """One destination database, reachable by both tools."""

    kind: str  # "duckdb" | "postgresql"
    url: str  # SQLAlchemy URL, for our Pipeline
    root: Path  # where fresh pipelines dirs are made

    def dlt_destination(self) -> Any:
        if self.kind == "duckdb":
            return dlt.destinations.duckdb(sa.make_url(self.url).database)
        url = sa.make_url(self.url).set(drivername="postgresql")  # dlt connects with psycopg2
        if url.password is None:  # dlt insists on one; the test server trusts loopback and ignores it
            url = url.set(password="unused")
        return dlt.destinations.postgres(url.render_as_string(hide_password=False))

    def fresh_dir(self, who: str) -> str:
        """A new, empty pipelines dir: a clean worker."""
        path = self.root / f"{who}-workdir-{next(_dirs)}"
        path.mkdir(parents=True)
        return str(path)

    def sibling(self) -> Warehouse:
        """Another empty database of the same kind."""
        if self.kind == "duckdb":
            return Warehouse(self.kind, f"duckdb:///{self.root / f'sibling{next(_dirs)}.duckdb'}", self.root)
        name = f"sibling_{next(_dirs)}_{datetime.now(UTC):%H%M%S%f}"
        admin = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            admin.dispose()
        return Warehouse(
            self.kind, sa.make_url(self.url).set(database=name).render_as_string(False), self.root
        )

    def query(self, sql: str, **params: Any) -> list[tuple]:
        """Run ``sql`` (``{ds}`` = the dataset) on a short-lived connection."""
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sa.text(sql.format(ds=DATASET)), params)]
        finally:
            engine.dispose()

    def rows(self, table: str) -> dict[int, dict[str, Any]]:
        """The rows of ``table`` by id (one per id, or the test fails)."""
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                found = [
                    dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {DATASET}.{table}")).mappings()
                ]
        finally:
            engine.dispose()
        by_id = {r["id"]: r for r in found}
        assert len(by_id) == len(found), f"duplicate ids in {table}"
        return by_id

    def ids(self, table: str = RESOURCE) -> list[int]:
        """Every id in ``table``, duplicates included, sorted."""
        return [r[0] for r in self.query(f"SELECT id FROM {{ds}}.{table} ORDER BY id")]

    def tables(self) -> set[str]:
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = :ds"
        return {r[0] for r in self.query(sql, ds=DATASET)}

    def columns(self, table: str) -> dict[str, str]:
        """Column name -> database type name, in table order."""
        sql = (
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = :ds AND table_name = :t ORDER BY ordinal_position"
        )
        return {name: kind.lower() for name, kind in self.query(sql, ds=DATASET, t=table)}

    def state_rows(self, pipeline_name: str = PIPELINE) -> list[StateRow]:
        """All state rows of a pipeline, oldest load first."""
        sql = (
            "SELECT s.version, s.engine_version, s.pipeline_name, s.state, s.version_hash, s._dlt_load_id, "
            "EXISTS (SELECT 1 FROM {ds}._dlt_loads l WHERE l.load_id = s._dlt_load_id AND l.status = 0) "
            "FROM {ds}._dlt_pipeline_state s WHERE s.pipeline_name = :p ORDER BY s._dlt_load_id"
        )
        return [StateRow(*r) for r in self.query(sql, p=pipeline_name)]


# ------------------------------------------------------------------------------------------- runs


def dlt_pipeline(wh: Warehouse, pipeline_name: str = PIPELINE) -> dlt.Pipeline:
    """A dlt pipeline on a clean working dir (it restores from the destination on ``run``)."""
    return dlt.pipeline(
        pipeline_name=pipeline_name,
        destination=wh.dlt_destination(),
        dataset_name=DATASET,
        pipelines_dir=wh.fresh_dir("dlt"),
    )


def run_dlt(wh: Warehouse, data: Any, pipeline_name: str = PIPELINE) -> tuple[dlt.Pipeline, DltLoadInfo]:
    """One dlt run on a clean worker; fails the test if any job failed."""
    pipeline = dlt_pipeline(wh, pipeline_name)
    info = pipeline.run(data)
    info.raise_on_failed_jobs()
    return pipeline, info


def our_pipeline(wh: Warehouse, pipeline_name: str = PIPELINE) -> Pipeline:
    """Our pipeline on a clean pipelines dir."""
    return Pipeline(
        pipeline_name, destination=wh.url, dataset_name=DATASET, pipelines_dir=wh.fresh_dir("ours")
    )


def run_ours(
    wh: Warehouse, data: Any, pipeline_name: str = PIPELINE, **run_options: Any
) -> tuple[Pipeline, LoadInfo]:
    """One run of our pipeline on a clean worker; its connections are closed afterwards."""
    pipeline = our_pipeline(wh, pipeline_name)
    try:
        return pipeline, pipeline.run(data, **run_options)
    finally:
        pipeline.engine.dispose()


def without_local(state: dict) -> dict:
    return {k: v for k, v in state.items() if k != "_local"}


def slot(state: dict, source_key: str = DEFAULT_SCHEMA, resource_name: str = RESOURCE) -> dict:
    """The resource slot ``sources.<source_key>.resources.<resource_name>``."""
    return state["sources"][source_key]["resources"][resource_name]


def cursor_slot(state: dict, source_key: str = DEFAULT_SCHEMA) -> dict:
    return slot(state, source_key)["incremental"][CURSOR]


# ------------------------------------------------------------------------------------- assertions


def assert_same(actual: Any, expected: Any, path: str = "$") -> None:
    """Equal *and* of the same types all the way down (``1 == 1.0 == True`` would pass ``==``)."""
    assert type(actual) is type(expected), f"{path}: {type(actual).__name__} != {type(expected).__name__}"
    if isinstance(expected, dict):
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: {len(actual)} items != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
        if isinstance(expected, datetime | time):
            assert actual.utcoffset() == expected.utcoffset(), f"{path}: offsets differ"


def sorted_hashes(state: dict) -> dict:
    """A copy of ``state`` whose ``unique_hashes`` lists are sorted (dlt keeps them in set order)."""
    out = copy.deepcopy(state)
    for src in out.get("sources", {}).values():
        for res in src.get("resources", {}).values():
            for cursor in res.get("incremental", {}).values():
                cursor["unique_hashes"] = sorted(cursor["unique_hashes"])
    return out
