"""The core parts of the run model, without a scheduler: interval records, zero-length intervals,
dlt's ``DLT_INTERVAL_*`` variables, ``current.interval()`` and slot suffixes, on every database."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_state_provider import Pipeline, current, incremental, resource, source, transformer
from airflow_state_provider.extract.incremental import IncrementalNoIntervalError
from airflow_state_provider.operators._mapping import slot_suffix
from airflow_state_provider.state import context

pytestmark = pytest.mark.airflow

DAYS = [date(2024, 3, d) for d in range(1, 21)]
SEEN: list = []


@resource(name="events", primary_key="id")
def events(
    at=incremental("at", initial_value=datetime(2024, 3, 1, tzinfo=UTC), allow_external_schedulers=True),
):
    SEEN.append(current.interval())
    yield [{"id": d.isoformat(), "at": datetime(d.year, d.month, d.day, 12, tzinfo=UTC)} for d in DAYS]


MARCH_1 = datetime(2024, 3, 1, tzinfo=UTC)


def utc(day: int, hour: int = 0) -> datetime:
    return datetime(2024, 3, day, hour, tzinfo=UTC)


def pipeline(url: str, tmp_path) -> Pipeline:
    return Pipeline("ev", destination=url, dataset_name="ev_data", pipelines_dir=tmp_path / "pipelines")


def ids(p: Pipeline) -> list[str]:
    with p.sql_client() as c:
        rows = [r[0] for r in c.execute_sql("SELECT id FROM events ORDER BY id")]
    assert len(rows) == len(set(rows)), rows
    return rows


def last_value(p: Pipeline):
    return p.state["sources"]["ev"]["resources"]["events"]["incremental"]["at"]["last_value"]


def run(p: Pipeline, start=None, end=None, **kwargs):
    with context.external_interval(start, end, **kwargs):
        return p.run(events)


def test_interval_runs_record_their_end_and_a_run_without_interval_continues_after_it(dest_url, tmp_path):
    p = pipeline(dest_url, tmp_path)
    run(p, utc(4), utc(5))
    run(p, utc(5), utc(6))
    assert ids(p) == ["2024-03-04", "2024-03-05"] and last_value(p) == utc(6)
    run(p, utc(2), utc(3))  # an older interval (a backfill): loaded, the cursor does not move back
    assert last_value(p) == utc(6)
    run(p)  # no interval: after the newest interval loaded, never into it
    assert ids(p) == ["2024-03-02", "2024-03-04", "2024-03-05"] + [d.isoformat() for d in DAYS[5:]]
    assert last_value(p) == utc(20, 12)
    p.engine.dispose()


def test_zero_length_interval_continues_from_the_cursor_and_says_so(dest_url, tmp_path, caplog):
    p = pipeline(dest_url, tmp_path)
    run(p, utc(4), utc(5))
    caplog.set_level("INFO")
    info = run(p, utc(9), utc(9))
    assert "zero-length" in caplog.text and "continues from its committed cursor" in caplog.text
    assert info.row_counts == {"events": 16}  # 03-05 .. 03-20, never a silent zero-row run
    p.engine.dispose()


def test_zero_length_interval_raises_when_asked_and_writes_nothing(dest_url, tmp_path):
    p = pipeline(dest_url, tmp_path)
    run(p, utc(4), utc(5))
    for start, end in ((utc(9), utc(9)), (None, None)):
        with pytest.raises(IncrementalNoIntervalError, match="resource `events`: incremental `at`"):
            run(p, start, end, on_missing="raise")
    assert ids(p) == ["2024-03-04"] and p.state["_state_version"] == 1
    p.engine.dispose()


def test_a_failed_interval_run_with_checkpoints_records_nothing(dest_url, tmp_path):
    @resource(name="events", primary_key="id")
    def failing(at=incremental("at", initial_value=MARCH_1, allow_external_schedulers=True)):
        for d in DAYS:
            yield {"id": d.isoformat(), "at": datetime(d.year, d.month, d.day, 12, tzinfo=UTC)}
            if d == date(2024, 3, 6):
                raise RuntimeError("source outage")

    p = pipeline(dest_url, tmp_path)
    with context.external_interval(utc(4), utc(10)), pytest.raises(RuntimeError):
        p.run(failing, checkpoint_every=1)
    # interval runs store no progress, so checkpoints wait for the final commit: nothing recorded
    slots = p.state.get("sources", {}).get("ev", {}).get("resources", {})
    assert "incremental" not in slots.get("events", {})  # but the interval is not recorded as loaded
    p.engine.dispose()


@pytest.mark.parametrize("dest_url", ["postgresql"], indirect=True)  # SQLite serializes whole loads
def test_parallel_interval_runs_commit_without_conflict_and_the_cursor_ends_at_the_newest(dest_url, tmp_path):
    """Catch-up runs in parallel: each records its interval under the commit lock, none conflicts."""
    gate, release = threading.Event(), threading.Event()

    @resource(name="events", primary_key="id")
    def slow(at=incremental("at", initial_value=MARCH_1, allow_external_schedulers=True)):
        yield [{"id": "2024-03-07", "at": utc(7, 12)}]
        gate.set()
        release.wait(30)

    errors = []

    def newer():
        try:
            gate.wait(30)
            run(pipeline(dest_url, tmp_path), utc(8), utc(9))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            release.set()

    thread = threading.Thread(target=newer)
    thread.start()
    p = pipeline(dest_url, tmp_path)
    with context.external_interval(utc(7), utc(8)):
        p.run(slow)  # commits after the newer interval did
    thread.join()
    assert errors == []
    assert ids(p) == ["2024-03-07", "2024-03-08"]
    p.engine.dispose()
    p = pipeline(dest_url, tmp_path)  # the newest committed state, as a new task restores it
    assert last_value(p) == utc(9) and p.state["_state_version"] == 2
    p.engine.dispose()


def test_dlt_interval_environment_variables(dest_url, tmp_path, monkeypatch):
    """dlt 1.31's variables: UTC ISO bounds, converted into DLT_INTERVAL_TIMEZONE for current.interval()."""
    monkeypatch.setenv("DLT_INTERVAL_START", "2024-03-04T15:00:00Z")
    monkeypatch.setenv("DLT_INTERVAL_END", "2024-03-06T15:00:00")  # naive: UTC
    monkeypatch.setenv("DLT_INTERVAL_TIMEZONE", "Asia/Tokyo")
    SEEN.clear()
    p = pipeline(dest_url, tmp_path)
    p.run(events)
    assert ids(p) == ["2024-03-05", "2024-03-06"]  # 12:00 UTC of 03-05 and 03-06 are inside
    (seen,) = SEEN
    assert seen.start == utc(4, 15) and str(seen.start.tzinfo) == "Asia/Tokyo" and seen.start.hour == 0
    assert seen.end == utc(6, 15)
    assert current.interval() == seen  # outside a run: the environment's interval
    # an interval declared by the caller (the operator) wins over the environment
    with context.external_interval(None, None):
        assert current.interval() is None
    monkeypatch.setenv("DLT_INTERVAL_END", "not a date")
    with pytest.raises(ValueError, match="DLT_INTERVAL_END='not a date' is not an ISO 8601"):
        current.interval()
    p.engine.dispose()


