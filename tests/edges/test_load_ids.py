"""Issue 14 items 1, 4, 5: commit order independent of the clock, retention with an orphan state
row, and state rows whose load records were removed."""

from __future__ import annotations

import copy
import time
import types

import pytest
import sqlalchemy as sa

from airflow_state_provider import incremental, resource
from airflow_state_provider.cli import main as cli_main
from airflow_state_provider.destination import store
from airflow_state_provider.destination.store import load_id_key, loads_table, new_load_id
from airflow_state_provider.exceptions import MissingLoadsError
from airflow_state_provider.state import codec
from tests.edges.support import (
    DATASET,
    NAME,
    dlt_restore_version,
    execute,
    insert_state_row,
    new_pipeline,
    query,
)
from tests.reliability import snapshot

BEFORE_2001 = 999_000_000.0  # 2001-08-28: a 9-digit unix time


def events(upto: int):
    @resource(name="events", primary_key="id", write_disposition="append")
    def gen(updated_at=incremental("updated_at", initial_value=0)):
        yield [{"id": i, "updated_at": i} for i in range(1, upto + 1)]

    return gen


def freeze_store_clock(monkeypatch: pytest.MonkeyPatch, now: float) -> None:
    """Only the store's clock (load ids) is moved; everything else keeps the real time."""
    monkeypatch.setattr(store, "time", types.SimpleNamespace(time=lambda: now, sleep=time.sleep))


def ids_in_table(url: str) -> list[int]:
    return [r[0] for r in query(url, f'SELECT id FROM "{DATASET}".events ORDER BY id')]


def test_new_load_ids_sort_the_same_as_text_and_as_numbers():
    ids = [new_load_id()]
    for after in ("999999999.9", "0999999999.9999999", "1790000000.5", "1790000000.5000001", "x-foreign"):
        ids.append(new_load_id(after=after))
        assert len(ids[-1]) == 18 and ids[-1][10] == "."
        if after != "x-foreign":
            assert load_id_key(ids[-1]) > load_id_key(after)
    assert sorted(ids) == sorted(ids, key=load_id_key)


@pytest.mark.parametrize("bad_clock_run", [0, 1], ids=["first_run_before_2001", "second_run_before_2001"])
def test_a_clock_before_2001_does_not_reorder_commits(dest_url, tmp_path, monkeypatch, bad_clock_run):
    """Three runs, one of them on a worker whose clock says 2001-08-28: every run continues from the
    previous one (no duplicate row), and both we and dlt restore the newest version."""
    for run in range(3):
        with monkeypatch.context() as m:
            if run == bad_clock_run:
                freeze_store_clock(m, BEFORE_2001)
            info = new_pipeline(dest_url, tmp_path).run(events(10 * (run + 1)))
        assert info.row_counts == {"events": 10}, f"run {run} reloaded rows"
        assert info.state_version == run + 1
        assert new_pipeline(dest_url, tmp_path).state["_state_version"] == run + 1
        assert dlt_restore_version(dest_url) == run + 1
    assert ids_in_table(dest_url) == list(range(1, 31))
    load_ids = [r[0] for r in query(dest_url, f'SELECT load_id FROM "{DATASET}"._dlt_loads')]
    assert sorted(load_ids) == sorted(load_ids, key=load_id_key)
    assert all(len(i.split(".")[0]) == 10 for i in load_ids)


def test_a_short_load_id_from_an_older_writer_is_padded_at_the_next_commit(dest_url, tmp_path):
    """A 9-digit id written before ids were padded sorts after later ids as text: restore still takes
    the numerically newest, and the next commit pads it so dlt agrees."""
    new_pipeline(dest_url, tmp_path).run(events(10))  # version 1, a 10-digit id
    state = new_pipeline(dest_url, tmp_path).state
    older = copy.deepcopy(state)
    older["sources"][model_source(state)]["resources"]["events"]["incremental"]["updated_at"][
        "last_value"
    ] = 5
    older["_state_version"] = 0  # what an older commit (from a 2001 clock) held
    older["_version_hash"] = codec.state_version_hash(older)
    insert_state_row(dest_url, older, "999000000.1234567", committed=True)
    assert dlt_restore_version(dest_url) == 0  # the fault: text order picks the short id
    assert new_pipeline(dest_url, tmp_path).state["_state_version"] == 1  # we do not

    info = new_pipeline(dest_url, tmp_path).run(events(20))
    assert info.row_counts == {"events": 10} and info.state_version == 2
    assert dlt_restore_version(dest_url) == 2
    state_ids = [r[0] for r in query(dest_url, f'SELECT _dlt_load_id FROM "{DATASET}"._dlt_pipeline_state')]
    assert "0999000000.1234567" in state_ids and "999000000.1234567" not in state_ids


def model_source(state: dict) -> str:
    (source_key,) = state["sources"]
    return source_key


def test_retention_keeps_the_newest_committed_version_beside_a_newer_orphan(dest_url, tmp_path):
    """max_state_versions=1 and a state row whose load never completed, with a later load id (a
    failed dlt load; here from a clock an hour ahead): the newest committed version survives."""
    new_pipeline(dest_url, tmp_path, max_state_versions=1).run(events(10))
    orphan = new_pipeline(dest_url, tmp_path).state
    orphan["_state_version"] = 7
    insert_state_row(dest_url, orphan, f"{time.time() + 3600:.7f}", committed=False)
    for run in (2, 3):
        info = new_pipeline(dest_url, tmp_path, max_state_versions=1).run(events(10 * run))
        assert info.row_counts == {"events": 10} and info.state_version == run
        assert new_pipeline(dest_url, tmp_path).state["_state_version"] == run
        assert dlt_restore_version(dest_url) == run
    assert ids_in_table(dest_url) == list(range(1, 31))
    versions = sorted(r[0] for r in query(dest_url, f'SELECT version FROM "{DATASET}"._dlt_pipeline_state'))
    assert versions == [3]  # later commits got later ids; the orphan is older now and pruned too


