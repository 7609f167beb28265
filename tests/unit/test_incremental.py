"""The incremental cursor on plain rows (DESIGN §6, dlt semantics from reference/dlt-state.md §5).

A "run" restores a deep copy of the resource state, binds the cursor and feeds it pages, as the Pipeline does.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pendulum
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_state_provider.exceptions import (
    IncrementalCursorPathMissing,
    IncrementalCursorTypeError,
    PipelineStateError,
)
from airflow_state_provider.extract import incremental as incremental_module
from airflow_state_provider.extract.incremental import (
    Incremental,
    IncrementalPrimaryKeyMissing,
    dedup_hash,
    incremental,
)

PIPE = "pipe"
RES = "events"
LOGGER = "airflow_state_provider.incremental"


@dataclass
class Run:
    rows: list[Any]
    state: dict[str, Any]
    inc: Incremental
    stop: bool

    def ids(self) -> list[Any]:
        return [r["id"] for r in self.rows]

    def slot(self, cursor_path: str = "c") -> dict[str, Any]:
        return self.state["incremental"][cursor_path]


def run(inc: Incremental, *pages: Any, state: dict | None = None, **bind_kwargs: Any) -> Run:
    """One run: restore (deep copy) ``state``, bind, process ``pages``."""
    resource_state = copy.deepcopy(state) if state is not None else {}
    bind_kwargs.setdefault("pipeline_name", PIPE)
    bind_kwargs.setdefault("resource_name", RES)
    bound = inc.bind(resource_state=resource_state, **bind_kwargs)
    rows: list[Any] = []
    stop = False
    for page in pages:
        out, stop = bound.process(page)
        if out is not None:
            rows.extend(out if isinstance(out, list) else [out])
    return Run(rows, resource_state, bound, stop)


def stored(last_value: Any, cursor_path: str = "c", unique_hashes: list[str] | None = None) -> dict:
    return {
        "incremental": {
            cursor_path: {
                "initial_value": None,
                "last_value": last_value,
                "unique_hashes": unique_hashes or [],
                "start_value": None,
            }
        }
    }


def rows_of(*pairs: tuple[Any, Any]) -> list[dict[str, Any]]:
    return [{"id": i, "c": c} for i, c in pairs]


# ---------------------------------------------------------------------------------------------------------
# the seed 003 example (lag / attribution window) at the cursor level

SEED_RUN_1 = [
    {"id": 1, "created_at": "2023-03-03T01:00:00Z", "event": "1"},
    {"id": 2, "created_at": "2023-03-03T02:00:00Z", "event": "2"},
]
SEED_RUN_2 = [
    {"id": 0, "created_at": "2023-03-03T00:59:59Z", "event": "0_outside_window"},
    {"id": 1, "created_at": "2023-03-03T01:00:00Z", "event": "1_updated"},
    {"id": 2, "created_at": "2023-03-03T02:00:01Z", "event": "2_updated"},
    {"id": 3, "created_at": "2023-03-03T03:00:00Z", "event": "3"},
]


def test_seed_003_lag_refetches_the_last_hour_on_the_second_run() -> None:
    inc = incremental("created_at", lag=3600, last_value_func=max)
    first = run(inc, SEED_RUN_1, primary_key="id")
    assert first.ids() == [1, 2]
    assert first.slot("created_at") == {
        "initial_value": None,
        "last_value": "2023-03-03T02:00:00Z",
        "unique_hashes": [],  # lag disables boundary dedup
        "start_value": None,
    }

    second = run(inc, SEED_RUN_2, state=first.state, primary_key="id")
    assert second.inc.start_value == "2023-03-03T01:00:00Z"  # last_value - 1h, same string format
    assert second.ids() == [1, 2, 3]  # id 1 sits exactly on the lagged start: closed range keeps it
    assert second.slot("created_at") == {
        "initial_value": None,
        "last_value": "2023-03-03T03:00:00Z",
        "unique_hashes": [],
        "start_value": "2023-03-03T02:00:00Z",  # the pre-run (unlagged) last value
    }
    assert second.inc.last_value == "2023-03-03T02:00:00Z"  # lagged, like dlt's property


def test_seed_003_without_lag_loads_only_rows_after_the_last_value() -> None:
    inc = incremental("created_at")
    first = run(inc, SEED_RUN_1, primary_key="id")
    second = run(inc, SEED_RUN_2, state=first.state, primary_key="id")
    assert second.inc.start_value == "2023-03-03T02:00:00Z"
    assert second.ids() == [2, 3]


# ---------------------------------------------------------------------------------------------------------
# lag


BERLIN = pendulum.timezone("Europe/Berlin")


@pytest.mark.parametrize(
    ("last_value", "lag", "func", "initial", "expected"),
    [
        (datetime(2024, 1, 2, tzinfo=UTC), 3600, max, None, datetime(2024, 1, 1, 23, tzinfo=UTC)),
        (datetime(2024, 1, 2, tzinfo=UTC), 3600, min, None, datetime(2024, 1, 2, 1, tzinfo=UTC)),
        (datetime(2024, 1, 2), 90.5, max, None, datetime(2024, 1, 1, 23, 58, 29, 500000)),
        (date(2024, 1, 10), 2, max, None, date(2024, 1, 8)),
        (date(2024, 1, 10), 2, min, None, date(2024, 1, 12)),
        (100, 10, max, None, 90),
        (100, 10, min, None, 110),
        (100, 10, max, 95, 95),  # never crosses initial_value
        (100, 10, min, 105, 105),
        (100, 2.5, max, None, 97),  # int stays int, like dlt
        (1.5, 0.5, max, None, 1.0),
        (Decimal("10.5"), 1, max, None, Decimal("9.5")),
        ("2024-01-02T00:00:00Z", 3600, max, None, "2024-01-01T23:00:00Z"),
        ("2024-01-02T00:00:00+02:00", 3600, max, None, "2024-01-01T23:00:00+02:00"),
        ("2024-01-02T00:00:00.123456Z", 1.5, max, None, "2024-01-01T23:59:58.623456Z"),
        ("2024-01-02 00:00:00", 3600, max, None, "2024-01-01 23:00:00"),
        ("2024-01-02T00:00:00+0530", 60, min, None, "2024-01-02T00:01:00+0530"),
        ("2024-01-10", 2, max, None, "2024-01-08"),
        ("20240110", 2, max, None, "20240108"),
        ("2024-01-02T00:00:00Z", 3600, max, "2024-01-01T23:30:00Z", "2024-01-01T23:30:00Z"),
        # a date initial_value declares a date cursor: lag in days, snapped to the start of the UTC day
        (datetime(2024, 1, 10, 15, tzinfo=UTC), 2, max, date(2024, 1, 1), datetime(2024, 1, 8, tzinfo=UTC)),
        ("2024-01-10T15:00:00Z", 2, max, "2024-01-01", "2024-01-08T00:00:00Z"),
        (
            datetime(2024, 1, 10, 15, tzinfo=UTC),
            2,
            min,
            date(2024, 2, 1),
            datetime(2024, 1, 12, 23, 59, 59, 999999, tzinfo=UTC),
        ),
    ],
)
def test_lag_moves_the_start_value_in_the_unit_of_the_cursor(
    last_value: Any, lag: float, func: Any, initial: Any, expected: Any
) -> None:
    inc = incremental("c", initial_value=initial, lag=lag, last_value_func=func)
    bound = run(inc, state=stored(last_value)).inc
    assert bound.start_value == expected
    assert type(bound.start_value) is type(expected)


def test_lag_on_aware_datetimes_shifts_the_instant_across_dst() -> None:
    # 2024-03-31 03:30 CEST is one real hour after 01:30 CET (clocks jump from 02:00 to 03:00)
    last = pendulum.datetime(2024, 3, 31, 3, 30, tz="Europe/Berlin")
    inc = incremental("c", initial_value=pendulum.datetime(2024, 1, 1, tz="Europe/Berlin"), lag=3600)
    start = run(inc, state=stored(last)).inc.start_value
    assert isinstance(start, pendulum.DateTime)
    assert start == pendulum.datetime(2024, 3, 31, 1, 30, tz="Europe/Berlin")
    assert start.utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize(
    ("func", "stored_last", "page", "kept", "final_last"),
    [
        # max, lag 10: window starts at 40; rows inside the window never pull last_value back
        (max, 50, rows_of((1, 39), (2, 40), (3, 45)), [2, 3], 50),
        (max, 50, rows_of((1, 45), (2, 55)), [1, 2], 55),
        # min, lag 10: the window "starts" at 60 and runs downwards
        (min, 50, rows_of((1, 61), (2, 60), (3, 55)), [2, 3], 50),
        (min, 50, rows_of((1, 55), (2, 40)), [1, 2], 40),
        # a stored 0 is a value like any other (dlt#4363)
        (max, 0, rows_of((1, -3)), [1], 0),
        (min, 0, rows_of((1, 3)), [1], 0),
    ],
)
def test_lag_window_and_the_stored_last_value_never_moves_backwards(
    func: Any, stored_last: int, page: list, kept: list, final_last: int
) -> None:
    inc = incremental("c", lag=10, last_value_func=func)
    result = run(inc, page, state=stored(stored_last), primary_key="id")
    assert result.ids() == kept
    assert result.slot()["last_value"] == final_last
    assert result.slot()["start_value"] == stored_last


def test_lag_zero_is_no_lag_except_that_boundary_dedup_is_off() -> None:
    first_rows = rows_of((1, 5), (2, 10))
    second_rows = rows_of((2, 10), (3, 9), (4, 11))
    no_lag = incremental("c", initial_value=7)
    lag_zero = incremental("c", initial_value=7, lag=0)

    a1 = run(no_lag, first_rows, primary_key="id")
    b1 = run(lag_zero, first_rows, primary_key="id")
    assert a1.ids() == b1.ids() == [2]
    assert a1.slot()["unique_hashes"] == [dedup_hash(2)]
    assert b1.slot()["unique_hashes"] == []

    a2 = run(no_lag, second_rows, state=a1.state, primary_key="id")
    b2 = run(lag_zero, second_rows, state=b1.state, primary_key="id")
    assert a2.inc.start_value == b2.inc.start_value == 10
    assert a2.ids() == [4]  # the boundary row 2 was already loaded
    assert b2.ids() == [2, 4]  # lag=0 re-delivers the boundary row (merge upserts it)
    assert a2.slot()["last_value"] == b2.slot()["last_value"] == 11


def test_lag_zero_does_not_clamp_to_a_raised_initial_value() -> None:
    # with a real lag the start never crosses initial_value; lag=0 keeps the stored value like no lag
    state = stored(5)
    assert run(incremental("c", initial_value=8), state=state).inc.start_value == 5
    assert run(incremental("c", initial_value=8, lag=0), state=state).inc.start_value == 5
    assert run(incremental("c", initial_value=8, lag=1), state=state).inc.start_value == 8


def test_lag_is_ignored_with_a_warning_for_a_custom_last_value_func(caplog: pytest.LogCaptureFixture) -> None:
    def newest(values: Any) -> Any:
        return max(values)

    caplog.set_level(logging.INFO, logger=LOGGER)
    result = run(
        incremental("c", lag=10, last_value_func=newest), rows_of((1, 45), (2, 50)), state=stored(50)
    )
    assert result.inc.start_value == 50
    assert result.ids() == [2]
    assert any(
        r.levelno == logging.WARNING and "only supported for max or min" in r.message for r in caplog.records
    )


def test_lag_is_ignored_when_end_value_is_set() -> None:
    inc = incremental("c", initial_value=10, end_value=20, lag=5)
    result = run(inc, rows_of((1, 7), (2, 10), (3, 19), (4, 20)))
    assert result.inc.start_value == 10
    assert result.ids() == [2, 3]


def test_lag_on_a_cursor_type_without_arithmetic_raises_at_bind() -> None:
    with pytest.raises(IncrementalCursorTypeError) as err:
        run(incremental("c", lag=1), state=stored("abc"))
    assert "lag=1" in str(err.value) and "`c`" in str(err.value) and RES in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# boundary deduplication


T0, T1, T2 = "2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z"
BOUNDARY_RUN_1 = rows_of((1, T0), (2, T1), (3, T1))
BOUNDARY_RUN_2 = rows_of((1, T0), (2, T1), (3, T1), (4, T1))


@pytest.mark.parametrize(
    ("incremental_pk", "resource_pk", "second_run_ids", "hashed"),
    [
        (None, None, [4], lambda r: r),  # the whole row is hashed
        (None, "id", [4], lambda r: r["id"]),  # inherited from the resource
        ("id", None, [4], lambda r: r["id"]),
        (("id", "c"), None, [4], lambda r: [r["id"], r["c"]]),
        (["id"], "c", [4], lambda r: [r["id"]]),  # the incremental's own key wins
        ((), None, [2, 3, 4], None),  # () disables dedup
        ((), "id", [2, 3, 4], None),
    ],
)
def test_rows_on_the_boundary_are_loaded_once_across_runs(
    incremental_pk: Any, resource_pk: Any, second_run_ids: list, hashed: Any
) -> None:
    inc = incremental("c", primary_key=incremental_pk)
    first = run(inc, BOUNDARY_RUN_1, primary_key=resource_pk)
    assert first.ids() == [1, 2, 3]
    expected = [] if hashed is None else [dedup_hash(hashed(r)) for r in BOUNDARY_RUN_1[1:]]
    assert first.slot()["unique_hashes"] == expected

    second = run(inc, BOUNDARY_RUN_2, state=first.state, primary_key=resource_pk)
    assert second.ids() == second_run_ids
    if hashed is not None:
        assert second.slot()["unique_hashes"] == [dedup_hash(hashed(r)) for r in BOUNDARY_RUN_2[1:]]

    third = run(
        inc, [*BOUNDARY_RUN_2, *rows_of((5, T2), (6, T2))], state=second.state, primary_key=resource_pk
    )
    assert third.ids() == ([5, 6] if hashed is not None else [2, 3, 4, 5, 6])
    if hashed is not None:  # last_value moved: the set holds the rows of the new boundary only
        assert third.slot()["unique_hashes"] == [dedup_hash(hashed(r)) for r in third.rows]


def test_an_unchanged_run_writes_an_identical_state() -> None:
    inc = incremental("c")
    first = run(inc, BOUNDARY_RUN_1, primary_key="id")
    again = run(inc, list(reversed(BOUNDARY_RUN_1)), state=first.state, primary_key="id")
    assert again.rows == []
    assert again.state == first.state  # same hashes in the same order, start_value untouched


@pytest.mark.parametrize(
    ("kwargs", "second_run_ids"),
    [
        ({"range_start": "open"}, [4]),  # rows equal to the start are excluded, none re-delivered
        ({"lag": 0}, [2, 3, 4]),
        ({"lag": 1}, [1, 2, 3, 4]),  # window covers T0 .. the boundary (seconds)
        ({"primary_key": ()}, [2, 3, 4]),
    ],
)
def test_boundary_dedup_is_disabled_by_open_range_lag_and_empty_key(
    kwargs: dict, second_run_ids: list
) -> None:
    inc = incremental("c", **kwargs)
    first = run(inc, rows_of((1, "2024-01-01T00:59:59Z"), (2, T1), (3, T1)), primary_key="id")
    assert first.slot()["unique_hashes"] == []
    second = run(
        inc,
        rows_of((1, "2024-01-01T00:59:59Z"), (2, T1), (3, T1), (4, "2024-01-01T01:00:01Z")),
        state=first.state,
        primary_key="id",
    )
    assert second.ids() == second_run_ids
    assert second.slot()["unique_hashes"] == []


def test_pre_1_29_hashes_still_deduplicate_until_last_value_moves() -> None:
    legacy = [dedup_hash(2, legacy=True)]
    assert len(legacy[0]) == 20
    inc = incremental("c")
    same_value = run(inc, rows_of((2, 10), (3, 10)), state=stored(10, unique_hashes=legacy), primary_key="id")
    assert same_value.ids() == [3]
    assert same_value.slot()["unique_hashes"] == [*legacy, dedup_hash(3, legacy=True)]

    moved = run(inc, rows_of((2, 10), (4, 11)), state=same_value.state, primary_key="id")
    assert moved.ids() == [4]
    assert moved.slot()["unique_hashes"] == [dedup_hash(4)]


def test_a_missing_primary_key_column_is_a_clear_error() -> None:
    first = run(incremental("c"), rows_of((1, 5)), primary_key="id")
    with pytest.raises(IncrementalPrimaryKeyMissing) as err:
        run(incremental("c"), [{"c": 5, "name": "no id"}], state=first.state, primary_key="id")
    assert isinstance(err.value, PipelineStateError)
    for part in (PIPE, RES, "'id'", "no id", "primary_key=()"):
        assert part in str(err.value)


def test_the_dedup_list_is_capped_keeping_the_newest_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    inc = incremental("c", max_unique_hashes=5)
    page = rows_of(*[(i, T1) for i in range(8)])
    first = run(inc, page[:4], page[4:], primary_key="id")
    assert first.slot()["unique_hashes"] == [dedup_hash(i) for i in range(3, 8)]
    warnings = [r.message for r in caplog.records if "deduplication hashes kept in state" in r.message]
    assert len(warnings) == 1
    for advice in ("finer resolution", "range_start='open'", "merge", "primary key"):
        assert advice in warnings[0]

    # the consequence: rows whose hashes were dropped are loaded again, the newest are not
    second = run(inc, page, state=first.state, primary_key="id")
    assert second.ids() == [0, 1, 2]


def test_the_cap_also_bounds_stored_plus_new_hashes_on_an_unmoved_boundary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    inc = incremental("c", max_unique_hashes=5)
    first = run(inc, rows_of(*[(i, T1) for i in range(4)]), primary_key="id")
    assert len(first.slot()["unique_hashes"]) == 4 and not caplog.records
    second = run(inc, rows_of(*[(i, T1) for i in range(7)]), state=first.state, primary_key="id")
    assert second.ids() == [4, 5, 6]
    assert second.slot()["unique_hashes"] == [dedup_hash(i) for i in range(2, 7)]
    assert len([r for r in caplog.records if "deduplication hashes kept in state" in r.message]) == 1


def test_the_module_default_cap_applies_without_the_kwarg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incremental_module.transform, "MAX_UNIQUE_HASHES", 3)
    result = run(incremental("c"), rows_of(*[(i, T1) for i in range(5)]), primary_key="id")
    assert result.slot()["unique_hashes"] == [dedup_hash(i) for i in (2, 3, 4)]


@pytest.mark.parametrize(
    ("count", "split", "warned"), [(200, 200, False), (201, 201, True), (201, 200, True)]
)
def test_many_rows_on_one_cursor_value_warn_like_dlt(
    caplog: pytest.LogCaptureFixture, count: int, split: int, warned: bool
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    rows = rows_of(*[(i, T1) for i in range(count)])
    run(incremental("c"), rows[:split], rows[split:], primary_key="id")
    messages = [r.message for r in caplog.records if "Large number of records" in r.message]
    assert messages == (
        [
            f"Large number of records ({count}) sharing the same value of cursor field 'c' on"
            f" resource '{RES}'. This can happen if the cursor field has a low resolution (e.g.,"
            " only stores dates without times), causing many records to share the same cursor"
            " value. Consider using a cursor column with higher resolution to reduce the"
            " deduplication state size."
        ]
        if warned
        else []
    )


# ---------------------------------------------------------------------------------------------------------
# hashes: identical to dlt's digest_dedup_value


HASHED_VALUES = [
    1,
    "abc",
    None,
    1.25,
    [1, "a"],
    {"b": 1, "a": [1, 2], "nested": {"z": None, "y": "ü"}},
    datetime(2024, 1, 1, 12, 30),
    datetime(2024, 1, 1, 12, 30, 0, 5, tzinfo=UTC),
    datetime(2024, 1, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))),
    pendulum.datetime(2024, 1, 1, 12, 30, tz="Europe/Berlin"),
    {"id": 1, "ts": pendulum.datetime(2024, 6, 1, tz="America/New_York"), "d": date(2024, 1, 1)},
    date(2024, 1, 1),
    time(10, 30),
    Decimal("10.25"),
    b"\x00\x01hello",
    UUID("12345678-1234-5678-1234-567812345678"),
]


@pytest.mark.parametrize("value", HASHED_VALUES, ids=repr)
def test_dedup_hash_is_dlts_digest(value: Any) -> None:
    dlt_utils = pytest.importorskip("dlt.extract.utils")
    assert dedup_hash(value) == dlt_utils.digest_dedup_value(value)
    assert len(dedup_hash(value)) == 12
    assert dedup_hash(value, legacy=True) == dlt_utils.digest_dedup_value(value, True)
    assert len(dedup_hash(value, legacy=True)) == 20


def test_one_instant_in_different_zones_hashes_alike() -> None:
    instant = datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert (
        dedup_hash({"ts": instant})
        == dedup_hash({"ts": instant.astimezone(timezone(timedelta(hours=-5)))})
        == dedup_hash({"ts": pendulum.instance(instant).in_tz("Asia/Tokyo")})
        == dedup_hash({"ts": datetime(2024, 1, 1, 12)})  # naive is UTC
    )


def test_state_hashes_are_the_ones_dlt_computes_for_the_same_rows() -> None:
    dlt_utils = pytest.importorskip("dlt.extract.utils")
    rows = [{"id": 1, "c": datetime(2024, 1, 1, tzinfo=UTC), "v": Decimal("1.5")}, {"id": 2, "c": T0}]
    whole_row = run(incremental("c"), rows).slot()["unique_hashes"]
    assert whole_row == [dlt_utils.digest_dedup_value(r) for r in rows]
    by_key = run(incremental("c", primary_key=("id", "v")), [{**r, "v": 1} for r in rows]).slot()
    assert by_key["unique_hashes"] == [dlt_utils.digest_dedup_value([r["id"], 1]) for r in rows]


# ---------------------------------------------------------------------------------------------------------
# end_value, ranges


@pytest.mark.parametrize(
    ("range_start", "range_end", "kept"),
    [
        ("closed", "open", [2, 3]),
        ("closed", "closed", [2, 3, 4]),
        ("open", "open", [3]),
        ("open", "closed", [3, 4]),
    ],
)
def test_end_value_range_bounds(range_start: str, range_end: str, kept: list) -> None:
    inc = incremental("c", initial_value=10, end_value=20, range_start=range_start, range_end=range_end)
    result = run(inc, rows_of((1, 9), (2, 10), (3, 15), (4, 20), (5, 21)))
    assert result.ids() == kept


@pytest.mark.parametrize(
    ("func", "initial", "end", "kept"),
    [(max, 10, 20, [2, 3]), (min, 20, 10, [4, 3])],
)
def test_end_value_runs_are_stateless(func: Any, initial: int, end: int, kept: list) -> None:
    inc = incremental("c", initial_value=initial, end_value=end, last_value_func=func)
    fresh = run(inc, rows_of((1, 9), (2, 10), (3, 15), (4, 20), (5, 21)))
    assert sorted(fresh.ids()) == sorted(kept)
    assert fresh.state == {}  # nothing at all written to the resource slot

    existing = stored(100, unique_hashes=["x" * 12])
    again = run(inc, rows_of((2, 10), (3, 15)), state=existing)
    assert again.state == existing
    assert again.inc.start_value == initial  # the stored last_value plays no part
    assert again.inc.last_value == 15  # but the bound cursor reports progress


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"end_value": 5}, "without initial_value"),
        ({"initial_value": 10, "end_value": 5}, "must come after"),
        ({"initial_value": 5, "end_value": 10, "last_value_func": min}, "must come after"),
        ({"initial_value": 5, "end_value": "2024-01-01T00:00:00Z"}, "not comparable"),
        ({"on_cursor_value_missing": "skip"}, "on_cursor_value_missing"),
        ({"row_order": "up"}, "row_order"),
        ({"range_start": "half"}, "range_start"),
        ({"range_end": "half"}, "range_end"),
        ({"lag": -1}, "lag"),
        ({"lag": True}, "lag"),
        ({"last_value_func": "median"}, "median"),
        ({"max_unique_hashes": 0}, "max_unique_hashes"),
    ],
)
def test_invalid_arguments_fail_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        incremental("c", **kwargs)


def test_min_and_max_may_be_given_by_name() -> None:
    assert incremental("c", last_value_func="min").last_value_func is min
    assert incremental("c", last_value_func="max").last_value_func is max


# ---------------------------------------------------------------------------------------------------------
# row_order


@pytest.mark.parametrize(
    ("kwargs", "state", "page", "kept", "stop"),
    [
        # ascending rows beyond end_value: stop, but the page is still filtered to the end
        (
            {"initial_value": 0, "end_value": 5, "row_order": "asc"},
            None,
            rows_of((1, 1), (2, 5), (3, 3)),
            [1, 3],
            True,
        ),
        ({"initial_value": 0, "end_value": 5}, None, rows_of((1, 1), (2, 5)), [1], False),
        (
            {"initial_value": 0, "end_value": 5, "row_order": "desc"},
            None,
            rows_of((1, 7), (2, 4)),
            [2],
            False,
        ),
        # descending rows before the start value
        ({"row_order": "desc"}, stored(10), rows_of((1, 15), (2, 9), (3, 11)), [1, 3], True),
        ({"row_order": "desc", "range_start": "open"}, stored(10), rows_of((1, 12), (2, 10)), [1], True),
        ({"row_order": "asc"}, stored(10), rows_of((1, 15), (2, 9)), [1], False),
        ({"row_order": "desc", "last_value_func": min}, stored(10), rows_of((1, 5), (2, 11)), [1], True),
    ],
)
def test_row_order_tells_the_caller_to_stop(
    kwargs: dict, state: Any, page: list, kept: list, stop: bool
) -> None:
    result = run(incremental("c", **kwargs), page, state=state, primary_key="id")
    assert result.ids() == kept
    assert result.stop is stop


def test_stop_is_sticky_for_the_rest_of_the_run() -> None:
    bound = incremental("c", initial_value=0, end_value=5, row_order="asc").bind(
        pipeline_name=PIPE, resource_name=RES, resource_state={}
    )
    assert bound.process(rows_of((1, 6))) == (None, True)
    assert bound.process(rows_of((2, 1))) == ([{"id": 2, "c": 1}], True)


def test_desc_does_not_stop_on_an_already_loaded_boundary_row() -> None:
    # dlt stops here and would lose row 2, a new row on the boundary value
    first = run(incremental("c"), rows_of((1, 10)), primary_key="id")
    result = run(
        incremental("c", row_order="desc"),
        rows_of((1, 10)),
        rows_of((2, 10), (3, 9)),
        state=first.state,
        primary_key="id",
    )
    assert result.ids() == [2]
    assert result.stop is True


# ---------------------------------------------------------------------------------------------------------
# missing cursor values


@pytest.mark.parametrize("row", [{"id": 9}, {"id": 9, "c": None}], ids=["missing", "none"])
def test_missing_or_none_cursor_raises_by_default(row: dict) -> None:
    with pytest.raises(IncrementalCursorPathMissing) as err:
        run(incremental("c"), [*rows_of((1, 5)), row])
    text = str(err.value)
    assert PIPE in text and RES in text and "`c`" in text and "'id': 9" in text
    assert ("None" in text) is ("c" in row)
    assert "on_cursor_value_missing" in text
    assert isinstance(err.value, PipelineStateError)


def test_the_row_in_a_missing_cursor_error_is_truncated() -> None:
    with pytest.raises(IncrementalCursorPathMissing) as err:
        run(incremental("c"), {"id": 1, "payload": "x" * 100_000})
    assert len(str(err.value)) < 1_000
    assert "chars)" in str(err.value)


@pytest.mark.parametrize(
    ("policy", "kept"),
    [("include", [1, 2, 3, 4]), ("exclude", [1, 4])],
)
def test_missing_cursor_include_and_exclude(policy: str, kept: list) -> None:
    page = [{"id": 1, "c": 5}, {"id": 2}, {"id": 3, "c": None}, {"id": 4, "c": 6}]
    result = run(incremental("c", on_cursor_value_missing=policy), page)
    assert result.ids() == kept
    assert result.slot()["last_value"] == 6  # rows without a cursor do not move it


def test_missing_cursor_include_keeps_a_row_even_when_nothing_else_passes() -> None:
    result = run(incremental("c", on_cursor_value_missing="include"), {"id": 1}, state=stored(10))
    assert result.ids() == [1]
    assert result.slot()["last_value"] == 10


# ---------------------------------------------------------------------------------------------------------
# cursor paths


@pytest.mark.parametrize(
    ("cursor_path", "row"),
    [
        ("$.meta.updated_at", {"id": 1, "meta": {"updated_at": 7}}),
        ("meta.updated_at", {"id": 1, "meta": {"updated_at": 7}}),
        ("items[*].ts", {"id": 1, "items": [{"ts": 7}, {"ts": 1}]}),  # first match
        ('"na.me"', {"id": 1, "na.me": 7}),  # quoted: a plain key with a dot
        ("created-at", {"id": 1, "created-at": 7}),
        ("created at", {"id": 1, "created at": 7}),  # not JSONPath syntax: taken as a key
    ],
)
def test_cursor_path_is_a_field_name_or_a_jsonpath(cursor_path: str, row: dict) -> None:
    inc = incremental(cursor_path, initial_value=5)
    first = run(inc, row)
    assert first.ids() == [1]
    assert first.state["incremental"][cursor_path]["last_value"] == 7  # keyed by the path verbatim
    assert run(inc, row, state=first.state).rows == []  # the boundary row, read at the same path


def test_jsonpath_without_a_match_is_a_missing_cursor() -> None:
    with pytest.raises(IncrementalCursorPathMissing, match="was not found"):
        run(incremental("$.meta.updated_at"), {"id": 1, "meta": {}})


def test_non_dict_rows_are_read_by_attribute() -> None:
    @dataclass
    class Row:
        id: int
        c: int

    result = run(incremental("c", initial_value=5, primary_key=()), [Row(1, 4), Row(2, 6)])
    assert [r.id for r in result.rows] == [2]


# ---------------------------------------------------------------------------------------------------------
# comparing cursor values of different representations


@pytest.mark.parametrize(
    ("stored_last", "values", "kept"),
    [
        # stored datetime, rows carry ISO strings (and the other way round)
        (datetime(2024, 1, 1, 1, tzinfo=UTC), [T0, "2024-01-01T01:00:01Z", "2024-01-01T02:59:59+02:00"], [2]),
        (T1, [datetime(2024, 1, 1, 0, 59, tzinfo=UTC), pendulum.datetime(2024, 1, 1, 2)], [2]),
        # one instant in different offsets; naive is UTC
        ("2024-01-01T01:00:00+00:00", ["2024-01-01T02:30:00+02:00", "2024-01-01T03:30:00+02:00"], [2]),
        (datetime(2024, 1, 1, 1), ["2024-01-01T00:30:00Z", "2024-01-01T01:30:00Z"], [2]),
        (pendulum.datetime(2024, 1, 1, 1), [datetime(2024, 1, 1, 0, 30), datetime(2024, 1, 1, 2, 30)], [2]),
        # dates vs date strings vs timestamps (a date is its midnight UTC)
        (date(2024, 1, 2), ["2024-01-01", "2024-01-03", "2024-01-02T12:00:00Z"], [2, 3]),
        ("2024-01-02", [date(2024, 1, 1), datetime(2024, 1, 3, tzinfo=UTC)], [2]),
        # numbers
        (10, [9.5, Decimal("10.5"), 11], [2, 3]),
        (Decimal("10.5"), [10, 10.75], [2]),
        # sub-microsecond digits are not lost
        (
            "2024-01-01T00:00:00.000000100Z",
            ["2024-01-01T00:00:00.000000099Z", "2024-01-01T00:00:00.0000002Z"],
            [2],
        ),
        # ISO shapes beyond isoformat's: 7+ fraction digits, a comma, a lowercase z
        (
            "2024-01-01T00:00:00Z",
            ["2023-12-31T23:59:59.9999999Z", "2024-01-01T00:00:00.0000001Z", "2024-01-01T00:00:00,5z"],
            [2, 3],
        ),
        # non-ISO strings compare as strings
        ("b", ["a", "c"], [2]),
    ],
)
def test_cursor_values_compare_across_representations(stored_last: Any, values: list, kept: list) -> None:
    rows = [{"id": i, "c": v} for i, v in enumerate(values, start=1)]
    result = run(incremental("c"), rows, state=stored(stored_last), primary_key="id")
    assert result.ids() == kept
    assert result.rows == [rows[i - 1] for i in kept]  # rows are untouched


def test_last_value_is_stored_as_found_in_the_row() -> None:
    inc = incremental("c", initial_value=datetime(2024, 1, 1, tzinfo=UTC))
    result = run(inc, rows_of((1, "2024-01-02T00:00:00+02:00"), (2, "2024-01-01T21:00:00Z")))
    slot = result.slot()
    assert slot["initial_value"] == datetime(2024, 1, 1, tzinfo=UTC)
    assert slot["last_value"] == "2024-01-02T00:00:00+02:00"  # the raw value of the first row at the max
    assert result.ids() == [1, 2]


@pytest.mark.parametrize(
    ("stored_last", "value", "stored_type", "found_type"),
    [
        (5, "2024-01-01T00:00:00Z", "int", "str (ISO timestamp)"),
        (datetime(2024, 1, 1, tzinfo=UTC), 1704067200, "datetime", "int"),
        ("abc", 3, "str", "int"),
        ("2024-01-01", "abc", "str (ISO date)", "str"),
    ],
)
def test_a_cursor_type_change_between_runs_is_a_clear_error(
    stored_last: Any, value: Any, stored_type: str, found_type: str
) -> None:
    with pytest.raises(IncrementalCursorTypeError) as err:
        run(incremental("c"), {"id": 1, "c": value}, state=stored(stored_last))
    text = str(err.value)
    for part in (PIPE, RES, "`c`", f"stored type: {stored_type}", f"found type: {found_type}"):
        assert part in text
    assert isinstance(err.value, PipelineStateError)


def test_rows_mixing_cursor_types_in_one_run_are_an_error() -> None:
    with pytest.raises(IncrementalCursorTypeError, match="last value of this run"):
        run(incremental("c"), rows_of((1, 5), (2, "2024-01-01")))


def test_a_custom_last_value_func_gets_raw_values_and_its_errors_are_wrapped() -> None:
    seen: list[tuple] = []

    def newest(values: Any) -> Any:
        seen.append(tuple(values))
        return max(values)

    result = run(incremental("c", last_value_func=newest), rows_of((1, 5), (2, 7), (3, 6)), state=stored(5))
    assert result.ids() == [1, 2, 3]  # dlt's rule for custom functions: only values "before" start drop
    assert result.slot()["last_value"] == 7
    assert (7, 5) in seen

    with pytest.raises(IncrementalCursorTypeError, match="not supported between"):
        run(incremental("c", last_value_func=newest), {"id": 1, "c": "x"}, state=stored(5))


def test_a_custom_last_value_func_may_return_a_derived_value() -> None:
    def as_int(values: Any) -> int:
        return max(int(v) for v in values)

    inc = incremental("c", last_value_func=as_int)
    first = run(inc, rows_of((1, "5"), (2, "7")))
    assert first.slot()["last_value"] == 7  # the function's result, as dlt stores it
    second = run(inc, rows_of((3, "6"), (4, "8")), state=first.state)
    assert second.ids() == [4]
    assert second.slot()["last_value"] == 8


# ---------------------------------------------------------------------------------------------------------
# bind: copies, state slot, the log line


def test_bind_returns_a_new_copy_and_never_mutates_the_unbound_instance() -> None:
    inc = incremental("c", initial_value=1)
    first = run(inc, rows_of((1, 5)), primary_key="id")
    assert first.inc is not inc and first.inc.is_bound and not inc.is_bound
    assert inc.start_value == inc.last_value == 1
    assert inc.primary_key is None and first.inc.primary_key == "id"
    with pytest.raises(RuntimeError, match="not bound"):
        inc.process(rows_of((1, 5)))


def test_a_fresh_slot_is_created_at_bind_with_dlts_keys() -> None:
    result = run(incremental("c", initial_value=3))
    assert result.state == {
        "incremental": {"c": {"initial_value": 3, "last_value": 3, "unique_hashes": [], "start_value": 3}}
    }


def test_start_value_is_persisted_only_when_rows_arrive() -> None:
    inc = incremental("c", initial_value=0)
    first = run(inc, rows_of((1, 5)))
    assert first.slot()["start_value"] == 0
    filtered = run(inc, rows_of((2, 4)), state=first.state)
    assert filtered.rows == [] and filtered.slot()["start_value"] == 0
    second = run(inc, rows_of((3, 6)), state=first.state)
    assert second.slot()["start_value"] == 5


def test_empty_pages_leave_the_state_untouched() -> None:
    resource_state = stored(5)
    before = copy.deepcopy(resource_state)
    bound = incremental("c").bind(pipeline_name=PIPE, resource_name=RES, resource_state=resource_state)
    assert bound.process([]) == (None, False)
    assert bound.process(None) == (None, False)
    assert resource_state == before


def test_process_returns_the_rows_untouched() -> None:
    bound = incremental("c", initial_value="2023-12-31").bind(
        pipeline_name=PIPE, resource_name=RES, resource_state={}
    )
    row = {"id": 1, "c": "2024-01-01T00:00:00Z", "nested": {"a": [1]}}
    snapshot = copy.deepcopy(row)
    out, _ = bound.process(row)
    assert out is row and row == snapshot
    page = [row, {"id": 2, "c": "2024-01-02T00:00:00Z"}]
    out, _ = bound.process(page)
    assert out is not page and out[0] is row and out[1] is page[1]


def test_last_value_moves_while_rows_are_processed() -> None:
    bound = incremental("c", initial_value=1).bind(pipeline_name=PIPE, resource_name=RES, resource_state={})
    assert bound.last_value == 1
    bound.process(rows_of((1, 4)))
    assert bound.last_value == 4
    bound.process(rows_of((2, 9), (3, 2)))
    assert (bound.start_value, bound.last_value) == (1, 9)


@pytest.mark.parametrize(
    ("initial", "stored_last", "expected_type"),
    [
        (pendulum.datetime(2024, 1, 1), datetime(2024, 1, 2, tzinfo=UTC), pendulum.DateTime),
        (datetime(2024, 1, 1, tzinfo=UTC), pendulum.datetime(2024, 1, 2), datetime),
    ],
)
def test_datetime_values_are_exposed_in_the_class_of_initial_value(
    initial: datetime, stored_last: datetime, expected_type: type
) -> None:
    bound = run(incremental("c", initial_value=initial), state=stored(stored_last)).inc
    assert type(bound.start_value) is expected_type and type(bound.last_value) is expected_type
    assert bound.start_value == stored_last


def test_bind_logs_dlts_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    inc = incremental("created_at", initial_value=datetime(2023, 12, 31, 12, tzinfo=UTC), lag=3600)
    run(inc, state=stored(datetime(2024, 1, 1, 14, tzinfo=UTC), "created_at"))
    records = [r for r in caplog.records if r.name == LOGGER and r.message.startswith("Bind incremental")]
    assert [(r.levelno, r.message) for r in records] == [
        (
            logging.INFO,
            "Bind incremental on events with initial_value: 2023-12-31 12:00:00+00:00, start_value:"
            " 2024-01-01 13:00:00+00:00, end_value: None, func: max, row_order: None, on_missing: raise,"
            " range_start: closed, range_end: open",
        )
    ]


def test_bind_logs_to_the_given_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="task")
    inc = incremental(
        "c",
        initial_value=0,
        end_value=9,
        row_order="asc",
        on_cursor_value_missing="exclude",
        range_start="open",
        range_end="closed",
    )
    run(inc, log=logging.getLogger("task"))
    assert [r.message for r in caplog.records if r.name == "task"] == [
        "Bind incremental on events with initial_value: 0, start_value: 0, end_value: 9, func: max,"
        " row_order: asc, on_missing: exclude, range_start: open, range_end: closed"
    ]


# ---------------------------------------------------------------------------------------------------------
# external schedulers (Airflow data interval)

DAY_1 = pendulum.datetime(2024, 1, 1)
DAY_2 = pendulum.datetime(2024, 1, 2)


@pytest.mark.parametrize(
    ("initial", "expected_start", "expected_end"),
    [
        (datetime(2023, 1, 1, tzinfo=UTC), DAY_1, DAY_2),
        (None, DAY_1, DAY_2),
        (datetime(2023, 1, 1), datetime(2024, 1, 1), datetime(2024, 1, 2)),  # naive cursor: naive UTC
        (date(2023, 1, 1), date(2024, 1, 1), date(2024, 1, 2)),
        (0, 1704067200, 1704153600),
        (0.0, 1704067200.0, 1704153600.0),
        ("2023-01-01T00:00:00Z", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"),
        ("2023-01-01T00:00:00+01:00", "2024-01-01T01:00:00+01:00", "2024-01-02T01:00:00+01:00"),
        ("2023-01-01", "2024-01-01", "2024-01-02"),
    ],
)
def test_external_scheduler_interval_is_coerced_to_the_cursor_type(
    caplog: pytest.LogCaptureFixture, initial: Any, expected_start: Any, expected_end: Any
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    inc = incremental("c", initial_value=initial, allow_external_schedulers=True)
    result = run(inc, state=stored(5), interval=(DAY_1, DAY_2))
    bound = result.inc
    assert (bound.initial_value, bound.end_value) == (expected_start, expected_end)
    if isinstance(expected_end, datetime):  # the interval's own class, awareness of the cursor
        assert (bound.end_value.tzinfo is None) is (expected_end.tzinfo is None)
    else:
        assert type(bound.end_value) is type(expected_end)
    assert bound.start_value == expected_start
    assert result.state == stored(5)  # stateless: the stored state is neither used nor touched
    assert any(
        r.message.startswith(
            f"Joined external scheduler: initial value: {expected_start}, end value: {expected_end}"
        )
        for r in caplog.records
    )


def test_external_scheduler_range_is_start_inclusive_end_exclusive() -> None:
    inc = incremental("c", initial_value=datetime(2020, 1, 1, tzinfo=UTC), allow_external_schedulers=True)
    page = rows_of(
        (1, "2023-12-31T23:59:59Z"),
        (2, "2024-01-01T00:00:00Z"),
        (3, "2024-01-01T23:59:59+00:00"),
        (4, "2024-01-02T00:00:00Z"),
        (5, datetime(2024, 1, 1, 12, tzinfo=UTC)),
    )
    result = run(inc, page, interval=(DAY_1, DAY_2), primary_key="id")
    assert result.ids() == [2, 3, 5]
    assert result.state == {}


def test_external_scheduler_interval_is_clipped_by_the_configured_range() -> None:
    inc = incremental(
        "c",
        initial_value=pendulum.datetime(2024, 1, 1, 6),
        end_value=pendulum.datetime(2024, 1, 1, 18),
        allow_external_schedulers=True,
    )
    bound = run(inc, interval=(DAY_1, DAY_2)).inc
    assert (bound.initial_value, bound.end_value) == (
        pendulum.datetime(2024, 1, 1, 6),
        pendulum.datetime(2024, 1, 1, 18),
    )


@pytest.mark.parametrize("interval", [None, (None, None)])
def test_external_scheduler_without_interval_falls_back_to_the_state(
    caplog: pytest.LogCaptureFixture, interval: Any
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    inc = incremental("c", initial_value=0, allow_external_schedulers=True)
    result = run(inc, rows_of((1, 4), (2, 6)), state=stored(5), interval=interval)
    assert result.inc.start_value == 5 and result.inc.end_value is None
    assert result.ids() == [2]
    assert result.slot()["last_value"] == 6
    assert any(
        r.levelno == logging.INFO and "continues from its committed cursor" in r.message and RES in r.message
        for r in caplog.records
    )


def test_an_interval_is_ignored_unless_external_schedulers_are_allowed() -> None:
    result = run(incremental("c", initial_value=0), rows_of((1, 6)), state=stored(5), interval=(DAY_1, DAY_2))
    assert result.inc.start_value == 5 and result.inc.end_value is None
    assert result.slot()["last_value"] == 6


def test_a_zero_length_interval_continues_from_the_state_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    """Airflow 3's cron schedules and manual triggers give points (start == end), not ranges."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    inc = incremental("c", initial_value=0, allow_external_schedulers=True)
    result = run(inc, rows_of((1, 4), (2, 6)), state=stored(5), interval=(DAY_1, DAY_1))
    assert result.inc.start_value == 5 and result.inc.end_value is None
    assert result.ids() == [2]
    assert any(
        "zero-length" in r.message and "CronDataIntervalTimetable" in r.message for r in caplog.records
    )


