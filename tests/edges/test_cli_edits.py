"""Issue 14 item 11: CLI edits validated against the document's structure before anything is
written; ``info`` shows a bad document's problem instead of crashing; a run names it."""

from __future__ import annotations

import io
import logging

import pytest

from airflow_state_provider import current, resource
from airflow_state_provider.cli import main as cli_main
from airflow_state_provider.exceptions import PipelineStateError, StateCorruptError
from airflow_state_provider.state import codec
from tests.edges.support import DATASET, NAME, insert_state_row, new_pipeline
from tests.reliability import snapshot

SRC = f"sources.{NAME}"


@resource(name="events")
def events():
    current.resource_state()["runs"] = current.resource_state().get("runs", 0) + 1
    yield {"id": 1}


@pytest.fixture
def loaded(dest_url, tmp_path):
    new_pipeline(dest_url, tmp_path).run(events)
    return dest_url


def cli(url: str, tmp_path, *args: str) -> int:
    return cli_main(
        [*args[:2], *args[2:], "--url", url, "--dataset", DATASET, "--pipelines-dir", str(tmp_path)]
    )


@pytest.mark.parametrize(
    ("path", "value", "named", "problem"),
    [
        (f"{SRC}.resources", "[]", f"{SRC}.resources", "is a list, not an object of resources"),
        (SRC, '"oops"', SRC, "is the string 'oops', not an object"),
        ("sources", "null", "sources", "is null, not an object of sources"),
        (f"{SRC}.resources.events", "7", f"{SRC}.resources.events", "is a int (7), not an object"),
        # found by review: a bad cursor field wedged every later run with a bare TypeError
        (
            f"{SRC}.resources.events",
            '{"runs": 1, "incremental": {"id": {"unique_hashes": 5}}}',
            f"{SRC}.resources.events.incremental.id.unique_hashes",
            "is a int (5), not a list of strings",
        ),
        (
            f"{SRC}.resources.events",
            '{"runs": 1, "incremental": {"id": {"unique_hashes": [1, {"a": 2}]}}}',
            f"{SRC}.resources.events.incremental.id.unique_hashes",
            "is a list, not a list of strings",
        ),
    ],
    ids=[
        "resources_list",
        "source_string",
        "sources_null",
        "slot_int",
        "hashes_int",
        "hashes_mixed",
    ],
)
def test_edits_that_break_the_structure_are_refused(loaded, tmp_path, capsys, path, value, named, problem):
    before = snapshot.take(loaded, DATASET)
    assert cli(loaded, tmp_path, "set", NAME, path, value) == 2
    err = capsys.readouterr().err
    assert f"state path {named!r}" in err and problem in err and "Nothing was written" in err
    assert snapshot.take(loaded, DATASET) == before
    info = new_pipeline(loaded, tmp_path).run(events)  # the pipeline still runs
    assert info.row_counts == {"events": 1}


def test_a_bad_document_is_shown_by_info_named_by_a_run_and_repaired_by_set(loaded, tmp_path, capsys):
    """A document of the wrong shape that got in anyway (an older version, a hand edit)."""
    state = new_pipeline(loaded, tmp_path).state
    state["sources"][NAME]["resources"] = []
    state["_state_version"] += 1
    state["_version_hash"] = codec.state_version_hash(state)
    insert_state_row(loaded, state, "1999999999.0000000", committed=True)

    assert cli(loaded, tmp_path, "info", NAME) == 0
    out = capsys.readouterr().out
    assert f"Problem:      state path {SRC}.resources is a list" in out and "Sources:" in out

    with pytest.raises(StateCorruptError) as failure:
        new_pipeline(loaded, tmp_path).run(events)
    assert f"{SRC}.resources is a list" in str(failure.value)

    assert cli(loaded, tmp_path, "set", NAME, f"{SRC}.resources", "{}") == 0
    assert new_pipeline(loaded, tmp_path).run(events).row_counts == {"events": 1}


OWNED = [
    ("default_schema_name", '"other"', "resources run without a source keep their state"),
    ("default_schema_name", "[1]", "resources run without a source keep their state"),
    ("dataset_name", '"elsewhere"', "replaced by the pipeline's configured dataset"),
    ("pipeline_name", '"x"', "written by every commit"),
    ("_state_version", "99", "written by every commit"),
    ("_version_hash", '"x"', "written by every commit"),
    ("_state_engine_version", "3", "written by every commit"),
    ("schema_names", '["x"]', "only the pipeline writes it"),
    ("destination_type", '"x"', "only the pipeline writes it"),
    ("destination_name", '"x"', "only the pipeline writes it"),
]


