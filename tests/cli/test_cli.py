"""``airflow-state``: every command and flag on real SQLite, DuckDB and PostgreSQL (issue 6)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline
from airflow_state_provider import operations as ops
from airflow_state_provider.cli import main
from airflow_state_provider.state import codec, model
from tests.cli._support import (
    DATASET,
    PIPELINE,
    cli,
    committed,
    counts,
    load,
    new_pipeline,
    rows,
    shop,
    tables,
)

AIRFLOW_VERSION = tuple(int(p) for p in importlib.metadata.version("apache-airflow").split(".")[:2])
ORDERS_LAST = "sources.shop.resources.orders.incremental.id.last_value"
SYNCED_AT = "sources.shop.resources.customers.synced_at"


def state_of(url: str, pipelines_dir: Path) -> dict:
    return committed(url, pipelines_dir).state


# -- info and get ------------------------------------------------------------------------------------


def test_info_plain_verbose_and_json(dest_url, pipelines_dir, capsys):
    load(dest_url, pipelines_dir)
    stored = committed(dest_url, pipelines_dir)

    r = cli(capsys, dest_url, "info", PIPELINE)
    assert r.code == 0, r.err
    assert f"Pipeline:     {PIPELINE}\n" in r.out
    assert f"Dataset:      {DATASET}\n" in r.out
    assert f"Version:      1 (hash {stored.state['_version_hash']})" in r.out
    assert f"Load id:      {stored.load_id}\n" in r.out
    assert f"Size:         {stored.size} bytes stored" in r.out
    assert "History:      1 version (1..1) retained (max_state_versions=100)" in r.out
    assert "  shop  (source keys: last_sync)\n" in r.out
    assert "      incremental id: last_value=3, start_value=0, initial_value=0, unique_hashes=1\n" in r.out
    assert (
        "      incremental meta.updated: last_value=3, start_value=0, initial_value=0, unique_hashes=1"
        in r.out
    )
    assert "    customers  (keys: seen, synced_at)\n" in r.out
    assert "  store\n    rates  (keys: rate, key)\n" in r.out
    assert "State document" not in r.out

    verbose = cli(capsys, dest_url, "info", PIPELINE, "-v")
    doc = json.loads(verbose.out.split("State document:\n", 1)[1])
    assert doc == ops.to_plain(stored.state)
    assert doc["sources"]["shop"]["resources"]["customers"]["synced_at"] == "2024-05-01T12:00:00+00:00"
    assert doc["sources"]["store"]["resources"]["rates"]["rate"] == "1.25"

    as_json = json.loads(cli(capsys, dest_url, "info", PIPELINE, "--json").out)
    assert as_json["version"] == 1 and as_json["load_id"] == stored.load_id
    assert as_json["versions_retained"] == [1] and as_json["size"] == stored.size
    assert as_json["sources"]["shop"]["resources"]["orders"]["incrementals"]["id"] == {
        "last_value": 3,
        "start_value": 0,
        "initial_value": 0,
        "unique_hashes": 1,
    }
    assert "state" not in as_json
    full = json.loads(cli(capsys, dest_url, "info", PIPELINE, "--json", "--verbose").out)
    assert full["state"] == doc


def test_get_values_by_path(dest_url, pipelines_dir, capsys):
    load(dest_url, pipelines_dir)

    def get(path: str = "") -> object:
        r = cli(capsys, dest_url, "get", PIPELINE, *([path] if path else []))
        assert r.code == 0, r.err
        return json.loads(r.out)

    assert get(ORDERS_LAST) == 3
    assert get() == ops.to_plain(state_of(dest_url, pipelines_dir))
    # a key containing dots (the JSONPath cursor "meta.updated") and a list index
    assert get("sources.shop.resources.events.incremental.meta.updated.last_value") == 3
    assert get("sources.shop.resources.customers.seen.0") == 3
    # typed values in ISO / str form
    assert get(SYNCED_AT) == "2024-05-01T12:00:00+00:00"
    assert get("sources.shop.last_sync") == "2024-05-01"
    assert get("sources.store.resources.rates") == {
        "rate": "1.25",
        "key": "12345678-1234-5678-1234-567812345678",
    }

    missing = cli(capsys, dest_url, "get", PIPELINE, "sources.shop.resources.ordrs")
    assert missing.code == 2 and missing.out == ""
    assert "state path 'sources.shop.resources.ordrs' not found" in missing.err
    assert "sources.shop.resources has no key 'ordrs' (keys: customers, events, orders)" in missing.err
    bad_index = cli(capsys, dest_url, "get", PIPELINE, "sources.shop.resources.customers.seen.7")
    assert bad_index.code == 2 and "is a list of 1 item(s), '7' is not an index" in bad_index.err


# -- set ---------------------------------------------------------------------------------------------


def test_set_values_typed_and_audited(dest_url, pipelines_dir, capsys):
    load(dest_url, pipelines_dir)
    before = counts(dest_url)

    r = cli(capsys, dest_url, "set", PIPELINE, ORDERS_LAST, "1")
    assert r.code == 0, r.err
    assert f"~ {ORDERS_LAST}: 3 -> 1" in r.out
    assert "Committed state version 2 (load " in r.out
    # a new state row and a new _dlt_loads row: audited, never an in-place update
    assert counts(dest_url) == (before[0] + 1, before[1] + 1)
    stored = committed(dest_url, pipelines_dir)
    assert stored.version == 2 and f"(load {stored.load_id})" in r.out
    assert stored.state["sources"]["shop"]["resources"]["orders"]["incremental"]["id"]["last_value"] == 1

    # replacing a typed value keeps its type: quoted JSON string, or bare ISO text
    assert cli(capsys, dest_url, "set", PIPELINE, SYNCED_AT, '"2024-06-01T00:00:00+00:00"').code == 0
    assert cli(capsys, dest_url, "set", PIPELINE, "sources.shop.last_sync", "2024-06-02").code == 0
    assert cli(capsys, dest_url, "set", PIPELINE, "sources.store.resources.rates.rate", "2.5").code == 0
    state = state_of(dest_url, pipelines_dir)
    assert state["sources"]["shop"]["resources"]["customers"]["synced_at"] == datetime(2024, 6, 1, tzinfo=UTC)
    assert state["sources"]["shop"]["last_sync"] == date(2024, 6, 2)
    assert state["sources"]["store"]["resources"]["rates"]["rate"] == Decimal("2.5")

    wrong = cli(capsys, dest_url, "set", PIPELINE, "sources.shop.last_sync", '"not a date"')
    assert wrong.code == 2 and "expected an ISO date such as 2024-05-01" in wrong.err
    as_text = cli(capsys, dest_url, "set", PIPELINE, SYNCED_AT, '"free text"', "--type", "json")
    assert as_text.code == 0
    assert state_of(dest_url, pipelines_dir)["sources"]["shop"]["resources"]["customers"]["synced_at"] == (
        "free text"
    )

    # new keys need --create; --type types them
    note = "sources.shop.resources.orders.note"
    absent = cli(capsys, dest_url, "set", PIPELINE, note, '"x"')
    assert absent.code == 2 and "has no key 'note'" in absent.err
    created = cli(capsys, dest_url, "set", PIPELINE, note, "10.10", "--create", "--type", "decimal")
    assert created.code == 0 and f"+ {note} = " in created.out
    assert state_of(dest_url, pipelines_dir)["sources"]["shop"]["resources"]["orders"]["note"] == Decimal(
        "10.10"
    )

    invalid = cli(capsys, dest_url, "set", PIPELINE, ORDERS_LAST, "abc")
    assert invalid.code == 2 and "'abc' is not valid JSON" in invalid.err
    protected = cli(capsys, dest_url, "set", PIPELINE, "_state_version", "99")
    assert protected.code == 2 and "'_state_version' is written by every commit" in protected.err

    version = committed(dest_url, pipelines_dir).version
    same = cli(capsys, dest_url, "set", PIPELINE, ORDERS_LAST, "1")
    assert same.code == 0 and f"Nothing to change: state version {version}" in same.out
    assert committed(dest_url, pipelines_dir).version == version


def test_set_dry_run_and_expect_version(dest_url, pipelines_dir, capsys):
    load(dest_url, pipelines_dir)
    before = counts(dest_url)
    dry = cli(capsys, dest_url, "set", PIPELINE, ORDERS_LAST, "0", "--dry-run")
    assert dry.code == 0
    assert f"~ {ORDERS_LAST}: 3 -> 0" in dry.out
    assert "Dry run: nothing written. Apply exactly this with --expect-version 1." in dry.out
    assert counts(dest_url) == before

    load(dest_url, pipelines_dir, data=shop())  # another task commits version 2 meanwhile
    stale = cli(capsys, dest_url, "set", PIPELINE, ORDERS_LAST, "0", "--expect-version", "1")
    assert stale.code == 1
    assert "expected state version 1, but the newest committed version is 2" in stale.err
    assert "Nothing was written" in stale.err
    assert committed(dest_url, pipelines_dir).version == 2
    fresh = cli(capsys, dest_url, "set", PIPELINE, ORDERS_LAST, "0", "--expect-version", "2")
    assert fresh.code == 0 and "Committed state version 3" in fresh.out


def test_edit_fails_cleanly_when_a_newer_version_lands_between_plan_and_apply(dest_url, pipelines_dir):
    load(dest_url, pipelines_dir)
    p = new_pipeline(dest_url, pipelines_dir)
    try:
        plan = ops.plan_set(p, ORDERS_LAST, 0)
        drop_plan = ops.plan_drop(p, ["orders"])
        load(dest_url, pipelines_dir, data=shop(ids=(4,)))  # a load commits version 2
        before = counts(dest_url)
        for stale in (plan, drop_plan):
            with pytest.raises(ops.ConcurrentEditError, match="was planned against version 1") as exc:
                ops.apply(stale)
            assert "state version 2 (load " in str(exc.value) and "Nothing was written" in str(exc.value)
    finally:
        p.engine.dispose()
    assert counts(dest_url) == before
    assert "orders" in tables(dest_url) and rows(dest_url, "orders") == 4
    assert (
        state_of(dest_url, pipelines_dir)["sources"]["shop"]["resources"]["orders"]["incremental"]["id"][
            "last_value"
        ]
        == 4
    )


# -- drop --------------------------------------------------------------------------------------------


def test_drop_resource_leaves_every_other_slot_byte_identical(dest_url, pipelines_dir, capsys):
    load(dest_url, pipelines_dir)
    load(dest_url, pipelines_dir, data=shop(ids=(4, 5)))
    before = committed(dest_url, pipelines_dir)
    table_rows = {t: rows(dest_url, t) for t in ("customers", "event_log", "rates")}
    loads_before = rows(dest_url, "_dlt_loads")

    r = cli(capsys, dest_url, "drop", PIPELINE, "orders")
    assert r.code == 0, r.err
    assert "- sources.shop.resources.orders (was " in r.out
    assert f"drop table {DATASET}.orders" in r.out
    assert "Committed state version 3" in r.out

    after = committed(dest_url, pipelines_dir)
    encoded_before = {slot: codec.typed_dumps(v) for slot, v in model.iter_slots(before.state)}
    encoded_after = {slot: codec.typed_dumps(v) for slot, v in model.iter_slots(after.state)}
    dropped = ("sources", "shop", "resources", "orders")
    assert dropped in encoded_before and dropped not in encoded_after
    assert encoded_after == {s: b for s, b in encoded_before.items() if s != dropped}
    assert after.version == before.version + 1
    assert "orders" not in tables(dest_url)
    assert {t: rows(dest_url, t) for t in table_rows} == table_rows
    assert rows(dest_url, "_dlt_loads") == loads_before + 1


def test_drop_flags(dest_url, pipelines_dir, capsys):
    load(dest_url, pipelines_dir)
    versions = lambda: committed(dest_url, pipelines_dir).version  # noqa: E731

    # --state-only keeps the table
    r = cli(capsys, dest_url, "drop", PIPELINE, "customers", "--state-only")
    assert r.code == 0 and "- sources.shop.resources.customers" in r.out and "drop table" not in r.out
    assert "customers" in tables(dest_url) and rows(dest_url, "customers") == 1
    assert "customers" not in state_of(dest_url, pipelines_dir)["sources"]["shop"]["resources"]

    # --state-paths are JSONPaths relative to the source state
    r = cli(capsys, dest_url, "drop", PIPELINE, "--state-paths", "last_sync")
    assert r.code == 0 and '- sources.shop.last_sync (was "2024-05-01")' in r.out
    assert "last_sync" not in state_of(dest_url, pipelines_dir)["sources"]["shop"]

    # re: patterns, --source, --dry-run; the table of a resource with another table_name comes from
    # the resource-to-table map (issue 14 item 6)
    v = versions()
    r = cli(capsys, dest_url, "drop", PIPELINE, "re:^ev", "--source", "shop", "--dry-run")
    assert r.code == 0 and "- sources.shop.resources.events" in r.out
    assert "drop table shop_data.event_log" in r.out
    assert "Dry run: nothing written" in r.out and versions() == v

    r = cli(capsys, dest_url, "drop", PIPELINE, "re:^zzz", "--state-paths", "resources.orders.incremental")
    assert r.code == 0
    assert "warning: resource pattern 're:^zzz' matched no resource" in r.out
    assert "- sources.shop.resources.orders.incremental (was " in r.out

    r = cli(capsys, dest_url, "drop", PIPELINE, "orders", "--expect-version", str(v))
    assert r.code == 1 and f"expected state version {v}" in r.err

    # bad input: nothing written, exit 2, the message names what was wrong
    v = versions()
    for argv, message in [
        (["nosuch"], "resource 'nosuch' not found: no state slot in source(s) shop, store"),
        (["orders", "--source", "nosrc"], "no source(s) 'nosrc' in the state; sources: shop, store"),
        (["--state-paths", "nokey"], "state path 'nokey' selected nothing in source(s) shop, store"),
        (["--state-paths", "[[["], "'[[[' is not a valid JSONPath"),
        (["re:("], "bad resource pattern 're:('"),
        ([], "nothing to drop"),
    ]:
        bad = cli(capsys, dest_url, "drop", PIPELINE, *argv)
        assert bad.code == 2 and message in bad.err, (argv, bad.err)
    assert versions() == v

    # --drop-all: every resource slot of every source, and the tables they loaded (events loaded
    # event_log); customers lost its slot with --state-only above, so its table stays
    r = cli(capsys, dest_url, "drop", PIPELINE, "--drop-all")
    assert r.code == 0, r.err
    for table in ("orders", "rates", "event_log"):
        assert f"drop table {DATASET}.{table}" in r.out
    sources = state_of(dest_url, pipelines_dir)["sources"]
    assert sources == {"shop": {"resources": {}}, "store": {"resources": {}}}
    assert tables(dest_url) & {"orders", "rates", "event_log"} == set()
    assert "customers" in tables(dest_url)


# -- history and rollback ----------------------------------------------------------------------------


def test_history_lists_versions_with_changed_paths(dest_url, pipelines_dir, capsys):
    for _ in range(3):
        load(dest_url, pipelines_dir)
    assert cli(capsys, dest_url, "set", PIPELINE, ORDERS_LAST, "1").code == 0

    r = cli(capsys, dest_url, "history", PIPELINE)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["VERSION", "LOAD", "ID", "CREATED", "AT", "(UTC)", "SIZE", "CHANGED", "PATHS"]
    assert lines[1].startswith("4 ") and lines[1].endswith(ORDERS_LAST)
    assert lines[-1].startswith("1 ") and lines[-1].endswith("(first version)")

    entries = json.loads(cli(capsys, dest_url, "history", PIPELINE, "--json").out)
    assert [e["version"] for e in entries] == [4, 3, 2, 1]
    assert entries[0]["changed_paths"] == [ORDERS_LAST]
    assert "sources.shop.resources.customers.seen" in entries[2]["changed_paths"]
    assert entries[3]["changed_paths"] is None
    p = new_pipeline(dest_url, pipelines_dir)
    try:
        with p.engine.connect() as conn:
            stored = p.store.history_rows(conn)
    finally:
        p.engine.dispose()
    assert [e["load_id"] for e in entries] == [row._dlt_load_id for row in stored]
    assert [e["size"] for e in entries] == [len(row.state) for row in stored]
    assert all(e["created_at"].endswith("+00:00") for e in entries)
    for e in entries:
        line = rf"^{e['version']}\s+{re.escape(e['load_id'])}\s+{e['created_at'][:10]} \S+\s+{e['size']}\s"
        assert re.search(line, r.out, re.MULTILINE), line

    limited = json.loads(cli(capsys, dest_url, "history", PIPELINE, "--limit", "2", "--json").out)
    assert [e["version"] for e in limited] == [4, 3]
    assert limited[1]["changed_paths"] == entries[1]["changed_paths"]  # computed against version 2


def test_history_and_rollback_respect_retention(dest_url, pipelines_dir, capsys):
    for _ in range(4):
        load(dest_url, pipelines_dir, max_state_versions=2)
    r = cli(capsys, dest_url, "history", PIPELINE)
    assert [line.split()[0] for line in r.out.splitlines()[1:]] == ["4", "3"]
    assert r.out.splitlines()[-1].endswith("(previous version not retained)")
    gone = cli(capsys, dest_url, "rollback", PIPELINE, "--to-version", "1")
    assert gone.code == 2
    assert "state version 1 is not retained" in gone.err and "(retained versions: 3..4;" in gone.err


def test_rollback_then_next_run_continues_from_the_rolled_back_cursor(dest_url, pipelines_dir, capsys):
    load(dest_url, pipelines_dir, data=shop(ids=(1, 2, 3)))
    load(dest_url, pipelines_dir, data=shop(ids=(1, 2, 3, 4, 5, 6)))
    assert rows(dest_url, "orders") == 6
    before = counts(dest_url)

    dry = cli(capsys, dest_url, "rollback", PIPELINE, "--to-version", "1", "--dry-run")
    assert dry.code == 0 and f"~ {ORDERS_LAST}: 6 -> 3" in dry.out and counts(dest_url) == before

    r = cli(capsys, dest_url, "rollback", PIPELINE, "--to-version", "1")
    assert r.code == 0, r.err
    assert "rollback to version 1, against version 2" in r.out and "Committed state version 3" in r.out
    p = new_pipeline(dest_url, pipelines_dir)
    try:
        with p.engine.connect() as conn:
            v1 = p.store.version(conn, 1)
        assert ops.diff(v1.state, ops.newest(p).state) == []  # content equals version 1
        info = p.run(shop(ids=(1, 2, 3, 4, 5, 6)).with_resources("orders"))
        assert info.row_counts == {"orders": 3}  # 4, 5, 6 again: the cursor was back at 3
        assert p.state["sources"]["shop"]["resources"]["orders"]["incremental"]["id"]["last_value"] == 6
    finally:
        p.engine.dispose()

    current = committed(dest_url, pipelines_dir).version
    same = cli(capsys, dest_url, "rollback", PIPELINE, "--to-version", str(current))
    assert same.code == 0 and "Nothing to change" in same.out
    unknown = cli(capsys, dest_url, "rollback", PIPELINE, "--to-version", "99")
    assert unknown.code == 2 and "state version 99 is not retained" in unknown.err
    assert f"(retained versions: 1..{current}; max_state_versions=100)" in unknown.err
    stale = cli(capsys, dest_url, "rollback", PIPELINE, "--to-version", "1", "--expect-version", "1")
    assert stale.code == 1 and "expected state version 1" in stale.err


# -- sync and local state ----------------------------------------------------------------------------


def test_sync_restores_the_destination_state_into_a_local_dir(dest_url, pipelines_dir, capsys, tmp_path):
    load(dest_url, pipelines_dir)
    stored = committed(dest_url, pipelines_dir)
    target = tmp_path / "worker"
    r = cli(capsys, dest_url, "sync", PIPELINE, "--pipelines-dir", str(target))
    assert r.code == 0, r.err
    assert f"Restored state version 1 (load {stored.load_id})" in r.out
    assert str(target / PIPELINE / "state.json") in r.out
    local = Pipeline(
        PIPELINE,
        destination=dest_url,
        dataset_name=DATASET,
        pipelines_dir=target,
        restore_from_destination=False,
    )
    try:
        assert local.first_run is False
        assert ops.diff(stored.state, local.state) == [] and local.state["_state_version"] == 1
    finally:
        local.engine.dispose()
    missing = cli(capsys, dest_url, "sync", "nosuch", "--pipelines-dir", str(target))
    assert missing.code == 2 and "pipeline 'nosuch' has no committed state" in missing.err
    assert "pipelines with state there: store" in missing.err


def test_local_state_commands(dest_url, pipelines_dir, capsys, tmp_path):
    workdir = tmp_path / "persistent-worker"
    load(dest_url, pipelines_dir, restore_from_destination=False, pipelines_dir=workdir)
    assert "_dlt_pipeline_state" not in tables(dest_url)
    local = ["--local", "--pipelines-dir", str(workdir)]

    info = cli(capsys, dest_url, "info", PIPELINE, *local)
    assert info.code == 0, info.err
    assert f"bytes in {workdir / PIPELINE / 'state.json'}" in info.out
    assert json.loads(cli(capsys, dest_url, "get", PIPELINE, ORDERS_LAST, *local).out) == 3

    loads_before = rows(dest_url, "_dlt_loads")
    r = cli(capsys, dest_url, "set", PIPELINE, ORDERS_LAST, "2", *local)
    assert r.code == 0 and "Committed state version 2" in r.out
    assert json.loads(cli(capsys, dest_url, "get", PIPELINE, ORDERS_LAST, *local).out) == 2
    assert rows(dest_url, "_dlt_loads") == loads_before  # a state-only edit of local state
    history = json.loads(cli(capsys, dest_url, "history", PIPELINE, "--json", *local).out)
    assert [e["version"] for e in history] == [2]
    assert cli(capsys, dest_url, "rollback", PIPELINE, "--to-version", "1", *local).code == 2

    r = cli(capsys, dest_url, "drop", PIPELINE, "orders", *local)
    assert r.code == 0 and f"drop table {DATASET}.orders" in r.out
    assert "orders" not in tables(dest_url) and "_dlt_pipeline_state" not in tables(dest_url)
    assert rows(dest_url, "_dlt_loads") == loads_before + 1  # the table drop is a recorded load
    assert "orders" not in json.loads(
        cli(capsys, dest_url, "get", PIPELINE, "sources.shop.resources", *local).out
    )

    nothing = cli(capsys, dest_url, "info", PIPELINE, "--local", "--pipelines-dir", str(tmp_path / "empty"))
    assert nothing.code == 2 and "has no state in local state dir" in nothing.err


# -- usage, errors and secrets -----------------------------------------------------------------------


def test_usage_errors(dest_url, pipelines_dir, capsys):
    load(dest_url, pipelines_dir)
    assert main(["info", PIPELINE]) == 2
    assert "give exactly one of --conn-id ID or --url URL" in capsys.readouterr().err
    assert main(["info", PIPELINE, "--url", dest_url, "--conn-id", "x"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate", PIPELINE])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["rollback", PIPELINE, "--url", dest_url])  # --to-version is required

    unknown = cli(capsys, dest_url, "info", "nosuch")
    assert unknown.code == 2
    assert "pipeline 'nosuch' has no committed state in dataset 'shop_data'" in unknown.err
    wrong_dataset = cli(capsys, dest_url, "info", PIPELINE, dataset="other_data")
    assert wrong_dataset.code == 2 and "has no _dlt_pipeline_state table" in wrong_dataset.err
    bad_url = main(["info", PIPELINE, "--url", "not a url"])
    assert bad_url == 2 and "ArgumentError" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["sqlite", "duckdb"])
def test_missing_database_file_is_not_created(tmp_path, capsys, backend):
    path = tmp_path / f"typo.{backend}"
    assert main(["info", PIPELINE, "--url", f"{backend}:///{path}"]) == 2
    assert f"database file {path} does not exist" in capsys.readouterr().err
    assert not path.exists()


@pytest.mark.postgres
def test_password_never_printed(postgres_url, pipelines_dir, capsys):
    # the throwaway server trusts every login, so any password connects
    url = sa.make_url(postgres_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    load(url, pipelines_dir)
    outputs = [
        cli(capsys, url, "info", PIPELINE),
        cli(capsys, url, "set", PIPELINE, ORDERS_LAST, "1", "--dry-run"),
        cli(capsys, url, "info", "nosuch"),
        cli(capsys, url, "sync", PIPELINE, "--pipelines-dir", str(pipelines_dir / "x")),
    ]
    assert outputs[0].code == 0 and "Destination:  postgresql+psycopg://postgres:***@" in outputs[0].out
    assert outputs[2].code == 2 and ":***@" in outputs[2].err
    for r in outputs:
        assert "s3cret-pw" not in r.out + r.err


# -- real processes ----------------------------------------------------------------------------------


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)


def test_console_script_in_a_subprocess(dest_url, pipelines_dir):
    load(dest_url, pipelines_dir)
    script = str(Path(sys.executable).with_name("airflow-state"))
    where = ["--url", dest_url, "--dataset", DATASET]
    got = _run([script, "get", PIPELINE, ORDERS_LAST, *where])
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == 3
    edited = _run([script, "set", PIPELINE, ORDERS_LAST, "2", *where])
    assert edited.returncode == 0 and "Committed state version 2" in edited.stdout
    missing = _run([script, "get", PIPELINE, "sources.nope", *where])
    assert missing.returncode == 2 and missing.stdout == ""
    assert "airflow-state: error: pipeline 'store': state path 'sources.nope' not found" in missing.stderr
    assert (
        committed(dest_url, pipelines_dir).state["sources"]["shop"]["resources"]["orders"]["incremental"][
            "id"
        ]["last_value"]
        == 2
    )


def test_a_reader_that_goes_away_ends_the_command_quietly(dest_url, pipelines_dir):
    """``airflow-state ... | head``: the pipe closes before the output is written; no traceback."""
    load(dest_url, pipelines_dir)
    argv = [sys.executable, "-m", "airflow_state_provider.cli", "info", PIPELINE, "-v"]
    proc = subprocess.Popen(
        [*argv, "--url", dest_url, "--dataset", DATASET],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # the reader is gone before the interpreter has even started
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == 1
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_set_on_a_missing_key_says_how_to_add_it(capsys, dest_url, pipelines_dir):
    load(dest_url, pipelines_dir)
    missing = cli(capsys, dest_url, "set", PIPELINE, "sources.shop.newkey", "1")
    assert missing.code == 2
    assert "state path 'sources.shop.newkey' not found" in missing.err
    assert "--create" in missing.err
    # a path that --create could not add either (a list index) gets no such hint
    bad_index = cli(capsys, dest_url, "set", PIPELINE, "sources.shop.resources.customers.seen.7", "1")
    assert bad_index.code == 2 and "--create" not in bad_index.err
    added = cli(capsys, dest_url, "set", PIPELINE, "sources.shop.newkey", "1", "--create")
    assert added.code == 0, added.err


def _airflow_env(tmp_path: Path, conn: dict) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    home = tmp_path / "airflow-home"
    home.mkdir(exist_ok=True)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_WAREHOUSE=json.dumps(conn),
    )
    return env


def _connection(url: str) -> dict:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return {"conn_type": "pipeline_state", "extra": {"sqlalchemy_url": url, "dataset_name": DATASET}}
    dialect = parsed.get_backend_name()
    return {
        "conn_type": "pipeline_state",
        "host": parsed.database,
        "extra": {"dialect": dialect, "dataset_name": DATASET},
    }


@pytest.mark.airflow
def test_conn_id_reads_an_airflow_connection_from_the_environment(dest_url, pipelines_dir, tmp_path):
    load(dest_url, pipelines_dir)
    env = _airflow_env(tmp_path, _connection(dest_url))
    script = str(Path(sys.executable).with_name("airflow-state"))
    # no --dataset: it comes from the connection's extra
    info = _run([script, "info", PIPELINE, "--conn-id", "warehouse"], env)
    assert info.returncode == 0, info.stderr
    assert info.stdout.startswith(f"Pipeline:     {PIPELINE}\n")  # Airflow's own logs stay on stderr
    assert f"Dataset:      {DATASET}\n" in info.stdout
    got = _run([script, "get", PIPELINE, ORDERS_LAST, "--conn-id", "warehouse"], env)
    assert got.returncode == 0 and json.loads(got.stdout) == 3
    unknown = _run([script, "info", PIPELINE, "--conn-id", "nosuch"], env)
    assert unknown.returncode == 2 and "nosuch" in unknown.stderr


@pytest.mark.airflow
def test_airflow_state_command_is_registered(tmp_path, pipelines_dir):
    if AIRFLOW_VERSION < (3, 2):
        pytest.skip("provider-level CLI commands (the provider info's 'cli' key) need Airflow 3.2+")
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    load(url, pipelines_dir)
    env = _airflow_env(tmp_path, _connection(url))
    got = _run(
        [sys.executable, "-m", "airflow", "state", "get", PIPELINE, ORDERS_LAST, "--conn-id", "warehouse"],
        env,
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip().splitlines()[-1] == "3"
    missing = _run(
        [sys.executable, "-m", "airflow", "state", "get", PIPELINE, "x.y", "--conn-id", "warehouse"], env
    )
    assert missing.returncode == 2 and "state path 'x.y' not found" in missing.stderr


def test_rollback_repairs_a_corrupt_newest_version(dest_url, pipelines_dir, capsys):
    load(dest_url, pipelines_dir, data=shop(ids=(1, 2, 3)))
    load(dest_url, pipelines_dir, data=shop(ids=(4,)))
    p = new_pipeline(dest_url, pipelines_dir)
    try:
        table = p.store.state_table
        with p.engine.begin() as conn:
            conn.execute(table.update().where(table.c.version == 2).values(state="eNq-broken"))
    finally:
        p.engine.dispose()

    info = cli(capsys, dest_url, "info", PIPELINE)
    assert info.code == 1 and "state version 2" in info.err and "airflow-state rollback" in info.err
    history = cli(capsys, dest_url, "history", PIPELINE)
    assert history.code == 0 and "(corrupt: " in history.out.splitlines()[1]

    r = cli(capsys, dest_url, "rollback", PIPELINE, "--to-version", "1")
    assert r.code == 0, r.err
    assert "warning: the newest version is corrupt and is replaced" in r.out
    assert "Committed state version 3" in r.out
    repaired = committed(dest_url, pipelines_dir)
    assert repaired.state["sources"]["shop"]["resources"]["orders"]["incremental"]["id"]["last_value"] == 3
    assert load(dest_url, pipelines_dir, data=shop(ids=(4,)).with_resources("orders")).row_counts == {
        "orders": 1
    }
