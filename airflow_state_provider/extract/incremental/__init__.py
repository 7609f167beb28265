"""Incremental cursors: the pure row filter behind ``incremental(...)`` (DESIGN §6).

The package, modelled on dlt's ``extract/incremental``:

* :mod:`.config` -- :class:`Incremental`: configuration, validation and binding (external schedulers too);
* :mod:`.transform` -- the per-run filter (:class:`~.transform.CursorFilter`, the bound run's mutable
  state), cursor comparison and the boundary dedup hashes;
* :mod:`.lag` -- the attribution window;
* :mod:`.values` -- cursor values, comparison keys and ISO 8601 handling;
* errors live in :mod:`airflow_state_provider.exceptions` (re-exported here).

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

from airflow_state_provider.exceptions import (
    IncrementalCursorPathMissing,
    IncrementalCursorTypeError,
    IncrementalNoIntervalError,
    IncrementalPrimaryKeyMissing,
)
from airflow_state_provider.extract.incremental.config import (
    LOGGER_NAME,
    Incremental,
    OnCursorValueMissing,
    PrimaryKey,
    RangeBound,
    RowOrder,
    incremental,
)
from airflow_state_provider.extract.incremental.lag import LagUnit
from airflow_state_provider.extract.incremental.transform import (
    DUPLICATE_CURSOR_WARNING_THRESHOLD,
    MAX_UNIQUE_HASHES,
    dedup_hash,
)

__all__ = [
    "DUPLICATE_CURSOR_WARNING_THRESHOLD",
    "LOGGER_NAME",
    "MAX_UNIQUE_HASHES",
    "Incremental",
    "IncrementalCursorPathMissing",
    "IncrementalCursorTypeError",
    "IncrementalNoIntervalError",
    "IncrementalPrimaryKeyMissing",
    "LagUnit",
    "OnCursorValueMissing",
    "PrimaryKey",
    "RangeBound",
    "RowOrder",
    "dedup_hash",
    "incremental",
]