def test_set_refuses_the_top_level_keys_the_pipeline_owns(loaded, tmp_path, capsys):
    """Review of issue 14: ``set P default_schema_name ...`` was accepted without a word, and the next
    run of a resource without a source started over under the new source key."""
    before = snapshot.take(loaded, DATASET)
    for path, value, why in OWNED:
        assert cli(loaded, tmp_path, "set", NAME, path, value) == 2, path
        err = capsys.readouterr().err
        assert f"state path {path!r} cannot be set" in err and why in err and "Nothing was written" in err
    assert snapshot.take(loaded, DATASET) == before
    info = new_pipeline(loaded, tmp_path).run(events)
    assert info.row_counts == {"events": 1}
    assert new_pipeline(loaded, tmp_path).state["sources"][NAME]["resources"]["events"] == {"runs": 2}


SURROGATE = "\udcff"  # what a key typed as the byte 0xff becomes under surrogateescape (CLI argv)


SURROGATE_COMMANDS = [
    ("get", NAME, f"{SRC}.resources.{SURROGATE}"),
    ("set", NAME, f"{SRC}.resources.events.{SURROGATE}", "1"),
    ("set", NAME, f"{SRC}.resources.events.{SURROGATE}", "1", "--create"),
    ("set", NAME, f"{SRC}.resources.events.runs", f'"{SURROGATE}"'),
    ("drop", NAME, SURROGATE),
    ("drop", NAME, "--state-path", SURROGATE),
    ("history", SURROGATE),
]


def test_cli_errors_quoting_a_lone_surrogate_print_it_escaped(loaded, tmp_path, capfd):
    """Review of issue 14: a key with a lone surrogate made the error itself unprintable
    (UnicodeEncodeError on a UTF-8 console)."""
    before = snapshot.take(loaded, DATASET)
    for args in SURROGATE_COMMANDS:
        assert cli(loaded, tmp_path, *args) != 0, args
        err = capfd.readouterr().err
        assert SURROGATE not in err, args
        assert "\\udcff" in err or "unpaired surrogate" in err, err  # a bad value is not quoted
        err.encode("utf-8")  # printable on a strict UTF-8 console
    assert snapshot.take(loaded, DATASET) == before


def test_a_run_error_quoting_a_lone_surrogate_key_renders_in_the_task_log(dest_url, tmp_path, caplog):
    @resource(name="events")
    def bad_key():
        current.resource_state()[SURROGATE] = 1
        yield {"id": 1}

    with pytest.raises(PipelineStateError) as failure:
        new_pipeline(dest_url, tmp_path).run(bad_key)
    message = str(failure.value)
    assert f"{SRC}.resources.events.\\udcff" in message and SURROGATE not in message
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("tests.edges.task_log")
    logger.addHandler(handler)
    try:
        logger.exception("Task failed", exc_info=failure.value)
    finally:
        logger.removeHandler(handler)
    stream.getvalue().encode("utf-8")  # what a task log handler writes out
    assert "\\udcff" in stream.getvalue()
    assert new_pipeline(dest_url, tmp_path).first_run  # nothing was committed


@pytest.mark.parametrize("where", ["resource", "source"])
def test_a_source_or_resource_name_with_a_lone_surrogate_is_refused_by_name(dest_url, tmp_path, where):
    """Sibling found in review: a resource named with a lone surrogate failed with a bare
    UnicodeEncodeError, after log lines that could not be written."""
    from airflow_state_provider import source
    from airflow_state_provider.exceptions import ConfigurationError

    @resource(name=f"ev{SURROGATE}" if where == "resource" else "events")
    def bad():
        yield {"id": 1}

    data = bad
    if where == "source":

        @source(name=f"src{SURROGATE}")
        def src():
            return (bad,)

        data = src()
    with pytest.raises(ConfigurationError) as failure:
        new_pipeline(dest_url, tmp_path).run(data)
    message = str(failure.value)
    assert f"{where} name" in message and "\\udcff" in message and SURROGATE not in message
    assert new_pipeline(dest_url, tmp_path).first_run
