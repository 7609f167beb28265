"""``@source``: a named group of resources sharing source-level state."""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterable
from typing import Any, overload

from airflow_state_provider.extract.resource import Resource
from airflow_state_provider.state import context


class Source:
    """A lazy source: the function body runs when the resources are needed.

    A pipeline evaluates the body again after restoring state, inside a read-only source scope, so
    the body reads the restored state even on a clean worker. Reading ``.resources`` outside a run
    (e.g. while Airflow parses a DAG) evaluates it against empty state.
    """

    def __init__(self, func: Callable[..., Any], name: str, args: tuple, kwargs: dict) -> None:
        self.func = func
        self.name = name
        self._args = args
        self._kwargs = kwargs
        self._selected: tuple[str, ...] | None = None
        self._cache: dict[str, Resource] | None = None

    def evaluate(self) -> dict[str, Resource]:
        """Run the body now (in the active run context, if any) and return its resources by name."""
        with contextlib.ExitStack() as stack:
            if context.active_run() is None:
                # outside a run (e.g. Airflow parsing the DAG): the body reads empty, read-only state
                stack.enter_context(context.run_context(context.RunContext(pipeline=None, state={})))
            stack.enter_context(context.scope(self.name, in_source_body=True))
            produced = self.func(*self._args, **self._kwargs)
            if isinstance(produced, Resource):
                produced = [produced]
            elif isinstance(produced, Iterable) and not isinstance(produced, str | bytes | dict):
                # a generator body (``yield resource``) runs only now: still inside the source scope, so
                # it reads the restored state and its writes raise like those of a ``return`` body
                produced = list(produced)
        resources: dict[str, Resource] = {}
        if produced is not None and not isinstance(produced, list):
            produced = [produced]  # reported below: not a resource
        for item in produced or ():
            if not isinstance(item, Resource):
                raise TypeError(
                    f"source {self.name!r} returned {type(item).__name__}; a source function must "
                    "return resources (decorated with @resource or @transformer)"
                )
            item = copy.copy(item)
            item.source_key = self.name
            resources[item.name] = item
        # a transformer's parent is part of the source even when not returned explicitly
        for item in list(resources.values()):
            parent = item.data_from
            while parent is not None and parent.name not in resources:
                parent = copy.copy(parent)
                parent.source_key = self.name
                resources[parent.name] = parent
                parent = parent.data_from
        return resources

    @property
    def resources(self) -> dict[str, Resource]:
        """All resources of the source, by name (the body is evaluated once and cached)."""
        if self._cache is None:
            self._cache = self.evaluate()
        return dict(self._cache)

    @property
    def selected(self) -> tuple[str, ...]:
        """Names of the resources a run loads (all unless narrowed by :meth:`with_resources`)."""
        return self.selection(self.resources)

    def selection(self, resources: dict[str, Resource]) -> tuple[str, ...]:
        """The selected names among ``resources`` (a fresh evaluation of the body)."""
        return self._selected if self._selected is not None else tuple(resources)

    def with_resources(self, *names: str) -> Source:
        """A copy that loads only the named resources."""
        unknown = [n for n in names if n not in self.resources]
        if unknown:
            raise KeyError(
                f"source {self.name!r} has no resource(s) {unknown}; it has {sorted(self.resources)}"
            )
        clone = copy.copy(self)
        clone._selected = tuple(names)
        return clone

    def __repr__(self) -> str:
        return f"<source {self.name!r} resources={list(self.selected)}>"


class SourceFactory:
    """What ``@source`` returns: call it to get a :class:`Source`."""

    def __init__(self, func: Callable[..., Any], name: str) -> None:
        self.func = func
        self.name = name
        functools.update_wrapper(self, func, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Source:
        return Source(self.func, self.name, args, kwargs)


@overload
def source(func: Callable[..., Any], /) -> SourceFactory: ...
@overload
def source(
    func: None = None, /, *, name: str | None = None
) -> Callable[[Callable[..., Any]], SourceFactory]: ...


def source(
    func: Callable[..., Any] | None = None, /, *, name: str | None = None
) -> SourceFactory | Callable[[Callable[..., Any]], SourceFactory]:
    """Declare a source: a function returning its resources. ``name`` defaults to the function name."""

    def decorate(f: Callable[..., Any]) -> SourceFactory:
        return SourceFactory(f, name or f.__name__)

    return decorate(func) if func is not None else decorate