def test_date_cursor_days_follow_the_timezone_of_the_bounds(tmp_path):
    from zoneinfo import ZoneInfo

    tokyo = ZoneInfo("Asia/Tokyo")

    @resource(name="days", primary_key="id")
    def days(day=incremental("day", initial_value=date(2024, 3, 1), allow_external_schedulers=True)):
        yield [{"id": d.isoformat(), "day": d} for d in DAYS]

    p = Pipeline("d", destination=f"sqlite:///{tmp_path / 'd.db'}", pipelines_dir=tmp_path / "p")
    with context.external_interval(
        datetime(2024, 3, 10, tzinfo=tokyo), datetime(2024, 3, 11, tzinfo=tokyo)
    ):  # 03-09 15:00 .. 03-10 15:00 UTC
        p.run(days)
    with p.sql_client() as c:
        assert c.execute_sql("SELECT id FROM days") == [("2024-03-10",)]
    p.engine.dispose()


def test_slot_suffix_renames_every_slot_of_a_source_and_keeps_the_tables(tmp_path):
    @source(name="shop")
    def shop():
        @resource(primary_key="id")
        def orders(seq=incremental("id", initial_value=0)):
            yield {"id": 1}
            yield {"id": 2}

        @transformer(data_from=orders)
        def lines(order):
            current.resource_state()["seen"] = current.resource_state().get("seen", 0) + 1
            yield {"order_id": order["id"]}

        return orders, lines

    url = f"sqlite:///{tmp_path / 's.db'}"
    for suffix in ("__region_eu", "__region_us"):
        with context.slot_suffix(suffix):
            Pipeline("shop", destination=url, pipelines_dir=tmp_path / "p").run(shop())
    p = Pipeline("shop", destination=url, pipelines_dir=tmp_path / "p")
    slots = p.state["sources"]["shop"]["resources"]
    assert sorted(slots) == ["lines__region_eu", "lines__region_us", "orders__region_eu", "orders__region_us"]
    assert slots["lines__region_us"]["seen"] == 2
    with p.sql_client() as c:
        assert c.execute_sql("SELECT count(*) FROM orders") == [(4,)]
        assert c.execute_sql("SELECT count(*) FROM lines") == [(4,)]
    p.engine.dispose()


def test_slot_suffix_examples():
    assert slot_suffix({"region": "eu"}) == "__region_eu"
    assert slot_suffix({"year": 2024, "region": "eu"}) == "__region_eu__year_2024"
    assert slot_suffix({}) == ""
    hashed = slot_suffix({"region": "EU west"})
    assert hashed.startswith("__m") and len(hashed) == 15


_values = st.one_of(
    st.text(max_size=12), st.integers(), st.booleans(), st.none(), st.lists(st.integers(), max_size=3)
)
_mappings = st.dictionaries(st.sampled_from(["region", "year", "kind"]), _values, min_size=1)


@given(_mappings, _mappings)
def test_slot_suffixes_are_stable_and_distinct_per_mapped_values(a, b):
    assert slot_suffix(a) == slot_suffix(dict(reversed(list(a.items()))))  # argument order is irrelevant
    same = {k: (v, type(v)) for k, v in a.items()} == {k: (v, type(v)) for k, v in b.items()}
    if not same and slot_suffix(a) == slot_suffix(b):
        # only values with the same text may share a readable suffix (e.g. 1 and "1")
        assert {k: str(v) for k, v in a.items()} == {k: str(v) for k, v in b.items()} or "True" in str(a)
