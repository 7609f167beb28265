"""The run context behind ``current.*``: which pipeline, source and resource are running now.

Context variables (not globals) so that threads and parallel pipelines in one process do not see each
other's state. The pipeline installs a :class:`RunContext` for the duration of a run; the extract layer
sets the running source and resource.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from airflow_state_provider.exceptions import PipelineStateError, ReadOnlyStateError
from airflow_state_provider.state import model


@dataclass
class RunContext:
    """What a running pipeline exposes to user code."""

    pipeline: Any
    state: dict
    #: source keys whose source-level state is read-only in this run, mapped to the reason shown
    read_only_sources: dict[str, str] = field(default_factory=dict)
    #: the Airflow data interval ``(start, end)`` when the run was scheduled, else None
    interval: tuple[Any, Any] | None = None
    #: ``(source_key, resource_name, bound incremental)`` of incrementals that loaded an interval
    interval_records: list[tuple[str, str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Scope:
    source_key: str | None = None
    resource_name: str | None = None
    #: set while a source function body runs: its source state is read-only
    in_source_body: bool = False


_run: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("asp_run", default=None)
_scope: contextvars.ContextVar[_Scope] = contextvars.ContextVar(
    "asp_scope",
    default=_Scope(),  # noqa: B039 -- frozen dataclass, immutable
)
_UNSET: Any = object()
_interval: contextvars.ContextVar[Any] = contextvars.ContextVar("asp_interval", default=_UNSET)
_missing_policy: contextvars.ContextVar[str] = contextvars.ContextVar(
    "asp_missing_interval", default="continue"
)

#: dlt 1.31's environment variables for an external scheduler's interval (UTC ISO 8601, IANA zone name)
ENV_INTERVAL_START = "DLT_INTERVAL_START"
ENV_INTERVAL_END = "DLT_INTERVAL_END"
ENV_INTERVAL_TIMEZONE = "DLT_INTERVAL_TIMEZONE"
MISSING_INTERVAL_POLICIES = ("continue", "raise")


class TimeInterval(NamedTuple):
    """An external scheduler's data interval ``[start, end)`` (dlt's ``TTimeInterval``)."""

    start: Any
    end: Any


@contextlib.contextmanager
def run_context(ctx: RunContext) -> Iterator[RunContext]:
    token = _run.set(ctx)
    try:
        yield ctx
    finally:
        _run.reset(token)


@contextlib.contextmanager
def scope(
    source_key: str | None = None, resource_name: str | None = None, *, in_source_body: bool = False
) -> Iterator[None]:
    token = _scope.set(_Scope(source_key, resource_name, in_source_body))
    try:
        yield
    finally:
        _scope.reset(token)


@contextlib.contextmanager
def external_interval(start: Any, end: Any, *, on_missing: str = "continue") -> Iterator[None]:
    """Declare the scheduler's data interval for incrementals with ``allow_external_schedulers``.

    The Airflow layer sets this from the task context; the core never imports Airflow. ``start`` or
    ``end`` None means the run has no interval (the environment is then not read). ``on_missing``
    says what those incrementals do without a range (no interval, or a zero-length one):
    ``"continue"`` from the committed cursor, or ``"raise"``.
    """
    if on_missing not in MISSING_INTERVAL_POLICIES:
        raise ValueError(f"on_missing must be one of {MISSING_INTERVAL_POLICIES}, got {on_missing!r}")
    token = _interval.set(None if start is None or end is None else TimeInterval(start, end))
    policy = _missing_policy.set(on_missing)
    try:
        yield
    finally:
        _missing_policy.reset(policy)
        _interval.reset(token)


def current_interval() -> TimeInterval | None:
    """The declared interval; when none was declared, dlt's ``DLT_INTERVAL_*`` variables, else None."""
    value = _interval.get()
    return interval_from_env() if value is _UNSET else value


def missing_interval_policy() -> str:
    return _missing_policy.get()


def interval_from_env() -> TimeInterval | None:
    """``DLT_INTERVAL_START`` / ``DLT_INTERVAL_END`` as dlt 1.31 reads them, or None unless both are set.

    The bounds are ISO 8601, naive ones read as UTC; with ``DLT_INTERVAL_TIMEZONE`` (an IANA name)
    both are converted into that zone. Raises ``ValueError`` naming the variable that does not parse.
    """
    raw_start, raw_end = os.environ.get(ENV_INTERVAL_START), os.environ.get(ENV_INTERVAL_END)
    if not raw_start or not raw_end:
        return None
    zone_name = os.environ.get(ENV_INTERVAL_TIMEZONE)
    try:
        zone = ZoneInfo(zone_name) if zone_name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{ENV_INTERVAL_TIMEZONE}={zone_name!r} is not an IANA time zone name") from None
    bounds = []
    for name, raw in ((ENV_INTERVAL_START, raw_start), (ENV_INTERVAL_END, raw_end)):
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not an ISO 8601 date or datetime") from None
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
        bounds.append(moment.astimezone(zone))
    return TimeInterval(*bounds)


def record_intervals(state: dict) -> list[str]:
    """Move the cursor of every incremental that joined an interval in this run to its end.

    Applied by the final commit to the merged newest state, under the commit lock, so parallel
    interval runs never conflict on it and the cursor never moves back. Returns the changed slots.
    """
    ctx = _run.get()
    changed = []
    for source_key, resource_name, inc in ctx.interval_records if ctx is not None else ():
        if inc.record_interval(model.resource_slot(state, source_key, resource_name)):
            changed.append(f"sources.{source_key}.resources.{resource_name}.incremental.{inc.cursor_path}")
    return changed


_slot_suffix: contextvars.ContextVar[str] = contextvars.ContextVar("asp_slot_suffix", default="")


