"""State slots of mapped task instances (dynamic task mapping).

Every instance of a mapped stateful task runs the same pipeline and resource names, so without help
they would all read and write one state slot. Each instance therefore keeps its own slot: the resource
name gets a suffix derived from the values of the instance's mapped arguments (``orders`` →
``orders__region_eu``), so the slot follows the values and not ``map_index``, which changes when the
upstream list is reordered or grows. The table name does not change.

The suffix is ``__<name>_<value>`` per mapped argument in name order when every value is short and
plain (a string of letters, digits, ``.``, ``-`` and single ``_``, an int, a bool); otherwise ``__m``
followed by 12 characters of a hash of the canonical JSON of the mapped values. A ``state_key`` given
to the operator replaces the derived suffix (``__<state_key>``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import inspect
import itertools
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from uuid import UUID

from airflow_state_provider.exceptions import MappedSlotConflictError

#: operator arguments that choose the pipeline or the destination: mapping them separates the state
LOCATING_ARGS = frozenset({"pipeline_name", "dataset_name", "destination_conn_id"})
#: operator arguments that say how, not what, to load: they never key a slot
NON_KEY_ARGS = frozenset(
    {"write_disposition", "primary_key", "merge_key", "refresh", "checkpoint_every", "dev_mode"}
)
_PLAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]|_(?!_))*")
_MAX_PLAIN = 40
STATE_KEY_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]|_(?!_)){0,99}")


class _NotKeyable(Exception):
    pass


def _base_operator_args() -> frozenset[str]:
    from airflow_state_provider._airflow_compat import BaseOperator

    return frozenset(inspect.signature(BaseOperator.__init__).parameters)


def key_value(value: Any) -> Any:
    """A JSON value standing for ``value`` in a slot key; raises ``_NotKeyable`` for other objects."""
    from airflow_state_provider.extract.resource import Resource
    from airflow_state_provider.extract.source import Source

    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [key_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): key_value(v) for k, v in value.items()}
    if isinstance(value, Resource | Source):
        # a resource or source bound to different arguments per instance: key by those arguments
        args = getattr(value, "_args", ())
        kwargs = getattr(value, "_kwargs", {})
        key: dict[str, Any] = {"name": value.name}
        if args:
            key["args"] = key_value(list(args))
        if kwargs:
            key["kwargs"] = key_value(dict(kwargs))
        return key
    raise _NotKeyable(type(value).__name__)


def _flatten(mapped: Mapping[str, Any]) -> dict[str, Any]:
    """Mapped values as name → key value; a resource's keyword arguments stand for the resource."""
    out: dict[str, Any] = {}
    for name, value in mapped.items():
        key = key_value(value)
        if isinstance(key, dict) and "name" in key and set(key) <= {"name", "kwargs"}:
            # a mapped resource ``orders(region="eu")``: its arguments are what differs
            kwargs = key.get("kwargs") or {}
            out.update({f"{k}": v for k, v in kwargs.items()} if kwargs else {name: key["name"]})
        else:
            out[name] = key
    return out


