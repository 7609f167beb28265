"""``Incremental``: configuration, validation and binding of an incremental cursor.

An unbound :class:`Incremental` is configuration only (validated when constructed, merged with
:meth:`Incremental.merge`). :meth:`Incremental.bind` returns a new bound copy for one run of one resource:
it reads the stored cursor slot (or joins the external scheduler's interval) and hands the run's mutable
state to a :class:`~.transform.CursorFilter`, which :meth:`Incremental.process` delegates to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from airflow_state_provider.exceptions import (
    IncrementalCursorPathMissing,
    IncrementalCursorTypeError,
    IncrementalNoIntervalError,
)
from airflow_state_provider.extract.incremental.lag import declared_lag_unit, lag_value
from airflow_state_provider.extract.incremental.transform import (
    CursorFilter,
    CursorOrder,
)
from airflow_state_provider.extract.incremental.values import (
    MISSING,
    as_moment,
    coerce_moment,
    cursor_key,
    describe_type,
    like,
)

#: Logger of the bind line and the warnings of incremental cursors.
LOGGER_NAME = "airflow_state_provider.incremental"

OnCursorValueMissing = Literal["raise", "include", "exclude"]
RangeBound = Literal["open", "closed"]
RowOrder = Literal["asc", "desc"]
PrimaryKey = str | Sequence[str] | Callable[[Any], Any] | None

_TYPED: dict[tuple[type, Any], type] = {}  # incremental[T] classes, one per (class, T)


def _zero_length(interval: tuple[Any, Any]) -> bool:
    """True when the interval's start is not before its end (compared as instants)."""
    start_key, end_key = cursor_key(interval[0]), cursor_key(interval[1])
    return start_key[0] == end_key[0] == "timestamp" and end_key[1] <= start_key[1]


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
        self._builtin = last_value_func in (max, min)
        self._is_max = last_value_func is max
        self._initial_value = initial_value
        self._end_value = end_value
        self._primary_key = primary_key
        self._order = CursorOrder(
            last_value_func, pipeline_name=None, resource_name=None, cursor_path=cursor_path
        )

        # bound run; set by bind() on the copy
        self.pipeline_name: str | None = None
        self.resource_name: str | None = None
        self._bound = False
        self._joined = False  # bound to an external scheduler's range
        self._log = logging.getLogger(LOGGER_NAME)
        self._run: CursorFilter | None = None  # the bound run's filter and its mutable state

        if end_value is not None and cursor_path is not None:  # a partial one is checked once merged
            if initial_value is None:
                raise ValueError(
                    f"incremental({cursor_path!r}): end_value={end_value!r} was given without initial_value;"
                    " initial_value is required when using end_value"
                )
            self._check_end_after_initial()

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
        return self._public(self._run.start_value if self._run is not None else self._initial_value)

    @property
    def last_value(self) -> Any:
        """The current ``last_value`` (it moves while rows are processed), lagged like ``start_value``.

        Unbound: ``initial_value``.
        """
        if self._run is None:
            return self._public(self._initial_value)
        return self._public(self._lagged(self._run.state.get("last_value")))

    @property
    def state(self) -> dict[str, Any] | None:
        """The bound run's cursor slot ``{initial_value, last_value, unique_hashes, start_value}`` as
        written so far (a throw-away one for a stateless run); ``None`` unbound."""
        return self._run.state if self._run is not None else None

    def can_close(self) -> bool:
        """True once ordered rows (``row_order``) left the range: ascending rows passed ``end_value``, or
        descending rows fell below the start value (dlt's ``Incremental.can_close``). The pipeline then
        closes the generator by itself; a resource may also return early."""
        return self._run is not None and self._run.stopped

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
        new._order = CursorOrder(
            new.last_value_func,
            pipeline_name=pipeline_name,
            resource_name=resource_name,
            cursor_path=self.cursor_path,
        )
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
        fresh = {
            "initial_value": self._initial_value,
            "last_value": self._initial_value,
            "unique_hashes": [],
            "start_value": self._initial_value,
        }
        if self._end_value is not None:
            state: dict[str, Any] = fresh  # stateless: nothing is written to the resource state
        else:
            state = resource_state.setdefault("incremental", {}).setdefault(self.cursor_path, {})
            if not state:
                state.update(fresh)
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
        self._run = CursorFilter(
            state,
            self._order,
            start_value=self._lagged(state.get("last_value")),
            dedup=self._dedup_enabled(),
            max_unique_hashes=self._config["max_unique_hashes"],
            config={
                **self._config,
                "end_value": self._end_value,
                "primary_key": self._primary_key,
                "pipeline_name": self.pipeline_name,
                "resource_name": self.resource_name,
            },
            log=self._log,
        )

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
        if self._run is not None and self._run.out_of_order:
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
        moment = as_moment(value)
        if moment is None:
            raise IncrementalCursorTypeError(
                f"Pipeline `{self.pipeline_name}`, resource `{self.resource_name}`: the external scheduler"
                f" interval {which} {value!r} is not a datetime; cannot build the range of cursor"
                f" `{self.cursor_path}`.",
                pipeline_name=self.pipeline_name,
                resource=self.resource_name,
                column=self.cursor_path,
            )
        coerced = coerce_moment(moment, sample)
        if coerced is MISSING:
            raise IncrementalCursorTypeError(
                f"Pipeline `{self.pipeline_name}`, resource `{self.resource_name}`: cannot coerce the"
                f" external scheduler interval {which} {value!r} to the type of the cursor"
                f" `{self.cursor_path}`"
                f" ({describe_type(sample)}, from {sample!r}). Use a datetime, date, number or ISO string"
                " initial_value, or allow_external_schedulers=False.",
                pipeline_name=self.pipeline_name,
                resource=self.resource_name,
                column=self.cursor_path,
            )
        return coerced

    # -- process --------------------------------------------------------------------------------------------

    def process(self, item: Any) -> tuple[Any, bool]:
        """Filter one item (a row or a list of rows) and update the state slot.

        Returns:
            ``(item, stop)``: the rows that are in range (a new list for a list input, the row itself for a
            row input; ``None`` when nothing is left) and whether the generator should be closed because
            ordered rows (``row_order``) left the range. Rows are never modified.

        Raises:
            IncrementalCursorPathMissing: a row has no cursor value and ``on_cursor_value_missing`` is
                ``"raise"``.
            IncrementalCursorTypeError: cursor values that cannot be compared with the stored ones.
            IncrementalPrimaryKeyMissing: a row lacks the primary key used for boundary deduplication.
        """
        if self._run is None:
            raise RuntimeError(
                f"incremental({self.cursor_path!r}) is not bound: call bind() and process with the copy it"
                " returns"
            )
        return self._run.process(item)

    # -- helpers --------------------------------------------------------------------------------------------

    def _lagged(self, value: Any) -> Any:
        lag = self.lag
        if not lag or value is None or not self._builtin or self._end_value is not None:
            return value
        try:
            unit = declared_lag_unit(self.cursor_type or self._initial_value)
            lagged = lag_value(value, lag, self._is_max, unit)
        except TypeError:
            raise IncrementalCursorTypeError(
                f"Pipeline `{self.pipeline_name}`, resource `{self.resource_name}`: lag={lag!r} is not"
                f" supported for the cursor `{self.cursor_path}` value {value!r} ({describe_type(value)});"
                " lag works with datetimes, dates, ISO date/datetime strings and numbers."
            ) from None
        initial = self._initial_value
        if initial is not None and self._after(lagged, initial, "initial_value") <= 0:
            return initial  # never cross initial_value
        return lagged

    def _wins(self, a: Any, b: Any, what: str) -> bool:
        return self._order.wins(a, b, what)

    def _after(self, a: Any, b: Any, what: str) -> int:
        return self._order.after(a, b, what)

    def _check_end_after_initial(self) -> None:
        initial, end = self._initial_value, self._end_value
        try:
            if self._builtin:
                end_key, initial_key = cursor_key(end), cursor_key(initial)
                if end_key[0] != initial_key[0]:
                    raise TypeError(f"{describe_type(end)} vs {describe_type(initial)}")
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
            return like(self._config["initial_value"], value)
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
