"""``airflow-state get/set/drop`` with the JSONPath shapes users type (issue 16 item 1).

``drop P --state-paths 'ids[1]'`` crashed with ``AttributeError: 'Index' object has no attribute
'index'``; list items are now deleted by jsonpath-ng's own filter. Shapes that select several values
are refused by ``set`` with the path named, and nothing is written.
"""

from __future__ import annotations

import json

import pytest

from tests.cli._support import PIPELINE, cli, committed, counts, load

EVENTS_INC = "sources.shop.resources.events.incremental"


def source_state(url, pipelines_dir) -> dict:
    return committed(url, pipelines_dir).state["sources"]["shop"]


@pytest.fixture
def loaded(dest_url, pipelines_dir, capsys):
    load(dest_url, pipelines_dir)
    r = cli(capsys, dest_url, "set", PIPELINE, "sources.shop.ids", "[1, 2, 3, 4, 5]", "--create")
    assert r.code == 0, r.err
    return dest_url


def test_drop_list_items_by_index_slice_and_filter(loaded, pipelines_dir, capsys):
    r = cli(capsys, loaded, "drop", PIPELINE, "--state-paths", "ids[1]")
    assert r.code == 0, r.err
    assert source_state(loaded, pipelines_dir)["ids"] == [1, 3, 4, 5]

    r = cli(capsys, loaded, "drop", PIPELINE, "--state-paths", "ids[-1]", "--state-paths", "ids[?(@ > 3)]")
    assert r.code == 0, r.err
    assert source_state(loaded, pipelines_dir)["ids"] == [1, 3]

    r = cli(capsys, loaded, "drop", PIPELINE, "--state-paths", "ids[0:1]")
    assert r.code == 0, r.err
    assert source_state(loaded, pipelines_dir)["ids"] == [3]
    assert "~ sources.shop.ids: [1,3] -> [3]" in r.out


def test_drop_wildcards_and_quoted_keys_with_dots(loaded, pipelines_dir, capsys):
    r = cli(capsys, loaded, "drop", PIPELINE, "--state-paths", 'resources.events.incremental["meta.updated"]')
    assert r.code == 0, r.err
    assert f"- {EVENTS_INC}.meta.updated" in r.out
    slots = source_state(loaded, pipelines_dir)["resources"]
    assert "meta.updated" not in slots["events"].get("incremental", {})
    assert "id" in slots["orders"]["incremental"]  # nothing else changed

    r = cli(capsys, loaded, "drop", PIPELINE, "--state-paths", "resources.*.incremental")
    assert r.code == 0, r.err
    slots = source_state(loaded, pipelines_dir)["resources"]
    assert all("incremental" not in slot for slot in slots.values())
    assert set(slots) == {"orders", "customers", "events"}  # the slots themselves stay


def test_set_and_get_quoted_keys_and_indexes(loaded, pipelines_dir, capsys):
    path = f'{EVENTS_INC}["meta.updated"].last_value'
    r = cli(capsys, loaded, "set", PIPELINE, path, "1")
    assert r.code == 0, r.err
    assert (
        source_state(loaded, pipelines_dir)["resources"]["events"]["incremental"]["meta.updated"][
            "last_value"
        ]
        == 1
    )
    assert cli(capsys, loaded, "set", PIPELINE, "sources.shop.ids[2]", "30").code == 0
    assert source_state(loaded, pipelines_dir)["ids"] == [1, 2, 30, 4, 5]
    got = cli(capsys, loaded, "get", PIPELINE, "$.sources.shop.resources.customers.seen[0]")
    assert got.code == 0 and json.loads(got.out) == 3


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("sources.*.last_sync", "a wildcard"),
        ("sources.shop.ids[0:2]", "a slice"),
        ("sources.shop.ids[?(@ > 2)]", "a filter"),
        ("$..last_value", "descendants"),
    ],
)
def test_set_refuses_paths_to_several_values_and_writes_nothing(loaded, pipelines_dir, capsys, path, shape):
    before = counts(loaded), committed(loaded, pipelines_dir).version
    r = cli(capsys, loaded, "set", PIPELINE, path, "0", "--create")
    assert r.code == 2 and r.out == ""
    assert f"pipeline {PIPELINE!r}: state path {path!r} selects any number of values ({shape})" in r.err
    assert (counts(loaded), committed(loaded, pipelines_dir).version) == before


def test_drop_paths_that_select_nothing_or_do_not_parse_write_nothing(loaded, pipelines_dir, capsys):
    before = counts(loaded)
    for path, message in [
        ("ids[9]", "state path 'ids[9]' selected nothing in source(s) shop"),
        ("ids[?(@ > 99)]", "selected nothing"),
        ("resources", "selected nothing"),  # the resources map itself is never deleted
        ("ids[", "'ids[' is not a valid JSONPath"),
    ]:
        r = cli(capsys, loaded, "drop", PIPELINE, "--state-paths", path)
        assert r.code == 2 and message in r.err, (path, r.err)
    assert counts(loaded) == before
