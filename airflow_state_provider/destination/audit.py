"""Who wrote each state version: the ``_pipeline_state_audit`` table.

dlt's ``_dlt_pipeline_state`` and ``_dlt_loads`` keep their exact columns (dlt reads and writes them);
the writer of a version goes into a table of our own in the same dataset, one row per committed state
version, inserted in the transaction that inserts the state row. dlt never reads it, and a dataset
without it (one dlt created, or a commit made by dlt) simply has versions with no recorded writer.

The writer is taken from :func:`writing_as` (the UI sets the signed-in user; ``StatefulLoadOperator``
its task instance, map index included) or, when none is set, from the environment: an Airflow task
exports ``AIRFLOW_CTX_DAG_ID`` and friends before ``execute`` (a ``@task`` calling ``Pipeline.run``
itself); anything else is a command line or script run by the OS user. The core reads only environment
variables here, never Airflow.
"""

from __future__ import annotations

import contextlib
import contextvars
import getpass
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

log = logging.getLogger("airflow_state_provider.audit")

AUDIT_TABLE = "_pipeline_state_audit"

#: ``writer`` values: an Airflow task instance, the UI plugin (a signed-in user), a CLI or script.
WRITER_KINDS = ("task", "ui", "cli")


def audit_table(metadata: sa.MetaData, dataset: str) -> sa.Table:
    """One row per committed state version; keyed like the state row (pipeline, load id)."""
    return sa.Table(
        AUDIT_TABLE,
        metadata,
        sa.Column("pipeline_name", sa.String, nullable=False),
        sa.Column("_dlt_load_id", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("writer", sa.String(16), nullable=False),
        sa.Column("user_name", sa.String, nullable=True),
        sa.Column("dag_id", sa.String, nullable=True),
        sa.Column("run_id", sa.String, nullable=True),
        sa.Column("task_id", sa.String, nullable=True),
        sa.Column("map_index", sa.Integer, nullable=True),
        sa.Column("try_number", sa.Integer, nullable=True),
        sa.Column("action", sa.String, nullable=True),
        sa.Column("detail", sa.String, nullable=True),
        sa.Index("ix__pipeline_state_audit__pipeline_load", "pipeline_name", "_dlt_load_id"),
        sa.Index("ix__pipeline_state_audit__task", "dag_id", "run_id", "task_id"),
        schema=dataset,
    )


@dataclass(frozen=True)
class Writer:
    """Who commits: ``writer`` is one of :data:`WRITER_KINDS`; task fields are set for ``task``.

    ``action`` names an edit (``rollback to version 3``, ``set``, ``drop``); ``detail`` is a small
    JSON-able dict (e.g. the changed paths of an edit) stored as JSON text.
    """

    writer: str
    user_name: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    try_number: int | None = None
    action: str | None = None
    detail: dict | None = None


_writer: contextvars.ContextVar[Writer | None] = contextvars.ContextVar("asp_state_writer", default=None)


@contextlib.contextmanager
def writing_as(writer: Writer | None) -> Iterator[Writer | None]:
    """Commits made inside the block are recorded as ``writer``'s (None: as :func:`current_writer`
    finds without one)."""
    token = _writer.set(writer)
    try:
        yield writer
    finally:
        _writer.reset(token)


def task_writer(ti: Any) -> Writer | None:
    """The writer for a task instance (any object with Airflow's ``dag_id``, ``run_id``, ``task_id``,
    ``map_index`` and ``try_number``; None for None): the operator sets it, so mapped tasks record
    their map index."""
    if ti is None:
        return None
    return Writer(
        "task",
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        map_index=getattr(ti, "map_index", None),
        try_number=getattr(ti, "try_number", None),
    )


def current_writer() -> Writer:
    """The writer set by :func:`writing_as`, else the Airflow task of this process, else the OS user."""
    writer = _writer.get()
    if writer is not None:
        return writer
    env = os.environ
    if env.get("AIRFLOW_CTX_DAG_ID") and env.get("AIRFLOW_CTX_TASK_ID"):
        return Writer(
            "task",
            dag_id=env["AIRFLOW_CTX_DAG_ID"],
            run_id=env.get("AIRFLOW_CTX_DAG_RUN_ID"),
            task_id=env["AIRFLOW_CTX_TASK_ID"],
            map_index=_int(env.get("AIRFLOW_CTX_MAP_INDEX")),
            try_number=_int(env.get("AIRFLOW_CTX_TRY_NUMBER")),
        )
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry and no LOGNAME/USER in a container
        user = None
    return Writer("cli", user_name=user)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


class AuditLog:
    """Writes and reads the audit rows of one dataset."""

    def __init__(self, dataset: str, metadata: sa.MetaData | None = None) -> None:
        self.dataset = dataset
        self.table = audit_table(metadata if metadata is not None else sa.MetaData(), dataset)
        self._exists: bool | None = None

    def exists(self, conn: sa.Connection) -> bool:
        if not self._exists:
            self._exists = sa.inspect(conn).has_table(AUDIT_TABLE, schema=self.dataset)
        return self._exists

    def record(self, conn: sa.Connection, pipeline_name: str, version: int, load_id: str) -> None:
        """Insert the current writer's row in the caller's (commit) transaction. A dataset without the
        table (created by dlt, or before this table existed) gets no row: the commit goes on."""
        if not self.exists(conn):
            log.debug("no %s table in dataset %r: writer not recorded", AUDIT_TABLE, self.dataset)
            return
        writer = current_writer()
        values = asdict(replace(writer, detail=None))
        values["detail"] = json.dumps(writer.detail, default=str) if writer.detail else None
        conn.execute(
            sa.insert(self.table).values(
                pipeline_name=pipeline_name,
                _dlt_load_id=load_id,
                version=version,
                written_at=datetime.now(UTC),
                **values,
            )
        )