def test_an_interval_that_cannot_be_coerced_is_a_clear_error() -> None:
    inc = incremental("c", initial_value="batch-7", allow_external_schedulers=True)
    with pytest.raises(IncrementalCursorTypeError, match="cannot coerce the external scheduler interval"):
        run(inc, interval=(DAY_1, DAY_2))


def test_binding_one_unbound_instance_for_two_intervals_gives_independent_ranges() -> None:
    # dlt mutates the instance here and clips the second interval to nothing (reference §5)
    inc = incremental("c", initial_value=datetime(2020, 1, 1, tzinfo=UTC), allow_external_schedulers=True)
    resource_state: dict = {}
    first = inc.bind(
        pipeline_name=PIPE, resource_name=RES, resource_state=resource_state, interval=(DAY_1, DAY_2)
    )
    second = inc.bind(
        pipeline_name=PIPE,
        resource_name=RES,
        resource_state=resource_state,
        interval=(DAY_2, pendulum.datetime(2024, 1, 3)),
    )
    page = rows_of((1, "2024-01-01T12:00:00Z"), (2, "2024-01-02T12:00:00Z"))
    assert [r["id"] for r in first.process(page)[0]] == [1]
    assert [r["id"] for r in second.process(page)[0]] == [2]
    assert (first.initial_value, first.end_value) == (DAY_1, DAY_2)
    assert (second.initial_value, second.end_value) == (DAY_2, pendulum.datetime(2024, 1, 3))
    assert inc.initial_value == datetime(2020, 1, 1, tzinfo=UTC) and inc.end_value is None
    assert resource_state == {}