def test_prune_counts_committed_versions_only(dest_url, tmp_path):
    """An orphan with a load id greater than every commit (the old cut counted it as the newest)."""
    pipeline = new_pipeline(dest_url, tmp_path, max_state_versions=2)
    for run in (1, 2, 3):
        pipeline.run(events(run))
    orphan = pipeline.state
    insert_state_row(dest_url, orphan, "9000000000.0000000", committed=False)
    with pipeline.engine.begin() as conn:
        pipeline.store.prune(conn)
    assert new_pipeline(dest_url, tmp_path).state["_state_version"] == 3
    versions = sorted(r[0] for r in query(dest_url, f'SELECT version FROM "{DATASET}"._dlt_pipeline_state'))
    assert versions == [2, 3, 3]


@pytest.mark.parametrize("how", ["rows_deleted", "table_dropped"])
def test_removed_load_records_refuse_loudly(dest_url, tmp_path, capsys, how):
    new_pipeline(dest_url, tmp_path).run(events(10))
    new_pipeline(dest_url, tmp_path).run(events(20))
    loads = loads_table(sa.MetaData(), DATASET)
    execute(dest_url, sa.delete(loads) if how == "rows_deleted" else sa.schema.DropTable(loads))
    before = snapshot.take(dest_url, DATASET)
    ran: list[int] = []

    @resource(name="events")
    def spy():
        ran.append(1)
        yield {"id": 1}

    with pytest.raises(MissingLoadsError) as failure:
        new_pipeline(dest_url, tmp_path).run(spy)
    message = str(failure.value)
    assert f"pipeline {NAME!r}" in message and f"dataset {DATASET!r}" in message
    assert "2 state row(s)" in message and "newest version 2" in message
    assert "_dlt_loads" in message and "delete this pipeline's rows" in message
    assert ran == []
    assert snapshot.take(dest_url, DATASET) == before

    code = cli_main(["info", NAME, "--url", dest_url, "--dataset", DATASET])
    assert code == 1
    assert "Refusing to start over silently" in capsys.readouterr().err


# -- review of issue 14: histories with legacy (unpadded) ids restore and commit in commit order

#: load id of each version in a history written by older versions (or dlt): "short" ids come from a
#: clock before 2001-09-09 and were never padded; the others from a good clock
LEGACY_HISTORIES = {
    "short_newest": ["1700000100.0000000", "999000200.5"],
    "short_in_the_middle": ["1700000100.0000000", "999000200.5", "1700000300.25"],
    "short_first_and_last": ["999000100.5", "1700000200.0000000", "999000300.123"],
    "unpadded_fractions": ["1700000100.5", "1700000100.45", "999000300"],
}


TABLES_WITH_LOAD_IDS = (
    ("_dlt_pipeline_state", "_dlt_load_id"),
    ("_dlt_loads", "load_id"),
    ("events", "_dlt_load_id"),
)


def make_legacy_history(url: str, tmp_path, load_ids: list[str]) -> None:
    """Real runs (versions 1..n, 10 rows each), then every id moved to the legacy one, in the state,
    loads and data tables, as an older writer would have left them."""
    for n in range(1, len(load_ids) + 1):
        new_pipeline(url, tmp_path).run(events(10 * n))
    rows = query(url, f'SELECT version, _dlt_load_id FROM "{DATASET}"._dlt_pipeline_state')
    ours = dict(rows)
    for version, legacy in enumerate(load_ids, start=1):
        for table, column in TABLES_WITH_LOAD_IDS:
            execute(
                url,
                sa.text(
                    f'UPDATE "{DATASET}"."{table}" SET "{column}" = :new WHERE "{column}" = :old'
                ).bindparams(new=legacy, old=ours[version]),
            )


@pytest.mark.parametrize("history", list(LEGACY_HISTORIES))
def test_a_legacy_history_restores_and_commits_in_commit_order(dest_url, tmp_path, capsys, history):
    """Review of issue 14: after padding, a legacy 9-digit id ranked below older versions, so restore
    picked an older state and the next run reloaded rows."""
    load_ids = LEGACY_HISTORIES[history]
    newest = len(load_ids)
    make_legacy_history(dest_url, tmp_path, load_ids)
    assert new_pipeline(dest_url, tmp_path).state["_state_version"] == newest
    assert cli_main(["history", NAME, "--url", dest_url, "--dataset", DATASET]) == 0
    listed = [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()[1:] if line[:1].isdigit()]
    assert listed == list(range(newest, 0, -1))

    info = new_pipeline(dest_url, tmp_path, max_state_versions=2).run(events(10 * (newest + 1)))
    assert info.row_counts == {"events": 10} and info.state_version == newest + 1
    assert ids_in_table(dest_url) == list(range(1, 10 * (newest + 1) + 1))
    assert new_pipeline(dest_url, tmp_path).state["_state_version"] == newest + 1
    assert dlt_restore_version(dest_url) == newest + 1
    # from now on text order, numeric order and commit order agree, and retention keeps the newest
    rows = query(dest_url, f'SELECT version, _dlt_load_id FROM "{DATASET}"._dlt_pipeline_state')
    assert sorted(rows) == sorted(rows, key=lambda r: r[1]) == sorted(rows, key=lambda r: load_id_key(r[1]))
    assert [v for v, _ in sorted(rows)] == [newest, newest + 1]
    assert all(store.is_canonical_load_id(i) for _, i in rows)
    assert not new_pipeline(dest_url, tmp_path).run(events(10 * (newest + 1))).row_counts.get("events")
