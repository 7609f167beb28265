"""The per-run filter of a bound incremental: which rows are in range, the running last value, the
boundary deduplication hashes, and the state slot written after every item.

:class:`CursorFilter` holds all the mutable state of one run of one resource; the
:class:`~airflow_state_provider.extract.incremental.config.Incremental` bound to that run creates it and
delegates :meth:`~airflow_state_provider.extract.incremental.config.Incremental.process` to it.
:class:`CursorOrder` compares cursor values in the direction of ``last_value_func``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import operator
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any

import orjson

from airflow_state_provider.exceptions import (
    IncrementalCursorPathMissing,
    IncrementalCursorTypeError,
    IncrementalPrimaryKeyMissing,
)
from airflow_state_provider.extract.incremental.values import (
    MISSING,
    compile_cursor_path,
    cursor_key,
    describe_type,
    epoch_us,
    short,
)

#: Default cap of the boundary dedup hash list (``max_unique_hashes``); beyond it the newest are kept.
MAX_UNIQUE_HASHES = 10_000

#: Above this many rows sharing the boundary cursor value a WARNING suggests a finer cursor (as dlt does).
DUPLICATE_CURSOR_WARNING_THRESHOLD = 200

_DEDUP_HASH_BYTES = 9  # 12 base64 characters, dlt >= 1.29
_LEGACY_HASH_BYTES = 15  # 20 characters, dlt < 1.29
LEGACY_HASH_LEN = 20
_TZINFO = operator.attrgetter("tzinfo")


def _hash_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return epoch_us(obj)
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
# Comparing cursor values


class CursorOrder:
    """Compares cursor values in the direction of ``last_value_func``: on normalized keys
    (:func:`~.values.cursor_key`) for the built-in ``max``/``min``, by calling a custom function
    otherwise. Values that cannot be compared raise :class:`IncrementalCursorTypeError` naming the
    pipeline, the resource and the cursor path."""

    def __init__(
        self,
        last_value_func: Callable[[Sequence[Any]], Any],
        *,
        pipeline_name: str | None,
        resource_name: str | None,
        cursor_path: str | None,
    ) -> None:
        self.last_value_func = last_value_func
        self.builtin = last_value_func in (max, min)
        self.is_max = last_value_func is max
        self.pipeline_name = pipeline_name
        self.resource_name = resource_name
        self.cursor_path = cursor_path

    def wins(self, a: Any, b: Any, what: str) -> bool:
        """``last_value_func((a, b)) == a``, on normalized keys for ``max``/``min``."""
        if self.builtin:
            return self.after(a, b, what) >= 0
        return self.call((a, b), what, b) == a

    def after(self, a: Any, b: Any, what: str) -> int:
        """>0 when ``a`` comes after ``b`` in the direction of ``max``/``min``, 0 when equal."""
        return self.compare(cursor_key(a), cursor_key(b), a, b, what)

    def compare(self, a_key: tuple[str, Any], b_key: tuple[str, Any], a: Any, b: Any, what: str) -> int:
        """Like :meth:`after`, on keys already computed (``a``/``b`` are named in the error)."""
        if a_key[0] == b_key[0]:
            try:
                c = (a_key[1] > b_key[1]) - (a_key[1] < b_key[1])
            except TypeError:
                pass
            else:
                return c if self.is_max else -c
        raise self.type_error(a, b, what)

    def call(self, values: tuple[Any, ...], what: str, other: Any) -> Any:
        """``last_value_func(values)``; its exceptions become :class:`IncrementalCursorTypeError`."""
        try:
            return self.last_value_func(values)
        except Exception as exc:
            raise self.type_error(values[0], other, what or "cursor", detail=str(exc)) from exc

    def type_error(self, found: Any, stored: Any, what: str, detail: str = "") -> IncrementalCursorTypeError:
        return IncrementalCursorTypeError(
            f"Pipeline `{self.pipeline_name}`, resource `{self.resource_name}`: the value {short(found)} at"
            f" cursor path `{self.cursor_path}` cannot be compared with the {what} {short(stored)}"
            f" (stored type: {describe_type(stored)}, found type: {describe_type(found)})"
            + (f": {detail}" if detail else "")
            + ". The cursor type changed between runs or the rows mix types: yield one cursor type (e.g."
            " convert it in the resource) or reset this resource's incremental state.",
            pipeline_name=self.pipeline_name,
            resource=self.resource_name,
            column=self.cursor_path,
        )


# ---------------------------------------------------------------------------------------------------------
# The per-run filter


class CursorFilter:
    """The mutable state of one bound run: filters items and keeps ``state`` (the cursor's slot,
    ``{initial_value, last_value, unique_hashes, start_value}``) up to date after each one.

    Args:
        state: The cursor's state slot (a throw-away dict for a stateless run).
        order: How cursor values compare.
        start_value: The lower end of the range: the stored ``last_value``, lagged.
        dedup: Whether rows on the boundary value are deduplicated by hash.
        max_unique_hashes: Cap of the hash list (``None``: :data:`MAX_UNIQUE_HASHES`).
        config: The bound incremental's settings: ``cursor_path``, ``end_value``, ``primary_key``,
            ``row_order``, ``range_start``, ``range_end``, ``on_cursor_value_missing``, ``lag``,
            ``pipeline_name``, ``resource_name``.
        log: Where warnings go.
    """

    def __init__(
        self,
        state: dict[str, Any],
        order: CursorOrder,
        *,
        start_value: Any,
        dedup: bool,
        max_unique_hashes: int | None,
        config: dict[str, Any],
        log: logging.Logger,
    ) -> None:
        self.state = state
        self.order = order
        self.log = log
        self.cursor_path: str = config["cursor_path"]
        self.end_value = config["end_value"]
        self.primary_key = config["primary_key"]
        self.row_order = config["row_order"]
        self.range_start = config["range_start"]
        self.range_end = config["range_end"]
        self.on_cursor_value_missing = config["on_cursor_value_missing"]
        self.lag = config["lag"]
        self.pipeline_name = config["pipeline_name"]
        self.resource_name = config["resource_name"]
        self._plain_key, self._jsonpath = compile_cursor_path(self.cursor_path)

        self._pre_run_last_value = state.get("last_value")
        self._start_value = start_value
        self._start_key = None if start_value is None else cursor_key(start_value)
        self._end_key = None if self.end_value is None else cursor_key(self.end_value)
        self._last: Any = start_value  # the running last value of this run
        self._last_key = self._start_key
        self._advanced = False  # the running last value moved past the start value
        self._stop = False  # sticky: ordered rows left the range
        self._dedup = dedup
        self._cap = max_unique_hashes or MAX_UNIQUE_HASHES
        stored = list(state.get("unique_hashes") or []) if dedup else []
        self._start_hashes = stored  # stored unique_hashes, in their stored order
        self._start_hash_set = set(stored)
        self._start_legacy = any(len(h) == LEGACY_HASH_LEN for h in stored)  # dlt < 1.29 hashes
        self._hash_legacy = self._start_legacy  # format of the hashes collected in this run
        self._new_hashes: dict[str, None] = {}  # ordered set: rows on the running last value
        self._pending: list[tuple[Any, str | None]] = []  # rows on it not hashed yet (this page)
        self._written_hash_count = len(state.get("unique_hashes") or [])
        self._hashes_dirty = False
        self._boundary_rows = len(stored)  # rows known to sit on the running last value
        self._cap_warned = False
        self._text_warned = False  # warned once that string cursor values are not ISO 8601
        self._out_of_order = False
        # the common case (a field name, max/min, no end_value) may take a whole page at once
        self._pages_at_once = self._plain_key is not None and order.builtin and self.end_value is None

    @property
    def start_value(self) -> Any:
        return self._start_value

    @property
    def stopped(self) -> bool:
        """True once ordered rows (``row_order``) left the range."""
        return self._stop

    @property
    def out_of_order(self) -> bool:
        """True once a row arrived behind a value this run had passed (``row_order='asc'`` broken)."""
        return self._out_of_order

    def process(self, item: Any) -> tuple[Any, bool]:
        """Filter one item (a row or a list of rows) and update the state slot.

        Returns:
            ``(item, stop)``: the rows that are in range (a new list for a list input, the row itself for a
            row input; ``None`` when nothing is left) and whether the generator should be closed because
            ordered rows (``row_order``) left the range. Rows are never modified.
        """
        if item is None or (isinstance(item, list) and not item):
            return None, self._stop
        if isinstance(item, list):
            kept = self._page_at_once(item) if self._pages_at_once else None
            if kept is None:
                kept = [row for row in item if self._keep(row)]
            result: Any = kept or None
        else:
            result = item if self._keep(item) else None
        self._write_state(rows_arrived=result is not None)
        return result, self._stop

    def _page_at_once(self, rows: list[Any]) -> list[Any] | None:
        """The rows of a page kept, with the state moved exactly as :meth:`_keep` row by row would move
        it, for the two pages that need no row-by-row decision; None (nothing changed) for any other:

        - cursor values in order (ascending for ``max``, each after or on the previous one), the first
          after the running last value: every row is kept, the last value moves to the page's last
          value, and the rows on it wait to be hashed (:meth:`_remember`);
        - every value before the start value: no row is kept (``row_order="desc"`` stops).
        """
        values = self._comparable_values(rows)
        last_key = self._last_key
        if values is None or (last_key is not None and last_key[0] != "timestamp"):
            return None  # the row-by-row path decides (and names any conflict)
        is_max = self.order.is_max
        try:
            in_order = all(map(operator.le if is_max else operator.ge, values, values[1:]))
            extreme = max(values) if is_max else min(values)
        except TypeError:  # naive and aware values mixed
            return None
        if in_order:
            first = cursor_key(values[0])[1]
            if last_key is None or (first > last_key[1] if is_max else first < last_key[1]):
                self._advance_page(rows, values)
                return list(rows)
        start_key = self._start_key
        if start_key is not None and start_key[0] == "timestamp":
            end = cursor_key(extreme)[1]
            if end < start_key[1] if is_max else end > start_key[1]:
                self._stop = self._stop or self.row_order == "desc"
                return []
        return None

    def _comparable_values(self, rows: list[Any]) -> list[datetime] | None:
        """The cursor values of ``rows`` if they are all stdlib datetimes, naive or with fixed offsets:
        their own comparisons then order them as instants, as :func:`~.values.cursor_key` does (a zone
        with daylight saving time compares wall clocks within itself). None otherwise."""
        key = self._plain_key
        try:
            values = [row[key] for row in rows]
        except Exception:  # a row without the field, or not a mapping
            return None
        if set(map(type, values)) != {datetime}:
            return None
        if not all(zone is None or type(zone) is timezone for zone in set(map(_TZINFO, values))):
            return None
        return values

    def _advance_page(self, rows: list[Any], values: list[datetime]) -> None:
        """What :meth:`_advance` and :meth:`_remember` do for rows in order, all after the last value."""
        on_last = len(values) - 1
        while on_last and values[on_last - 1] == values[-1]:
            on_last -= 1
        self._last = values[on_last]
        self._last_key = cursor_key(values[on_last])
        self._advanced = True
        if self._dedup:
            self._new_hashes = {}
            self._pending = [(row, None) for row in rows[on_last:]]
            self._boundary_rows = 0
            self._hash_legacy = False
            self._hashes_dirty = True

    def _keep(self, row: Any) -> bool:
        value = self._find_cursor_value(row)
        if value is MISSING or value is None:
            policy = self.on_cursor_value_missing
            if policy == "raise":
                raise self._missing_error(row, value is None)
            return policy == "include"
        if self.order.builtin:
            return self._keep_ordered(row, value)
        return self._keep_custom(row, value)

    def _keep_ordered(self, row: Any, value: Any) -> bool:
        """dlt's JSON filter for ``max``/``min``, on normalized keys."""
        key = cursor_key(value)
        if key[0] == "str" and not self._text_warned:
            self._warn_text_cursor(value)
        if self._end_key is not None:
            c = self.order.compare(key, self._end_key, value, self.end_value, "end_value")
            if c > 0 or (c == 0 and self.range_end == "open"):
                self._stop = self._stop or self.row_order == "asc"
                return False
        if self._last_key is not None:
            c_last = self.order.compare(key, self._last_key, value, self._last, self._last_label())
            if c_last <= 0:
                return self._keep_not_after_last(row, value, key, c_last)
        self._advance(row, value, key)
        return True

    def _keep_not_after_last(self, row: Any, value: Any, key: tuple[str, Any], c_last: int) -> bool:
        """A row at or behind the running last value: in range unless before the start value (or on it
        and already loaded: its hash is stored)."""
        row_hash = None
        if self._start_key is not None:
            c = self.order.compare(key, self._start_key, value, self._start_value, "start_value")
            if c < 0 or (c == 0 and self.range_start == "open"):
                self._stop = self._stop or self.row_order == "desc"
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

    def _keep_custom(self, row: Any, value: Any) -> bool:
        """dlt's JSON filter for a custom ``last_value_func``, literally (raw values, ``==``)."""
        func = self.order.call
        end = self.end_value
        beyond_end = end is not None and (
            func((value, end), "end_value", end) != end
            or (self.range_end == "open" and func((value,), "end_value", end) == end)
        )
        if beyond_end:
            self._stop = self._stop or self.row_order == "asc"
            return False
        last = self._last
        new = func((value,), "", None) if last is None else func((value, last), self._last_label(), last)
        if last is not None and last == new:
            return self._keep_custom_not_after_last(row, value, last)
        self._advance(row, new, None)
        return True

    def _keep_custom_not_after_last(self, row: Any, value: Any, last: Any) -> bool:
        func = self.order.call
        own = func((value,), "", None)
        start = self._start_value
        if self.range_start == "open" and start is not None and own == start:
            self._stop = self._stop or self.row_order == "desc"
            return False
        if start is not None and func((value, start), "start_value", start) == start:
            if own != start:
                self._stop = self._stop or self.row_order == "desc"
                return False
            if self._dedup and self._row_hash(row, self._start_legacy) in self._start_hash_set:
                return False
        if own == last and self._dedup:
            self._remember(row, None)
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
        state = self.state
        state["last_value"] = self._settled_last_value()
        if rows_arrived:
            state["start_value"] = self._pre_run_last_value
        if not self._dedup:
            state["unique_hashes"] = []
        elif self._hashes_dirty:
            state["unique_hashes"] = self._boundary_hashes()

    def _settled_last_value(self) -> Any:
        """The running last value, never behind the stored one (lag starts the range before it)."""
        last, pre = self._last, self._pre_run_last_value
        if pre is None:
            return last
        if last is None:
            return pre
        if self.order.builtin:
            return pre if self.order.after(last, pre, "stored last_value") < 0 else last
        if self.lag:
            return self.order.call((last, pre), "stored last_value", pre)
        return last

    def _boundary_hashes(self) -> list[str]:
        """The hashes of the rows on the last value: the stored ones (unless it moved) and this run's,
        capped at ``max_unique_hashes`` (newest kept)."""
        self._hashes_dirty = False
        self._hash_pending()
        hashes = [] if self._advanced else list(self._start_hashes)
        hashes.extend(h for h in self._new_hashes if h not in self._start_hash_set or self._advanced)
        if len(hashes) > self._cap:
            self._warn_cap(len(hashes))
            hashes = hashes[-self._cap :]
        before, self._written_hash_count = self._written_hash_count, len(hashes)
        if before <= DUPLICATE_CURSOR_WARNING_THRESHOLD < len(hashes):
            self.log.warning(
                f"Large number of records ({len(hashes)}) sharing the same value of cursor field"
                f" '{self.cursor_path}' on resource '{self.resource_name}'. This can happen if the cursor"
                " field has a low resolution (e.g., only stores dates without times), causing many records"
                " to share the same cursor value. Consider using a cursor column with higher resolution to"
                " reduce the deduplication state size."
            )
        return hashes

    def _warn_text_cursor(self, value: str) -> None:
        self._text_warned = True
        self.log.warning(
            f"Incremental `{self.cursor_path}` on resource `{self.resource_name}` (pipeline"
            f" `{self.pipeline_name}`): the cursor value {short(value)} is a string but not an ISO 8601"
            " date or datetime, so cursor values are compared as text (character by character, as dlt"
            " does): '12/31/2024' sorts after '01/01/2025'. Convert the cursor to a datetime or an ISO"
            " string in the resource unless text order is what you mean."
        )

    def _warn_cap(self, count: int) -> None:
        if self._cap_warned:
            return
        self._cap_warned = True
        self.log.warning(
            f"Incremental `{self.cursor_path}` on resource `{self.resource_name}` (pipeline"
            f" `{self.pipeline_name}`): {count} rows share the boundary cursor value {self._last!r}, more"
            f" than the {self._cap} deduplication hashes kept in state; only the newest {self._cap} are"
            " kept. Rows on that value whose hash was dropped are loaded again if the source returns them on"
            " the next run. To avoid this use a cursor with a finer resolution, use range_start='open' if"
            " cursor values never repeat across runs, or load with write_disposition='merge' and a primary"
            " key so re-delivered rows are upserted (or raise max_unique_hashes)."
        )

    def _find_cursor_value(self, row: Any) -> Any:
        if self._plain_key is not None:
            try:
                return row[self._plain_key]
            except KeyError:
                return MISSING
            except (TypeError, IndexError):
                return getattr(row, self._plain_key, MISSING)
        assert self._jsonpath is not None
        matches = self._jsonpath.find(row)
        return matches[0].value if matches else MISSING

    def _row_hash(self, row: Any, legacy: bool) -> str:
        pk = self.primary_key
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
                f" of cursor `{self.cursor_path}`, was not found in row {short(row)}. All rows must contain"
                " it, or pass primary_key=() to the incremental to disable deduplication."
            ) from exc
        try:
            return dedup_hash(value, legacy)
        except TypeError as exc:
            raise IncrementalCursorTypeError(
                f"Pipeline `{self.pipeline_name}`, resource `{self.resource_name}`: cannot hash"
                f" {'the row' if pk is None else 'the primary key value'} {short(value)} to deduplicate rows"
                f" on the boundary of cursor `{self.cursor_path}`: {exc}. Set a primary_key of JSON-like"
                " values, or primary_key=() to disable deduplication."
            ) from exc

    def _missing_error(self, row: Any, is_none: bool) -> IncrementalCursorPathMissing:
        what = "has the value None" if is_none else "was not found"
        return IncrementalCursorPathMissing(
            f"Pipeline `{self.pipeline_name}`, resource `{self.resource_name}`: cursor path"
            f" `{self.cursor_path}` {what} in row {short(row)}. Every row must carry a cursor value; use"
            " the field names of the source data (not the normalized column names), or construct the"
            " incremental with on_cursor_value_missing='include' or 'exclude'."
        )
