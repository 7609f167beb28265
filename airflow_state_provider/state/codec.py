"""dlt's wire format for pipeline state: typed JSON, the compressed ``state`` blob and the version hash.

Typed JSON is orjson output in which values JSON cannot express are strings prefixed with one character of
the Unicode Private Use Area (dlt's ``PUA_START`` = U+F026):

=========  ==========================================  ==========================
prefix     Python type                                 text after the prefix
=========  ==========================================  ==========================
U+F026     ``Decimal``                                 ``str(value)``
U+F027     ``datetime`` (incl. pendulum ``DateTime``)  ``value.isoformat()``
U+F028     ``date``                                    ``value.isoformat()``
U+F029     ``UUID``                                    ``str(value)``
U+F02A     dlt ``HexBytes`` (decoded as ``bytes``)     hex
U+F02B     ``bytes``                                   standard base64
U+F02C     dlt ``Wei`` (decoded as ``Decimal``)        ``str(value)``
U+F02D     ``time``                                    ``value.isoformat()``
=========  ==========================================  ==========================

For documents without UUIDs the output is byte-identical to dlt's ``typed_dumpb`` (same orjson options, same
prefixes), so blobs and version hashes match dlt's. dlt's orjson backend writes UUIDs as plain strings; we
write them with their prefix so they come back as ``UUID`` (dlt 1.31 decodes that prefix to ``UUID`` too).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import zlib
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

import orjson

from airflow_state_provider.exceptions import StateCorruptError, StateNotSerializableError

DEFAULT_MAX_DECODED_BYTES: int = 64 * 1024 * 1024
"""Largest decompressed state document ``decode_state`` accepts, unless the caller passes another limit."""

PUA_START = 0xF026
_DECIMAL = chr(PUA_START)
_DATETIME = chr(PUA_START + 1)
_DATE = chr(PUA_START + 2)
_UUID = chr(PUA_START + 3)
_B64BYTES = chr(PUA_START + 5)
_TIME = chr(PUA_START + 7)
_FIRST_MARKER = chr(PUA_START)
_LAST_MARKER = chr(PUA_START + 7)

# Every marker encodes to EF 80 A6..AD in UTF-8; a document without this lead has no typed values.
_MARKER_UTF8_LEAD = b"\xef\x80"
# A JSON string opening with a marker. Also matches escaped quotes and keys, which only costs a re-check.
_MARKED_STRING_START = re.compile(b'"\xef\x80[\xa6-\xad]')

# Without OPT_NON_STR_KEYS orjson fails on a non-str dict key, which is then refused by path (it would come
# back as a str); only str subclasses (StrEnum), equal to their str, are retried with the option.
_DUMPS_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
# orjson serializes at most 254 nested containers (depths 0..253).
_MAX_NESTING = 254
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

_INFLATE_STEP = 1024 * 1024

_HASH_EXCLUDED_KEYS = frozenset({"_local", "_state_version", "_state_engine_version", "_version_hash"})

_ALLOWED = (
    "State values must be JSON (dict, list, str, int, float, bool, None) or datetime, date, time, "
    "Decimal, bytes or UUID"
)


# --------------------------------------------------------------------------------------------- encoding


def typed_dumps(obj: Any, *, sort_keys: bool = False) -> bytes:
    """Serialize ``obj`` to dlt's typed JSON: compact, raw UTF-8, typed values behind their PUA prefix.

    Tuples become lists and enums their value (as orjson and dlt do). A dict key that is not a str
    (int, float, bool, None, tuple, datetime, ...) is refused: dlt would write it as a string, so
    ``key in seen`` would be False after a restore. NaN and infinities are refused: orjson and dlt
    would write them as ``null``, and the value would come back as ``None``.

    Raises:
        StateNotSerializableError: a value (or dict key) cannot be stored, or a string starts with a
            typed-value prefix and would be read back as another type. The message names the dotted
            path of the value inside ``obj`` and its type.
    """
    typed_count = [0]

    def encode_typed(value: Any) -> str:
        typed_count[0] += 1
        return _encode_typed(value)

    option = _DUMPS_OPTIONS | orjson.OPT_SORT_KEYS if sort_keys else _DUMPS_OPTIONS
    prepared, uuid_count, non_finite = _prepare(obj, 0)
    try:
        out = orjson.dumps(prepared, default=encode_typed, option=option)
    except orjson.JSONEncodeError as exc:
        problem = _find_problem(obj, check_markers=False)
        if problem is not None:
            raise _not_serializable(*problem) from exc
        try:  # keys that are str subclasses (a StrEnum member): equal to the str they are written as
            out = orjson.dumps(prepared, default=encode_typed, option=option | orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:  # pragma: no cover - orjson failed on something the walker accepts
            raise StateNotSerializableError(f"State cannot be serialized: {exc}. {_ALLOWED}.") from exc
    if _MARKER_UTF8_LEAD in out and (len(_MARKED_STRING_START.findall(out)) > typed_count[0] + uuid_count):
        problem = _find_problem(obj, check_markers=True)
        if problem is not None:
            raise _not_serializable(*problem)
    if non_finite:  # orjson wrote it as null: find the first one for the message
        problem = _find_non_finite(obj)
        if problem is not None:
            raise _not_serializable(*problem)
    return out


def _find_non_finite(root: Any) -> tuple[str, str, str] | None:
    """``(path, what, hint)`` of the first NaN or infinite float in ``root`` (iterative: no recursion).

    Paths are built only for containers and for the culprit, so a clean document costs one pass.
    """
    isfinite = math.isfinite
    stack: list[tuple[Any, str, int]] = [(root, "", 0)]
    while stack:
        obj, path, depth = stack.pop()
        if isinstance(obj, float):
            if not isfinite(obj):
                return path, f"the float {obj!r}", "JSON has no NaN or Infinity: store None or a string"
            continue
        if depth >= _MAX_NESTING:
            continue
        if isinstance(obj, dict):
            pairs: Iterable[tuple[Any, Any]] = obj.items()
            name: Callable[[str, Any], str] = _join
        elif isinstance(obj, list) or type(obj) is tuple:
            pairs = enumerate(obj)
            name = _index
        else:
            continue
        children = []
        for key, value in pairs:
            t = type(value)
            if t is str or t is int or t is bool or value is None:
                continue
            if t is float and isfinite(value):
                continue
            children.append((value, name(path, key), depth + 1))
        stack.extend(reversed(children))  # the first culprit in document order is reported
    return None


def _index(path: str, index: int) -> str:
    return f"{path}[{index}]"


def encode_state(state: dict) -> str:
    """Return dlt's ``state`` column value: base64 of the level-9 zlib of the typed JSON, without ``_local``.

    The same as ``compress_state(dump_state(state))``.

    Raises:
        StateNotSerializableError: see ``typed_dumps``.
    """
    return compress_state(dump_state(state))


def dump_state(state: dict) -> bytes:
    """The typed JSON of ``state`` without ``_local``: what the ``state`` column compresses (its length
    is the size that ``max_state_bytes`` limits). Raises :class:`StateNotSerializableError`."""
    doc = {k: v for k, v in state.items() if k != "_local"} if "_local" in state else state
    return typed_dumps(doc)


def compress_state(dumped: bytes) -> str:
    """dlt's ``state`` column value for the output of :func:`dump_state`."""
    return base64.b64encode(zlib.compress(dumped, 9)).decode("ascii")


