"""State paths: where a value sits in a state document, read, set and deleted through ``jsonpath-ng``.

A path is written in one of two ways:

* **dotted keys**, the convenience of ``airflow-state get/set``:
  ``sources.shop.resources.events.incremental.meta.updated.last_value``. A key may itself contain dots
  (an incremental's cursor path such as ``meta.updated``): at each level the longest key that fits the
  rest of the path wins. Digits index lists (``seen.0``). Any character but the dot may be in a key.
* **JSONPath** (jsonpath-ng's extended syntax), recognised by any of ``[ ] * ? ( ) $ @ ' " `` or ``..``:
  ``ids[1]``, ``ids[-1]``, ``a["x.y"]``, ``sources.*.last_sync``, ``ids[0:2]``, ``ids[?(@ > 2)]``.

:func:`get` and :func:`set` need a path to one location (dotted keys, or JSONPath made of keys and
single indexes); wildcards, slices, filters, several indexes and descendants select any number of values and
raise :class:`StatePathError` there. :func:`delete` takes every shape and deletes with the library's own
``filter``. Every error is a :class:`StatePathError` naming the path; nothing is changed when one is raised.
"""

from __future__ import annotations

import re
from typing import Any

from jsonpath_ng import JSONPath
from jsonpath_ng.ext import parse as _parse

from airflow_state_provider.exceptions import StatePathError

#: One step of a path to one location: a dict key or a list index.
Step = str | int

_JSONPATH_SYNTAX = re.compile(r"""[\[\]*?()$@'"`]|\.\.""")
_MISSING: Any = object()


def is_jsonpath(path: str) -> bool:
    """True when ``path`` uses JSONPath syntax beyond dotted keys (brackets, quotes, wildcards...)."""
    return bool(_JSONPATH_SYNTAX.search(path))


def parse(path: str) -> JSONPath:
    """The parsed JSONPath of ``path``; :class:`StatePathError` for a syntax error."""
    try:
        return _parse(path)
    except Exception as exc:  # jsonpath-ng raises several unrelated types for bad syntax
        raise StatePathError(f"{path!r} is not a valid JSONPath: {exc}", state_path=path) from None


def find(doc: Any, path: str) -> list[tuple[str, Any]]:
    """Every ``(dotted location, value)`` that ``path`` selects in ``doc`` (empty when none)."""
    if not is_jsonpath(path):
        try:
            steps = locate(doc, path)
        except StatePathError:
            return []
        return [(_dotted(steps), _walk(doc, steps))]
    return [(_dotted(_steps_of(m.full_path)), m.value) for m in parse(path).find(doc)]


def get(doc: Any, path: str) -> Any:
    """The value at ``path`` (the whole document for ``""``); :class:`StatePathError` if absent."""
    return _walk(doc, locate(doc, path))


def set(doc: Any, path: str, value: Any, *, create: bool = False) -> None:
    """Set the value at ``path`` in place. The location must exist unless ``create``, which adds the
    missing dict keys along the way (never list items)."""
    try:
        steps = locate(doc, path, create=create)
    except StatePathError as missing:
        if create:
            raise
        try:
            locate(doc, path, create=True)
        except StatePathError:
            raise missing from None
        raise StatePathError(
            f"{missing}; pass create=True (the CLI's --create) to add it", state_path=path
        ) from None
    if not steps:
        raise StatePathError("set needs a state path", state_path=path)
    _create(doc, steps)
    _walk(doc, steps[:-1])[steps[-1]] = value


def delete(doc: Any, path: str, *, keep: tuple[str, ...] = ()) -> list[str]:
    """Delete every value ``path`` selects in ``doc``; returns their dotted locations (empty: none).

    Locations listed in ``keep`` (dotted, top-level keys) are never deleted themselves, though values
    inside them may be; nor is the document itself (``$``). List items are deleted by jsonpath-ng's
    ``filter``, so indexes, slices and filters all work.
    """
    if not is_jsonpath(path):
        try:
            steps = locate(doc, path)
        except StatePathError:
            return []
        dotted = _dotted(steps)
        if not steps or dotted in keep:
            return []
        del _walk(doc, steps[:-1])[steps[-1]]
        return [dotted]
    expr = parse(path)
    hits = [_dotted(_steps_of(m.full_path)) for m in expr.find(doc)]
    hits = [h for h in hits if h and h not in keep]  # "" is the whole document: never deleted
    if not hits:
        return []
    kept = {k: v for k in keep if (v := _get_or_missing(doc, k)) is not _MISSING}
    expr.filter(lambda _: True, doc)
    for key, value in kept.items():  # put back what was protected (only top-level keys are kept)
        doc.setdefault(key, value)
    return hits


def locate(doc: Any, path: str, *, create: bool = False) -> list[Step]:
    """The steps (keys and indexes) from ``doc`` to the one location ``path`` names; ``[]`` for ``""``.
    With ``create`` the dict keys from the first missing one on may be absent (nothing is created)."""
    if not path:
        return []
    if is_jsonpath(path):
        return _walk_steps(doc, _single_steps(path), path, create=create)
    parts = path.split(".")
    if any(not p for p in parts):
        raise StatePathError(
            f"state path {path!r} has an empty key; write keys separated by single dots, e.g. "
            "sources.<source>.resources.<resource>.incremental.<cursor>.last_value",
            state_path=path,
        )
    return _walk_dotted(doc, parts, path, create=create)


