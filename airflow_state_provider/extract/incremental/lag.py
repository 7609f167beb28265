"""Lag: the attribution window that starts a run's range before the stored ``last_value``.

The unit follows dlt 1.31: the cursor type declares it (``incremental[date]``, or the type of
``initial_value``: seconds for a datetime, days for a date); without a declaration each value's own type
decides. Numbers move by units. Pure functions.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

import pendulum

from airflow_state_provider.extract.incremental.values import like, parse_iso, render_iso, to_stdlib

LagUnit = Literal["days", "seconds"]


def lag_value(value: Any, lag: float, is_max: bool, unit: LagUnit | None) -> Any:
    """Move ``value`` back (``max``) or forward (``min``) by ``lag``.

    Numbers move by ``lag`` units. For dates and datetimes (objects or ISO strings) the unit is the
    declared one (``unit``, from ``initial_value``) or, when nothing is declared, the value's own: days for
    a date, seconds for a datetime. The result keeps the shape of ``value`` (a string stays in its
    format), except that a date *object* lagged in seconds becomes a naive datetime, as in dlt 1.31.
    Raises ``TypeError`` for a value lag does not apply to (bool, non-ISO text, other types).
    """
    signed = -lag if is_max else lag
    if isinstance(value, bool):
        raise TypeError(f"lag does not apply to {value!r}")
    if isinstance(value, int):
        return int(value + signed)
    if isinstance(value, float):
        return value + signed
    if isinstance(value, Decimal):
        return value + Decimal(str(signed))
    if isinstance(value, datetime):
        if unit == "days":
            return like(value, lag_datetime_in_days(to_stdlib(value), signed, is_max))
        return like(value, shift_seconds(to_stdlib(value), signed))
    if isinstance(value, date):
        return _lag_date(value, signed, unit)
    if isinstance(value, str):
        return _lag_text(value, signed, is_max, unit)
    raise TypeError(f"lag does not apply to {type(value).__name__}")


def _lag_date(value: date, signed: float, unit: LagUnit | None) -> date | datetime:
    if unit == "seconds":  # a naive midnight, as dlt's ensure_datetime makes it
        return shift_seconds(datetime(value.year, value.month, value.day), signed)
    lagged = date(value.year, value.month, value.day) + timedelta(days=signed)
    if isinstance(value, pendulum.Date):
        return pendulum.date(lagged.year, lagged.month, lagged.day)
    return lagged


def _lag_text(value: str, signed: float, is_max: bool, unit: LagUnit | None) -> str:
    """An ISO date or datetime string lagged and rendered in its own format."""
    parsed = parse_iso(value, compact=True)
    if parsed is None:
        raise TypeError(f"lag does not apply to the text {value!r} (not an ISO date or datetime)")
    if isinstance(parsed.value, datetime):
        if unit == "days":
            return render_iso(lag_datetime_in_days(parsed.value, signed, is_max), parsed.shape)
        return render_iso(shift_seconds(parsed.value, signed), parsed.shape, parsed.sub_us_ns)
    if unit == "seconds":
        day = parsed.value
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return render_iso(shift_seconds(midnight, signed), parsed.shape)
    return render_iso(parsed.value + timedelta(days=signed), parsed.shape)


def shift_seconds(value: datetime, seconds: float) -> datetime:
    """``value`` moved by ``seconds`` (an aware value as an instant)."""
    if value.tzinfo is None:
        return value + timedelta(seconds=seconds)
    # shift the instant, not the wall clock, so the lag stays exact across DST transitions
    return (value.astimezone(UTC) + timedelta(seconds=seconds)).astimezone(value.tzinfo)


def lag_datetime_in_days(value: datetime, days: float, is_max: bool) -> datetime:
    """Lag a datetime by days as for a date cursor: whole UTC days, snapped to the start (lower bound,
    ``max``) or the end (upper bound, ``min``) of the day, so the whole day stays in range."""
    tz = value.tzinfo
    utc = value.astimezone(UTC) if tz is not None else value
    day = utc.date() + timedelta(days=days)
    lagged = datetime.combine(day, time.min if is_max else time.max, tzinfo=utc.tzinfo)
    return lagged.astimezone(tz) if tz is not None else lagged


def declared_lag_unit(initial_value: Any) -> LagUnit | None:
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
        parsed = parse_iso(initial_value, compact=True)
        if parsed is not None:
            return "seconds" if parsed.shape.kind == "datetime" else "days"
    return None