def state_version_hash(state: dict) -> str:
    """Return dlt's ``version_hash`` of ``state``: padded base64 of sha3-256 of its key-sorted typed JSON.

    ``_local``, ``_state_version``, ``_state_engine_version`` and ``_version_hash`` are left out, as dlt
    does for pipeline state.
    """
    doc = {k: v for k, v in state.items() if k not in _HASH_EXCLUDED_KEYS}
    digest = hashlib.sha3_256(typed_dumps(doc, sort_keys=True)).digest()
    return base64.b64encode(digest).decode("ascii")


def _encode_typed(value: Any) -> str:
    """orjson ``default``: the prefixed text of a typed value; anything else is not serializable."""
    if isinstance(value, Decimal):
        return _DECIMAL + str(value)
    if isinstance(value, datetime):  # before date: datetime is a date subclass
        return _DATETIME + value.isoformat()
    if isinstance(value, date):
        return _DATE + value.isoformat()
    if isinstance(value, time):
        return _TIME + value.isoformat()
    if isinstance(value, bytes):
        return _B64BYTES + base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__qualname__} is not serializable")


# Values the scan before encoding skips without a look: orjson writes them as they are.
_PLAIN_TYPES = frozenset({str, int, bool, type(None)})
_PLAIN_OR_FLOAT = _PLAIN_TYPES | {float}