# -- internals ------------------------------------------------------------------------------------


def _single_steps(path: str) -> list[Step]:
    """The keys and indexes of a JSONPath that names one location; an error naming the shape if not."""
    from jsonpath_ng import Child, Fields, Index, Root

    out: list[Step] = []

    def flatten(node: JSONPath) -> None:
        if isinstance(node, Child):
            flatten(node.left)
            flatten(node.right)
        elif isinstance(node, Root) and not out:
            return
        elif isinstance(node, Fields) and len(node.fields) == 1 and node.fields[0] != "*":
            out.append(node.fields[0])
        elif isinstance(node, Index) and len(node.indices) == 1:
            out.append(node.indices[0])
        else:
            raise StatePathError(
                f"state path {path!r} selects any number of values ({_shape(node)}); this operation "
                'needs a path to one value: keys and single indexes, e.g. ids[1] or a["x.y"].b',
                state_path=path,
            )

    flatten(parse(path))
    return out


def _shape(node: JSONPath) -> str:
    from jsonpath_ng import Descendants, Fields, Index, Slice, Wildcard
    from jsonpath_ng.ext.filter import Filter

    shapes: list[tuple[Any, str]] = [
        (Wildcard, "a wildcard"),
        (Slice, "a slice"),
        (Filter, "a filter"),
        (Descendants, "descendants"),
        (Index, "several indexes"),
        (Fields, "several keys or a wildcard"),
    ]
    return next((name for kind, name in shapes if isinstance(node, kind)), f"a {type(node).__name__}")


def _walk_steps(doc: Any, steps: list[Step], path: str, *, create: bool) -> list[Step]:
    """Check JSONPath ``steps`` against ``doc``; digits given as keys index lists."""
    node: Any = doc
    out: list[Step] = []
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        if isinstance(node, dict):
            if step not in node:
                if not create:
                    raise _not_found(path, out, str(step), node)
                if isinstance(step, int):
                    raise _not_container(path, out, node, list)
                return [*out, *steps[i:]]
            out.append(step)
        elif isinstance(node, list):
            out.append(_list_index(node, str(step), path, out))
        else:
            raise _not_container(path, out, node, None)
        if not last:
            node = node[out[-1]]
    return out


def _walk_dotted(doc: Any, parts: list[str], path: str, *, create: bool) -> list[Step]:
    """Walk dotted ``parts``; at each dict the longest key that fits the rest of the path wins."""
    node, i = doc, 0
    out: list[Step] = []
    while True:
        rest = parts[i:]
        step: Step
        if isinstance(node, dict):
            key = next(
                (".".join(rest[:j]) for j in range(len(rest), 0, -1) if ".".join(rest[:j]) in node), None
            )
            if key is None:
                if not create:
                    raise _not_found(path, out, rest[0], node)
                return [*out, *rest]
            step, used = key, key.count(".") + 1
        elif isinstance(node, list):
            step, used = _list_index(node, rest[0], path, out), 1
        else:
            raise _not_container(path, out, node, None)
        out.append(step)
        if i + used == len(parts):
            return out
        node = node[step]
        i += used


def _create(doc: Any, steps: list[Step]) -> None:
    """Create the missing dict keys of ``steps`` except the last, which the caller assigns."""
    node = doc
    for step in steps[:-1]:
        node = node.setdefault(step, {}) if isinstance(node, dict) else node[step]


def _list_index(node: list, part: str, path: str, walked: list[Step]) -> int:
    try:
        index = int(part)
    except ValueError:
        index = None
    if index is None or not -len(node) <= index < len(node):
        raise StatePathError(
            f"state path {path!r} not found: {_dotted(walked)} is a list of {len(node)} item(s), "
            f"{part!r} is not an index in it",
            state_path=path,
        )
    return index


def _not_found(path: str, walked: list[Step], part: str, node: dict) -> StatePathError:
    keys = sorted(map(str, node))
    listed = ", ".join(keys[:30]) + (", ..." if len(keys) > 30 else "")
    return StatePathError(
        f"state path {path!r} not found: {_dotted(walked) or 'the document'} has no key {part!r} "
        f"(keys: {listed or 'none'})",
        state_path=path,
    )


def _not_container(path: str, walked: list[Step], node: Any, wanted: type | None) -> StatePathError:
    what = "a list" if wanted is list else "a dict or list"
    return StatePathError(
        f"state path {path!r} not found: {_dotted(walked) or '(the document)'} is a "
        f"{type(node).__name__}, not {what}",
        state_path=path,
    )


def _walk(doc: Any, steps: list[Step]) -> Any:
    for step in steps:
        doc = doc[step]
    return doc


def _get_or_missing(doc: Any, key: str) -> Any:
    return doc.get(key, _MISSING) if isinstance(doc, dict) else _MISSING


def _steps_of(full_path: JSONPath) -> list[Step]:
    """The keys and indexes of a match's ``full_path`` (always one location)."""
    from jsonpath_ng import Child, Fields, Index

    if isinstance(full_path, Child):
        return [*_steps_of(full_path.left), *_steps_of(full_path.right)]
    if isinstance(full_path, Fields):
        return list(full_path.fields)
    if isinstance(full_path, Index):
        return list(full_path.indices)
    return []


def _dotted(steps: list[Step]) -> str:
    return ".".join(map(str, steps))
