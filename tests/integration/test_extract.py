"""Declaring data (DESIGN §3.1-§3.3): transformers, selection, plain rows, shared slots, replace."""

from __future__ import annotations

import pytest

from airflow_state_provider import Pipeline, current, reset_resource_state, resource, source, transformer
from airflow_state_provider.exceptions import PipelineStateError

from .test_pipeline_state import count, new_pipeline, select


@resource(primary_key="id")
def users():
    yield [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]


@transformer(data_from=users, name="user_details")
def user_details(page):
    current.resource_state()["seen"] = current.resource_state().get("seen", 0) + len(page)
    for user in page:
        yield {"user_id": user["id"], "shout": user["name"].upper()}


@source(name="crm")
def crm():
    @resource
    def deals():
        yield {"deal": 1}

    return users, user_details, deals


def test_transformer_receives_parent_pages_and_keeps_its_own_state(dest_url, pipelines_dir):
    p = new_pipeline(dest_url, pipelines_dir)
    info = p.run(crm())
    assert info.row_counts == {"users": 2, "user_details": 2, "deals": 1}
    assert select(dest_url, "SELECT user_id, shout FROM user_details ORDER BY user_id") == [
        (1, "ANN"),
        (2, "BOB"),
    ]
    assert p.state["sources"]["crm"]["resources"]["user_details"] == {"seen": 2}


def test_with_resources_selects_and_a_selected_transformer_runs_its_parent_unloaded(dest_url, pipelines_dir):
    info = new_pipeline(dest_url, pipelines_dir).run(crm().with_resources("user_details"))
    assert info.row_counts == {"user_details": 2}
    assert count(dest_url, "users") == 0 and count(dest_url, "deals") == 0
    with pytest.raises(KeyError, match="no resource"):
        crm().with_resources("nope")


def test_source_exposes_name_and_resources_without_running():
    src = crm()
    assert src.name == "crm"
    assert sorted(src.resources) == ["deals", "user_details", "users"]
    assert src.resources["user_details"].data_from.name == "users"


def test_plain_rows_need_a_table_name(dest_url, pipelines_dir):
    p = new_pipeline(dest_url, pipelines_dir)
    with pytest.raises(ValueError, match="table_name is required"):
        p.run([{"a": 1}])
    info = p.run(({"a": i} for i in range(5)), table_name="numbers", write_disposition="append")
    assert info.row_counts == {"numbers": 5}


def test_list_of_resources_and_bare_uncalled_resource(dest_url, pipelines_dir):
    @resource
    def one():
        yield {"x": 1}

    @resource(table_name="twos")
    def two(n=2):
        yield [{"x": 2}] * n

    info = new_pipeline(dest_url, pipelines_dir).run([one, two(3)])
    assert info.row_counts == {"one": 1, "twos": 3}


def test_resources_with_the_same_name_share_a_slot(dest_url, pipelines_dir):
    def make(value):
        @resource(name="dup")
        def dup():
            current.resource_state().setdefault("writers", []).append(value)
            yield {"v": value}

        return dup

    p = new_pipeline(dest_url, pipelines_dir)
    p.run([make("a"), make("b")])
    assert p.state["sources"]["p"]["resources"]["dup"] == {"writers": ["a", "b"]}


def test_replace_resets_resource_state_and_table(dest_url, pipelines_dir):
    runs = iter([[1, 2, 3], [7]])

    @resource(write_disposition="replace")
    def snapshot():
        assert current.resource_state() == {}, "replace starts every run with empty resource state"
        current.resource_state()["loaded"] = True
        yield [{"v": v} for v in next(runs)]

    new_pipeline(dest_url, pipelines_dir).run(snapshot)
    new_pipeline(dest_url, pipelines_dir).run(snapshot)
    assert select(dest_url, "SELECT v FROM snapshot") == [(7,)]


def test_current_pipeline_and_reset_resource_state(dest_url, pipelines_dir):
    seen = {}

    @resource
    def r():
        seen["first_run"] = current.pipeline().first_run
        current.resource_state()["a"] = 1
        reset_resource_state("r")
        current.resource_state()["b"] = 2
        yield {"x": 1}

    p = new_pipeline(dest_url, pipelines_dir)
    p.run(r)
    assert seen["first_run"] is True
    assert p.state["sources"]["p"]["resources"]["r"] == {"b": 2}
    p2 = new_pipeline(dest_url, pipelines_dir)
    p2.run(r)
    assert seen["first_run"] is False and p2.first_run is False


def test_current_outside_a_run_explains_itself():
    with pytest.raises(PipelineStateError, match="no pipeline is running"):
        current.resource_state()


def test_rows_that_are_not_dicts_fail_naming_the_table(dest_url, pipelines_dir):
    @resource
    def bad():
        yield [{"ok": 1}, "not a row"]

    with pytest.raises(PipelineStateError, match="bad"):
        new_pipeline(dest_url, pipelines_dir).run(bad)
    assert count(dest_url, "bad") == 0


def test_invalid_write_disposition_is_rejected_at_declaration():
    with pytest.raises(ValueError, match="write_disposition"):

        @resource(write_disposition="upsert")
        def r():
            yield {}


def test_destination_is_required():
    with pytest.raises(ValueError, match="destination"):
        Pipeline("p")


def test_source_body_reading_state_evaluates_outside_a_run():
    @source(name="reads")
    def reads():
        state = current.source_state()
        assert state == {}  # as dlt: a new source has no "resources" key
        with pytest.raises(Exception, match="read-only"):
            state["x"] = 1

        @resource
        def r():
            yield {"seen": state.get("x")}

        return r

    assert list(reads().resources) == ["r"]
    assert list(reads().with_resources("r").selected) == ["r"]


def test_replace_with_no_rows_empties_the_table(dest_url, pipelines_dir):
    batches = iter([[{"v": 1}, {"v": 2}], []])

    @resource(write_disposition="replace")
    def snap():
        yield from next(batches)

    new_pipeline(dest_url, pipelines_dir).run(snap)
    assert count(dest_url, "snap") == 2
    new_pipeline(dest_url, pipelines_dir).run(snap)
    assert count(dest_url, "snap") == 0
