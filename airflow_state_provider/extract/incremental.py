"""Incremental cursors: the pure row filter behind ``incremental(...)`` (DESIGN §6).

An unbound :class:`Incremental` is configuration only; it is typically the default value of a resource
argument. :meth:`Incremental.bind` returns a *new* bound copy for one run of one resource (the unbound
object is never mutated, so one resource object can run several times in a process, e.g. ``dag.test`` of
two intervals). The bound copy filters rows with :meth:`Incremental.process` and keeps the dlt-compatible
state slot ``resource_state["incremental"][cursor_path] = {initial_value, last_value, unique_hashes,
start_value}`` up to date after every item.

Semantics follow dlt 1.31 (``dlt/extract/incremental``). Where dlt is ambiguous or has known problems we
decided as follows:

* **Comparing cursor values.** With ``max``/``min`` values are compared through a normalized key, so that
  ISO 8601 strings, stdlib and pendulum datetimes and dates compare as instants (naive = UTC, a date is its
  midnight UTC), and ints, floats and Decimals compare numerically. Rows are never modified. Values that
  cannot be compared (e.g. a stored ``int`` and rows carrying timestamp strings) raise
  :class:`~airflow_state_provider.exceptions.IncrementalCursorTypeError`. dlt compares raw values and fails
  (or compares strings lexicographically). Custom ``last_value_func`` callables receive the raw values, as
  in dlt; their exceptions are wrapped in ``IncrementalCursorTypeError``.
* **Stored type of ``last_value``.** The raw cursor value of the row that set it, e.g. the ISO string when
  rows carry strings (as dlt stores it, so a dlt pipeline reads the same state). ``initial_value`` is stored
  as configured.
* **``lag=0``** behaves exactly like no lag (``start_value`` is the stored ``last_value``, never clamped to
  ``initial_value``), except that any ``lag`` that is not ``None`` disables boundary deduplication (the rule
  "lag set disables dedup"); dlt 1.31 treats ``lag=0`` as unset and keeps deduplicating. With ``max``/``min``
  the stored ``last_value`` never moves backwards, whatever the lag (also for a stored ``0``, dlt#4363).
  Negative lags are rejected.
* **Lag units** follow dlt 1.31: the unit is declared by the type of ``initial_value`` (a datetime or ISO
  datetime string: seconds; a date or ``YYYY-MM-DD``/``YYYYMMDD`` string: days), not by the look of the
  values; only without such an ``initial_value`` does each value decide (seconds for datetimes, days for
  dates). Numbers move by units (an ``int`` stays an ``int``). Aware datetimes are shifted as instants
  (DST-safe); ISO strings are parsed and re-rendered in their own format, so a date string lagged in
  seconds renders the day the shifted instant falls on. Datetimes lagged in days snap to the start
  (``max``) or end (``min``) of the UTC day. Lag never crosses ``initial_value``; it is ignored with a
  warning for custom functions and ignored (info) when ``end_value`` is set.
* **``row_order="desc"``** stops on the first row *before* the start value (or equal to it with an open
  range). dlt also stops on a row equal to the start value that was deduplicated, which can lose new rows
  sharing the boundary value; we keep reading those.
* **Boundary dedup list** (``unique_hashes``) keeps a stable order (stored hashes first, new ones appended),
  so an unchanged run writes an identical state. It is capped at ``max_unique_hashes`` (default
  :data:`MAX_UNIQUE_HASHES`): beyond it the newest hashes are kept and a WARNING explains how to avoid it.
  Consequence: rows sitting on the boundary value whose hashes were dropped are loaded again if the source
  returns them on the next run (duplicates with ``append``, harmless with ``merge`` on a primary key).
  Hashes written by dlt before 1.29 (20 characters) are still matched, until ``last_value`` moves.
* **External schedulers.** With ``allow_external_schedulers=True`` and an interval, the range is
  ``[start, end)`` coerced to the type of ``initial_value`` (a datetime when there is none; ISO strings are
  rendered in the format of ``initial_value``), clipped by the configured ``initial_value``/``end_value``;
  the run is stateless. Without an interval (manual run) the stored state is used and the log says so
  (dlt ≥1.26 raises instead).
* An empty input page (``[]``) or ``None`` leaves the state untouched and returns ``None``.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import logging
import re
from collections.abc import Callable, MutableMapping, Sequence
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal, NamedTuple

import orjson
import pendulum
from jsonpath_ng import Fields, JSONPath
from jsonpath_ng.ext import parse as _parse_jsonpath

from airflow_state_provider.exceptions import (
    IncrementalCursorPathMissing,
    IncrementalCursorTypeError,
    IncrementalNoIntervalError,
    IncrementalPrimaryKeyMissing,
)

__all__ = [
    "DUPLICATE_CURSOR_WARNING_THRESHOLD",
    "LOGGER_NAME",
    "MAX_UNIQUE_HASHES",
    "Incremental",
    "IncrementalNoIntervalError",
    "IncrementalPrimaryKeyMissing",
    "dedup_hash",
    "incremental",
]

MAX_UNIQUE_HASHES = 10_000
"""Default cap of the boundary-dedup hash list kept in state (see the module docstring)."""

DUPLICATE_CURSOR_WARNING_THRESHOLD = 200
"""Warn when more rows than this share the boundary cursor value (dlt's threshold)."""

LOGGER_NAME = "airflow_state_provider.incremental"

OnCursorValueMissing = Literal["raise", "include", "exclude"]
RangeBound = Literal["open", "closed"]
RowOrder = Literal["asc", "desc"]
PrimaryKey = str | Sequence[str] | Callable[[Any], Any] | None

_DEDUP_HASH_BYTES = 9  # 12 base64 characters, dlt >= 1.29
_LEGACY_HASH_BYTES = 15  # 20 characters, dlt < 1.29
_LEGACY_HASH_LEN = 20
_ROW_REPR_LIMIT = 300
_UTC = UTC
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=_UTC)
_ONE_US = timedelta(microseconds=1)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_NS_PER_DAY = 86_400 * 10**9


def _zero_length(interval: tuple[Any, Any]) -> bool:
    """True when the interval's start is not before its end (compared as instants)."""
    start_key, end_key = _cursor_key(interval[0]), _cursor_key(interval[1])
    return start_key[0] == end_key[0] == "timestamp" and end_key[1] <= start_key[1]


# ---------------------------------------------------------------------------------------------------------
# ISO 8601 strings: parse, remembering the shape, and render a value back in that shape


@dataclasses.dataclass(frozen=True)
class _IsoShape:
    kind: Literal["date", "compact", "datetime"]
    sep: str = "T"
    precision: Literal["h", "m", "s"] = "s"
    frac_sep: str = "."
    frac_digits: int = 0
    tz: Literal["", "Z", "z", "colon", "nocolon", "hour"] = ""


class _IsoValue(NamedTuple):
    value: date | datetime  # a stdlib date for date shapes, a stdlib datetime otherwise
    shape: _IsoShape
    sub_us_ns: int  # nanoseconds beyond microsecond precision (0..999)


_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:([T ])(\d{2})(?::(\d{2})(?::(\d{2})(?:([.,])(\d{1,9}))?)?)?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?)?"
)
_COMPACT_DATE_RE = re.compile(r"(\d{4})(\d{2})(\d{2})")


