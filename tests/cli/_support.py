"""Shared data and helpers of the CLI and pipeline-mode tests: a small shop source on real databases."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from airflow_state_provider import LoadInfo, Pipeline, current, incremental, resource, source
from airflow_state_provider import operations as ops
from airflow_state_provider.cli import main
from airflow_state_provider.destination.store import StoredState
from airflow_state_provider.destination.tables import existing_tables

PIPELINE = "store"
DATASET = "shop_data"


@source(name="shop")
def shop(ids: tuple[int, ...] = (1, 2, 3), fail: bool = False):
    """Three resources: an incremental on ``id``, one with typed resource and source state, and one
    with a dotted cursor path and its own table name."""

    @resource(primary_key="id")
    def orders(cursor=incremental("id", initial_value=0)):
        yield [{"id": i, "amount": i * 10} for i in ids]
        if fail:
            raise RuntimeError("source broke after yielding")

    @resource
    def customers():
        st = current.resource_state()
        st.setdefault("seen", []).append(len(ids))
        st["synced_at"] = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
        current.source_state()["last_sync"] = date(2024, 5, 1)
        yield {"id": 1, "name": "ada"}

    @resource(table_name="event_log")
    def events(updated=incremental("meta.updated", initial_value=0)):
        yield [{"id": i, "meta": {"updated": i}} for i in ids]

    return orders, customers, events


@resource
def rates():
    """A resource without a source: its slot is under the pipeline name (dlt: the default schema name)."""
    current.resource_state()["rate"] = Decimal("1.25")
    current.resource_state()["key"] = uuid.UUID("12345678-1234-5678-1234-567812345678")
    yield {"currency": "EUR", "rate": Decimal("1.25")}


def new_pipeline(url: str, base_dir: Path, **kw) -> Pipeline:
    """A Pipeline object on a new, empty pipelines dir under ``base_dir`` (a clean worker), unless
    ``pipelines_dir`` is given."""
    kw.setdefault("pipelines_dir", base_dir / uuid.uuid4().hex)
    return Pipeline(PIPELINE, destination=url, dataset_name=kw.pop("dataset_name", DATASET), **kw)


def load(url: str, base_dir: Path, data=None, **kw) -> LoadInfo:
    """Run ``data`` (default: the shop source and rates) on a new Pipeline object."""
    run_kw = {k: kw.pop(k) for k in ("refresh",) if k in kw}
    p = new_pipeline(url, base_dir, **kw)
    try:
        return p.run(data if data is not None else [shop(), rates], **run_kw)
    finally:
        p.engine.dispose()


def committed(url: str, base_dir: Path) -> StoredState:
    """The newest committed state in the destination."""
    p = new_pipeline(url, base_dir)
    try:
        return ops.newest(p)
    finally:
        p.engine.dispose()


def query(url: str, sql: str, dataset: str = DATASET) -> list[tuple]:
    p = Pipeline("_reader", destination=url, dataset_name=dataset)
    try:
        with p.sql_client() as c:
            return c.execute_sql(sql)
    finally:
        p.engine.dispose()


def tables(url: str, dataset: str = DATASET) -> set[str]:
    p = Pipeline("_reader", destination=url, dataset_name=dataset)
    try:
        with p.engine.connect() as conn:
            names = (
                "orders",
                "customers",
                "event_log",
                "events",
                "rates",
                "_dlt_loads",
                "_dlt_pipeline_state",
                "contacts",
                "deals",
            )
            return set(existing_tables(conn, dataset, names))
    finally:
        p.engine.dispose()


def rows(url: str, table: str, dataset: str = DATASET) -> int:
    return query(url, f'SELECT count(*) FROM "{table}"', dataset)[0][0]


def counts(url: str) -> tuple[int, int]:
    """(state rows, load rows) of the dataset: every edit adds one of each."""
    return rows(url, "_dlt_pipeline_state"), rows(url, "_dlt_loads")


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture[str], url: str, *argv: str, dataset: str = DATASET) -> Result:
    """Run ``airflow-state`` in-process against ``url``."""
    capsys.readouterr()
    code = main([*argv, "--url", url, "--dataset", dataset])
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)
