"""Run one scenario through dlt 1.31 and through this provider, each into its own DuckDB file.

A scenario is written once against :class:`Api`, a namespace holding either tool's decorators and
``current``; :func:`run_both` builds it with each tool, runs every step on a clean worker (a new,
empty pipelines dir) and returns what each tool committed, decoded from its destination.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
import sqlalchemy as sa

from airflow_state_provider import Pipeline, current, incremental, resource, source, transformer
from airflow_state_provider.state.codec import decode_state, state_version_hash

#: dlt's default schema name of this pipeline is "crm", the name our scenarios give their sources, so
#: both tools record the same ``default_schema_name`` (see the README's differences for other names)
PIPELINE = "crm_pipeline"
DATASET = "crm_data"


@dataclass(frozen=True)
class Api:
    """One tool's decorators and state accessors, under the same names."""

    name: str
    resource: Callable[..., Any]
    transformer: Callable[..., Any]
    source: Callable[..., Any]
    incremental: Callable[..., Any]
    current: Any

    def rows(self, rows: list[dict], name: str, **hints: Any) -> Any:
        """A resource over fixed rows (``dlt.resource(rows, name=...)``)."""

        @self.resource(name=name, **hints)
        def fixed() -> Any:
            yield rows

        return fixed


DLT = Api("dlt", dlt.resource, dlt.transformer, dlt.source, dlt.sources.incremental, dlt.current)
OURS = Api("ours", resource, transformer, source, incremental, current)

#: ``build(api, step)`` returns what step ``step`` runs and the run options, e.g. ``(events(), {})``
Scenario = Callable[[Api, int], tuple[Any, dict[str, Any]]]


@dataclass
class Committed:
    """The newest state row of one tool after one step, decoded, and the rows of its tables."""

    state: dict
    version: int
    version_hash: str
    row_counts: dict[str, int] = field(default_factory=dict)


_dirs = itertools.count()


def _newest(url: str, pipeline_name: str, tables: tuple[str, ...], dataset: str) -> Committed:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            state, version_hash, version = conn.execute(
                sa.text(
                    f"SELECT state, version_hash, version FROM {dataset}._dlt_pipeline_state "
                    "WHERE pipeline_name = :p ORDER BY _dlt_load_id DESC LIMIT 1"
                ),
                {"p": pipeline_name},
            ).one()
            counts = {}
            for table in tables:
                exists = sa.inspect(conn).has_table(table, schema=dataset)
                counts[table] = (
                    conn.execute(sa.text(f"SELECT count(*) FROM {dataset}.{table}")).scalar() if exists else 0
                )
    finally:
        engine.dispose()
    return Committed(decode_state(state), version, version_hash, counts)


def run_both(
    root: Path,
    build: Scenario,
    steps: int = 1,
    *,
    tables: tuple[str, ...] = (),
    dataset: str = DATASET,
    physical_dataset: str | None = None,
) -> list[tuple[Committed, Committed]]:
    """Run ``steps`` steps of ``build`` with dlt and with us; ``(dlt, ours)`` after each step."""
    dlt_file, our_file = root / f"dlt{next(_dirs)}.duckdb", root / f"ours{next(_dirs)}.duckdb"
    physical = physical_dataset or dataset
    out = []
    for step in range(steps):
        data, options = build(DLT, step)
        workdir = root / f"dlt-workdir-{next(_dirs)}"
        pipeline = dlt.pipeline(
            pipeline_name=PIPELINE,
            destination=dlt.destinations.duckdb(str(dlt_file)),
            dataset_name=dataset,
            pipelines_dir=str(workdir),
        )
        pipeline.run(data, **options).raise_on_failed_jobs()
        theirs = _newest(f"duckdb:///{dlt_file}", PIPELINE, tables, physical)

        data, options = build(OURS, step)
        ours_pipeline = Pipeline(
            PIPELINE,
            destination=f"duckdb:///{our_file}",
            dataset_name=dataset,
            pipelines_dir=root / f"ours-workdir-{next(_dirs)}",
        )
        try:
            ours_pipeline.run(data, **options)
        finally:
            ours_pipeline.engine.dispose()
        out.append((theirs, _newest(f"duckdb:///{our_file}", PIPELINE, tables, physical)))
    return out


def hash_lists(state: dict) -> list[list[str]]:
    """Every ``unique_hashes`` list of a document."""
    return [
        cursor.get("unique_hashes") or []
        for src in state.get("sources", {}).values()
        for res in (src.get("resources") or {}).values()
        for cursor in (res.get("incremental") or {}).values()
    ]


def sorted_hashes(state: dict) -> dict:
    """A copy whose ``unique_hashes`` lists are sorted (dlt keeps them in set order)."""
    out = copy.deepcopy(state)
    for src in out.get("sources", {}).values():
        for res in (src.get("resources") or {}).values():
            for cursor in (res.get("incremental") or {}).values():
                cursor["unique_hashes"] = sorted(cursor.get("unique_hashes") or [])
    return out


def assert_equivalent(theirs: Committed, ours: Committed, where: str = "") -> None:
    """The same document, version and version hash (up to the order of ``unique_hashes``)."""
    from tests.interop.support import assert_same

    def comparable(state: dict) -> dict:
        return {k: v for k, v in sorted_hashes(state).items() if k != "_version_hash"}

    assert_same(comparable(ours.state), comparable(theirs.state))
    assert ours.version == theirs.version, where
    assert ours.row_counts == theirs.row_counts, where
    if all(len(h) <= 1 for h in hash_lists(theirs.state)):
        assert ours.version_hash == theirs.version_hash, where
    else:  # dlt's set order decides its hash; with the lists in one order the hashes agree
        assert state_version_hash(sorted_hashes(ours.state)) == state_version_hash(
            sorted_hashes(theirs.state)
        ), where