def test_two_binds_of_one_instance_for_consecutive_runs_share_nothing_but_the_state() -> None:
    inc = incremental("c", initial_value=0)
    resource_state: dict = {}
    first = inc.bind(pipeline_name=PIPE, resource_name=RES, resource_state=resource_state, primary_key="id")
    first.process(rows_of((1, 5)))
    second = inc.bind(pipeline_name=PIPE, resource_name=RES, resource_state=resource_state, primary_key="id")
    assert second.start_value == 5 and first.start_value == 0
    assert second.process(rows_of((1, 5), (2, 6)))[0] == [{"id": 2, "c": 6}]


# ---------------------------------------------------------------------------------------------------------
# properties


def instant(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=0, max_size=5), min_size=1, max_size=6
    ),
    page_size=st.integers(1, 4),
    pk=st.sampled_from([None, "id"]),
)
def test_a_growing_source_is_loaded_exactly_once(batches: list, page_size: int, pk: Any) -> None:
    """Each run the source returns every row at or after start_value (an API ``>=`` filter); new rows
    arrive at or after the current maximum, often exactly on it. Every row must be loaded exactly once."""
    inc = incremental("c", initial_value="2024-01-01T00:00:00Z")
    source: list[dict] = []
    loaded: list[int] = []
    state: dict | None = None
    now = datetime(2024, 1, 1, tzinfo=UTC)
    for batch in batches:
        for step, as_datetime in batch:
            now += timedelta(seconds=step)
            value = now if as_datetime else now.strftime("%Y-%m-%dT%H:%M:%SZ")
            source.append({"id": len(source), "c": value})
        resource_state = copy.deepcopy(state) if state is not None else {}
        bound = inc.bind(pipeline_name=PIPE, resource_name=RES, resource_state=resource_state, primary_key=pk)
        served = [r for r in source if instant(r["c"]) >= instant(bound.start_value)]
        for i in range(0, len(served), page_size):
            out, _ = bound.process(served[i : i + page_size])
            loaded.extend(r["id"] for r in out or [])
        state = resource_state
    assert sorted(loaded) == list(range(len(source)))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    previous=st.lists(
        st.builds(lambda i, c: {"id": i, "c": c}, st.integers(0, 5), st.integers(0, 12)), max_size=6
    ),
    pages=st.lists(
        st.lists(
            st.builds(lambda i, c: {"id": i, "c": c}, st.integers(0, 5), st.integers(0, 12)), max_size=6
        ),
        max_size=4,
    ),
    initial=st.one_of(st.none(), st.integers(0, 12)),
    end_offset=st.one_of(st.none(), st.integers(0, 8)),
    func=st.sampled_from([max, min]),
    pk=st.sampled_from([None, "id", ("id", "c"), ()]),
    lag=st.one_of(st.none(), st.integers(1, 4), st.floats(0.5, 3.5)),
    range_start=st.sampled_from(["open", "closed"]),
    range_end=st.sampled_from(["open", "closed"]),
)
def test_filter_and_state_match_dlts_own_transform(
    previous: list,
    pages: list,
    initial: Any,
    end_offset: Any,
    func: Any,
    pk: Any,
    lag: Any,
    range_start: str,
    range_end: str,
) -> None:
    """dlt's JsonIncremental (plus the state update of ``Incremental.__call__``) as the oracle."""
    transform = pytest.importorskip("dlt.extract.incremental.transform")
    dlt_lag = pytest.importorskip("dlt.extract.incremental.lag")
    end = None
    if end_offset is not None and initial is not None:
        end = initial + end_offset if func is max else initial - end_offset

    def dlt_run(pages: list, slot: dict, end: Any) -> tuple[list, dict, Any]:
        fresh = {"initial_value": initial, "last_value": initial, "unique_hashes": [], "start_value": initial}
        state = copy.deepcopy(slot) if slot and end is None else fresh
        start = dlt_lag.apply_lag_with_suppression(
            lag, func, initial, end, state["last_value"], RES, type(initial) if initial is not None else Any
        )
        pre = state["last_value"]
        t = transform.JsonIncremental(
            RES,
            "c",
            initial,
            start,
            end,
            func,
            pk,
            set(state["unique_hashes"]),
            "raise",
            lag,
            range_start,
            range_end,
        )
        out = []
        for page in pages:
            kept = [r for r in page if t(r)[0] is not None]
            out.append(kept)
            if lag and state.get("last_value") is not None:
                t.last_value = func((t.last_value, state["last_value"]))
            state["last_value"] = t.last_value
            if kept:
                state["start_value"] = pre
            if t.boundary_deduplication:
                hashes = {t.compute_unique_value(r, pk, t.unique_hashes_legacy) for r in t.last_rows}
                state["unique_hashes"] = sorted(hashes | t.unique_hashes)
            else:
                state["unique_hashes"] = []
        return out, state, start

    def our_run(pages: list, slot: dict, end: Any) -> tuple[list, dict, Any]:
        inc = incremental(
            "c",
            initial_value=initial,
            end_value=end,
            last_value_func=func,
            primary_key=pk,
            lag=lag,
            range_start=range_start,
            range_end=range_end,
        )
        resource_state = {"incremental": {"c": copy.deepcopy(slot)}} if slot else {}
        bound = inc.bind(pipeline_name=PIPE, resource_name=RES, resource_state=resource_state)
        out = [bound.process(page)[0] or [] for page in pages]
        state = dict(bound.state)
        state["unique_hashes"] = sorted(state["unique_hashes"])
        return out, state, bound.start_value

    slot = dlt_run([previous], {}, None)[1] if previous else {}
    assert our_run(pages, slot, end) == dlt_run(pages, slot, end)


