"""Issue 14 item 6: ``drop`` and ``refresh`` act on the tables a resource loaded (its ``table_name``
hint), recorded in the resource-to-table map, never on a same-named table of another resource."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from airflow_state_provider import current, resource, source
from airflow_state_provider.cli import main as cli_main
from airflow_state_provider.destination.store import RESOURCE_TABLES
from airflow_state_provider.exceptions import ConfigurationError
from tests.edges.support import DATASET, NAME, execute, new_pipeline, query
from tests.reliability import snapshot


def make_source(with_events: bool = True):
    @source(name="src")
    def src():
        @resource(name="events", table_name="events_v2")
        def events():
            current.resource_state()["n"] = 1
            yield {"id": 1}

        @resource(name="other", table_name="events")
        def other():
            current.resource_state()["n"] = 2
            yield {"id": 2}

        return (events, other) if with_events else (other,)

    return src()


def tables(url: str) -> list[str]:
    return sorted(t for s, t in snapshot.tables_of(url, DATASET) if not t.startswith("_"))


def test_the_map_records_each_resource_table_once(dest_url, tmp_path):
    for _ in range(2):
        new_pipeline(dest_url, tmp_path).run(make_source())
    rows = query(dest_url, f'SELECT resource_name, table_name FROM "{DATASET}".{RESOURCE_TABLES} ORDER BY 1')
    assert rows == [("events", "events_v2"), ("other", "events")]


def test_cli_drop_drops_the_table_the_resource_loaded(dest_url, tmp_path, capsys):
    new_pipeline(dest_url, tmp_path).run(make_source())
    code = cli_main(
        ["drop", NAME, "events", "--url", dest_url, "--dataset", DATASET, "--pipelines-dir", str(tmp_path)]
    )
    assert code == 0, capsys.readouterr().err
    assert f"drop table {DATASET}.events_v2" in capsys.readouterr().out
    assert tables(dest_url) == ["events"]
    assert query(dest_url, f'SELECT id FROM "{DATASET}".events') == [(2,)]
    state = new_pipeline(dest_url, tmp_path).state["sources"]["src"]["resources"]
    assert list(state) == ["other"]


def test_refresh_drops_the_recorded_table_of_a_resource_known_only_from_the_state(dest_url, tmp_path):
    new_pipeline(dest_url, tmp_path).run(make_source())
    info = new_pipeline(dest_url, tmp_path).run(make_source(with_events=False), refresh="drop_sources")
    assert info.row_counts == {"events": 1}
    assert tables(dest_url) == ["events"]  # events_v2 (of the dropped resource) is gone
    assert list(new_pipeline(dest_url, tmp_path).state["sources"]["src"]["resources"]) == ["other"]


@pytest.mark.parametrize("state_only", [False, True])
def test_drop_of_an_unknown_resource_names_what_it_looked_for(dest_url, tmp_path, capsys, state_only):
    new_pipeline(dest_url, tmp_path).run(make_source())
    args = [
        "drop",
        NAME,
        "nothing",
        "--url",
        dest_url,
        "--dataset",
        DATASET,
        "--pipelines-dir",
        str(tmp_path),
    ]
    assert cli_main([*args, *(["--state-only"] if state_only else [])]) == 2
    assert "resource 'nothing' not found" in capsys.readouterr().err


# -- review of issue 14: the map is keyed by source; a table two resources load is never dropped for one


def items_source(source_name: str, table_name: str | None = None, *, also: str | None = None):
    """Source ``source_name`` with a resource ``items`` (into ``table_name``, default its name) and,
    with ``also``, a resource ``extra`` loading the same table."""

    @source(name=source_name)
    def src():
        @resource(name="items", table_name=table_name or "items")
        def items():
            current.resource_state()["n"] = source_name
            yield {"id": 1, "src": source_name}

        @resource(name="extra", table_name=table_name or "items")
        def extra():
            current.resource_state()["n"] = "extra"
            yield {"id": 2, "src": source_name}

        return (items, extra) if also else (items,)

    return src()


def drop(url: str, tmp_path, *args: str) -> int:
    return cli_main(
        ["drop", NAME, *args, "--url", url, "--dataset", DATASET, "--pipelines-dir", str(tmp_path)]
    )


def slots(url: str, tmp_path) -> dict[str, list[str]]:
    sources = new_pipeline(url, tmp_path).state.get("sources") or {}
    return {s: sorted(v.get("resources") or {}) for s, v in sources.items()}


def test_drop_with_source_drops_only_that_source_s_tables(dest_url, tmp_path, capsys):
    """``drop --source s1 P items`` dropped s2's table of its own ``items`` too (the map had no source)."""
    new_pipeline(dest_url, tmp_path).run(items_source("s1"))
    new_pipeline(dest_url, tmp_path).run(items_source("s2", "items_s2"))
    rows = query(
        dest_url,
        f'SELECT source_name, resource_name, table_name FROM "{DATASET}".{RESOURCE_TABLES} ORDER BY 1',
    )
    assert rows == [("s1", "items", "items"), ("s2", "items", "items_s2")]

    assert drop(dest_url, tmp_path, "items", "--source", "s1") == 0, capsys.readouterr().err
    assert tables(dest_url) == ["items_s2"]
    assert query(dest_url, f'SELECT src FROM "{DATASET}".items_s2') == [("s2",)]
    assert slots(dest_url, tmp_path) == {"s1": [], "s2": ["items"]}
    rows = query(dest_url, f'SELECT source_name, table_name FROM "{DATASET}".{RESOURCE_TABLES}')
    assert rows == [("s2", "items_s2")]  # the dropped table left the map