def _parse_iso(text: str, *, compact: bool = False) -> _IsoValue | None:
    """Parse an ISO 8601 date or datetime string; ``None`` when ``text`` is not one.

    ``compact`` also accepts ``YYYYMMDD`` (only for lag: as a comparison key it would turn 8-digit ids into
    dates).
    """
    m = _ISO_RE.fullmatch(text)
    try:
        if m is None:
            if compact and (c := _COMPACT_DATE_RE.fullmatch(text)):
                return _IsoValue(date(int(c[1]), int(c[2]), int(c[3])), _IsoShape("compact"), 0)
            return None
        day = date(int(m[1]), int(m[2]), int(m[3]))
        if m[4] is None:
            return _IsoValue(day, _IsoShape("date"), 0)
        frac = m[9] or ""
        digits = (frac + "000000000")[:9]
        tz_text = m[10]
        tzinfo = None
        tz_style = ""
        if tz_text in ("Z", "z"):
            tzinfo, tz_style = _UTC, tz_text
        elif tz_text:
            sign = -1 if tz_text[0] == "-" else 1
            body = tz_text[1:].replace(":", "")
            minutes = int(body[:2]) * 60 + (int(body[2:]) if len(body) > 2 else 0)
            tzinfo = timezone(sign * timedelta(minutes=minutes))
            tz_style = "colon" if ":" in tz_text else ("nocolon" if len(body) > 2 else "hour")
        value = datetime(
            day.year,
            day.month,
            day.day,
            int(m[5]),
            int(m[6] or 0),
            int(m[7] or 0),
            int(digits[:6]),
            tzinfo=tzinfo,
        )
    except ValueError:  # out-of-range fields: not a timestamp after all
        return None
    precision = "s" if m[7] else ("m" if m[6] else "h")
    shape = _IsoShape("datetime", m[4], precision, m[8] or ".", len(frac), tz_style)
    return _IsoValue(value, shape, int(digits[6:]))


def _render_iso(value: date | datetime, shape: _IsoShape, sub_us_ns: int = 0) -> str:
    """Render ``value`` in ``shape`` (the inverse of :func:`_parse_iso`; finer precision is truncated)."""
    if shape.kind != "datetime":
        if isinstance(value, datetime):
            value = _to_utc(value).date()
        if shape.kind == "compact":
            return f"{value.year:04d}{value.month:02d}{value.day:02d}"
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not shape.tz:
        if value.tzinfo is not None:
            value = _to_utc(value).replace(tzinfo=None)
    elif shape.tz in ("Z", "z"):
        value = _to_utc(value)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    out = f"{value.year:04d}-{value.month:02d}-{value.day:02d}{shape.sep}{value.hour:02d}"
    if shape.precision in ("m", "s"):
        out += f":{value.minute:02d}"
    if shape.precision == "s":
        out += f":{value.second:02d}"
        if shape.frac_digits:
            out += shape.frac_sep + f"{value.microsecond:06d}{sub_us_ns:03d}"[: shape.frac_digits]
    if shape.tz in ("Z", "z"):
        out += shape.tz
    elif shape.tz:
        offset = value.utcoffset() or timedelta(0)
        sign = "-" if offset < timedelta(0) else "+"
        minutes = abs(offset) // timedelta(minutes=1)
        hh, mm = divmod(minutes, 60)
        if shape.tz == "colon" or (shape.tz == "hour" and mm):
            out += f"{sign}{hh:02d}:{mm:02d}"
        elif shape.tz == "nocolon":
            out += f"{sign}{hh:02d}{mm:02d}"
        else:
            out += f"{sign}{hh:02d}"
    return out


# ---------------------------------------------------------------------------------------------------------
# datetimes


def _to_stdlib(value: datetime) -> datetime:
    """A stdlib ``datetime`` with the same fields and tzinfo (pendulum arithmetic is not stdlib's)."""
    if type(value) is datetime:
        return value
    return datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        value.tzinfo,
        fold=value.fold,
    )


def _to_utc(value: datetime) -> datetime:
    """Aware UTC stdlib datetime; a naive value is taken as UTC."""
    value = _to_stdlib(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=_UTC)
    return value.astimezone(_UTC)


def _epoch_us(value: datetime) -> int:
    """Whole microseconds since the Unix epoch; naive values are UTC (dlt's ``datetime_to_timestamp_us``)."""
    value = _to_stdlib(value)  # pendulum subtraction yields an Interval
    if value.tzinfo is None or value.utcoffset() is None:
        return (value.replace(tzinfo=None) - _EPOCH) // _ONE_US
    return (value - _EPOCH_UTC) // _ONE_US


def _like(template: Any, value: datetime) -> datetime:
    """Give ``value`` the datetime class of ``template`` (pendulum in, pendulum out)."""
    if isinstance(template, pendulum.DateTime) and not isinstance(value, pendulum.DateTime):
        if value.tzinfo is None:
            return pendulum.naive(
                value.year,
                value.month,
                value.day,
                value.hour,
                value.minute,
                value.second,
                value.microsecond,
                fold=value.fold,
            )
        return pendulum.instance(value)
    if type(template) is datetime and isinstance(value, pendulum.DateTime):
        return _to_stdlib(value)
    return value


# ---------------------------------------------------------------------------------------------------------
# Comparison keys: values of one "kind" compare with each other, different kinds never do


def _cursor_key(value: Any) -> tuple[str, Any]:
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float | Decimal):
        return ("number", value)
    if isinstance(value, datetime):
        return ("timestamp", _epoch_us(value) * 1000)
    if isinstance(value, date):
        return ("timestamp", (value.toordinal() - _EPOCH_ORDINAL) * _NS_PER_DAY)
    if isinstance(value, str):
        m = _ISO_RE.fullmatch(value)
        if m is None:
            return ("str", value)
        if m[4] is not None and (m[9] is None or len(m[9]) <= 6) and m[8] != "," and m[10] != "z":
            # the hot path (one call per row): the C parser agrees with _parse_iso on these shapes
            try:
                return ("timestamp", _epoch_us(datetime.fromisoformat(value)) * 1000)
            except ValueError:
                pass
        parsed = _parse_iso(value)
        if parsed is None:
            return ("str", value)
        if isinstance(parsed.value, datetime):
            return ("timestamp", _epoch_us(parsed.value) * 1000 + parsed.sub_us_ns)
        return ("timestamp", (parsed.value.toordinal() - _EPOCH_ORDINAL) * _NS_PER_DAY)
    return (f"{type(value).__module__}.{type(value).__qualname__}", value)


def _describe_type(value: Any) -> str:
    """The type of a cursor value, as shown in error messages."""
    name = type(value).__name__
    if isinstance(value, str):
        parsed = _parse_iso(value)
        if parsed is not None:
            return f"{name} (ISO {'timestamp' if parsed.shape.kind == 'datetime' else 'date'})"
    return name


def _short(obj: Any, limit: int = _ROW_REPR_LIMIT) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# ---------------------------------------------------------------------------------------------------------
# Lag


class _LagNotSupported(Exception):
    pass