# ---------------------------------------------------------------------------------------------------------
# issue 15: dlt 1.31 fidelity at the cursor level


def test_lag_unit_is_declared_by_initial_value_not_by_the_values() -> None:
    """A datetime initial_value declares seconds: a date-string value lags 28 s (dlt 1.31), not 28 days."""
    inc = incremental("day", initial_value="2026-01-01T00:00:00Z", lag=28)
    bound = run(inc, [], state=stored("2026-08-27", "day")).inc
    assert bound.start_value == "2026-08-26"  # 2026-08-27T00:00:00 - 28 s, rendered as a date
    by_value = run(incremental("day", lag=28), [], state=stored("2026-08-27", "day")).inc
    assert by_value.start_value == "2026-07-30"  # nothing declared: the date value means days


def test_a_non_iso_string_cursor_warns_once_naming_resource_and_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    result = run(incremental("c"), rows_of((1, "12/31/2024"), (2, "01/01/2025")), rows_of((3, "11/11/2024")))
    assert result.slot()["last_value"] == "12/31/2024"  # text order, as dlt
    warnings = [r.message for r in caplog.records if "not an ISO 8601" in r.message]
    assert len(warnings) == 1
    assert f"`{RES}`" in warnings[0] and "'12/31/2024'" in warnings[0]