@contextlib.contextmanager
def slot_suffix(suffix: str) -> Iterator[None]:
    """Run every resource under ``<name><suffix>`` as its state slot (its table keeps its name).

    Set by the Airflow layer so that mapped task instances keep separate slots.
    """
    token = _slot_suffix.set(suffix or "")
    try:
        yield
    finally:
        _slot_suffix.reset(token)


def current_slot_suffix() -> str:
    return _slot_suffix.get()


def active_run() -> RunContext | None:
    return _run.get()


def _require_run() -> RunContext:
    ctx = _run.get()
    if ctx is None or (ctx.pipeline is None and _scope.get().source_key is None):
        raise PipelineStateError(
            "no pipeline is running: current.* is available only inside a resource, transformer or "
            "source function while a Pipeline (or the StatefulLoadOperator) runs it"
        )
    return ctx


# ---------------------------------------------------------------------------------------------------
# Read-only views: dict/list subclasses so user code reading them needs no changes.


def _ro_error(what: str) -> ReadOnlyStateError:
    return ReadOnlyStateError(what)


class ReadOnlyDict(dict):
    """A deep read-only copy of a state dict; every mutation raises :class:`ReadOnlyStateError`."""

    def __init__(self, data: dict, reason: str) -> None:
        super().__init__({k: freeze(v, reason) for k, v in data.items()})
        self._reason = reason

    def _deny(self, *_: Any, **__: Any) -> Any:
        raise _ro_error(self._reason)

    __setitem__ = __delitem__ = __ior__ = _deny
    clear = pop = popitem = update = _deny

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return self[key]
        raise _ro_error(self._reason)

    def __deepcopy__(self, memo: dict) -> dict:
        import copy

        return {k: copy.deepcopy(v, memo) for k, v in self.items()}


class ReadOnlyList(list):
    def __init__(self, data: list, reason: str) -> None:
        super().__init__(freeze(v, reason) for v in data)
        self._reason = reason

    def _deny(self, *_: Any, **__: Any) -> Any:
        raise _ro_error(self._reason)

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _deny
    append = extend = insert = pop = remove = clear = sort = reverse = _deny

    def __deepcopy__(self, memo: dict) -> list:
        import copy

        return [copy.deepcopy(v, memo) for v in self]


def freeze(value: Any, reason: str) -> Any:
    if isinstance(value, dict):
        return ReadOnlyDict(value, reason)
    if isinstance(value, list):
        return ReadOnlyList(value, reason)
    return value


# ---------------------------------------------------------------------------------------------------
# The public accessors, exposed as ``current.*``.


def _pipeline_name(ctx: RunContext) -> str | None:
    return getattr(ctx.pipeline, "pipeline_name", None)


def _source_key(ctx: RunContext) -> str:
    key = _scope.get().source_key
    if key is None:
        key = _pipeline_name(ctx)
    if key is None:
        raise PipelineStateError("the running pipeline has no name, so its source state has no slot")
    return key


def source_state() -> dict:
    """The state shared by the resources of the running source (read-only in a source body)."""
    ctx = _require_run()
    scope_ = _scope.get()
    key = _source_key(ctx)
    pipeline_name = _pipeline_name(ctx)
    if scope_.in_source_body:
        reason = (
            f"pipeline {pipeline_name!r}: source state sources.{key} is read-only in the body of the "
            "source function; write it from a resource"
        )
        return freeze(ctx.state.get("sources", {}).get(key, {}), reason)
    if key in ctx.read_only_sources:
        return freeze(ctx.state.get("sources", {}).get(key, {}), ctx.read_only_sources[key])
    return model.source_slot(ctx.state, key)


def resource_state(resource_name: str | None = None) -> dict:
    """The private state of the running resource (or of ``resource_name``)."""
    ctx = _require_run()
    scope_ = _scope.get()
    name = resource_name or scope_.resource_name
    if name is None:
        raise PipelineStateError(
            f"pipeline {_pipeline_name(ctx)!r}: no resource is running here; pass the resource "
            "name explicitly: current.resource_state('my_resource')"
        )
    key = _source_key(ctx)
    if scope_.in_source_body:
        src = ctx.state.get("sources", {}).get(key, {})
        reason = (
            f"pipeline {_pipeline_name(ctx)!r}: resource state sources.{key}.resources.{name} is "
            "read-only in the body of the source function"
        )
        return freeze(src.get("resources", {}).get(name, {}), reason)
    return model.resource_slot(ctx.state, key, name)


def reset_resource_state(resource_name: str) -> None:
    """Drop a resource's whole slot in the running pipeline's state."""
    ctx = _require_run()
    key = _source_key(ctx)
    ctx.state.get("sources", {}).get(key, {}).get("resources", {}).pop(resource_name, None)


def pipeline() -> Any:
    """The running :class:`~airflow_state_provider.Pipeline` (None while a source body is evaluated
    outside a run, e.g. when Airflow parses a DAG)."""
    return _require_run().pipeline


def interval() -> TimeInterval | None:
    """The external scheduler's interval of the running pipeline (outside a run: the declared one, or
    ``DLT_INTERVAL_*``), as ``TimeInterval(start, end)``; None without one. Like dlt's
    ``dlt.current.interval()``."""
    ctx = _run.get()
    if ctx is not None and ctx.pipeline is not None:
        return None if ctx.interval is None else TimeInterval(*ctx.interval)
    return current_interval()


class _Current:
    """Namespace object: ``current.resource_state()``, ``current.source_state()``, ..."""

    resource_state = staticmethod(resource_state)
    source_state = staticmethod(source_state)
    state = staticmethod(source_state)
    pipeline = staticmethod(pipeline)
    interval = staticmethod(interval)


current = _Current()