LagUnit = Literal["days", "seconds"]


def _lag_value(value: Any, lag: float, is_max: bool, unit: LagUnit | None) -> Any:
    """Move ``value`` back (``max``) or forward (``min``) by ``lag``.

    Numbers move by ``lag`` units. For dates and datetimes (objects or ISO strings) the unit is the
    declared one (``unit``, from ``initial_value``) or, when nothing is declared, the value's own: days for
    a date, seconds for a datetime. The result keeps the shape of ``value`` (a string stays in its
    format), except that a date *object* lagged in seconds becomes a naive datetime, as in dlt 1.31.
    """
    signed = -lag if is_max else lag
    if isinstance(value, bool):
        raise _LagNotSupported
    if isinstance(value, int):
        return int(value + signed)
    if isinstance(value, float):
        return value + signed
    if isinstance(value, Decimal):
        return value + Decimal(str(signed))
    if isinstance(value, datetime):
        if unit == "days":
            return _like(value, _lag_datetime_in_days(_to_stdlib(value), signed, is_max))
        return _like(value, _shift_seconds(_to_stdlib(value), signed))
    if isinstance(value, date):
        if unit == "seconds":  # a naive midnight, as dlt's ensure_datetime makes it
            return _shift_seconds(datetime(value.year, value.month, value.day), signed)
        lagged = date(value.year, value.month, value.day) + timedelta(days=signed)
        return (
            pendulum.date(lagged.year, lagged.month, lagged.day)
            if isinstance(value, pendulum.Date)
            else lagged
        )
    if isinstance(value, str):
        parsed = _parse_iso(value, compact=True)
        if parsed is None:
            raise _LagNotSupported
        if isinstance(parsed.value, datetime):
            if unit == "days":
                lagged_dt = _lag_datetime_in_days(parsed.value, signed, is_max)
                return _render_iso(lagged_dt, parsed.shape)
            return _render_iso(_shift_seconds(parsed.value, signed), parsed.shape, parsed.sub_us_ns)
        if unit == "seconds":
            day = parsed.value
            midnight = datetime(day.year, day.month, day.day, tzinfo=_UTC)
            return _render_iso(_shift_seconds(midnight, signed), parsed.shape)
        return _render_iso(parsed.value + timedelta(days=signed), parsed.shape)
    raise _LagNotSupported


def _shift_seconds(value: datetime, seconds: float) -> datetime:
    if value.tzinfo is None:
        return value + timedelta(seconds=seconds)
    # shift the instant, not the wall clock, so the lag stays exact across DST transitions
    return (value.astimezone(_UTC) + timedelta(seconds=seconds)).astimezone(value.tzinfo)


def _lag_datetime_in_days(value: datetime, days: float, is_max: bool) -> datetime:
    """Lag a datetime by days as for a date cursor: whole UTC days, snapped to the start (lower bound,
    ``max``) or the end (upper bound, ``min``) of the day, so the whole day stays in range."""
    tz = value.tzinfo
    utc = value.astimezone(_UTC) if tz is not None else value
    day = utc.date() + timedelta(days=days)
    lagged = datetime.combine(day, time.min if is_max else time.max, tzinfo=utc.tzinfo)
    return lagged.astimezone(tz) if tz is not None else lagged


def _declared_lag_unit(initial_value: Any) -> LagUnit | None:
    """The lag unit the cursor type declares, as dlt 1.31 reads it from ``initial_value``: seconds for a
    datetime (object or ISO datetime string), days for a date (object or ``YYYY-MM-DD``/``YYYYMMDD``
    string), ``None`` (the value decides) for anything else."""
    if isinstance(initial_value, type):  # a declared cursor type (``incremental[date]``)
        if issubclass(initial_value, datetime):
            return "seconds"
        return "days" if issubclass(initial_value, date) else None
    if isinstance(initial_value, datetime):
        return "seconds"
    if isinstance(initial_value, date):
        return "days"
    if isinstance(initial_value, str):
        parsed = _parse_iso(initial_value, compact=True)
        if parsed is not None:
            return "seconds" if parsed.shape.kind == "datetime" else "days"
    return None


# ---------------------------------------------------------------------------------------------------------
# Boundary dedup hashes, identical to dlt's ``digest_dedup_value``


def _hash_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return _epoch_us(obj)
    return _legacy_hash_default(obj)


def _legacy_hash_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, date | time):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    if hasattr(obj, "asdict"):
        return obj.asdict()
    if hasattr(obj, "_asdict"):
        return obj._asdict()
    raise TypeError(f"{obj!r} cannot be hashed for incremental deduplication")


def _digest(data: bytes, size: int) -> str:
    return base64.b64encode(hashlib.shake_128(data).digest(size)).decode("ascii").rstrip("=")


def dedup_hash(value: Any, legacy: bool = False) -> str:
    """The boundary-dedup hash of ``value`` (a primary key value, a list of them, or a whole row).

    Same digest as dlt ≥1.29: base64 of the 9-byte shake_128 of the sorted-keys JSON, datetimes rendered as
    whole microseconds since the epoch (naive = UTC) — 12 characters. ``legacy`` gives dlt's pre-1.29 hash
    (RFC 3339 datetimes with ``Z``, 15 bytes — 20 characters).
    """
    options = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    if legacy:
        data = orjson.dumps(value, default=_legacy_hash_default, option=options | orjson.OPT_UTC_Z)
        return _digest(data, _LEGACY_HASH_BYTES)
    data = orjson.dumps(value, default=_hash_default, option=options | orjson.OPT_PASSTHROUGH_DATETIME)
    return _digest(data, _DEDUP_HASH_BYTES)


# ---------------------------------------------------------------------------------------------------------
# Cursor path


@functools.lru_cache(maxsize=256)
def _compile_cursor_path(cursor_path: str) -> tuple[str | None, JSONPath | None]:
    """``(plain_key, None)`` for a single field name, ``(None, jsonpath)`` for anything else."""
    try:
        compiled = _parse_jsonpath(cursor_path)
    except Exception:
        # not JSONPath syntax (e.g. a key with spaces): the whole string is the key
        return cursor_path, None
    if isinstance(compiled, Fields) and len(compiled.fields) == 1 and compiled.fields[0] != "*":
        return compiled.fields[0], None
    return None, compiled


_MISSING = object()
_TYPED: dict[tuple[type, Any], type] = {}  # incremental[T] classes, one per (class, T)


# ---------------------------------------------------------------------------------------------------------


