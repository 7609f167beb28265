"""``@resource`` and ``@transformer``: lazy, named producers of rows with loading hints."""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, get_args, overload

from airflow_state_provider.extract.incremental import Incremental

#: How a resource's rows land in its table (dlt's names): ``append`` adds them, ``replace`` swaps the
#: table's rows for this run's, ``merge`` upserts on ``primary_key`` / ``merge_key``.
WriteDisposition = Literal["append", "replace", "merge"]
WRITE_DISPOSITIONS: tuple[WriteDisposition, ...] = get_args(WriteDisposition)

Key = str | tuple[str, ...] | list[str] | None


class Resource:
    """A named producer of rows and its loading hints.

    Calling a decorated function returns a bound copy; nothing runs until a pipeline runs it. A
    resource whose arguments all have defaults can be passed to ``Pipeline.run`` without calling it.
    """

    def __init__(
        self,
        func: Callable[..., Any] | None,
        *,
        name: str,
        table_name: str | None = None,
        write_disposition: WriteDisposition = "append",
        primary_key: Key = None,
        merge_key: Key = None,
        data_from: Resource | None = None,
        data: Iterable[Any] | None = None,
        source_key: str | None = None,
    ) -> None:
        if write_disposition not in WRITE_DISPOSITIONS:
            raise ValueError(
                f"resource {name!r}: write_disposition must be one of {WRITE_DISPOSITIONS}, "
                f"got {write_disposition!r}"
            )
        if not name:
            raise ValueError("a resource needs a non-empty name")
        self.func = func
        self.name = name
        self.table_name = table_name or name
        self.write_disposition = write_disposition
        self.primary_key = primary_key
        self.merge_key = merge_key
        self.data_from = data_from
        self._data = data
        #: the state key of the source this resource belongs to (None: the pipeline's name)
        self.source_key = source_key
        self._args: tuple = ()
        self._kwargs: dict[str, Any] = {}
        if func is not None:
            functools.update_wrapper(self, func, updated=())

    # -- binding ----------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Resource:
        bound = copy.copy(self)
        bound._args, bound._kwargs = args, kwargs
        return bound

    def with_hints(self, **hints: Any) -> Resource:
        """A copy with other loading hints (``table_name``, ``write_disposition``, ``primary_key``, ...)."""
        clone = copy.copy(self)
        for key, value in hints.items():
            if value is None:
                continue
            if not hasattr(clone, key) or key.startswith("_"):
                raise TypeError(f"resource {self.name!r}: unknown hint {key!r}")
            setattr(clone, key, value)
        if hints.get("write_disposition") and hints["write_disposition"] not in WRITE_DISPOSITIONS:
            raise ValueError(
                f"resource {self.name!r}: unknown write_disposition {hints['write_disposition']!r}"
            )
        return clone

    @property
    def is_transformer(self) -> bool:
        return self.data_from is not None

    # -- running (called by the pipeline with the run context set) --------------------------------
    def call_arguments(self) -> inspect.BoundArguments | None:
        """The call's arguments with defaults applied (None for data-backed resources)."""
        if self.func is None:
            return None
        signature = inspect.signature(self.func)
        params = list(signature.parameters.values())
        if self.is_transformer and params:
            # the first parameter receives the parent's items; bind the others only
            signature = signature.replace(parameters=params[1:])
        try:
            bound = signature.bind(*self._args, **self._kwargs)
        except TypeError as exc:
            raise TypeError(f"resource {self.name!r}: cannot call {self.func.__name__}: {exc}") from None
        for param in signature.parameters.values():
            default = param.default
            if not isinstance(default, Incremental) or param.name not in bound.arguments:
                continue
            # dlt: an explicit incremental is merged into the default one; any other value (also None)
            # is the initial value of the default cursor
            value = bound.arguments[param.name]
            if isinstance(value, Incremental):
                bound.arguments[param.name] = value if value.is_bound else default.merge(value)
            else:
                bound.arguments[param.name] = default.with_initial_value(value)
        bound.apply_defaults()
        return bound

    def open(self, arguments: inspect.BoundArguments | None, item: Any = None) -> Iterator[Any]:
        """Start producing: an iterator over what the function yields or returns."""
        if self.func is None:
            yield from self._data or ()
            return
        assert arguments is not None
        args = (item, *arguments.args) if self.is_transformer else arguments.args
        result = self.func(*args, **arguments.kwargs)
        if result is None:
            return
        if isinstance(result, dict) or not isinstance(result, Iterable) or isinstance(result, str | bytes):
            yield result
        else:
            yield from result

    def __repr__(self) -> str:
        kind = "transformer" if self.is_transformer else "resource"
        return f"<{kind} {self.name!r} table={self.table_name!r} disposition={self.write_disposition}>"


def _make(
    func: Callable[..., Any],
    name: str | None,
    data_from: Resource | None,
    table_name: str | None,
    write_disposition: WriteDisposition,
    primary_key: Key,
    merge_key: Key,
) -> Resource:
    return Resource(
        func,
        name=name or func.__name__,
        table_name=table_name,
        write_disposition=write_disposition,
        primary_key=primary_key,
        merge_key=merge_key,
        data_from=data_from,
    )


@overload
def resource(func: Callable[..., Any], /) -> Resource: ...
@overload
def resource(
    func: None = None,
    /,
    *,
    name: str | None = None,
    table_name: str | None = None,
    write_disposition: WriteDisposition = "append",
    primary_key: Key = None,
    merge_key: Key = None,
) -> Callable[[Callable[..., Any]], Resource]: ...


def resource(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    table_name: str | None = None,
    write_disposition: WriteDisposition = "append",
    primary_key: Key = None,
    merge_key: Key = None,
) -> Resource | Callable[[Callable[..., Any]], Resource]:
    """Declare a resource: a function that yields dicts (rows) or lists of dicts (pages).

    Works bare (``@resource``) or with options; ``name`` defaults to the function name and
    ``table_name`` to the resource name.
    """

    def decorate(f: Callable[..., Any]) -> Resource:
        return _make(f, name, None, table_name, write_disposition, primary_key, merge_key)

    return decorate(func) if func is not None else decorate


def transformer(
    func: Callable[..., Any] | None = None,
    /,
    *,
    data_from: Resource,
    name: str | None = None,
    table_name: str | None = None,
    write_disposition: WriteDisposition = "append",
    primary_key: Key = None,
    merge_key: Key = None,
) -> Resource | Callable[[Callable[..., Any]], Resource]:
    """Declare a resource fed by each item (or page) of ``data_from``; it runs in its parent's task."""
    if not isinstance(data_from, Resource):
        raise TypeError(f"transformer data_from must be a resource, got {type(data_from).__name__}")

    def decorate(f: Callable[..., Any]) -> Resource:
        return _make(f, name, data_from, table_name, write_disposition, primary_key, merge_key)

    return decorate(func) if func is not None else decorate


def from_data(data: Iterable[Any], *, table_name: str, **hints: Any) -> Resource:
    """Wrap a plain iterable of rows (or pages) as a resource loading into ``table_name``."""
    return Resource(None, name=table_name, table_name=table_name, data=data, **hints)
