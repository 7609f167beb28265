"""Read models of the state browser: datasets, pipelines, a page of history, a diff, incrementals and
the commits of a task instance. SQLAlchemy Core over the product's tables; no Airflow, so it is tested
on real SQLite, DuckDB and PostgreSQL without a server.

Every value leaves here JSON-ready (:func:`operations.to_plain`); escaping is the renderer's job.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from airflow_state_provider import operations
from airflow_state_provider.destination.audit import AUDIT_TABLE
from airflow_state_provider.destination.dialects import dialect_class, dialect_for
from airflow_state_provider.destination.store import STATE_TABLE, StoredState
from airflow_state_provider.exceptions import StateCorruptError
from airflow_state_provider.pipeline import Pipeline

#: History page size: the default and the largest a request may ask for.
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def datasets(engine: sa.Engine) -> list[str]:
    """Datasets of ``engine`` that hold a ``_dlt_pipeline_state`` table, sorted.

    PostgreSQL and DuckDB: schemas with the table. SQLite: the attached dataset files next to the main
    file (``<stem>__<dataset><suffix>``, the dialect's convention) that hold it.
    """
    return dialect_class(engine).datasets_with_table(engine, STATE_TABLE)


def has_state(engine: sa.Engine, dataset: str) -> bool:
    """Whether ``dataset`` (its name as stored: normalized) holds a ``_dlt_pipeline_state`` table.

    Looks without creating anything: opening a pipeline on SQLite attaches ``<file>__<dataset>``,
    which creates that file, so a read of a misspelled dataset would leave files behind.
    """
    return dialect_class(engine).dataset_has_table(engine, dataset, STATE_TABLE)


@dataclass
class PipelineSummary:
    """A pipeline of a dataset: its newest committed state version and newest load."""

    pipeline_name: str
    dataset_name: str
    version: int | None
    version_load_id: str | None
    created_at: str | None
    size: int | None
    newest_load_id: str | None
    newest_load_at: str | None
    error: str | None = None

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


def pipelines(engine: sa.Engine, dataset: str) -> list[PipelineSummary]:
    """The pipelines with state rows in ``dataset``, each with its newest committed version (read
    through the same index as a restore) and its newest committed load."""
    dialect_for(engine).prepare(dataset)
    probe = Pipeline("_browser", destination=engine, dataset_name=dataset)
    out = []
    with engine.connect() as conn:
        names = probe.store.pipeline_names(conn)
        loads = probe.store.loads_table
        for name in names:
            pipeline = Pipeline(name, destination=engine, dataset_name=dataset)
            rows = pipeline.store.history_rows(conn, limit=1)
            summary = PipelineSummary(name, dataset, None, None, None, None, None, None)
            if rows:
                row = rows[0]
                summary.version, summary.version_load_id = int(row.version), row._dlt_load_id
                summary.created_at = _iso(row.created_at)
                summary.size = len(row.state)
            newest = conn.execute(
                sa.select(loads.c.load_id, loads.c.inserted_at)
                .where(loads.c.schema_name == name, loads.c.status == 0)
                .order_by(loads.c.load_id.desc())
                .limit(1)
            ).first()
            if newest is not None:
                summary.newest_load_id, summary.newest_load_at = newest.load_id, _iso(newest.inserted_at)
            out.append(summary)
    return out


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


# -- one pipeline ------------------------------------------------------------------------------------


@dataclass
class VersionRow:
    """One retained version of a history page."""

    version: int
    load_id: str
    created_at: str | None
    size: int
    changed_paths: list[str] | None
    writer: dict | None
    error: str | None = None


@dataclass
class HistoryPage:
    """Newest first; ``next_before`` is the ``before`` of the next (older) page, None on the last."""

    versions: list[VersionRow]
    next_before: str | None
    limit: int
    audited: bool = field(default=False)


def _committed(pipeline: Pipeline) -> sa.Select:
    s, loads = pipeline.store.state_table, pipeline.store.loads_table
    committed = sa.select(loads.c.load_id).where(loads.c.load_id == s.c._dlt_load_id, loads.c.status == 0)
    return sa.select(s.c.version, s.c.state, s.c.created_at, s.c.version_hash, s.c._dlt_load_id).where(
        s.c.pipeline_name == pipeline.pipeline_name, committed.exists()
    )


def history_page(pipeline: Pipeline, *, before: str | None = None, limit: int = PAGE_SIZE) -> HistoryPage:
    """A page of committed versions older than load id ``before`` (keyset pagination on the
    ``(pipeline_name, _dlt_load_id)`` index, so a page costs the same at any depth of any history).

    Raises :class:`operations.StateOperationError` for an unknown pipeline or dataset.
    """
    limit = max(1, min(int(limit), MAX_PAGE_SIZE))
    s = pipeline.store.state_table
    query = _committed(pipeline).order_by(s.c._dlt_load_id.desc()).limit(limit + 1)
    if before:
        query = query.where(s.c._dlt_load_id < before)
    with pipeline.engine.connect() as conn:
        operations.newest_row(pipeline, conn)  # a clear error for an unknown pipeline or dataset
        rows = list(conn.execute(query))
        writers = writers_of(pipeline, conn, [r._dlt_load_id for r in rows[:limit]])
    decoded: list[StoredState | str] = []
    for row in rows:
        try:
            decoded.append(pipeline.store.decode_row(row))
        except StateCorruptError as exc:
            decoded.append(str(exc))
    versions = []
    for i, row in enumerate(rows[:limit]):
        this, older = decoded[i], decoded[i + 1] if i + 1 < len(decoded) else None
        paths = None
        if isinstance(this, StoredState) and isinstance(older, StoredState):
            paths = [c.path for c in operations.diff(older.state, this.state)]
        versions.append(
            VersionRow(
                int(row.version),
                row._dlt_load_id,
                _iso(row.created_at),
                len(row.state),
                paths,
                writers.get(row._dlt_load_id),
                this if isinstance(this, str) else None,
            )
        )
    next_before = rows[limit - 1]._dlt_load_id if len(rows) > limit else None
    return HistoryPage(versions, next_before, limit, audited=writers is not _NO_AUDIT)


_NO_AUDIT: dict = {}


def _audit_table(pipeline: Pipeline, conn: sa.Connection) -> sa.Table | None:
    audit = pipeline.store.audit
    return audit.table if audit.exists(conn) else None


def writers_of(pipeline: Pipeline, conn: sa.Connection, load_ids: list[str]) -> dict[str, dict]:
    """The recorded writer of each of ``load_ids`` (those with an audit row)."""
    table = _audit_table(pipeline, conn)
    if table is None:
        return _NO_AUDIT
    if not load_ids:
        return {}
    rows = conn.execute(
        sa.select(table).where(
            table.c.pipeline_name == pipeline.pipeline_name, table.c._dlt_load_id.in_(load_ids)
        )
    )
    return {row._dlt_load_id: _writer_dict(row) for row in rows}


def _writer_dict(row: sa.Row) -> dict:
    out = {
        k: row._mapping[k]
        for k in ("writer", "user_name", "dag_id", "run_id", "task_id", "map_index", "try_number", "action")
    }
    out["written_at"] = _iso(row.written_at)
    out["detail"] = json.loads(row.detail) if row.detail else None
    return out


def version(pipeline: Pipeline, number: int) -> StoredState:
    """Committed version ``number``; :class:`operations.StateOperationError` if it is not retained."""
    if not 0 <= number < 2**63:  # versions are BIGINT: beyond it the database refuses the parameter
        raise operations.StateOperationError(
            f"pipeline {pipeline.pipeline_name!r}: {number} is not a state version number"
        )
    with pipeline.engine.connect() as conn:
        operations.newest_row(pipeline, conn)
        stored = pipeline.store.version(conn, number)
    if stored is None:
        raise operations.StateOperationError(
            f"pipeline {pipeline.pipeline_name!r}: state version {number} is not retained in "
            f"{operations.where(pipeline)}"
        )
    return stored


def previous(pipeline: Pipeline, load_id: str) -> StoredState | None:
    """The committed version just before the one committed with ``load_id``, or None."""
    s = pipeline.store.state_table
    query = _committed(pipeline).where(s.c._dlt_load_id < load_id).order_by(s.c._dlt_load_id.desc()).limit(1)
    with pipeline.engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else pipeline.store.decode_row(row)


def diff(pipeline: Pipeline, old: int, new: int) -> list[dict]:
    """Leaf differences from version ``old`` to version ``new``: ``{path, kind, old, new}``."""
    a, b = version(pipeline, old), version(pipeline, new)
    return [change_dict(c) for c in operations.diff(a.state, b.state)]


def change_dict(change: operations.Change) -> dict:
    return {
        "path": change.path,
        "kind": change.kind,
        "old": operations.to_plain(change.old),
        "new": operations.to_plain(change.new),
    }


# -- incrementals ------------------------------------------------------------------------------------


def incrementals(state: dict) -> list[dict]:
    """Every incremental cursor of a state document, by slot.

    ``{slot, source, resource, cursor_path, initial_value, start_value, last_value, boundary_hashes}``
    where ``slot`` is ``sources.<source>.resources.<resource>`` (a decomposed or mapped task owns the
    resource slots it loads), ``start_value`` is the value the committing run bound (stored when rows
    arrived) and ``boundary_hashes`` counts ``unique_hashes`` (rows at ``last_value`` already loaded).
    """
    out = []
    for source, source_state in sorted((state.get("sources") or {}).items()):
        if not isinstance(source_state, dict):
            continue
        for resource, slot in sorted((source_state.get("resources") or {}).items()):
            if not isinstance(slot, dict):
                continue
            for cursor, inc in sorted((slot.get("incremental") or {}).items()):
                if not isinstance(inc, dict):
                    continue
                out.append(
                    {
                        "slot": f"sources.{source}.resources.{resource}",
                        "source": source,
                        "resource": resource,
                        "cursor_path": cursor,
                        "initial_value": operations.to_plain(inc.get("initial_value")),
                        "start_value": operations.to_plain(inc.get("start_value")),
                        "last_value": operations.to_plain(inc.get("last_value")),
                        "boundary_hashes": len(inc.get("unique_hashes") or ()),
                    }
                )
    return out


# -- task instances ----------------------------------------------------------------------------------


def task_commits(
    engine: sa.Engine, dataset: str, dag_id: str, run_id: str, task_id: str, map_index: int | None = None
) -> list[dict]:
    """What the tries of one task instance committed to the pipelines of ``dataset``, oldest first.

    Each item: ``{pipeline_name, dataset_name, try_number, map_index, version, load_id, written_at,
    restored: {version, load_id} | None, changed_paths, incrementals}`` where ``restored`` is the
    newest version before this commit (the one the try restored, or merged with when another task
    committed in between) and ``incrementals`` carry the bound ``start_value`` and the committed
    ``last_value``. A try that failed committed nothing and has no item.
    """
    dialect_for(engine).prepare(dataset)
    probe = Pipeline("_browser", destination=engine, dataset_name=dataset)
    table = probe.store.audit.table
    with engine.connect() as conn:
        if not probe.store.audit.exists(conn):
            return []
        query = sa.select(table).where(
            table.c.dag_id == dag_id, table.c.run_id == run_id, table.c.task_id == task_id
        )
        if map_index is not None and map_index >= 0:
            query = query.where(sa.or_(table.c.map_index == map_index, table.c.map_index.is_(None)))
        rows = list(conn.execute(query.order_by(table.c._dlt_load_id)))
    out = []
    for row in rows:
        pipeline = Pipeline(row.pipeline_name, destination=engine, dataset_name=dataset)
        item = {"pipeline_name": row.pipeline_name, "dataset_name": dataset, **_writer_dict(row)}
        item.update(version=int(row.version), load_id=row._dlt_load_id, restored=None, error=None)
        try:
            committed = version(pipeline, int(row.version))
        except (operations.StateOperationError, StateCorruptError) as exc:
            item.update(changed_paths=None, incrementals=[], error=str(exc))
            out.append(item)
            continue
        before = previous(pipeline, row._dlt_load_id)
        if before is not None:
            item["restored"] = {"version": before.version, "load_id": before.load_id}
        item["changed_paths"] = [
            c.path for c in operations.diff(before.state if before else {}, committed.state)
        ]
        item["incrementals"] = incrementals(committed.state)
        out.append(item)
    return out


def audit_datasets(engine: sa.Engine) -> list[str]:
    """The datasets of ``engine`` that hold an audit table (where task commits can be found)."""
    return dialect_class(engine).datasets_with_table(engine, AUDIT_TABLE)