class Incremental:
    """An incremental cursor over a field of the rows a resource yields (dlt's ``dlt.sources.incremental``).

    Args:
        cursor_path: A field name, or a JSONPath (first match) such as ``"$.meta.updated_at"``. The state
            slot is keyed by this string verbatim.
        initial_value: ``last_value`` when there is no state yet. Its type declares the cursor type for
            lag units and external-scheduler intervals.
        last_value_func: ``max`` (default), ``min``, ``"max"``/``"min"``, or a callable taking a sequence of
            cursor values and returning the new last value.
        primary_key: Key hashed to deduplicate rows on the boundary value; defaults to the resource's
            primary key, else the whole row is hashed. ``()`` disables deduplication.
        end_value: Exclusive (see ``range_end``) end of the range. Requires ``initial_value``; the run is
            then stateless: nothing is read from or written to the state.
        row_order: ``"asc"``/``"desc"`` (in the direction of ``last_value_func``) lets :meth:`process`
            tell the caller to stop the generator once rows leave the range.
        allow_external_schedulers: Take the range from the Airflow data interval passed to :meth:`bind`.
        on_cursor_value_missing: ``"raise"``, ``"include"`` or ``"exclude"`` rows whose cursor is missing
            or ``None``.
        lag: Attribution window: seconds for a datetime ``initial_value``, days for a date one (without
            either, each value's own type decides), units for numbers.
        range_start: ``"closed"`` includes rows equal to the start value (deduplicated), ``"open"``
            excludes them.
        range_end: ``"open"`` excludes rows equal to ``end_value``, ``"closed"`` includes them.
        max_unique_hashes: Cap of the dedup hash list (default :data:`MAX_UNIQUE_HASHES`).

    Inside the resource the bound instance exposes :attr:`initial_value`, :attr:`start_value`,
    :attr:`last_value` and :attr:`end_value`.
    """

    #: the cursor type declared with ``incremental[T]`` (dlt's generic argument); it declares the lag unit
    cursor_type: type | None = None

    def __class_getitem__(cls, item: Any) -> type[Incremental]:
        """``incremental[date](...)`` / ``incremental[datetime]``: declare the cursor type, as in dlt.

        The type declares the lag unit (days for ``date``, seconds for ``datetime``) before
        ``initial_value`` does; any other type argument is accepted and changes nothing.
        """
        key = (cls, item)
        if key not in _TYPED:
            declared = item if isinstance(item, type) else None
            name = f"{cls.__name__}[{getattr(item, '__name__', item)}]"
            _TYPED[key] = type(name, (cls,), {"cursor_type": declared, "__module__": cls.__module__})
        return _TYPED[key]

    def __init__(
        self,
        cursor_path: str | None = None,
        initial_value: Any = None,
        last_value_func: Callable[[Sequence[Any]], Any] | Literal["max", "min"] = max,
        primary_key: PrimaryKey = None,
        end_value: Any = None,
        row_order: RowOrder | None = None,
        allow_external_schedulers: bool = False,
        on_cursor_value_missing: OnCursorValueMissing = "raise",
        lag: float | None = None,
        range_start: RangeBound = "closed",
        range_end: RangeBound = "open",
        max_unique_hashes: int | None = None,
    ) -> None:
        if cursor_path is not None and (not isinstance(cursor_path, str) or not cursor_path):
            raise ValueError(f"incremental cursor_path must be a non-empty string, got {cursor_path!r}")
        if isinstance(last_value_func, str):
            if last_value_func not in ("max", "min"):
                raise ValueError(
                    f"Unknown last_value_func {last_value_func!r}: use 'max', 'min' or a callable"
                )
            last_value_func = max if last_value_func == "max" else min
        if not callable(last_value_func):
            raise ValueError(f"last_value_func must be callable, got {last_value_func!r}")
        _check_choice("on_cursor_value_missing", on_cursor_value_missing, ("raise", "include", "exclude"))
        _check_choice("row_order", row_order, (None, "asc", "desc"))
        _check_choice("range_start", range_start, ("open", "closed"))
        _check_choice("range_end", range_end, ("open", "closed"))
        if lag is not None and (
            isinstance(lag, bool) or not isinstance(lag, int | float | Decimal) or lag < 0
        ):
            raise ValueError(f"lag must be a non-negative number (or None), got {lag!r}")
        if max_unique_hashes is not None and (
            isinstance(max_unique_hashes, bool)
            or not isinstance(max_unique_hashes, int)
            or max_unique_hashes < 1
        ):
            raise ValueError(f"max_unique_hashes must be a positive int, got {max_unique_hashes!r}")

        self._config: dict[str, Any] = {
            "cursor_path": cursor_path,
            "initial_value": initial_value,
            "last_value_func": last_value_func,
            "primary_key": primary_key,
            "end_value": end_value,
            "row_order": row_order,
            "allow_external_schedulers": allow_external_schedulers,
            "on_cursor_value_missing": on_cursor_value_missing,
            "lag": float(lag) if isinstance(lag, Decimal) else lag,
            "range_start": range_start,
            "range_end": range_end,
            "max_unique_hashes": max_unique_hashes,
        }
        self._plain_key, self._jsonpath = (
            _compile_cursor_path(cursor_path) if cursor_path is not None else (None, None)
        )
        self._builtin = last_value_func in (max, min)
        self._is_max = last_value_func is max
        self._initial_value = initial_value
        self._end_value = end_value
        self._primary_key = primary_key

        # bound run; set by bind() on the copy
        self.pipeline_name: str | None = None
        self.resource_name: str | None = None
        self._bound = False
        self._joined = False  # bound to an external scheduler's range
        self._log = logging.getLogger(LOGGER_NAME)
        self._state: dict[str, Any] | None = None
        self._start_value: Any = initial_value
        self._pre_run_last_value: Any = None
        self._start_key: tuple[str, Any] | None = None
        self._end_key: tuple[str, Any] | None = None
        self._last: Any = None  # the running last value of this run
        self._last_key: tuple[str, Any] | None = None
        self._advanced = False  # the running last value moved past the start value
        self._stop = False  # sticky: ordered rows left the range
        self._dedup = False
        self._cap = MAX_UNIQUE_HASHES
        self._start_hashes: list[str] = []  # stored unique_hashes, in their stored order
        self._start_hash_set: set[str] = set()
        self._start_legacy = False  # stored hashes are dlt < 1.29 ones
        self._hash_legacy = False  # format of the hashes collected in this run
        self._new_hashes: dict[str, None] = {}  # ordered set: rows on the running last value
        self._pending: list[tuple[Any, str | None]] = []  # rows on it not hashed yet (this page)
        self._boundary_rows = 0
        self._written_hash_count = 0
        self._hashes_dirty = False
        self._cap_warned = False
        self._text_warned = False  # warned once that string cursor values are not ISO 8601
        self._out_of_order = False

        if end_value is not None and cursor_path is not None:  # a partial one is checked once merged
            if initial_value is None:
                raise ValueError(
                    f"incremental({cursor_path!r}): end_value={end_value!r} was given without initial_value;"
                    " initial_value is required when using end_value"
                )
            self._check_end_after_initial()

    # -- configuration --------------------------------------------------------------------------------------

    @property
    def cursor_path(self) -> str:
        return self._config["cursor_path"]

    def merge(self, other: Incremental) -> Incremental:
        """A new unbound incremental: this configuration overridden by every setting of ``other`` that is
        not ``None`` (dlt's ``Incremental.merge``). A resource called with an explicit incremental for an
        argument whose default is one gets this merge, so ``incremental(initial_value=...)`` (no cursor
        path) only moves the start of the default cursor."""
        config = dict(self._config)
        config.update({k: v for k, v in other._config.items() if v is not None})
        typed = type(self).cursor_type is not None or type(other).cursor_type is None
        return (type(self) if typed else type(other))(**config)

    def with_initial_value(self, initial_value: Any) -> Incremental:
        """A new unbound copy starting at ``initial_value``: what a resource argument whose default is an
        incremental becomes when it is called with a plain value (``some_data(created_at=4242)``), as in
        dlt."""
        return type(self)(**{**self._config, "initial_value": initial_value})

    @property
    def last_value_func(self) -> Callable[[Sequence[Any]], Any]:
        return self._config["last_value_func"]

    @property
    def primary_key(self) -> PrimaryKey:
        """The dedup key: the incremental's own, or (once bound) the one inherited from the resource."""
        return self._primary_key

    @property
    def row_order(self) -> RowOrder | None:
        return self._config["row_order"]

    @property
    def allow_external_schedulers(self) -> bool:
        return self._config["allow_external_schedulers"]

    @property
    def on_cursor_value_missing(self) -> OnCursorValueMissing:
        return self._config["on_cursor_value_missing"]

    @property
    def lag(self) -> float | None:
        return self._config["lag"]

    @property
    def range_start(self) -> RangeBound:
        return self._config["range_start"]

    @property
    def range_end(self) -> RangeBound:
        return self._config["range_end"]

    @property
    def is_bound(self) -> bool:
        return self._bound

    # -- the values a resource reads ------------------------------------------------------------------------

    @property
    def initial_value(self) -> Any:
        """The configured initial value (once bound to an external scheduler: the interval start)."""
        return self._initial_value

    @property
    def end_value(self) -> Any:
        """The configured end value (once bound to an external scheduler: the interval end)."""
        return self._end_value

    @property
    def start_value(self) -> Any:
        """The lower end of this run's range: the stored ``last_value`` at bind, lagged.

        Unbound: ``initial_value``.
        """
        return self._public(self._start_value)

    @property
    def last_value(self) -> Any:
        """The current ``last_value`` (it moves while rows are processed), lagged like ``start_value``.

        Unbound: ``initial_value``.
        """
        if self._state is None:
            return self._public(self._initial_value)
        return self._public(self._lagged(self._state.get("last_value")))

    def can_close(self) -> bool:
        """True once ordered rows (``row_order``) left the range: ascending rows passed ``end_value``, or
        descending rows fell below the start value (dlt's ``Incremental.can_close``). The pipeline then
        closes the generator by itself; a resource may also return early."""
        return self._stop

    # -- bind -----------------------------------------------------------------------------------------------

    def bind(
        self,
        *,
        pipeline_name: str,
        resource_name: str,
        resource_state: MutableMapping[str, Any],
        primary_key: PrimaryKey = None,
        interval: tuple[Any, Any] | None = None,
        log: logging.Logger | None = None,
    ) -> Incremental:
        """Return a new copy bound to one run of ``resource_name``; ``self`` is left untouched.

        Args:
            pipeline_name: Named in log lines and errors.
            resource_name: Named in log lines and errors.
            resource_state: The writable resource slot; the cursor state lives at
                ``resource_state["incremental"][cursor_path]`` (created here unless the run is stateless).
            primary_key: The resource's primary key hint, used unless the incremental has its own.
            interval: ``(data_interval_start, data_interval_end)`` of the Airflow run, or ``None``.
            log: Logger for the bind line and warnings (default ``airflow_state_provider.incremental``).
        """
        if self.cursor_path is None:
            raise IncrementalCursorPathMissing(
                f"resource {resource_name!r}: incremental {self!r} has no cursor_path; give one, or pass"
                " it as the value of an argument whose default is an incremental with a cursor_path"
            )
        new = type(self)(**self._config)
        new.pipeline_name = pipeline_name
        new.resource_name = resource_name
        new._log = log or logging.getLogger(LOGGER_NAME)
        new._bound = True
        if new._primary_key is None:
            new._primary_key = primary_key
        if self.allow_external_schedulers:
            if interval is not None and interval[0] is not None and interval[1] is not None:
                if _zero_length(interval):
                    new._no_range(interval, zero_length=True)
                else:
                    new._join_external_scheduler(interval)
            else:
                new._no_range(interval, zero_length=False)
        new._setup_run(resource_state)
        new._log.info(
            f"Bind incremental on {resource_name} with initial_value: {new.initial_value},"
            f" start_value: {new.start_value}, end_value: {new.end_value}, func:"
            f" {getattr(new.last_value_func, '__name__', repr(new.last_value_func))}, row_order:"
            f" {new.row_order}, on_missing: {new.on_cursor_value_missing}, range_start:"
            f" {new.range_start}, range_end: {new.range_end}"
        )
        return new

    def _setup_run(self, resource_state: MutableMapping[str, Any]) -> None:
        if self._end_value is not None:
            # stateless: a throw-away slot, nothing is written to the resource state
            self._state = {
                "initial_value": self._initial_value,
                "last_value": self._initial_value,
                "unique_hashes": [],
                "start_value": self._initial_value,
            }
        else:
            slot = resource_state.setdefault("incremental", {}).setdefault(self.cursor_path, {})
            if not slot:
                slot.update(
                    {
                        "initial_value": self._initial_value,
                        "last_value": self._initial_value,
                        "unique_hashes": [],
                        "start_value": self._initial_value,
                    }
                )
            self._state = slot

        lag = self.lag
        if lag and not self._builtin:
            self._log.warning(
                "Lag on %s is only supported for max or min last_value_func, %r is ignored for %s",
                self.resource_name,
                lag,
                getattr(self.last_value_func, "__name__", self.last_value_func),
            )
        elif lag and self._end_value is not None:
            self._log.info("Lag on %s is deactivated if end_value is set in incremental.", self.resource_name)

        self._pre_run_last_value = self._state.get("last_value")
        self._start_value = self._lagged(self._pre_run_last_value)
        self._start_key = None if self._start_value is None else _cursor_key(self._start_value)
        self._end_key = None if self._end_value is None else _cursor_key(self._end_value)
        self._last = self._start_value
        self._last_key = self._start_key
        self._advanced = False
        self._dedup = self._dedup_enabled()
        self._cap = self._config["max_unique_hashes"] or MAX_UNIQUE_HASHES
        stored = list(self._state.get("unique_hashes") or []) if self._dedup else []
        self._start_hashes = stored
        self._start_hash_set = set(stored)
        self._start_legacy = any(len(h) == _LEGACY_HASH_LEN for h in stored)
        self._hash_legacy = self._start_legacy
        self._new_hashes = {}
        self._pending = []
        self._written_hash_count = len(self._state.get("unique_hashes") or [])
        self._hashes_dirty = False
        self._boundary_rows = len(stored)  # rows known to sit on the running last value
        self._cap_warned = False
        self._out_of_order = False

    def checkpoint_blocker(self) -> str | None:
        """Why a checkpoint may not commit this cursor's progress before the run ends; None if it may.

        A checkpoint commits a cursor early only when every row behind it has been delivered: the cursor
        stores its progress, advances with the built-in ``max``/``min``, the rows are declared to arrive
        in that order (``row_order="asc"``), and none arrived behind a value this run had passed.
        """
        if not self._bound:
            return "its incremental is not bound"
        if self._end_value is not None:
            return (
                f"incremental({self.cursor_path!r}) has an end_value or an Airflow data interval "
                "(allow_external_schedulers), so it stores no progress"
            )
        if not self._builtin:
            return f"incremental({self.cursor_path!r}) has a custom last_value_func"
        if self.row_order != "asc":
            return f"incremental({self.cursor_path!r}) does not declare row_order='asc'"
        if not self._dedup_enabled():
            # a resumed run restarts at the committed boundary: without the boundary hashes it would
            # skip (range_start='open') or repeat (lag, primary_key=()) rows that share that value
            return (
                f"incremental({self.cursor_path!r}) does not deduplicate its boundary rows "
                "(range_start='open', lag or primary_key=())"
            )
        if self._out_of_order:
            return (
                f"incremental({self.cursor_path!r}) received a row behind its cursor although "
                "row_order='asc' is declared"
            )
        return None

    def _dedup_enabled(self) -> bool:
        if self.range_start == "open" or self._end_value is not None:
            return False
        if self.lag is not None and self._builtin:
            return False
        pk = self._primary_key
        return not (isinstance(pk, list | tuple) and len(pk) == 0)

    def _no_range(self, interval: tuple[Any, Any] | None, *, zero_length: bool) -> None:
        """No range to load: continue from the committed cursor (and say so), or raise if asked to."""
        from airflow_state_provider.state import context

        what = (
            f"The data interval of this run is zero-length ({interval[0]} .. {interval[1]}): a point, not a"
            " range. Airflow 3 gives points to cron schedules (CronTriggerTimetable, the default) and to"
            " manual triggers; CronDataIntervalTimetable, or [scheduler] create_cron_data_intervals = True,"
            " gives ranges."
            if zero_length and interval is not None
            else "This run has no data interval (triggered without a logical date, or not by a scheduler)."
        )
        if context.missing_interval_policy() == "raise":
            raise IncrementalNoIntervalError(
                f"Pipeline `{self.pipeline_name}`, resource `{self.resource_name}`: incremental"
                f" `{self.cursor_path}` has allow_external_schedulers=True and was asked to raise without a"
                f" range. {what}"
            )
        self._log.log(
            logging.WARNING if zero_length else logging.INFO,
            "%s Incremental %r of %s continues from its committed cursor instead.",
            what,
            self.cursor_path,
            self.resource_name,
        )

    @property
    def interval_watermark(self) -> Any:
        """After joining an interval: the cursor value a later run without an interval continues from.

        The interval end for ``max``, its start for ``min``; ``None`` for custom functions, for a
        closed ``range_end`` (rows on the end were loaded, their hashes are not kept) and when no
        interval was joined.
        """
        if not self._joined or not self._builtin or self.range_end == "closed":
            return None
        return self._end_value if self._is_max else self._initial_value

    def record_interval(self, resource_state: MutableMapping[str, Any]) -> bool:
        """Move the cursor of ``resource_state`` to :attr:`interval_watermark` unless it is already past.

        Called at commit time with the newest committed state, so that parallel interval runs each
        move it forward and never backwards. Returns True when the slot changed.
        """
        mark = self.interval_watermark
        if mark is None:
            return False
        slot = resource_state.setdefault("incremental", {}).setdefault(self.cursor_path, {})
        if not slot:
            configured = self._config["initial_value"]
            slot.update(
                {
                    "initial_value": configured,
                    "last_value": mark,
                    "unique_hashes": [],
                    "start_value": configured,
                }
            )
            return True
        last = slot.get("last_value")
        if last is not None and self._after(mark, last, "the stored last_value") <= 0:
            return False
        slot["last_value"] = mark
        slot["unique_hashes"] = []  # rows on the old value are behind the interval; none on its end
        return True

    def _join_external_scheduler(self, interval: tuple[Any, Any]) -> None:
        self._joined = True
        raw_start, raw_end = interval
        configured_initial, configured_end = self._initial_value, self._end_value
        start = self._coerce_interval_bound(raw_start, configured_initial, "start")
        end = self._coerce_interval_bound(
            raw_end, configured_end if configured_end is not None else configured_initial, "end"
        )
        # the configured range clips the scheduler's (dlt: func((a, b)) == a means a wins)
        if configured_initial is not None and self._wins(configured_initial, start, "initial_value"):
            start = configured_initial
        if configured_end is not None and self._wins(end, configured_end, "end_value"):
            end = configured_end
        self._initial_value, self._end_value = start, end
        self._log.info(
            f"Joined external scheduler: initial value: {start}, end value: {end}"
            f" (raw: {raw_start}, {raw_end})"
        )
        if self._builtin and self._after(end, start, "end value") <= 0:
            self._log.warning(
                "The data interval of %s is empty (%s .. %s): incremental %r will load nothing",
                self.resource_name,
                raw_start,
                raw_end,
                self.cursor_path,
            )

    def _coerce_interval_bound(self, value: Any, sample: Any, which: str) -> Any:
        """Convert an interval bound (a datetime) to the type of ``sample`` (the configured value)."""
        moment: datetime
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            moment = datetime(value.year, value.month, value.day, tzinfo=_UTC)
        elif isinstance(value, str) and (parsed := _parse_iso(value)) is not None:
            moment = (
                parsed.value
                if isinstance(parsed.value, datetime)
                else datetime(parsed.value.year, parsed.value.month, parsed.value.day, tzinfo=_UTC)
            )
        else:
            raise IncrementalCursorTypeError(
                f"Pipeline `{self.pipeline_name}`, resource `{self.resource_name}`: the external scheduler"
                f" interval {which} {value!r} is not a datetime; cannot build the range of cursor"
                f" `{self.cursor_path}`."
            )
        if sample is None or isinstance(sample, datetime):
            if sample is not None and sample.tzinfo is None and moment.tzinfo is not None:
                return _like(moment, _to_utc(moment).replace(tzinfo=None))
            if sample is not None and sample.tzinfo is not None and moment.tzinfo is None:
                return _like(moment, _to_stdlib(moment).replace(tzinfo=_UTC))
            return moment
        if isinstance(sample, date):
            # the day on the wall clock of the bound (the operator gives it in the DAG's timezone)
            return _to_stdlib(moment).date()
        if isinstance(sample, int | float | Decimal) and not isinstance(sample, bool):
            us = _epoch_us(moment)
            if isinstance(sample, int):
                return us // 1_000_000
            if isinstance(sample, float):
                return us / 1_000_000
            return Decimal(us) / Decimal(1_000_000)
        if isinstance(sample, str) and (shape_of := _parse_iso(sample, compact=True)) is not None:
            if shape_of.shape.tz not in ("", "Z", "z") and isinstance(shape_of.value, datetime):
                moment = _to_utc(moment).astimezone(shape_of.value.tzinfo)
            if shape_of.shape.kind != "datetime":
                return _render_iso(_to_stdlib(moment).date(), shape_of.shape)  # the bound's own day
            return _render_iso(moment, shape_of.shape)
        raise IncrementalCursorTypeError(
            f"Pipeline `{self.pipeline_name}`, resource `{self.resource_name}`: cannot coerce the external"
            f" scheduler interval {which} {value!r} to the type of the cursor `{self.cursor_path}`"
            f" ({_describe_type(sample)}, from {sample!r}). Use a datetime, date, number or ISO string"
            " initial_value, or allow_external_schedulers=False."
        )

    # -- process --------------------------------------------------------------------------------------------

    def process(self, item: Any) -> tuple[Any, bool]:
        """Filter one item (a row or a list of rows) and update the state slot.

        Returns:
            ``(item, stop)``: the rows that are in range (a new list for a list input, the row itself for a
            row input; ``None`` when nothing is left) and whether the generator should be closed because
            ordered rows (``row_order``) left the range. Rows are never modified.
        """
        if not self._bound:
            raise RuntimeError(
                f"incremental({self.cursor_path!r}) is not bound: call bind() and process with the copy it"
                " returns"
            )
        if item is None or (isinstance(item, list) and not item):
            return None, self._stop
        if isinstance(item, list):
            kept = [row for row in item if self._keep(row)]
            result: Any = kept or None
        else:
            result = item if self._keep(item) else None
        self._write_state(rows_arrived=result is not None)
        return result, self._stop

    def _keep(self, row: Any) -> bool:
        value = self._find_cursor_value(row)
        if value is _MISSING or value is None:
            policy = self.on_cursor_value_missing
            if policy == "raise":
                raise self._missing_error(row, value is None)
            return policy == "include"
        if self._builtin:
            return self._keep_ordered(row, value)
        return self._keep_custom(row, value)

    def _keep_ordered(self, row: Any, value: Any) -> bool:
        """dlt's JSON filter for ``max``/``min``, on normalized keys."""
        key = _cursor_key(value)
        if key[0] == "str" and not self._text_warned:
            self._warn_text_cursor(value)
        if self._end_key is not None:
            c = self._compare(key, self._end_key, value, self._end_value, "end_value")
            if c > 0 or (c == 0 and self.range_end == "open"):
                if self.row_order == "asc":
                    self._stop = True
                return False
        if self._last_key is not None:
            c_last = self._compare(key, self._last_key, value, self._last, self._last_label())
            if c_last <= 0:
                row_hash = None
                if self._start_key is not None:
                    c = self._compare(key, self._start_key, value, self._start_value, "start_value")
                    if c < 0 or (c == 0 and self.range_start == "open"):
                        if self.row_order == "desc":
                            self._stop = True
                        return False
                    if c == 0 and self._dedup:
                        row_hash = self._row_hash(row, self._start_legacy)
                        if row_hash in self._start_hash_set:
                            return False
                if c_last == 0 and self._dedup:
                    self._remember(row, row_hash)
                elif c_last < 0 and self._advanced:
                    self._out_of_order = True  # behind a value this run already passed
                return True
        self._advance(row, value, key)
        return True

    def _keep_custom(self, row: Any, value: Any) -> bool:
        """dlt's JSON filter for a custom ``last_value_func``, literally (raw values, ``==``)."""
        func = self._call_func
        end = self._end_value
        beyond_end = end is not None and (
            func((value, end), "end_value", end) != end
            or (self.range_end == "open" and func((value,), "end_value", end) == end)
        )
        if beyond_end:
            if self.row_order == "asc":
                self._stop = True
            return False
        last = self._last
        new = func((value,), "", None) if last is None else func((value, last), self._last_label(), last)
        if last is not None and last == new:
            own = func((value,), "", None)
            start = self._start_value
            if self.range_start == "open" and start is not None and own == start:
                if self.row_order == "desc":
                    self._stop = True
                return False
            if start is not None and func((value, start), "start_value", start) == start:
                if own != start:
                    if self.row_order == "desc":
                        self._stop = True
                    return False
                if self._dedup and self._row_hash(row, self._start_legacy) in self._start_hash_set:
                    return False
            if own == last and self._dedup:
                self._remember(row, None)
            return True
        self._advance(row, new, None)
        return True

    def _advance(self, row: Any, value: Any, key: tuple[str, Any] | None) -> None:
        self._last = value
        self._last_key = key
        self._advanced = True
        if self._dedup:
            self._new_hashes = {}
            self._pending = []
            self._boundary_rows = 0
            self._hash_legacy = False
            self._remember(row, None)

    def _remember(self, row: Any, row_hash: str | None) -> None:
        """Note a row sitting on the running last value; it is hashed at the end of the page (like dlt),
        so rows that a later row of the page moves past are never hashed."""
        self._pending.append((row, row_hash))
        self._hashes_dirty = True

    def _hash_pending(self) -> None:
        for row, row_hash in self._pending:
            if row_hash is None or self._hash_legacy != self._start_legacy:
                row_hash = self._row_hash(row, self._hash_legacy)
            self._boundary_rows += 1
            self._new_hashes[row_hash] = None
            if len(self._new_hashes) > self._cap:
                # bounded memory within the run too; dropping the oldest is what the state cap does anyway
                del self._new_hashes[next(iter(self._new_hashes))]
                self._warn_cap(self._boundary_rows)
        self._pending = []

    def _last_label(self) -> str:
        return "last value of this run" if self._advanced else "stored last_value"

    def _write_state(self, *, rows_arrived: bool) -> None:
        state = self._state
        assert state is not None
        last = self._last
        pre = self._pre_run_last_value
        if pre is not None:
            # the stored last_value never moves backwards (lag starts the range before it)
            if last is None:
                last = pre
            elif self._builtin:
                if self._after(last, pre, "stored last_value") < 0:
                    last = pre
            elif self.lag:
                last = self._call_func((last, pre), "stored last_value", pre)
        state["last_value"] = last
        if rows_arrived:
            state["start_value"] = pre
        if not self._dedup:
            state["unique_hashes"] = []
            return
        if not self._hashes_dirty:
            return
        self._hashes_dirty = False
        self._hash_pending()
        hashes = [] if self._advanced else list(self._start_hashes)
        hashes.extend(h for h in self._new_hashes if h not in self._start_hash_set or self._advanced)
        if len(hashes) > self._cap:
            self._warn_cap(len(hashes))
            hashes = hashes[-self._cap :]
        before, self._written_hash_count = self._written_hash_count, len(hashes)
        if before <= DUPLICATE_CURSOR_WARNING_THRESHOLD < len(hashes):
            self._log.warning(
                f"Large number of records ({len(hashes)}) sharing the same value of cursor field"
                f" '{self.cursor_path}' on resource '{self.resource_name}'. This can happen if the cursor"
                " field has a low resolution (e.g., only stores dates without times), causing many records"
                " to share the same cursor value. Consider using a cursor column with higher resolution to"
                " reduce the deduplication state size."
            )
        state["unique_hashes"] = hashes

    def _warn_text_cursor(self, value: str) -> None:
        self._text_warned = True
        self._log.warning(
            f"Incremental `{self.cursor_path}` on resource `{self.resource_name}` (pipeline"
            f" `{self.pipeline_name}`): the cursor value {_short(value)} is a string but not an ISO 8601"
            " date or datetime, so cursor values are compared as text (character by character, as dlt"
            " does): '12/31/2024' sorts after '01/01/2025'. Convert the cursor to a datetime or an ISO"
            " string in the resource unless text order is what you mean."
        )

    def _warn_cap(self, count: int) -> None:
        if self._cap_warned:
            return
        self._cap_warned = True
        self._log.warning(
            f"Incremental `{self.cursor_path}` on resource `{self.resource_name}` (pipeline"
            f" `{self.pipeline_name}`): {count} rows share the boundary cursor value {self._last!r}, more"
            f" than the {self._cap} deduplication hashes kept in state; only the newest {self._cap} are"
            " kept. Rows on that value whose hash was dropped are loaded again if the source returns them on"
            " the next run. To avoid this use a cursor with a finer resolution, use range_start='open' if"
            " cursor values never repeat across runs, or load with write_disposition='merge' and a primary"
            " key so re-delivered rows are upserted (or raise max_unique_hashes)."
        )

    # -- helpers --------------------------------------------------------------------------------------------

    def _find_cursor_value(self, row: Any) -> Any:
        if self._plain_key is not None:
            try:
                return row[self._plain_key]
            except KeyError:
                return _MISSING
            except (TypeError, IndexError):
                return getattr(row, self._plain_key, _MISSING)
        assert self._jsonpath is not None
        matches = self._jsonpath.find(row)
        return matches[0].value if matches else _MISSING

    def _row_hash(self, row: Any, legacy: bool) -> str:
        pk = self._primary_key
        try:
            if pk is None:
                value = row
            else:
                columns = pk(row) if callable(pk) else pk
                value = row[columns] if isinstance(columns, str) else [row[c] for c in columns]
        except (KeyError, TypeError) as exc:
            raise IncrementalPrimaryKeyMissing(
                f"Pipeline `{self.pipeline_name}`, resource `{self.resource_name}`: primary key column"
                f" {exc.args[0] if exc.args else pk!r} (of {pk!r}), used to deduplicate rows on the boundary"
                f" of cursor `{self.cursor_path}`, was not found in row {_short(row)}. All rows must contain"
                " it, or pass primary_key=() to the incremental to disable deduplication."
            ) from exc
        try:
            return dedup_hash(value, legacy)
        except TypeError as exc:
            raise IncrementalCursorTypeError(
                f"Pipeline `{self.pipeline_name}`, resource `{self.resource_name}`: cannot hash"
                f" {'the row' if pk is None else 'the primary key value'} {_short(value)} to deduplicate rows"
                f" on the boundary of cursor `{self.cursor_path}`: {exc}. Set a primary_key of JSON-like"
                " values, or primary_key=() to disable deduplication."
            ) from exc

    def _lagged(self, value: Any) -> Any:
        lag = self.lag
        if not lag or value is None or not self._builtin or self._end_value is not None:
            return value
        try:
            unit = _declared_lag_unit(self.cursor_type or self._initial_value)
            lagged = _lag_value(value, lag, self._is_max, unit)
        except _LagNotSupported:
            raise IncrementalCursorTypeError(
                f"Pipeline `{self.pipeline_name}`, resource `{self.resource_name}`: lag={lag!r} is not"
                f" supported for the cursor `{self.cursor_path}` value {value!r} ({_describe_type(value)});"
                " lag works with datetimes, dates, ISO date/datetime strings and numbers."
            ) from None
        initial = self._initial_value
        if initial is not None and self._after(lagged, initial, "initial_value") <= 0:
            return initial  # never cross initial_value
        return lagged

    def _wins(self, a: Any, b: Any, what: str) -> bool:
        """``last_value_func((a, b)) == a``, on normalized keys for ``max``/``min``."""
        if self._builtin:
            return self._after(a, b, what) >= 0
        return self._call_func((a, b), what, b) == a

    def _after(self, a: Any, b: Any, what: str) -> int:
        """>0 when ``a`` comes after ``b`` in the direction of ``max``/``min``, 0 when equal."""
        return self._compare(_cursor_key(a), _cursor_key(b), a, b, what)

    def _compare(self, a_key: tuple[str, Any], b_key: tuple[str, Any], a: Any, b: Any, what: str) -> int:
        if a_key[0] == b_key[0]:
            try:
                c = (a_key[1] > b_key[1]) - (a_key[1] < b_key[1])
            except TypeError:
                pass
            else:
                return c if self._is_max else -c
        raise self._type_error(a, b, what)

    def _call_func(self, values: tuple[Any, ...], what: str, other: Any) -> Any:
        try:
            return self.last_value_func(values)
        except Exception as exc:
            raise self._type_error(values[0], other, what or "cursor", detail=str(exc)) from exc

    def _type_error(self, found: Any, stored: Any, what: str, detail: str = "") -> IncrementalCursorTypeError:
        return IncrementalCursorTypeError(
            f"Pipeline `{self.pipeline_name}`, resource `{self.resource_name}`: the value {_short(found)} at"
            f" cursor path `{self.cursor_path}` cannot be compared with the {what} {_short(stored)}"
            f" (stored type: {_describe_type(stored)}, found type: {_describe_type(found)})"
            + (f": {detail}" if detail else "")
            + ". The cursor type changed between runs or the rows mix types: yield one cursor type (e.g."
            " convert it in the resource) or reset this resource's incremental state."
        )

    def _missing_error(self, row: Any, is_none: bool) -> IncrementalCursorPathMissing:
        what = "has the value None" if is_none else "was not found"
        return IncrementalCursorPathMissing(
            f"Pipeline `{self.pipeline_name}`, resource `{self.resource_name}`: cursor path"
            f" `{self.cursor_path}` {what} in row {_short(row)}. Every row must carry a cursor value; use"
            " the field names of the source data (not the normalized column names), or construct the"
            " incremental with on_cursor_value_missing='include' or 'exclude'."
        )

    def _check_end_after_initial(self) -> None:
        initial, end = self._initial_value, self._end_value
        try:
            if self._builtin:
                end_key, initial_key = _cursor_key(end), _cursor_key(initial)
                if end_key[0] != initial_key[0]:
                    raise TypeError(f"{_describe_type(end)} vs {_describe_type(initial)}")
                ok = end_key[1] >= initial_key[1] if self._is_max else end_key[1] <= initial_key[1]
            else:
                ok = self.last_value_func((end, initial)) == end
        except Exception as exc:
            raise ValueError(
                f"incremental({self.cursor_path!r}): initial_value={initial!r} and end_value={end!r} are not"
                f" comparable: {exc}"
            ) from exc
        if not ok:
            raise ValueError(
                f"incremental({self.cursor_path!r}): end_value={end!r} must come after"
                f" initial_value={initial!r} according to last_value_func"
                f" {getattr(self.last_value_func, '__name__', self.last_value_func)}"
            )

    def _public(self, value: Any) -> Any:
        """Datetimes in the class of ``initial_value`` (state decodes to stdlib, users may pass pendulum)."""
        if isinstance(value, datetime) and isinstance(self._config["initial_value"], datetime):
            return _like(self._config["initial_value"], value)
        return value

    def __repr__(self) -> str:
        config = {k: v for k, v in self._config.items() if v is not None}
        config["last_value_func"] = getattr(self.last_value_func, "__name__", self.last_value_func)
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        bound = f" bound to {self.pipeline_name}/{self.resource_name}" if self._bound else ""
        return f"<incremental({args}){bound}>"


def _check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


incremental = Incremental
"""The public lowercase name (DESIGN §3.1)."""
