"""Issue 14 item 6: ``drop`` and ``refresh`` act on the tables a resource loaded (its ``table_name``
hint), recorded in the resource-to-table map, never on a same-named table of another resource."""

from __future__ import annotations

import pytest

from airflow_state_provider import current, resource, source
from airflow_state_provider.cli import main as cli_main
from airflow_state_provider.destination.store import RESOURCE_TABLES
from tests.edges.support import DATASET, NAME, new_pipeline, query
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