def _prepare(obj: Any, depth: int) -> tuple[Any, int, bool]:
    """One walk before encoding: UUIDs replaced by their prefixed string, copying only the containers
    that hold one; returns the (possibly same) object, the number of UUIDs replaced, and whether a
    NaN or infinite float was seen (orjson would write it as ``null``).

    orjson serializes ``UUID`` natively (without calling ``default``), so they must be converted first.
    A container of plain values only (str, int, bool, None and finite floats: most of a large state) is
    checked with C-level passes over its values, not a Python loop.
    """
    if isinstance(obj, UUID):
        return _UUID + str(obj), 1, False
    if isinstance(obj, float):
        return obj, 0, not math.isfinite(obj)
    if depth >= _MAX_NESTING:
        return obj, 0, False  # orjson rejects this nesting anyway (and this stops on reference cycles)
    if isinstance(obj, dict):
        return _prepare_container(obj, obj.values(), depth)
    if isinstance(obj, list) or type(obj) is tuple:
        return _prepare_container(obj, obj, depth)
    return obj, 0, False


def _prepare_container(obj: Any, values: Iterable[Any], depth: int) -> tuple[Any, int, bool]:
    kinds = set(map(type, values))
    if kinds <= _PLAIN_TYPES:
        return obj, 0, False
    non_finite = float in kinds and not all(map(math.isfinite, [v for v in values if type(v) is float]))
    if kinds <= _PLAIN_OR_FLOAT:
        return obj, 0, non_finite
    entries: Iterable[tuple[Any, Any]] = obj.items() if isinstance(obj, dict) else enumerate(obj)
    count = 0
    copied: dict | list | None = None
    for key, value in entries:
        if type(value) in _PLAIN_OR_FLOAT:
            continue
        new, n, bad = _prepare(value, depth + 1)
        non_finite = non_finite or bad
        if not n:
            continue
        count += n
        if copied is None:
            copied = dict(obj) if isinstance(obj, dict) else list(obj)
        copied[key] = new
    return (obj if copied is None else copied), count, non_finite


# ------------------------------------------------------------------------------ locating a bad value


def _find_problem(root: Any, *, check_markers: bool) -> tuple[str, str, str] | None:
    """Return ``(path, what, hint)`` for the first value orjson (or the round trip) cannot handle.

    Runs only after serialization failed (or a marker needs checking), so it may be slow.
    """
    return _ProblemFinder(check_markers).visit(root, "", 0)


class _ProblemFinder:
    """A walk of a document that remembers the containers it is inside (to report a cycle)."""

    def __init__(self, check_markers: bool) -> None:
        self.check_markers = check_markers
        self.ancestors: set[int] = set()

    def visit(self, obj: Any, path: str, depth: int) -> tuple[str, str, str] | None:
        if isinstance(obj, str):
            return _string_problem(obj, path, check_markers=self.check_markers)
        if obj is None or isinstance(obj, (bool, float, int)):
            return _number_problem(obj, path)
        if isinstance(obj, Enum):
            return self.visit(obj.value, path, depth)
        if isinstance(obj, (dict, list)) or type(obj) is tuple:
            return self.visit_container(obj, path, depth)
        return _other_problem(obj, path)

    def visit_container(self, obj: dict | list | tuple, path: str, depth: int) -> tuple[str, str, str] | None:
        if id(obj) in self.ancestors:
            return path, "a reference to a container that holds it (a cycle)", "store a copy instead"
        if depth >= _MAX_NESTING:
            return path, f"nested {_MAX_NESTING} containers deep", "flatten the structure"
        self.ancestors.add(id(obj))
        problem = (
            self.visit_dict(obj, path, depth) if isinstance(obj, dict) else self.visit_items(obj, path, depth)
        )
        self.ancestors.discard(id(obj))
        return problem

    def visit_dict(self, obj: dict, path: str, depth: int) -> tuple[str, str, str] | None:
        for key, value in obj.items():
            child = _join(path, key)
            problem = _key_problem(key, child) or self.visit(value, child, depth + 1)
            if problem is not None:
                return problem
        return None

    def visit_items(self, obj: list | tuple, path: str, depth: int) -> tuple[str, str, str] | None:
        for index, value in enumerate(obj):
            problem = self.visit(value, f"{path}[{index}]", depth + 1)
            if problem is not None:
                return problem
        return None


def _number_problem(obj: float | None, path: str) -> tuple[str, str, str] | None:
    if isinstance(obj, int) and not _INT_MIN <= obj <= _INT_MAX:
        return path, "an int outside the 64-bit range", "store it as a str or Decimal"
    return None


def _other_problem(obj: Any, path: str) -> tuple[str, str, str] | None:
    if isinstance(obj, (Decimal, datetime, date, time, UUID, bytes)):
        return None
    kind = type(obj).__qualname__
    if isinstance(obj, (set, frozenset)):
        return path, f"a value of type {kind}", "convert it to a sorted list"
    return path, f"a value of type {kind}", "convert it to one of these types (e.g. a dict of its fields)"


