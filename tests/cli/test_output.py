"""``airflow-state`` output conventions: ``--output table|json|yaml|plain`` as in Airflow's commands,
the ``list`` command, and options named as typed in messages (issue 17)."""

from __future__ import annotations

import importlib.metadata
import json
import sys

import pytest
import yaml

from airflow_state_provider import Pipeline
from tests.cli._support import DATASET, PIPELINE, cli, committed, load, shop
from tests.cli.test_cli import _airflow_env, _connection, _run

AIRFLOW_VERSION = tuple(int(p) for p in importlib.metadata.version("apache-airflow").split(".")[:2])


def test_list_shows_each_pipeline_with_its_newest_version_and_load(dest_url, pipelines_dir, capsys):
    load(dest_url, pipelines_dir)
    load(dest_url, pipelines_dir, data=shop(ids=(4,)))
    second = Pipeline("other", destination=dest_url, dataset_name=DATASET, pipelines_dir=pipelines_dir / "o")
    second.run([{"id": 1}], table_name="others")
    second.engine.dispose()
    newest = committed(dest_url, pipelines_dir)

    listed = json.loads(cli(capsys, dest_url, "list", "--output", "json").out)
    assert [p["pipeline"] for p in listed] == ["other", PIPELINE]
    store = listed[1]
    assert (store["version"], store["load_id"], store["versions_retained"]) == (2, newest.load_id, 2)
    assert listed[0]["version"] == 1 and listed[0]["created_at"].endswith("+00:00")

    assert yaml.safe_load(cli(capsys, dest_url, "list", "-o", "yaml").out) == listed
    table = cli(capsys, dest_url, "list").out.splitlines()
    assert table[0].split() == ["pipeline", "version", "load_id", "created_at", "versions_retained"]
    assert set(table[1]) <= {"-", " "} and table[3].split()[:3] == [PIPELINE, "2", newest.load_id]
    plain = cli(capsys, dest_url, "list", "-o", "plain").out.splitlines()
    assert plain == [table[0], *table[2:]]

    empty = cli(capsys, dest_url, "list", dataset="no_such_dataset")
    assert empty.code == 0 and "No pipeline has committed state" in empty.out
    assert json.loads(cli(capsys, dest_url, "list", "-o", "json", dataset="no_such_dataset").out) == []


def test_history_and_info_in_every_output_format(dest_url, pipelines_dir, capsys):
    load(dest_url, pipelines_dir)
    load(dest_url, pipelines_dir, data=shop(ids=(4,)))
    history = json.loads(cli(capsys, dest_url, "history", PIPELINE, "--output", "json").out)
    assert [h["version"] for h in history] == [2, 1]
    assert json.loads(cli(capsys, dest_url, "history", PIPELINE, "--json").out) == history  # the old flag
    assert yaml.safe_load(cli(capsys, dest_url, "history", PIPELINE, "-o", "yaml").out) == history
    plain = cli(capsys, dest_url, "history", PIPELINE, "-o", "plain").out.splitlines()
    assert plain[0].split() == ["version", "load_id", "created_at", "size", "changed_paths", "error"]
    assert plain[1].split()[0] == "2" and "sources.shop.resources.orders" in plain[1]

    info = json.loads(cli(capsys, dest_url, "info", PIPELINE, "-o", "json").out)
    assert yaml.safe_load(cli(capsys, dest_url, "info", PIPELINE, "-o", "yaml").out) == info
    assert info["version"] == 2
    with pytest.raises(SystemExit) as bad:
        cli(capsys, dest_url, "info", PIPELINE, "-o", "xml")
    assert bad.value.code == 2 and "invalid choice: 'xml'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(("drop", PIPELINE), "--drop-all"), (("list", "--output", "json"), "--dataset")],
)
def test_messages_name_options_as_typed(tmp_path, pipelines_dir, capsys, argv, flag):
    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    load(url, pipelines_dir)
    from airflow_state_provider.cli import main

    capsys.readouterr()
    code = main([*argv, "--url", url])
    err = capsys.readouterr().err
    assert code == 2 and flag in err
    assert "drop_all" not in err and "dataset_name'" not in err.replace("extra dataset_name", "")


@pytest.mark.airflow
def test_airflow_state_history_output_json_prints_valid_json(tmp_path, pipelines_dir):
    if AIRFLOW_VERSION < (3, 2):
        pytest.skip("provider-level CLI commands (the provider info's 'cli' key) need Airflow 3.2+")
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    load(url, pipelines_dir)
    load(url, pipelines_dir, data=shop(ids=(4,)))
    env = _airflow_env(tmp_path, _connection(url))
    base = [sys.executable, "-m", "airflow", "state"]
    got = _run([*base, "history", PIPELINE, "--conn-id", "warehouse", "--output", "json"], env)
    assert got.returncode == 0, got.stderr
    assert [h["version"] for h in json.loads(got.stdout)] == [2, 1]  # stdout is the JSON, nothing else
    listed = _run([*base, "list", "--conn-id", "warehouse", "-o", "json"], env)
    assert listed.returncode == 0, listed.stderr
    assert [p["pipeline"] for p in json.loads(listed.stdout)] == [PIPELINE]