def test_iso_strings_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    run(incremental("c"), rows_of((1, "2024-12-31"), (2, "2025-01-01T00:00:00Z")))
    assert not [r for r in caplog.records if "not an ISO 8601" in r.message]


def test_merge_overrides_only_settings_that_are_not_none() -> None:
    default = incremental("created_at", initial_value=1, row_order="asc", primary_key="id")
    merged = default.merge(incremental(initial_value=3, end_value=5))
    assert merged.cursor_path == "created_at"
    assert (merged.initial_value, merged.end_value, merged.row_order, merged.primary_key) == (
        3,
        5,
        "asc",
        "id",
    )
    # as in dlt, a setting whose default is not None in ``other`` overrides too (last_value_func=max)
    assert incremental("c", last_value_func=min).merge(incremental(initial_value=1)).last_value_func is max


def test_with_initial_value_keeps_the_rest_of_the_configuration() -> None:
    default = incremental("created_at", initial_value=1, primary_key="id", lag=2)
    copy_ = default.with_initial_value(4242)
    assert (copy_.cursor_path, copy_.initial_value, copy_.primary_key, copy_.lag) == (
        "created_at",
        4242,
        "id",
        2,
    )
    assert default.initial_value == 1


def test_an_incremental_without_cursor_path_cannot_be_bound() -> None:
    with pytest.raises(IncrementalCursorPathMissing, match="no cursor_path"):
        run(incremental(initial_value=1), [])


