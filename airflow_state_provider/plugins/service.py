"""Connections to pipelines: which Airflow connections hold pipeline state, opening one, and edits.

Runs in the api-server. Connections are found in the metadata database and in ``AIRFLOW_CONN_*``
environment variables (the two places a connection id can be listed from) and read through
:class:`PipelineStateHook`, like a task reads them. Nothing returned carries a password: URLs are
rendered with the password hidden and driver error messages are scrubbed of the connection's secrets.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from airflow_state_provider import operations
from airflow_state_provider.cli import parse_value
from airflow_state_provider.destination.audit import Writer, writing_as
from airflow_state_provider.destination.engine import mask_url, scrub, url_secrets
from airflow_state_provider.exceptions import BrowserError
from airflow_state_provider.hooks.pipeline_state import CONN_TYPE_DIALECTS, PipelineStateHook
from airflow_state_provider.pipeline import Pipeline
from airflow_state_provider.plugins.models import DropBody, EditBody, RollbackBody, SetBody

STATE_CONN_TYPES = frozenset({PipelineStateHook.conn_type, *CONN_TYPE_DIALECTS})


def connection_ids() -> list[str]:
    """Ids of the connections whose type can hold pipeline state (metadata DB and environment)."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    ids: set[str] = set()
    with create_session() as session:
        query = sa.select(Connection.conn_id).where(Connection.conn_type.in_(sorted(STATE_CONN_TYPES)))
        ids.update(session.scalars(query))
    prefix = "AIRFLOW_CONN_"
    for key in os.environ:
        if key.startswith(prefix) and len(key) > len(prefix):
            ids.add(key[len(prefix) :].lower())
    return sorted(ids)


def _environment_alias(conn_id: str) -> bool:
    """Whether ``conn_id`` resolves to an ``AIRFLOW_CONN_*`` connection whose listed id it is not:
    Airflow looks up ``AIRFLOW_CONN_`` + ``conn_id.upper()``, so ``CONN_B`` (or a spelling with a long
    s, U+017F, whose upper case is ``S``) reaches ``conn_b``."""
    key = f"AIRFLOW_CONN_{conn_id.upper()}"
    return key in os.environ and conn_id != key.removeprefix("AIRFLOW_CONN_").lower()


@dataclass
class Destination:
    """An opened connection: its engine and where it points (no password)."""

    conn_id: str
    conn_type: str
    hook: PipelineStateHook
    engine: sa.Engine
    where: str
    secrets: tuple[str, ...]

    def scrub(self, message: str) -> str:
        for secret in self.secrets:
            message = message.replace(secret, "***")
        return message

    def pipeline(self, pipeline_name: str, dataset_name: str) -> Pipeline:
        """The pipeline of an existing dataset; :class:`BrowserError` (404) for a dataset without
        pipeline state (nothing is created looking for it)."""
        from airflow_state_provider.plugins.browser import has_state

        if not has_state(self.engine, dataset_name):
            raise BrowserError(
                f"connection {self.conn_id!r} has no dataset {dataset_name!r} with pipeline state", 404
            )
        try:
            return self.hook.get_pipeline(pipeline_name, dataset_name=dataset_name)
        except ValueError as exc:
            raise BrowserError(self.scrub(str(exc))) from None


@contextlib.contextmanager
def destination(conn_id: str, *, listed_only: bool = False) -> Iterator[Destination]:
    """Open ``conn_id``; its engine is disposed on the way out. :class:`BrowserError` (404) when the
    connection does not exist or has a type that holds no pipeline state."""
    hook = PipelineStateHook(destination_conn_id=conn_id)
    try:
        conn = hook.connection
    except Exception:
        raise BrowserError(f"connection {conn_id!r} not found", 404) from None
    if conn.conn_id != conn_id or _environment_alias(conn_id):
        # permissions were checked on the id as spelled: another spelling of a connection (Airflow reads
        # AIRFLOW_CONN_* case-insensitively; a MySQL metadata DB compares ids case-insensitively) must
        # not reach it past a policy that names its real id
        raise BrowserError(f"connection {conn_id!r} not found", 404)
    if conn.conn_type not in STATE_CONN_TYPES:
        raise BrowserError(
            f"connection {conn_id!r} has type {conn.conn_type!r}, which holds no pipeline state", 404
        )
    secrets = [conn.password or ""]
    raw = conn.extra_dejson.get("sqlalchemy_url")
    if raw:
        secrets += [*url_secrets(str(raw)), str(raw)]
    found = tuple(s for s in secrets if s)
    try:
        url = hook.get_sqlalchemy_url()
        engine = hook.get_engine()
    except Exception as exc:
        message = f"connection {conn_id!r}: {type(exc).__name__}: {exc}"
        for secret in found:
            message = message.replace(secret, "***")
        raise BrowserError(message, 502) from None
    try:
        where = scrub(mask_url(url), list(found))  # the one mask: password and secret query parameters
        yield Destination(conn_id, conn.conn_type, hook, engine, where, found)
    finally:
        hook.dispose()


def error_text(dest: Destination | None, exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, BrowserError) else str(exc)
    return dest.scrub(text) if dest else text


# -- edits -------------------------------------------------------------------------------------------


def plan_edit(pipeline: Pipeline, edit: EditBody) -> operations.EditPlan:
    """Plan ``edit`` (a validated rollback, set or drop) against the newest version; writes nothing.

    Raises :class:`operations.StateOperationError` for input the state does not fit and
    :class:`ConcurrentEditError` when ``edit.expect_version`` is not the newest version.
    """
    expect = edit.expect_version
    if isinstance(edit, RollbackBody):
        return operations.plan_rollback(pipeline, edit.version, expect_version=expect)
    if isinstance(edit, SetBody):
        base = operations.newest(pipeline)
        try:
            current = operations.get_value(base.state, edit.path, pipeline_name=pipeline.pipeline_name)
        except operations.StateOperationError:
            if not edit.create:
                raise
            current = None
        try:
            value = parse_value(edit.value, current=current, value_type=edit.value_type)
        except RecursionError:  # the JSON decoder's own limit, deeper than any storable state
            raise operations.StateOperationError(
                f"pipeline {pipeline.pipeline_name!r}: the value for {edit.path!r} is nested too deeply"
            ) from None
        return operations.plan_set(
            pipeline, edit.path, value, create=edit.create, expect_version=expect, base=base
        )
    if isinstance(edit, DropBody):
        return operations.plan_drop(
            pipeline, edit.resources, edit.state_paths, state_only=edit.state_only, expect_version=expect
        )
    raise TypeError(f"not an edit: {type(edit).__name__}")


def plan_dict(plan: operations.EditPlan) -> dict[str, Any]:
    from airflow_state_provider.plugins.browser import change_dict

    return {
        "action": plan.action,
        "base_version": plan.base.version,
        "base_load_id": plan.base.load_id,
        "changes": [change_dict(c) for c in plan.changes],
        "drop_tables": list(plan.drop_tables),
        "warnings": list(plan.warnings),
        "empty": plan.empty,
    }


def apply_edit(plan: operations.EditPlan, user: str) -> operations.EditResult:
    """Commit ``plan`` through the product's commit path, recorded as the UI edit of ``user``."""
    writer = Writer(
        "ui",
        user_name=user,
        action=plan.action,
        detail={"changed_paths": [c.path for c in plan.changes], "dropped_tables": list(plan.drop_tables)},
    )
    with writing_as(writer):
        return operations.apply(plan)
