"""``decompose_source``: a source becomes Airflow tasks, with exactly one state-writer task per source.

A *resource group* is a root resource with the transformers fed by it; a group always runs in one
task. ``mode="none"`` loads the whole selection in one task, ``"serialize"`` runs one task per group
one after another, ``"parallel"`` runs the same tasks side by side. In ``parallel`` mode one task,
the state writer, owns the source-level state; the others may only read it, and a write there raises
:class:`~airflow_state_provider.exceptions.ReadOnlyStateError` naming the writer task. Resource state
stays writable in every task, and concurrent commits merge per slot (DESIGN §5.3).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from airflow_state_provider._airflow_compat import TaskGroup, chain
from airflow_state_provider.extract.resource import Resource
from airflow_state_provider.extract.source import Source
from airflow_state_provider.hooks.pipeline_state import PipelineStateHook
from airflow_state_provider.operators.stateful_load import StatefulLoadOperator
from airflow_state_provider.state import context, model

#: ``decompose_source(mode=...)``: one task, one task per resource group in sequence, or side by side.
DecomposeMode = Literal["none", "serialize", "parallel"]
MODES: tuple[DecomposeMode, ...] = get_args(DecomposeMode)
#: operator arguments that decompose_source sets itself
_RESERVED = frozenset({"task_id", "data", "read_only_sources", "doc_md"})
_INVALID_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class ResourceGroup:
    """A root resource and the selected resources that run in its task."""

    root: str
    #: selected resource names, in source order (the root only if it is selected itself)
    resources: tuple[str, ...]

    @property
    def task_id(self) -> str:
        return task_id_for(self.root)


def task_id_for(name: str) -> str:
    """A task id (local to the task group) for a resource or source name.

    Dots would nest Airflow task groups and other characters are invalid, so anything but ASCII
    letters, digits, ``_`` and ``-`` becomes ``_``.
    """
    return _INVALID_ID_CHARS.sub("_", name)


def resource_groups(source: Source, pipeline_name: str | None = None) -> list[ResourceGroup]:
    """The resource groups of the source's selection, in source order.

    A selected transformer brings its parent's group (the parent is extracted, not loaded). The
    source body runs against the empty state of ``pipeline_name`` (default: the source name).
    """
    with _parse_time_run(pipeline_name or source.name):
        resources = source.resources
        selected = set(source.selected)
    members: dict[str, list[str]] = {}
    for name in resources:
        if name in selected:
            members.setdefault(_root_of(resources, name), []).append(name)
    groups = [ResourceGroup(root, tuple(names)) for root, names in members.items()]
    _check_unique_ids({g.root: g.task_id for g in groups}, source.name)
    return groups


def decompose_source(
    source: Source,
    *,
    group_id: str,
    pipeline_name: str,
    destination_conn_id: str = PipelineStateHook.default_conn_name,
    dataset_name: str | None = None,
    mode: DecomposeMode = "serialize",
    state_writer: str | None = None,
    **operator_kwargs: Any,
) -> TaskGroup:
    """Turn ``source`` into a task group of :class:`StatefulLoadOperator` tasks of one pipeline.

    Call it inside a DAG (``with DAG(...)`` or a ``@dag`` function), or pass ``dag=``.

    :param source: a ``@source`` object, optionally narrowed with ``.with_resources(...)``: only the
        selected resources are decomposed. Its body is evaluated now against empty, read-only state
        to find the resources, and again in each task after the state is restored.
    :param group_id: the task group id; task ids are ``<group_id>.<root resource name>``
        (``<group_id>.<source name>`` in ``none`` mode), normalized to letters, digits, ``_`` and ``-``.
    :param pipeline_name: the pipeline every task restores and commits.
    :param destination_conn_id: the destination connection of every task.
    :param dataset_name: the dataset (schema) of every task.
    :param mode: ``none`` (one task), ``serialize`` (one task per resource group, chained in source
        order) or ``parallel`` (the same tasks without dependencies).
    :param state_writer: in ``parallel`` mode, the root resource whose task may write the source-level
        state; default: the first group. Naming a transformer or an unknown or unselected resource
        raises ``ValueError`` here, at DAG parse time.
    :param operator_kwargs: passed to every :class:`StatefulLoadOperator` (``retries``,
        ``write_disposition``, ``checkpoint_every``, ``dag``, ...).
    """
    if mode not in MODES:
        raise ValueError(f"decompose_source: mode must be one of {MODES}, got {mode!r}")
    if not isinstance(source, Source):
        raise TypeError(
            f"decompose_source takes a @source object (call the decorated function), got "
            f"{type(source).__name__}; run a resource or rows with StatefulLoadOperator"
        )
    reserved = sorted(_RESERVED & operator_kwargs.keys())
    if reserved:
        raise TypeError(f"decompose_source sets {reserved} itself; do not pass them")
    groups = resource_groups(source, pipeline_name)
    if not groups:
        raise ValueError(f"decompose_source: source {source.name!r} has no selected resources")
    writer = _writer_group(source, pipeline_name, groups, state_writer)

    common = {
        "pipeline_name": pipeline_name,
        "destination_conn_id": destination_conn_id,
        "dataset_name": dataset_name,
        **operator_kwargs,
    }
    group_kwargs = {"dag": operator_kwargs["dag"]} if "dag" in operator_kwargs else {}
    tooltip = f"source {source.name!r} of pipeline {pipeline_name!r}, mode {mode}"
    with TaskGroup(group_id=group_id, tooltip=tooltip, **group_kwargs) as group:
        if mode == "none":
            StatefulLoadOperator(
                task_id=task_id_for(source.name),
                data=source,
                doc_md=_doc(source.name, [n for g in groups for n in g.resources], mode),
                **common,
            )
            return group
        writer_id = group.child_id(writer.task_id)
        tasks = []
        for g in groups:
            read_only = None
            if mode == "parallel" and g is not writer:
                reason = _read_only_reason(pipeline_name, source.name, group.child_id(g.task_id), writer_id)
                read_only = {source.name: reason}
            with _parse_time_run(pipeline_name):
                data = source.with_resources(*g.resources)
            tasks.append(
                StatefulLoadOperator(
                    task_id=g.task_id,
                    data=data,
                    read_only_sources=read_only,
                    doc_md=_doc(source.name, g.resources, mode, writer_id, is_writer=g is writer),
                    **common,
                )
            )
        if mode == "serialize":
            chain(*tasks)
    return group


# ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _parse_time_run(pipeline_name: str) -> Iterator[None]:
    """Let a source body that reads ``current.source_state()`` run while the DAG is parsed.

    Outside a run the body would fail; here it sees empty, read-only state, as on a first run.
    """
    if context.active_run() is not None:
        yield
        return
    state = model.default_state(pipeline_name, f"{pipeline_name}_dataset")
    with context.run_context(context.RunContext(pipeline=_ParseTimePipeline(pipeline_name), state=state)):
        yield


@dataclass(frozen=True)
class _ParseTimePipeline:
    """What ``current.pipeline()`` returns while the DAG is parsed: a name, and always a first run."""

    pipeline_name: str
    first_run: bool = True


def _root_of(resources: dict[str, Resource], name: str) -> str:
    res = resources[name]
    while res.data_from is not None:
        res = resources[res.data_from.name]
    return res.name


def _check_unique_ids(ids: dict[str, str], source_name: str) -> None:
    seen: dict[str, str] = {}
    for name, task_id in ids.items():
        if task_id in seen:
            raise ValueError(
                f"decompose_source: resources {seen[task_id]!r} and {name!r} of source {source_name!r} "
                f"both map to task id {task_id!r}; rename one of them"
            )
        seen[task_id] = name


def _writer_group(
    source: Source, pipeline_name: str, groups: list[ResourceGroup], state_writer: str | None
) -> ResourceGroup:
    if state_writer is None:
        return groups[0]
    with _parse_time_run(pipeline_name):
        resources = source.resources
    if state_writer not in resources:
        raise ValueError(
            f"decompose_source: state_writer {state_writer!r} is not a resource of source "
            f"{source.name!r}; its resources are {sorted(resources)}"
        )
    if resources[state_writer].is_transformer:
        root = _root_of(resources, state_writer)
        raise ValueError(
            f"decompose_source: state_writer {state_writer!r} is a transformer; it runs in the task of "
            f"its parent resource {root!r}: pass state_writer={root!r}"
        )
    for g in groups:
        if g.root == state_writer:
            return g
    raise ValueError(
        f"decompose_source: state_writer {state_writer!r} is not selected in source {source.name!r}; "
        f"the selected resource groups are {[g.root for g in groups]}"
    )


def _read_only_reason(pipeline_name: str, source_name: str, task_id: str, writer_id: str) -> str:
    return (
        f"pipeline {pipeline_name!r}: source state sources.{source_name} is read-only in task "
        f"{task_id!r}: the state writer of source {source_name!r} is task {writer_id!r} "
        "(decompose_source mode 'parallel'). Write source state from a resource of that task, or make "
        "this task's resource the state_writer; resource state (current.resource_state()) stays "
        "writable here."
    )


def _doc(
    source_name: str,
    resources: Sequence[str],
    mode: str,
    writer_id: str | None = None,
    *,
    is_writer: bool = False,
) -> str:
    loads = ", ".join(f"`{n}`" for n in resources)
    head = f"Loads {loads} of source `{source_name}` (`decompose_source`, mode `{mode}`)."
    if mode == "none":
        return (
            f"{head}\n\nThe only task of this source: it may write the source state `sources.{source_name}`."
        )
    if mode == "serialize":
        return (
            f"{head}\n\nThe tasks of this source run one after another, so each may write the source "
            f"state `sources.{source_name}`."
        )
    if is_writer:
        return (
            f"{head}\n\n**State writer** of source `{source_name}`: this task may write the source state "
            f"`sources.{source_name}`; the other tasks of the group may only read it."
        )
    return (
        f"{head}\n\n**Read-only source state**: the state writer of source `{source_name}` is task "
        f"`{writer_id}`. Here `sources.{source_name}` may only be read; the resource state of what this "
        "task loads stays writable."
    )
