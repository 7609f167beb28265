"""The pipeline state document: layout, versioning, slots and the three-way slot merge.

The layout is dlt's (``reference/dlt-state.md`` §3)::

    {_state_version, _state_engine_version, _version_hash, pipeline_name, dataset_name, ...,
     sources: {<source>: {<source keys>..., resources: {<resource>: {<resource keys>...}}}}}

A *slot* is the unit of concurrent merging (DESIGN §5.3): every top-level pipeline key, every key a
source keeps for itself, and every resource's whole dict.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from airflow_state_provider.exceptions import StateConflictError
from airflow_state_provider.state.codec import state_version_hash

STATE_ENGINE_VERSION = 4
VERSION_KEYS = ("_state_version", "_state_engine_version", "_version_hash")
LOCAL_KEY = "_local"

Slot = tuple[str, ...]
_MISSING: Any = object()


def default_state(
    pipeline_name: str,
    dataset_name: str,
    destination_type: str | None = None,
    *,
    schema_name: str | None = None,
) -> dict:
    """A fresh document for a pipeline that never committed (dlt's defaults).

    As in dlt there is no ``sources`` key until some state is written: a run that writes none commits a
    document (and a version hash) without it.

    ``schema_name`` is the default schema (the source key of resources run without a source); dlt
    derives it from the pipeline name, see ``pipeline.default_schema_name``. Defaults to the pipeline name.
    """
    schema = schema_name or pipeline_name
    state = {
        "_state_version": 0,
        "_state_engine_version": STATE_ENGINE_VERSION,
        "pipeline_name": pipeline_name,
        "dataset_name": dataset_name,
        "default_schema_name": schema,
        "schema_names": [schema],
        "destination_type": destination_type,
        "destination_name": None,
    }
    state["_version_hash"] = state_version_hash(state)
    return state


def bump_version(state: dict, new_hash: str | None = None) -> bool:
    """Recompute ``_version_hash``; bump ``_state_version`` if the content changed. Returns changed.

    ``new_hash``: ``state_version_hash(state)`` if the caller already computed it.
    """
    if new_hash is None:
        new_hash = state_version_hash(state)
    changed = new_hash != state.get("_version_hash")
    if changed:
        state["_state_version"] = int(state.get("_state_version", 0)) + 1
        state["_version_hash"] = new_hash
    return changed


def content_equal(a: dict, b: dict) -> bool:
    """True when two documents differ at most in version bookkeeping and ``_local``."""
    return state_version_hash(a) == state_version_hash(b)


# Types whose values a state copy shares instead of copying (immutable).
_IMMUTABLE = frozenset({str, int, float, bool, type(None), Decimal, datetime, date, time, UUID, bytes})
# At this many nested containers, ``copy_tree`` hands over to ``copy.deepcopy`` (which also ends
# reference cycles, refused later by the encoder with their path); the encoder accepts 254.
_COPY_DEPTH = 256


def copy_tree(value: Any) -> Any:
    """A deep copy of a state document or value, as ``copy.deepcopy`` but several times faster on
    documents: dicts and lists are rebuilt, values of immutable types (str, numbers, None, Decimal,
    datetime, date, time, UUID, bytes) are shared, anything else is ``copy.deepcopy``-ed. A container
    referenced twice is copied twice (as after a round trip through the database)."""
    return _copy(value, 0)


def _copy(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if (kind is not dict and kind is not list) or depth >= _COPY_DEPTH:
        return copy.deepcopy(value)
    immutable = _IMMUTABLE
    if kind is dict:
        if set(map(type, value.values())) <= immutable:
            return value.copy()
        return {k: v if type(v) in immutable else _copy(v, depth + 1) for k, v in value.items()}
    if set(map(type, value)) <= immutable:
        return value.copy()
    return [v if type(v) in immutable else _copy(v, depth + 1) for v in value]


def sources_of(state: dict) -> dict:
    return state.setdefault("sources", {})


def source_slot(state: dict, source_key: str) -> dict:
    """The writable source-level dict, created empty on first use (as dlt's ``source_state()``: no
    ``resources`` key until a resource slot is made, so a new source's state is ``{}``)."""
    return sources_of(state).setdefault(source_key, {})


def resource_slot(state: dict, source_key: str, resource_name: str) -> dict:
    """The writable resource-level dict, created on first use (with the source's ``resources`` dict)."""
    return source_slot(state, source_key).setdefault("resources", {}).setdefault(resource_name, {})


def drop_untouched_empty_slots(state: dict, reference: dict) -> None:
    """Remove empty resource slots and sources that only exist because code looked at them.

    Reading ``current.resource_state()`` or binding a stateless incremental creates an empty slot; it
    must not make a new state version. Slots that are empty in ``reference`` too are kept as they are.
    """
    ref_sources = reference.get("sources") or {}
    sources = state.get("sources") or {}
    for source_key in list(sources):
        source = sources[source_key]
        ref_source = ref_sources.get(source_key) or {}
        ref_resources = ref_source.get("resources") or {}
        resources = source.get("resources") or {}
        for name in [n for n, slot in resources.items() if slot == {} and n not in ref_resources]:
            del resources[name]
        if source.get("resources") == {} and "resources" not in ref_source:
            del source["resources"]
        if source == {} and source_key not in ref_sources:
            del sources[source_key]
    if state.get("sources") == {} and "sources" not in reference:
        del state["sources"]


def iter_slots(state: dict) -> Iterator[tuple[Slot, Any]]:
    """Yield ``(slot, value)`` for every slot of a document (version bookkeeping excluded)."""
    for key, value in state.items():
        if key in VERSION_KEYS or key == LOCAL_KEY:
            continue
        if key != "sources":
            yield (key,), value
            continue
        for source_key, source in (value or {}).items():
            for skey, svalue in source.items():
                if skey != "resources":
                    yield ("sources", source_key, skey), svalue
            for resource_name, resource in (source.get("resources") or {}).items():
                yield ("sources", source_key, "resources", resource_name), resource


def slot_map(state: dict) -> dict[Slot, Any]:
    return dict(iter_slots(state))


def slot_path(slot: Slot) -> str:
    return ".".join(slot)


@dataclass(frozen=True)
class Change:
    """One difference between two state documents at dotted ``path``: ``kind`` is ``added``, ``removed``
    or ``changed``; ``old`` / ``new`` are the values (``None`` on the side where there is none)."""

    path: str
    kind: Literal["added", "removed", "changed"]
    old: Any = None
    new: Any = None


def diff(old: dict, new: dict, *, max_depth: int | None = None) -> list[Change]:
    """The differences between two documents, sorted by path: leaves, or the smallest sub-trees that
    differ (a whole sub-tree below ``max_depth`` levels). Version bookkeeping and ``_local`` are
    ignored; a type change is a change (``1`` to ``1.0``). A new or removed ``sources`` /
    ``sources.<source>.resources`` map is not a change itself: the slots inside it are named (dlt leaves
    empty containers out)."""
    out: list[Change] = []

    def walk(a: Any, b: Any, path: list[str]) -> None:
        if _is_container(path):
            a = {} if a is _MISSING else a
            b = {} if b is _MISSING else b
        if isinstance(a, dict) and isinstance(b, dict) and (max_depth is None or len(path) < max_depth):
            # small dicts (the layout's levels) are walked, not compared: a large value is compared
            # once, at its own level, not again as part of every dict around it
            if max(len(a), len(b)) > _WALKED_DICT_SIZE and same_value(a, b):
                return
            for k in sorted(a.keys() | b.keys(), key=str):
                walk(a.get(k, _MISSING), b.get(k, _MISSING), [*path, str(k)])
            return
        if same_value(a, b):
            return
        dotted = ".".join(path)
        if a is _MISSING:
            out.append(Change(dotted, "added", new=b))
        elif b is _MISSING:
            out.append(Change(dotted, "removed", old=a))
        else:
            out.append(Change(dotted, "changed", old=a, new=b))

    skip = {*VERSION_KEYS, LOCAL_KEY}
    walk({k: v for k, v in old.items() if k not in skip}, {k: v for k, v in new.items() if k not in skip}, [])
    return out


def same_value(a: Any, b: Any) -> bool:
    """``a == b`` with the types compared too, at every level: ``1``, ``1.0`` and ``True`` differ, and
    so do ``{"x": 1}`` and ``{"x": True}`` (the state hash tells them apart, so a merge must too)."""
    return a is b or (a == b and _same_types(a, b))


def _same_types(a: Any, b: Any) -> bool:
    # only reached for values that are ``==``: the walk checks types, ``==`` already checked the rest;
    # the types of a container's items are compared at C level, and only nested containers recursed into
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return _same_item_types(list(a.values()), list(map(b.__getitem__, a)))
    if isinstance(a, list | tuple):
        return _same_item_types(a, b)
    return True


def _same_item_types(a: Sequence[Any], b: Sequence[Any]) -> bool:
    types = list(map(type, a))
    if types != list(map(type, b)):
        return False
    if not any(issubclass(t, dict | list | tuple) for t in set(types)):
        return True
    return all(_same_types(x, y) for x, y in zip(a, b, strict=True) if isinstance(x, dict | list | tuple))


def changed_paths(old: dict, new: dict, *, max_depth: int = 8) -> list[str]:
    """The dotted paths of :func:`diff` (what a commit logs and audits)."""
    return [change.path for change in diff(old, new, max_depth=max_depth)]


_WALKED_DICT_SIZE = 32


def _is_container(path: list[str]) -> bool:
    """``sources`` and ``sources.<source>.resources``: the layout's maps of slots."""
    return path == ["sources"] or (len(path) == 3 and path[0] == "sources" and path[2] == "resources")


def merge(base: dict, ours: dict, theirs: dict, *, pipeline_name: str) -> dict:
    """Three-way merge per slot (DESIGN §5.3).

    ``base`` is what this run restored, ``ours`` what it wants to commit, ``theirs`` the newest committed
    document. A slot changed only by us comes from us, one changed only by them from them; a slot
    changed by both raises :class:`StateConflictError` -- also when both changed it to the same value:
    two runs that advanced the same cursor loaded the same rows, and the later one must not commit them.
    """
    b, o, t = slot_map(base), slot_map(ours), slot_map(theirs)
    merged_slots: dict[Slot, Any] = {}
    conflicts: list[Slot] = []
    for slot in sorted(b.keys() | o.keys() | t.keys()):
        vb, vo, vt = b.get(slot, _MISSING), o.get(slot, _MISSING), t.get(slot, _MISSING)
        if vb is _MISSING and vo == {}:
            vo = _MISSING  # an empty slot that exists because code looked at it is no change
        if same_value(vo, vb):
            value = vt
        elif same_value(vt, vb):
            value = vo
        else:
            conflicts.append(slot)
            continue
        if value is not _MISSING:
            merged_slots[slot] = value
    if conflicts:
        paths = ", ".join(slot_path(s) for s in conflicts)
        raise StateConflictError(
            f"pipeline {pipeline_name!r}: state slot(s) {paths} were changed by this run and by a "
            f"concurrent commit (state version {theirs.get('_state_version')}). Nothing was committed. "
            "Retry the task (it restores the newest state), or give each slot a single writer task.",
            pipeline_name=pipeline_name,
            state_path=paths,
        )
    return _build(merged_slots, theirs, ours)


def with_slots(base: dict, source: dict, take: Callable[[Slot], bool]) -> dict:
    """A copy of ``base`` whose slots selected by ``take`` come from ``source`` (what a checkpoint
    commits: the last committed document plus the slots it can prove consistent with its rows)."""
    out = {slot: value for slot, value in iter_slots(base) if not take(slot)}
    out.update((slot, value) for slot, value in iter_slots(source) if take(slot))
    return _build(out, base)


def rebase(working: dict, base: dict, committed: dict, pinned: Callable[[Slot], bool]) -> dict:
    """Bring a running document up to a newly committed one; returns the new merge base.

    After a commit (possibly merged with other writers), every slot that the run has not changed
    (``working`` equals ``base`` there) takes its committed value, in place in ``working``, so a later
    commit of the run never writes an older copy back. ``pinned`` slots are left alone: running code
    holds references into them (its own resource slots, its source's keys); if another writer changed
    one, the base keeps the old value and a later change by the run is a conflict. Slots the run changed
    and committed, or changed and not yet committed, keep their value; the new base says which.
    """
    w, b, c = slot_map(working), slot_map(base), slot_map(committed)
    new_base: dict[Slot, Any] = {}
    for slot in w.keys() | b.keys() | c.keys():
        vw, vb, vc = w.get(slot, _MISSING), b.get(slot, _MISSING), c.get(slot, _MISSING)
        if same_value(vw, vc):
            value = vc
        elif same_value(vw, vb) and not pinned(slot):
            _set_slot(working, slot, vc)
            value = vc
        else:
            value = vb
        if value is not _MISSING:
            new_base[slot] = value
    return _build(new_base, committed)


def _set_slot(doc: dict, slot: Slot, value: Any) -> None:
    if len(slot) == 1:
        parent, key = doc, slot[0]
    elif len(slot) == 3:
        parent, key = source_slot(doc, slot[1]), slot[2]
    else:
        parent, key = source_slot(doc, slot[1]).setdefault("resources", {}), slot[3]
    if value is _MISSING:
        parent.pop(key, None)
    else:
        parent[key] = copy_tree(value)


def _build(slots: dict[Slot, Any], template: dict, ours: dict | None = None) -> dict:
    doc: dict = {k: copy_tree(template[k]) for k in VERSION_KEYS if k in template}
    doc["sources"] = {}
    for slot, value in slots.items():
        value = copy_tree(value)
        if len(slot) == 1:
            doc[slot[0]] = value
        elif len(slot) == 3:
            doc["sources"].setdefault(slot[1], {})[slot[2]] = value
        else:
            src = doc["sources"].setdefault(slot[1], {})
            src.setdefault("resources", {})[slot[3]] = value
    # an empty ``resources`` dict is no slot: keep it where either side has it (dlt writes none itself
    # until a resource slot is made, and a document's hash depends on it)
    for side in (template, ours or {}):
        for source_key, source in (side.get("sources") or {}).items():
            has_resources = isinstance(source, dict) and "resources" in source
            if has_resources and (source_key in doc["sources"] or source == {"resources": {}}):
                doc["sources"].setdefault(source_key, {}).setdefault("resources", {})
    if not doc["sources"] and "sources" not in template and "sources" not in (ours or {}):
        del doc["sources"]
    return doc