def slot_suffix(mapped: Mapping[str, Any]) -> str:
    """The slot suffix for one instance's mapped values (``""`` when nothing is mapped)."""
    flat = _flatten(mapped)
    if not flat:
        return ""
    parts = []
    for name in sorted(flat):
        value = flat[name]
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if (
            isinstance(value, bool | int | str)
            and _PLAIN.fullmatch(name)
            and _PLAIN.fullmatch(text)
            and len(text) <= _MAX_PLAIN
        ):
            parts.append(f"{name}_{text}")
        else:
            parts = []
            break
    if parts:
        return "__" + "__".join(parts)
    canonical = json.dumps(flat, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return "__m" + base64.b32encode(digest).decode("ascii")[:12].lower()


def describe(mapped: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(mapped.items())) or "(no mapped values)"


def check_state_key(state_key: str, task_id: str) -> str:
    if not STATE_KEY_RE.fullmatch(state_key):
        raise ValueError(
            f"task {task_id!r}: state_key {state_key!r} must be 1 to 100 letters, digits, '.', '-' or "
            "single '_', starting with a letter or digit (it becomes part of a resource name)"
        )
    return "__" + state_key


def _mapped_operator(task: Any) -> Any:
    dag = getattr(task, "dag", None)
    mapped = dag.task_dict.get(task.task_id) if dag is not None else None
    return mapped if getattr(mapped, "is_mapped", False) and hasattr(mapped, "_expand_input_attr") else None


def _key_args(mapped: Mapping[str, Any], decorated: bool) -> dict[str, Any]:
    """The mapped arguments that key a slot: a decorated function's arguments, an operator's data."""
    if decorated:
        return dict(mapped.get("op_kwargs", mapped))
    skip = LOCATING_ARGS | NON_KEY_ARGS | _base_operator_args() | {"state_key"}
    return {k: v for k, v in mapped.items() if k not in skip}


def _all_instances(expand_input: Any, context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The mapped values of every instance of the task in this run, in map_index order."""
    value = expand_input.value
    if isinstance(value, dict):  # expand(): the product of the lists, the last argument fastest
        lists = {}
        for name, arg in value.items():
            resolved = arg.resolve(context) if hasattr(arg, "resolve") else arg
            lists[name] = list(resolved.items()) if isinstance(resolved, Mapping) else list(resolved)
        names = list(lists)
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*lists.values())]
    # expand_kwargs(): a list of dicts, or an upstream result that is one
    items = value.resolve(context) if hasattr(value, "resolve") else value
    return [dict(i.resolve(context) if hasattr(i, "resolve") else i) for i in items]


def mapped_slot(
    task: Any, context: Mapping[str, Any], *, decorated: bool, state_key: str | None, log: Any
) -> str:
    """The slot suffix of this task instance; raises if another mapped instance would share its slot.

    ``state_key`` (rendered) wins when given. Otherwise an unmapped task, or a mapped one whose only
    mapped arguments choose the pipeline, dataset or connection, gets ``""``. Raises
    :class:`MappedSlotConflictError` naming both instances when two instances of this run get the
    same suffix, and ``ValueError`` when a mapped value cannot key a slot (give the task a
    ``state_key``) or ``state_key`` is not usable in a resource name.
    """
    ti = context.get("ti")
    map_index = getattr(ti, "map_index", -1)
    mapped_op = None if map_index is None or map_index < 0 else _mapped_operator(task)
    if mapped_op is None:
        return check_state_key(state_key, task.task_id) if state_key else ""
    expand_input = getattr(mapped_op, mapped_op._expand_input_attr)
    this, _ = expand_input.resolve(context)
    this_key = _key_args(this, decorated)
    if state_key:
        suffix = check_state_key(state_key, task.task_id)
        if decorated or "state_key" not in this:
            return suffix  # a template rendered per instance: the commit guards a shared slot
    else:
        try:
            suffix = slot_suffix(this_key)
        except _NotKeyable as e:
            raise ValueError(
                f"task {task.task_id!r}, mapped instance {map_index} ({describe(this_key)}): a mapped value "
                f"of type {e.args[0]} cannot key a state slot; give the task a state_key (templated) that "
                "differs per instance"
            ) from None
        if not suffix:
            return ""
    try:
        siblings = _all_instances(expand_input, context)
    except Exception as e:  # an upstream that cannot be read here: the commit still guards the slot
        log.warning("Cannot list the other mapped instances to check their state slots (%s)", e)
        return suffix
    for index, other in enumerate(siblings):
        if index != map_index:
            _check_sibling(task.task_id, (map_index, this_key), (index, other), suffix, decorated, state_key)
    return suffix


def _check_sibling(
    task_id: str,
    this: tuple[int, Any],
    other: tuple[int, Mapping[str, Any]],
    suffix: str,
    decorated: bool,
    state_key: str | None,
) -> None:
    """Raise :class:`MappedSlotConflictError` if mapped instance ``other`` (index, its mapped
    arguments) gets ``suffix`` too; ``this`` is (index, the slot-keying arguments) of this one."""
    (map_index, this_key), (index, arguments) = this, other
    other_key = _key_args(arguments, decorated)
    try:
        if state_key:
            other_suffix = check_state_key(str(arguments.get("state_key")), task_id)
        else:
            other_suffix = slot_suffix(other_key)
    except (_NotKeyable, ValueError):
        return
    if other_suffix == suffix:
        first, second = sorted((index, map_index))
        raise MappedSlotConflictError(
            f"task {task_id!r}: mapped instances {first} and {second} would share one state slot "
            f"(suffix {suffix!r}; instance {map_index}: {describe(this_key)}; instance {index}: "
            f"{describe(other_key)}). Map over distinct values, or give the task a state_key that "
            "differs per instance."
        )


__all__ = ["MappedSlotConflictError", "check_state_key", "mapped_slot", "slot_suffix"]