def test_can_close_once_descending_rows_fall_below_the_start() -> None:
    result = run(incremental("c", initial_value=10, row_order="desc"), rows_of((1, 12), (2, 11)))
    assert result.inc.can_close() is False
    out, stop = result.inc.process(rows_of((3, 9)))
    assert out is None and stop is True and result.inc.can_close() is True


# ---------------------------------------------------------------------------------------------------------
# issue 19: a page decided at once moves the state exactly as row by row

_BERLIN = pendulum.timezone("Europe/Berlin")
_ZONES = [None, UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)), _BERLIN]


def _cursor_value(seconds: int, zone: Any, as_text: bool) -> Any:
    moment = datetime(2024, 10, 27, 0, 30, tzinfo=UTC) + timedelta(minutes=20 * seconds)
    if zone is None:
        moment = moment.replace(tzinfo=None)
    elif zone is _BERLIN:
        moment = moment.astimezone(zone)  # a zone with daylight saving time: compared row by row
        moment = datetime(*moment.timetuple()[:6], tzinfo=zone, fold=moment.fold)
    else:
        moment = moment.astimezone(zone)
    return moment.isoformat() if as_text else moment


def _sort_key(row: dict) -> datetime:
    value = row.get("c")
    moment = instant(value) if value is not None else datetime(2024, 10, 27)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_pages = st.lists(
    st.tuples(
        st.lists(
            st.tuples(st.integers(0, 9), st.sampled_from(range(len(_ZONES))), st.integers(0, 20)), max_size=6
        ),
        st.sampled_from(["asc", "desc", "as is"]),
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    previous=_pages,
    pages=_pages,
    func=st.sampled_from([max, min]),
    pk=st.sampled_from([None, "id", ()]),
    lag=st.sampled_from([None, 1800]),
    row_order=st.sampled_from([None, "asc", "desc"]),
    range_start=st.sampled_from(["open", "closed"]),
    missing=st.sampled_from(["include", "exclude"]),
)
def test_a_page_decided_at_once_matches_the_row_by_row_filter(
    previous: list, pages: list, func: Any, pk: Any, lag: Any, row_order: Any, range_start: str, missing: str
) -> None:
    """Random pages of datetimes (naive, fixed offsets, a zone with DST; sorted or not; some rows with
    text, None or no cursor) give the same rows, stop flags and state after every page either way."""

    def build(spec: list) -> list:
        out = []
        for cells, order in spec:
            rows = []
            for i, (step, zone, kind) in enumerate(cells):
                if kind == 0:
                    rows.append({"id": i})
                elif kind == 1:
                    rows.append({"id": i, "c": None})
                else:
                    rows.append({"id": i, "c": _cursor_value(step, _ZONES[zone], kind == 2)})
            if order != "as is":
                rows.sort(key=_sort_key, reverse=order == "desc")
            out.append(rows)
        return out

    def one_run(spec: list, state: dict, at_once: bool) -> tuple[list, dict]:
        inc = incremental(
            "c",
            initial_value=datetime(2024, 10, 27, 1, 0, tzinfo=UTC),
            last_value_func=func,
            primary_key=pk,
            lag=lag,
            row_order=row_order,
            range_start=range_start,
            on_cursor_value_missing=missing,
        )
        resource_state = copy.deepcopy(state)
        bound = inc.bind(pipeline_name=PIPE, resource_name=RES, resource_state=resource_state)
        bound._run._pages_at_once = at_once
        seen = []
        for page in build(spec):
            try:
                out, stop = bound.process(page)
            except (IncrementalCursorTypeError, TypeError) as exc:
                seen.append(type(exc).__name__)
                break
            seen.append((out, stop, copy.deepcopy(resource_state), bound._run.out_of_order))
        return seen, resource_state

    _, state_fast = one_run(previous, {}, True)
    _, state_slow = one_run(previous, {}, False)
    assert state_fast == state_slow
    assert one_run(pages, state_fast, True) == one_run(pages, state_fast, False)


def test_a_page_of_ascending_datetimes_is_decided_without_a_step_per_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_state_provider.extract.incremental import transform

    first = [{"id": i, "c": datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i)} for i in range(1000)]
    again = first[:500]  # re-delivered, all before the start value of the next run
    monkeypatch.setattr(transform.CursorFilter, "_keep", lambda self, row: pytest.fail("row by row"))
    fast = run(incremental("c"), first, primary_key="id")
    assert fast.ids() == list(range(1000))
    assert fast.slot()["last_value"] == first[-1]["c"]
    assert fast.slot()["unique_hashes"] == [dedup_hash(999)]
    second = run(incremental("c"), again, state=fast.state, primary_key="id")
    assert second.ids() == [] and second.slot()["last_value"] == first[-1]["c"]