def test_refresh_drop_sources_keeps_another_source_s_table_of_a_same_named_resource(dest_url, tmp_path):
    new_pipeline(dest_url, tmp_path).run(items_source("s1"))
    new_pipeline(dest_url, tmp_path).run(items_source("s2", "items_s2"))

    @source(name="s1")
    def s1_without_items():
        @resource(name="other")
        def other():
            yield {"id": 3}

        return (other,)

    info = new_pipeline(dest_url, tmp_path).run(s1_without_items(), refresh="drop_sources")
    assert info.row_counts == {"other": 1}
    assert tables(dest_url) == ["items_s2", "other"]
    assert slots(dest_url, tmp_path) == {"s2": ["items"]}


@pytest.mark.parametrize("shared_by", ["resource", "source", "pipeline"])
def test_dropping_a_table_another_resource_loads_is_refused(dest_url, tmp_path, capsys, shared_by):
    """Review of issue 14: ``drop`` of one of two resources loading one table dropped it for both; the
    other's rows vanished while its state said they were loaded."""
    if shared_by == "resource":
        new_pipeline(dest_url, tmp_path).run(items_source("s1", also="extra"))
        other, together = "resource 'extra' of source 's1'", ["items", "extra", "--source", "s1"]
    elif shared_by == "source":
        new_pipeline(dest_url, tmp_path).run(items_source("s1"))
        new_pipeline(dest_url, tmp_path).run(items_source("s2"))
        other, together = "resource 'items' of source 's2'", ["items", "--source", "s1", "--source", "s2"]
    else:
        new_pipeline(dest_url, tmp_path).run(items_source("s1"))
        new_pipeline(dest_url, tmp_path, name="neighbour").run(items_source("s9"))
        other, together = "of pipeline 'neighbour'", None
    before = snapshot.take(dest_url, DATASET)

    assert drop(dest_url, tmp_path, "items", "--source", "s1") == 2
    err = capsys.readouterr().err
    assert f"table {DATASET}.items of resource 'items' of source 's1'" in err and other in err, err
    assert "--state-only" in err and "Nothing was written" in err
    assert snapshot.take(dest_url, DATASET) == before

    with pytest.raises(ConfigurationError, match=other.replace("'", ".")) as refused:
        new_pipeline(dest_url, tmp_path).run(items_source("s1"), refresh="drop_resources")
    assert "Nothing was written" in str(refused.value)
    with pytest.raises(ConfigurationError, match="refresh='drop_data'"):
        new_pipeline(dest_url, tmp_path).run(items_source("s1"), refresh="drop_data")
    assert snapshot.take(dest_url, DATASET) == before

    # the state alone can go; and all the resources loading the table together
    assert drop(dest_url, tmp_path, "items", "--source", "s1", "--state-only") == 0
    if together is not None:
        assert drop(dest_url, tmp_path, *together) == 0, capsys.readouterr().err
        assert "items" not in tables(dest_url)
        assert slots(dest_url, tmp_path) in ({"s1": []}, {"s1": [], "s2": []})


def test_refresh_of_every_resource_loading_a_shared_table_drops_it(dest_url, tmp_path):
    new_pipeline(dest_url, tmp_path).run(items_source("s1", also="extra"))
    info = new_pipeline(dest_url, tmp_path).run(items_source("s1", also="extra"), refresh="drop_resources")
    assert info.row_counts == {"items": 2}
    assert sorted(query(dest_url, f'SELECT id FROM "{DATASET}".items')) == [(1,), (2,)]


def test_a_map_written_before_it_recorded_sources_is_read_and_upgraded(dest_url, tmp_path, capsys):
    """Maps from before the source column: their rows still count (for any source), the next load
    adds the column and keeps them, and from then on each source's rows are its own."""
    new_pipeline(dest_url, tmp_path).run(items_source("s1"))
    new_pipeline(dest_url, tmp_path).run(items_source("s2", "items_s2"))
    old = sa.Table(
        RESOURCE_TABLES,
        sa.MetaData(),
        *(sa.Column(c, sa.String) for c in ("pipeline_name", "resource_name", "table_name", "_dlt_load_id")),
        schema=DATASET,
    )
    rows = query(
        dest_url,
        f'SELECT pipeline_name, resource_name, table_name, _dlt_load_id FROM "{DATASET}".{RESOURCE_TABLES}',
    )
    execute(dest_url, sa.schema.DropTable(old))
    execute(dest_url, sa.schema.CreateTable(old))
    execute(dest_url, sa.insert(old).values([dict(zip(old.c.keys(), r, strict=True)) for r in rows]))

    # read as it is: an unsourced row stands for the resource in any source
    assert drop(dest_url, tmp_path, "items", "--source", "s2", "--dry-run") == 0, capsys.readouterr().err
    assert f"drop table {DATASET}.items_s2" in capsys.readouterr().out

    new_pipeline(dest_url, tmp_path).run(items_source("s2", "items_s2"))  # upgrades the map
    rows = query(
        dest_url,
        f'SELECT source_name, resource_name, table_name FROM "{DATASET}".{RESOURCE_TABLES} ORDER BY 3, 1',
    )
    assert sorted(rows, key=repr) == sorted(
        [(None, "items", "items"), (None, "items", "items_s2"), ("s2", "items", "items_s2")], key=repr
    )
    # items_s2 is now known as s2's: dropping s1's items leaves it
    assert drop(dest_url, tmp_path, "items", "--source", "s1") == 0, capsys.readouterr().err
    assert tables(dest_url) == ["items_s2"]
    assert slots(dest_url, tmp_path) == {"s1": [], "s2": ["items"]}