def _string_problem(value: str, path: str, *, check_markers: bool) -> tuple[str, str, str] | None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return path, "a str with an unpaired surrogate", "fix the text (it is not valid Unicode)"
    if check_markers and value and _FIRST_MARKER <= value[0] <= _LAST_MARKER:
        decoded = _decode_marked(value)
        if not isinstance(decoded, str):
            return (
                path,
                f"a str starting with U+{ord(value[0]):04X}, dlt's marker for typed values "
                f"(it would be read back as {type(decoded).__qualname__})",
                "remove the leading private-use character",
            )
    return None


def _key_problem(key: Any, path: str) -> tuple[str, str, str] | None:
    if isinstance(key, str):
        return _string_problem(key, path, check_markers=False)
    return (
        path,
        f"a dict key of type {type(key).__qualname__} ({key!r})",
        "state is JSON, so the key would come back as a str and `key in ...` would miss it after a "
        "restore (the work it marks would run again): use str keys, e.g. d[str(key)]",
    )


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _not_serializable(path: str, what: str, hint: str) -> StateNotSerializableError:
    where = path or "<root>"
    return StateNotSerializableError(
        f"State value at '{where}' cannot be stored: it is {what}. {_ALLOWED}; {hint}."
    )


# --------------------------------------------------------------------------------------------- decoding


def _decode_datetime(text: str) -> datetime:
    # Older writers end UTC timestamps with "Z"; normalise it rather than rely on the Python version.
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def _decode_b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


_DECODERS: tuple[Callable[[str], Any], ...] = (
    Decimal,
    _decode_datetime,
    date.fromisoformat,
    UUID,
    bytes.fromhex,  # dlt HexBytes
    _decode_b64,
    Decimal,  # dlt Wei
    time.fromisoformat,
)


def _decode_marked(value: str) -> Any:
    """Decode a string whose first character is a marker; a string that does not parse stays a string."""
    try:
        return _DECODERS[ord(value[0]) - PUA_START](value[1:])
    except (ValueError, ArithmeticError):
        return value  # like dlt: a marked string that does not parse is kept as text


def typed_loads(data: bytes | bytearray | str) -> Any:
    """Parse typed JSON and turn prefixed strings back into their typed values.

    ``datetime`` values come back as stdlib ``datetime`` (a pendulum ``DateTime`` that was stored returns
    as a stdlib ``datetime`` with the same instant and UTC offset; the zone name is not stored); naive
    stays naive. Dict keys are never decoded. A prefixed string that does not parse stays a string.

    Raises:
        orjson.JSONDecodeError: ``data`` is not valid JSON (a ``ValueError``).
    """
    doc = orjson.loads(data)
    if isinstance(data, (bytes, bytearray, memoryview)) and _MARKER_UTF8_LEAD not in data:
        return doc
    if type(doc) is str:
        return _decode_marked(doc) if doc and _FIRST_MARKER <= doc[0] <= _LAST_MARKER else doc
    # Iterative: orjson accepts 1024 nesting levels, more than Python's default recursion limit.
    stack: list[Any] = [doc] if isinstance(doc, (dict, list)) else []
    while stack:
        container = stack.pop()
        pairs = container.items() if type(container) is dict else enumerate(container)
        for key, value in pairs:
            if type(value) is str:
                if value and _FIRST_MARKER <= value[0] <= _LAST_MARKER:
                    container[key] = _decode_marked(value)
            elif type(value) is dict or type(value) is list:
                stack.append(value)
    return doc


