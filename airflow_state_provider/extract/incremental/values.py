"""Cursor values: ISO 8601 strings (parsed keeping their shape, rendered back in it), datetimes of any
class (stdlib, pendulum), the comparison keys that make them comparable as instants, the cursor path
lookup and the coercion of an external scheduler's interval bounds to the cursor's type. Pure functions.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal, NamedTuple

import pendulum
from jsonpath_ng import Fields, JSONPath
from jsonpath_ng.ext import parse as _parse_jsonpath

UTC_TZ = UTC
_ROW_REPR_LIMIT = 300
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_NS_PER_DAY = 86_400 * 10**9

# ---------------------------------------------------------------------------------------------------------
# ISO 8601 strings: parse, remembering the shape, and render a value back in that shape


TzStyle = Literal["", "Z", "z", "colon", "nocolon", "hour"]


@dataclasses.dataclass(frozen=True)
class IsoShape:
    kind: Literal["date", "compact", "datetime"]
    sep: str = "T"
    precision: Literal["h", "m", "s"] = "s"
    frac_sep: str = "."
    frac_digits: int = 0
    tz: TzStyle = ""


class IsoValue(NamedTuple):
    value: date | datetime  # a stdlib date for date shapes, a stdlib datetime otherwise
    shape: IsoShape
    sub_us_ns: int  # nanoseconds beyond microsecond precision (0..999)


_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:([T ])(\d{2})(?::(\d{2})(?::(\d{2})(?:([.,])(\d{1,9}))?)?)?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?)?"
)
_COMPACT_DATE_RE = re.compile(r"(\d{4})(\d{2})(\d{2})")


def parse_iso(text: str, *, compact: bool = False) -> IsoValue | None:
    """Parse an ISO 8601 date or datetime string; ``None`` when ``text`` is not one.

    ``compact`` also accepts ``YYYYMMDD`` (only for lag: as a comparison key it would turn 8-digit ids into
    dates).
    """
    m = _ISO_RE.fullmatch(text)
    try:
        if m is None:
            if compact and (c := _COMPACT_DATE_RE.fullmatch(text)):
                return IsoValue(date(int(c[1]), int(c[2]), int(c[3])), IsoShape("compact"), 0)
            return None
        day = date(int(m[1]), int(m[2]), int(m[3]))
        if m[4] is None:
            return IsoValue(day, IsoShape("date"), 0)
        frac = m[9] or ""
        digits = (frac + "000000000")[:9]
        tz_text = m[10]
        tzinfo = None
        tz_style: TzStyle = ""
        if tz_text in ("Z", "z"):
            tzinfo, tz_style = UTC_TZ, ("Z" if tz_text == "Z" else "z")
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
    precision: Literal["h", "m", "s"] = "s" if m[7] else ("m" if m[6] else "h")
    shape = IsoShape("datetime", m[4], precision, m[8] or ".", len(frac), tz_style)
    return IsoValue(value, shape, int(digits[6:]))


def render_iso(value: date | datetime, shape: IsoShape, sub_us_ns: int = 0) -> str:
    """Render ``value`` in ``shape`` (the inverse of :func:`parse_iso`; finer precision is truncated)."""
    if shape.kind != "datetime":
        day = to_utc(value).date() if isinstance(value, datetime) else value
        if shape.kind == "compact":
            return f"{day.year:04d}{day.month:02d}{day.day:02d}"
        return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
    moment = _in_shape_zone(
        value if isinstance(value, datetime) else datetime(value.year, value.month, value.day), shape
    )
    out = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}{shape.sep}{moment.hour:02d}"
    if shape.precision in ("m", "s"):
        out += f":{moment.minute:02d}"
    if shape.precision == "s":
        out += f":{moment.second:02d}"
        if shape.frac_digits:
            out += shape.frac_sep + f"{moment.microsecond:06d}{sub_us_ns:03d}"[: shape.frac_digits]
    return out + _render_offset(moment, shape)


def _in_shape_zone(value: datetime, shape: IsoShape) -> datetime:
    """``value`` in the zone ``shape`` renders: naive UTC without an offset, UTC for ``Z``, else its own
    (a naive value is taken as UTC)."""
    if not shape.tz:
        return to_utc(value).replace(tzinfo=None) if value.tzinfo is not None else value
    if shape.tz in ("Z", "z"):
        return to_utc(value)
    return value.replace(tzinfo=UTC_TZ) if value.tzinfo is None else value


def _render_offset(value: datetime, shape: IsoShape) -> str:
    if shape.tz in ("", "Z", "z"):
        return shape.tz
    offset = value.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    hh, mm = divmod(abs(offset) // timedelta(minutes=1), 60)
    if shape.tz == "colon" or (shape.tz == "hour" and mm):
        return f"{sign}{hh:02d}:{mm:02d}"
    if shape.tz == "nocolon":
        return f"{sign}{hh:02d}{mm:02d}"
    return f"{sign}{hh:02d}"


# ---------------------------------------------------------------------------------------------------------
# datetimes


def _wall_fields(value: datetime) -> tuple[int, int, int, int, int, int, int]:
    """The wall clock fields of ``value``: year, month, day, hour, minute, second, microsecond."""
    return (value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond)


def to_stdlib(value: datetime) -> datetime:
    """A stdlib ``datetime`` with the same fields and tzinfo (pendulum arithmetic is not stdlib's)."""
    if type(value) is datetime:
        return value
    return datetime(*_wall_fields(value), value.tzinfo, fold=value.fold)


def to_utc(value: datetime) -> datetime:
    """Aware UTC stdlib datetime; a naive value is taken as UTC."""
    value = to_stdlib(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC_TZ)
    return value.astimezone(UTC_TZ)


def epoch_us(value: datetime) -> int:
    """Whole microseconds since the Unix epoch; naive values are UTC (dlt's ``datetime_to_timestamp_us``)."""
    value = to_stdlib(value)  # pendulum subtraction yields an Interval
    if value.tzinfo is None or value.utcoffset() is None:
        return (value.replace(tzinfo=None) - _EPOCH) // _ONE_US
    return (value - _EPOCH_UTC) // _ONE_US


def like(template: Any, value: datetime) -> datetime:
    """Give ``value`` the datetime class of ``template`` (pendulum in, pendulum out)."""
    if isinstance(template, pendulum.DateTime) and not isinstance(value, pendulum.DateTime):
        if value.tzinfo is None:
            return pendulum.naive(*_wall_fields(value), fold=value.fold)
        return pendulum.instance(value)
    if type(template) is datetime and isinstance(value, pendulum.DateTime):
        return to_stdlib(value)
    return value


# ---------------------------------------------------------------------------------------------------------
# Comparison keys: values of one "kind" compare with each other, different kinds never do


def cursor_key(value: Any) -> tuple[str, Any]:
    """The comparison key of a cursor value: ``(kind, key)``. Keys of one kind compare with each other
    (numbers numerically; datetimes, dates and ISO 8601 strings as nanoseconds since the epoch, naive =
    UTC), keys of different kinds never do."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float | Decimal):
        return ("number", value)
    if isinstance(value, datetime):
        return ("timestamp", epoch_us(value) * 1000)
    if isinstance(value, date):
        return ("timestamp", (value.toordinal() - _EPOCH_ORDINAL) * _NS_PER_DAY)
    if isinstance(value, str):
        return _text_key(value)
    return (f"{type(value).__module__}.{type(value).__qualname__}", value)


def _text_key(value: str) -> tuple[str, Any]:
    m = _ISO_RE.fullmatch(value)
    if m is None:
        return ("str", value)
    if m[4] is not None and (m[9] is None or len(m[9]) <= 6) and m[8] != "," and m[10] != "z":
        # the hot path (one call per row): the C parser agrees with parse_iso on these shapes
        try:
            return ("timestamp", epoch_us(datetime.fromisoformat(value)) * 1000)
        except ValueError:
            pass
    parsed = parse_iso(value)
    if parsed is None:
        return ("str", value)
    if isinstance(parsed.value, datetime):
        return ("timestamp", epoch_us(parsed.value) * 1000 + parsed.sub_us_ns)
    return ("timestamp", (parsed.value.toordinal() - _EPOCH_ORDINAL) * _NS_PER_DAY)


def describe_type(value: Any) -> str:
    """The type of a cursor value, as shown in error messages."""
    name = type(value).__name__
    if isinstance(value, str):
        parsed = parse_iso(value)
        if parsed is not None:
            return f"{name} (ISO {'timestamp' if parsed.shape.kind == 'datetime' else 'date'})"
    return name


def short(obj: Any, limit: int = _ROW_REPR_LIMIT) -> str:
    """``repr(obj)``, cut at ``limit`` characters (rows in error messages)."""
    text = repr(obj)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# ---------------------------------------------------------------------------------------------------------
# Cursor path


@functools.lru_cache(maxsize=256)
def compile_cursor_path(cursor_path: str) -> tuple[str | None, JSONPath | None]:
    """``(plain_key, None)`` for a single field name, ``(None, jsonpath)`` for anything else."""
    try:
        compiled = _parse_jsonpath(cursor_path)
    except Exception:
        # not JSONPath syntax (e.g. a key with spaces): the whole string is the key
        return cursor_path, None
    if isinstance(compiled, Fields) and len(compiled.fields) == 1 and compiled.fields[0] != "*":
        return compiled.fields[0], None
    return None, compiled


MISSING = object()

# ---------------------------------------------------------------------------------------------------------
# External-scheduler interval bounds


def as_moment(value: Any) -> datetime | None:
    """An interval bound as a datetime: a datetime as is, a date at midnight UTC, an ISO string parsed;
    ``None`` for anything else."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC_TZ)
    parsed = parse_iso(value) if isinstance(value, str) else None
    if parsed is None:
        return None
    day = parsed.value
    return day if isinstance(day, datetime) else datetime(day.year, day.month, day.day, tzinfo=UTC_TZ)


def coerce_moment(moment: datetime, sample: Any) -> Any:
    """``moment`` in the type of ``sample`` (a configured cursor value): a datetime (naive or aware as
    ``sample``; a datetime when ``sample`` is None), the date on the bound's wall clock, seconds since the
    epoch as int / float / Decimal, or an ISO string in ``sample``'s format. :data:`MISSING` when
    ``sample`` has none of these types."""
    if sample is None or isinstance(sample, datetime):
        return _like_zone(moment, sample)
    if isinstance(sample, date):
        return to_stdlib(moment).date()  # the day on the wall clock of the bound (the DAG's timezone)
    if isinstance(sample, int | float | Decimal) and not isinstance(sample, bool):
        us = epoch_us(moment)
        if isinstance(sample, int):
            return us // 1_000_000
        return us / 1_000_000 if isinstance(sample, float) else Decimal(us) / Decimal(1_000_000)
    shape_of = parse_iso(sample, compact=True) if isinstance(sample, str) else None
    if shape_of is None:
        return MISSING
    if shape_of.shape.tz not in ("", "Z", "z") and isinstance(shape_of.value, datetime):
        moment = to_utc(moment).astimezone(shape_of.value.tzinfo)
    if shape_of.shape.kind != "datetime":
        return render_iso(to_stdlib(moment).date(), shape_of.shape)  # the bound's own day
    return render_iso(moment, shape_of.shape)


def _like_zone(moment: datetime, sample: datetime | None) -> datetime:
    """``moment`` naive (UTC) or aware (UTC) like ``sample``."""
    if sample is not None and sample.tzinfo is None and moment.tzinfo is not None:
        return like(moment, to_utc(moment).replace(tzinfo=None))
    if sample is not None and sample.tzinfo is not None and moment.tzinfo is None:
        return like(moment, to_stdlib(moment).replace(tzinfo=UTC_TZ))
    return moment
