"""The core promises on real SQLite, DuckDB and PostgreSQL: restore, scoped state, atomic commit,
no lost updates, typed values, bounded restore (issue 2)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pendulum
import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline, current, resource, source
from airflow_state_provider.exceptions import StateConflictError, StateNotSerializableError


def new_pipeline(url: str, pipelines_dir, name: str = "p", **kw) -> Pipeline:
    """A new Pipeline object on an empty pipelines dir: what a clean Airflow worker starts with."""
    d = pipelines_dir / uuid.uuid4().hex
    return Pipeline(name, destination=url, dataset_name="ds", pipelines_dir=d, **kw)


def select(url: str, sql: str) -> list[tuple]:
    p = Pipeline("reader", destination=url, dataset_name="ds")
    with p.sql_client() as c:
        return c.execute_sql(sql)


def count(url: str, table: str) -> int:
    from airflow_state_provider.destination.dialects import dialect_for
    from airflow_state_provider.destination.engine import create_engine

    engine = create_engine(url)

    dialect_for(engine).prepare("ds")
    with engine.connect() as conn:
        insp = sa.inspect(conn)
        if not insp.has_table(table, schema="ds"):
            return 0
        return conn.execute(sa.text(f'SELECT count(*) FROM "ds"."{table}"')).scalar()


# -- seeds' state examples across runs, each on a clean worker -------------------------------------

ARCHIVES = {
    1: ["https://x/2024/01", "https://x/2024/02"],
    2: ["https://x/2024/01", "https://x/2024/02", "https://x/2024/03"],
}


def test_chess_archives_in_resource_state(dest_url, pipelines_dir):
    seen_runs: list[list[str]] = []

    @resource(write_disposition="append")
    def players_games(run: int):
        checked = current.resource_state().setdefault("archives", [])
        fetched = []
        for url in ARCHIVES[run]:
            if url in checked:
                continue
            checked.append(url)
            fetched.append(url)
            yield [{"archive": url, "game": i} for i in range(2)]
        seen_runs.append(fetched)

    info1 = new_pipeline(dest_url, pipelines_dir).run(players_games(1))
    assert info1.row_counts == {"players_games": 4}
    p2 = new_pipeline(dest_url, pipelines_dir)
    info2 = p2.run(players_games(2))
    assert seen_runs == [ARCHIVES[1], ["https://x/2024/03"]]
    assert info2.row_counts == {"players_games": 2}
    assert count(dest_url, "players_games") == 6
    assert p2.state["sources"]["p"]["resources"]["players_games"]["archives"] == ARCHIVES[2]


def test_last_value_per_search_term(dest_url, pipelines_dir):
    pages = {"python": [5, 9], "airflow": [3]}

    @resource
    def search(terms, bump=0):
        for term in terms:
            last = current.resource_state().setdefault(f"last_value_{term}", None)
            for newest_id in pages[term]:
                newest_id += bump
                if last is not None and newest_id <= last:
                    continue
                yield {"term": term, "newest_id": newest_id}
                current.resource_state()[f"last_value_{term}"] = max(last or 0, newest_id)

    new_pipeline(dest_url, pipelines_dir).run(search(["python", "airflow"]))
    p = new_pipeline(dest_url, pipelines_dir)
    info = p.run(search(["python", "airflow"], bump=1))
    slot = p.state["sources"]["p"]["resources"]["search"]
    assert slot == {"last_value_python": 10, "last_value_airflow": 4}
    # second run: python 5+1=6 and 9+1=10 are > 9 only for 10; airflow 4 > 3
    assert info.row_counts == {"search": 2}


@source
def api_source(run: int):
    @resource
    def users():
        state = current.source_state()
        yield {"id": run, "last_sync_seen": state.get("last_full_sync")}
        state["last_full_sync"] = f"sync-{run}"

    @resource
    def events():
        yield {"id": run, "sync": current.source_state().get("last_full_sync")}

    return users, events


def test_source_state_shared_by_two_resources(dest_url, pipelines_dir):
    new_pipeline(dest_url, pipelines_dir).run(api_source(1))
    p = new_pipeline(dest_url, pipelines_dir)
    p.run(api_source(2))
    # the second resource sees what the first wrote in the same run; both see the restored value
    assert select(dest_url, "SELECT id, sync FROM events ORDER BY id") == [(1, "sync-1"), (2, "sync-2")]
    assert select(dest_url, "SELECT id, last_sync_seen FROM users ORDER BY id") == [(1, None), (2, "sync-1")]
    assert p.state["sources"]["api_source"]["last_full_sync"] == "sync-2"


def test_source_body_reads_restored_state_and_cannot_write(dest_url, pipelines_dir):
    seen = []

    @source(name="s")
    def counted():
        state = current.source_state()
        seen.append(state.get("n"))

        @resource
        def bump():
            st = current.source_state()
            st["n"] = st.get("n", 0) + 1
            yield {"n": st["n"]}

        return bump

    new_pipeline(dest_url, pipelines_dir).run(counted())
    new_pipeline(dest_url, pipelines_dir).run(counted())
    assert seen == [None, 1]

    from airflow_state_provider.exceptions import ReadOnlyStateError

    @source(name="s")
    def writer():
        current.source_state()["x"] = 1
        return counted().resources["bump"]

    with pytest.raises(ReadOnlyStateError, match="read-only in the body"):
        new_pipeline(dest_url, pipelines_dir).run(writer())


def test_page_checkpoint_pattern(dest_url, pipelines_dir):
    """Seed 002: a page counter kept in state (written after the yield): with checkpoints on, a failure
    mid-way loses nothing and the retry duplicates nothing."""
    fail_at = {"page": 3}

    @resource
    def api_with_checkpoints():
        state = current.resource_state()
        page = state.get("last_page", 0)
        while page < 5:
            if page == fail_at["page"]:
                raise RuntimeError("API down")
            yield [{"page": page, "i": i} for i in range(3)]
            page += 1
            state["last_page"] = page
        state.pop("last_page", None)
        state["done"] = True

    with pytest.raises(RuntimeError):
        new_pipeline(dest_url, pipelines_dir).run(api_with_checkpoints, checkpoint_every=3)
    # a counter kept by the resource's own code is not progress a checkpoint can prove: its rows and
    # its state waited for the final commit, which never came; the retry loads every page once
    assert count(dest_url, "api_with_checkpoints") == 0
    p = new_pipeline(dest_url, pipelines_dir)
    assert "api_with_checkpoints" not in p.state.get("sources", {}).get("p", {}).get("resources", {})
    fail_at["page"] = -1
    p.run(api_with_checkpoints, checkpoint_every=3)
    assert count(dest_url, "api_with_checkpoints") == 15
    pages = select(dest_url, "SELECT page FROM api_with_checkpoints ORDER BY page, i")
    assert [r[0] for r in pages] == [p for p in range(5) for _ in range(3)]
    assert p.state["sources"]["p"]["resources"]["api_with_checkpoints"] == {"done": True}


# -- atomicity -------------------------------------------------------------------------------------


def _state_versions(url: str) -> int:
    return count(url, "_dlt_pipeline_state")


def test_exception_after_rows_and_state_change_leaves_destination_unchanged(dest_url, pipelines_dir):
    @resource
    def ok():
        current.resource_state()["n"] = 1
        yield {"id": 1}

    new_pipeline(dest_url, pipelines_dir).run(ok)
    before = (count(dest_url, "ok"), count(dest_url, "_dlt_loads"), _state_versions(dest_url))

    @resource(name="ok")
    def boom():
        current.resource_state()["n"] = 2
        yield [{"id": i} for i in range(2, 50)]
        current.resource_state()["n"] = 3
        raise ValueError("source broke after yielding")

    with pytest.raises(ValueError, match="source broke"):
        new_pipeline(dest_url, pipelines_dir).run(boom)
    after = (count(dest_url, "ok"), count(dest_url, "_dlt_loads"), _state_versions(dest_url))
    assert after == before == (1, 1, 1)
    assert new_pipeline(dest_url, pipelines_dir).state["sources"]["p"]["resources"]["ok"] == {"n": 1}


def test_nothing_written_when_nothing_changed(dest_url, pipelines_dir):
    @resource
    def quiet():
        current.resource_state().setdefault("k", "v")
        yield from []

    new_pipeline(dest_url, pipelines_dir).run(quiet)
    v1 = (count(dest_url, "_dlt_loads"), _state_versions(dest_url))
    info = new_pipeline(dest_url, pipelines_dir).run(quiet)
    assert info.state_changed is False and info.load_id is None
    assert (count(dest_url, "_dlt_loads"), _state_versions(dest_url)) == v1 == (1, 1)


# -- concurrency: per-slot merge and conflicts -----------------------------------------------------


def test_concurrent_commits_of_different_resources_both_survive(dest_url, pipelines_dir):
    @resource
    def a():
        current.resource_state()["v"] = "a"
        yield {"x": 1}

    @resource
    def b():
        current.resource_state()["v"] = "b"
        yield {"x": 2}

    p1, p2 = new_pipeline(dest_url, pipelines_dir), new_pipeline(dest_url, pipelines_dir)
    # both restore the same (empty) version before either commits
    p1.run(a, read_only_sources=None)
    # p2 still believes in the state it would restore now; force the race: restore happened at run
    # start, so emulate by running b with the old base through a stale pipeline object
    info = _run_with_stale_base(p2, b, stale=None)
    resources = new_pipeline(dest_url, pipelines_dir).state["sources"]["p"]["resources"]
    assert resources == {"a": {"v": "a"}, "b": {"v": "b"}}
    assert info.state_version == 2
    assert count(dest_url, "a") == 1 and count(dest_url, "b") == 1


def test_concurrent_change_of_same_slot_fails_and_rolls_back_rows(dest_url, pipelines_dir):
    @resource(name="shared")
    def first():
        current.resource_state()["v"] = 1
        yield {"x": 1}

    @resource(name="shared")
    def second():
        current.resource_state()["v"] = 2
        yield [{"x": i} for i in range(10)]

    p1, p2 = new_pipeline(dest_url, pipelines_dir), new_pipeline(dest_url, pipelines_dir)
    p1.run(first)
    with pytest.raises(StateConflictError, match=r"sources\.p\.resources\.shared"):
        _run_with_stale_base(p2, second, stale=None)
    assert count(dest_url, "shared") == 1
    assert new_pipeline(dest_url, pipelines_dir).state["sources"]["p"]["resources"]["shared"] == {"v": 1}


def _run_with_stale_base(pipeline: Pipeline, data, stale):
    """Run as if ``pipeline`` had restored before the other commit: its restore returns ``stale``."""
    pipeline._read_destination = lambda: stale  # the restore happened earlier, on an older version
    return pipeline.run(data)


# -- typed values ----------------------------------------------------------------------------------

TYPED = {
    "datetime_utc": datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
    "datetime_naive": datetime(2024, 5, 1, 10, 0, 0, 123456),
    "pendulum": pendulum.datetime(2024, 1, 1, 12, tz="Europe/Berlin"),
    "date": date(2024, 5, 1),
    "time": time(10, 30, 1),
    "decimal": Decimal("10.25"),
    "bytes": b"\x00\x01hello",
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "nested": {"list": [1, 2.5, "x", None, True], "unicode": "żółw 🐢"},
}


def test_typed_values_round_trip_through_the_destination(dest_url, pipelines_dir):
    @resource
    def typed():
        current.resource_state().update(TYPED)
        yield {"id": 1}

    new_pipeline(dest_url, pipelines_dir).run(typed)
    restored = new_pipeline(dest_url, pipelines_dir).state["sources"]["p"]["resources"]["typed"]
    assert restored == TYPED
    for key, value in TYPED.items():
        assert type(restored[key]) is (datetime if key == "pendulum" else type(value)), key
    assert restored["pendulum"].utcoffset() == TYPED["pendulum"].utcoffset()


@pytest.mark.parametrize("bad", [{1, 2}, object()], ids=["set", "object"])
def test_unserializable_state_names_path_and_writes_nothing(dest_url, pipelines_dir, bad):
    @resource
    def broken():
        current.resource_state()["fine"] = 1
        current.resource_state()["bad"] = {"inner": bad}
        yield {"id": 1}

    with pytest.raises(StateNotSerializableError, match=r"sources\.p\.resources\.broken\.bad\.inner"):
        new_pipeline(dest_url, pipelines_dir).run(broken)
    assert count(dest_url, "broken") == 0
    assert count(dest_url, "_dlt_loads") == 0


# -- bounded restore and retention -----------------------------------------------------------------


def test_retention_keeps_configured_versions_and_restore_reads_newest(dest_url, pipelines_dir):
    @resource
    def counter():
        st = current.resource_state()
        st["n"] = st.get("n", 0) + 1
        yield {"n": st["n"]}

    for _ in range(7):
        new_pipeline(dest_url, pipelines_dir, max_state_versions=3).run(counter)
    assert _state_versions(dest_url) == 3
    p = new_pipeline(dest_url, pipelines_dir)
    assert p.state["sources"]["p"]["resources"]["counter"] == {"n": 7}
    assert p.state["_state_version"] == 7