def decode_state(blob: str, *, max_bytes: int = DEFAULT_MAX_DECODED_BYTES, where: str = "") -> dict:
    """Decode a ``state`` column value written by dlt or ``encode_state``.

    Like dlt, a value that is not valid base64 is read as plain (typed) JSON text. The compressed form is
    inflated with a hard output limit of ``max_bytes``, so a decompression bomb is rejected without being
    expanded. Never unpickles or evaluates anything.

    Args:
        blob: the stored text.
        max_bytes: the largest decompressed (or plain JSON) document accepted.
        where: what is being decoded, for error messages, e.g. ``"pipeline 'p' version 7"``.

    Raises:
        StateCorruptError: the value does not decode to a JSON object or exceeds ``max_bytes``.
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    if not isinstance(blob, str):
        raise _corrupt(where, f"expected text, got a value of type {type(blob).__qualname__}")
    try:
        compressed = base64.b64decode(blob, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text (which dlt does not catch)
        raw: bytes | bytearray | str = blob
        if len(blob) > max_bytes or len(blob.encode("utf-8", "surrogatepass")) > max_bytes:
            raise _corrupt(where, f"the plain JSON text is larger than the {max_bytes}-byte limit") from None
        kind = "is neither base64 nor valid JSON"
    else:
        raw = _inflate(compressed, max_bytes, where)
        kind = "decompresses to invalid JSON"
    try:
        doc = typed_loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _corrupt(where, f"the value {kind} ({exc})") from exc
    if not isinstance(doc, dict):
        raise _corrupt(where, f"the document is a {type(doc).__qualname__}, not a JSON object")
    return doc


def _inflate(compressed: bytes, max_bytes: int, where: str) -> bytearray:
    """Inflate a zlib stream into at most ``max_bytes`` bytes; a bomb stops at the limit, not at its end."""
    inflater = zlib.decompressobj()
    out = bytearray()
    pending = compressed
    try:
        while not inflater.eof:
            # Bounded steps into one growing buffer: peak memory stays near max_bytes, not a multiple.
            chunk = inflater.decompress(pending, min(_INFLATE_STEP, max_bytes + 1 - len(out)))
            out += chunk
            if len(out) > max_bytes:
                raise _corrupt(
                    where,
                    f"it decompresses to more than the {max_bytes}-byte limit "
                    "(refused: possible decompression bomb)",
                )
            pending = inflater.unconsumed_tail
            if not chunk and not pending:
                raise _corrupt(where, "the zlib stream is truncated")
    except zlib.error as exc:
        raise _corrupt(where, f"the value is base64 but not a zlib stream ({exc})") from exc
    if inflater.unused_data:
        raise _corrupt(where, f"{len(inflater.unused_data)} unexpected bytes follow the zlib stream")
    return out


def _corrupt(where: str, what: str) -> StateCorruptError:
    subject = f"Stored state of {where}" if where else "Stored state"
    return StateCorruptError(f"{subject} cannot be decoded: {what}.")


# ------------------------------------------------------------------------------------------ structure


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return f"a {type(value).__name__} ({value!r})"[:80]


def structure_problem(state: Any) -> tuple[str, str] | None:
    """``(path, problem)`` for the first place where ``state`` does not have dlt's layout, else None.

    The layout every reader relies on: an object whose ``sources`` (if present) maps source names
    to objects, each source's ``resources`` (if present) maps resource names to objects, and each
    resource's ``incremental`` (if present) maps cursor paths to objects whose ``unique_hashes`` (if
    present) is a list of strings; ``_state_version`` is an
    int and ``default_schema_name`` a string or null. Values inside the slots are free.
    """
    if not isinstance(state, dict):
        return "", f"the document is {_kind(state)}, not an object"
    version = state.get("_state_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        return "_state_version", f"is {_kind(version)}, not an integer"
    schema = state.get("default_schema_name")
    if schema is not None and not isinstance(schema, str):
        return "default_schema_name", f"is {_kind(schema)}, not a string or null"
    if "sources" not in state:
        return None
    sources = state["sources"]
    if not isinstance(sources, dict):
        return "sources", f"is {_kind(sources)}, not an object of sources"
    for source_key, source in sources.items():
        problem = _source_problem(f"sources.{source_key}", source)
        if problem is not None:
            return problem
    return None


def _source_problem(path: str, source: Any) -> tuple[str, str] | None:
    if not isinstance(source, dict):
        return path, f"is {_kind(source)}, not an object (a source's state)"
    if "resources" not in source:
        return None
    resources = source["resources"]
    if not isinstance(resources, dict):
        return f"{path}.resources", f"is {_kind(resources)}, not an object of resources"
    for resource_name, slot in resources.items():
        problem = _slot_problem(f"{path}.resources.{resource_name}", slot)
        if problem is not None:
            return problem
    return None


def _slot_problem(path: str, slot: Any) -> tuple[str, str] | None:
    if not isinstance(slot, dict):
        return path, f"is {_kind(slot)}, not an object (a resource's state)"
    if "incremental" not in slot:
        return None
    incrementals = slot["incremental"]
    if not isinstance(incrementals, dict):
        return f"{path}.incremental", f"is {_kind(incrementals)}, not an object of cursors"
    for cursor, inc in incrementals.items():
        if not isinstance(inc, dict):
            return f"{path}.incremental.{cursor}", f"is {_kind(inc)}, not an object"
        hashes = inc.get("unique_hashes", [])
        if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
            # the boundary dedup reads them as a set of strings
            where = f"{path}.incremental.{cursor}.unique_hashes"
            return where, f"is {_kind(hashes)}, not a list of strings (boundary row hashes)"
    return None


__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "compress_state",
    "decode_state",
    "dump_state",
    "encode_state",
    "state_version_hash",
    "structure_problem",
    "typed_dumps",
    "typed_loads",
]
