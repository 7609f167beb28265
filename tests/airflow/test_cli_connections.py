"""``--conn-id`` finds connections the way Airflow does: the metadata database (``airflow connections
add``, the UI), ``AIRFLOW_CONN_*`` variables and secrets backends. Real ``airflow`` commands on a real
metadata database (SQLite) in a private ``AIRFLOW_HOME``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from airflow_state_provider import Pipeline, incremental, resource
from tests.airflow.conftest import AIRFLOW_HOME

pytestmark = pytest.mark.airflow

SECRET = "s3cr3t-pw"


@resource(primary_key="id")
def orders(seq=incremental("id", initial_value=0)):
    yield [{"id": n} for n in range(1, 4)]


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False", **extra)
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def metadata_home(tmp_path_factory) -> Path:
    """A private AIRFLOW_HOME with a migrated metadata database."""
    home = tmp_path_factory.mktemp("cli-airflow-home")
    migrated = run([sys.executable, "-m", "airflow", "db", "migrate"], airflow_env(home))
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    assert str(home) != AIRFLOW_HOME
    return home


@pytest.mark.postgres
def test_conn_id_finds_a_connection_stored_in_the_metadata_database(
    metadata_home, tmp_path, postgres_url, pipelines_dir
):
    """``airflow connections add`` writes to the metadata DB; both CLIs read it back."""
    sqlite_file = tmp_path / "warehouse.sqlite"
    p = Pipeline(
        "shop", destination=f"sqlite:///{sqlite_file}", dataset_name="shop_data", pipelines_dir=pipelines_dir
    )
    p.run(orders)
    p.engine.dispose()
    env = airflow_env(metadata_home)
    conn = {"conn_type": "pipeline_state", "host": str(sqlite_file), "extra": {"dialect": "sqlite"}}
    added = run(
        [sys.executable, "-m", "airflow", "connections", "add", "wh_meta", "--conn-json", json.dumps(conn)],
        env,
    )
    assert added.returncode == 0, added.stderr[-2000:]
    assert "AIRFLOW_CONN_WH_META" not in env

    cli = [sys.executable, "-m", "airflow_state_provider.cli"]
    info = run([*cli, "info", "shop", "--conn-id", "wh_meta", "--dataset", "shop_data"], env)
    assert info.returncode == 0, info.stderr[-3000:]
    assert "Pipeline:     shop\n" in info.stdout and "Version:      1 " in info.stdout
    # a password-protected PostgreSQL connection from the metadata DB: the password never shows
    url = postgres_url
    parsed = make_url(url)
    pg = {
        "conn_type": "postgres",
        "host": parsed.host,
        "port": parsed.port,
        "login": parsed.username,
        "password": SECRET,
        "schema": parsed.database,
    }
    added = run(
        [sys.executable, "-m", "airflow", "connections", "add", "wh_pg", "--conn-json", json.dumps(pg)], env
    )
    assert added.returncode == 0, added.stderr[-2000:]
    p = Pipeline("shop", destination=url, dataset_name="shop_data", pipelines_dir=pipelines_dir)
    p.run(orders)
    p.engine.dispose()
    info = run([*cli, "info", "shop", "--conn-id", "wh_pg", "--dataset", "shop_data"], env)
    assert info.returncode == 0, info.stderr[-3000:]
    assert "Version:      1 " in info.stdout
    assert SECRET not in info.stdout + info.stderr

    version = tuple(int(x) for x in __import__("airflow").__version__.split(".")[:2])
    if version >= (3, 2):  # provider-level CLI commands: Airflow 3.2+
        af = run(
            [
                sys.executable,
                "-m",
                "airflow",
                "state",
                "info",
                "shop",
                "--conn-id",
                "wh_meta",
                "--dataset",
                "shop_data",
            ],
            env,
        )
        assert af.returncode == 0, af.stderr[-3000:]
        assert "Pipeline:     shop" in af.stdout


@pytest.mark.skipif(
    tuple(int(x) for x in __import__("airflow").__version__.split(".")[:2]) < (3, 2),
    reason="provider-level CLI commands (airflow state ...) need Airflow 3.2+",
)
@pytest.mark.parametrize("command", ["list", "history"])
def test_airflow_state_prints_the_same_default_format_as_airflow_state_cli(tmp_path, command):
    """``airflow state list|history`` and ``airflow-state list|history`` both default to the table
    (headers, a rule, aligned columns) that ``--help`` and the README show. Airflow's parser sorts
    options by name, which once let the hidden ``--json`` flag's default (None, printed as ``plain``)
    win over ``--output``'s ``table``."""
    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    Pipeline("shop", destination=url, dataset_name="shop_data", pipelines_dir=str(tmp_path / "p")).run(
        orders()
    )
    env = airflow_env(tmp_path / "home")
    argv = [command, *(["shop"] if command == "history" else []), "--url", url, "--dataset", "shop_data"]
    ours = run([sys.executable, "-m", "airflow_state_provider.cli", *argv], env)
    theirs = run([sys.executable, "-m", "airflow", "state", *argv], env)
    table, plain = (
        run([sys.executable, "-m", "airflow_state_provider.cli", *argv, "--output", form], env)
        for form in ("table", "plain")
    )
    for done in (ours, theirs, table, plain):
        assert done.returncode == 0, done.stderr[-3000:]
    assert table.stdout != plain.stdout  # the comparison below tells the two formats apart
    assert ours.stdout == table.stdout
    assert theirs.stdout == table.stdout
