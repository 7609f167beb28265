"""``PipelineStateHook`` on real connections (URI and JSON env vars) and real databases."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

from airflow_state_provider.hooks.pipeline_state import PipelineStateHook
from tests.airflow.conftest import conn_env

pytestmark = pytest.mark.airflow

SECRET = "Sup3r:s3cret/p@ss"


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, value: str | dict) -> PipelineStateHook:
    monkeypatch.setenv(conn_env(conn_id), value if isinstance(value, str) else json.dumps(value))
    return PipelineStateHook(destination_conn_id=conn_id)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- URL building: every connection shape, as URI and as JSON ---------------------------------------

q = quote(SECRET, safe="")


def shapes(tmp: Path) -> list[tuple[str, str, dict, str]]:
    """(id, URI form, JSON form, expected URL with the password shown)."""
    db = tmp / "w.sqlite"
    duck = tmp / "w.duckdb"
    return [
        (
            "pipeline_state-sqlite",
            f"pipeline-state://{quote(str(db), safe='')}?dialect=sqlite",
            {"conn_type": "pipeline_state", "host": str(db), "extra": {"dialect": "sqlite"}},
            f"sqlite:///{db}",
        ),
        (
            "pipeline_state-duckdb",
            f"pipeline-state://{quote(str(duck), safe='')}?dialect=duckdb",
            {"conn_type": "pipeline_state", "host": str(duck), "extra": {"dialect": "duckdb"}},
            f"duckdb:///{duck}",
        ),
        (
            "pipeline_state-postgresql",
            f"pipeline-state://loader:{q}@db.internal:6432/analytics?dialect=postgres",
            {
                "conn_type": "pipeline_state",
                "host": "db.internal",
                "port": 6432,
                "login": "loader",
                "password": SECRET,
                "schema": "analytics",
                "extra": {"dialect": "postgresql"},
            },
            f"postgresql+psycopg://loader:{q}@db.internal:6432/analytics",
        ),
        (
            "pipeline_state-driver",
            f"pipeline-state://loader:{q}@db.internal/analytics?dialect=postgresql&driver=psycopg2",
            {
                "conn_type": "pipeline_state",
                "host": "db.internal",
                "login": "loader",
                "password": SECRET,
                "schema": "analytics",
                "extra": {"dialect": "postgresql", "driver": "psycopg2"},
            },
            f"postgresql+psycopg2://loader:{q}@db.internal/analytics",
        ),
        (
            "pipeline_state-sqlalchemy_url",
            "pipeline-state://ignored:5432/ignored?sqlalchemy_url="
            + quote(f"postgresql+psycopg://u:{q}@h:5433/d?sslmode=require", safe=""),
            {
                "conn_type": "pipeline_state",
                "host": "ignored",
                "extra": {"sqlalchemy_url": f"postgresql+psycopg://u:{q}@h:5433/d?sslmode=require"},
            },
            f"postgresql+psycopg://u:{q}@h:5433/d?sslmode=require",
        ),
        (
            "postgres",
            f"postgresql://loader:{q}@db.internal:5432/analytics?sslmode=verify-full&application_name=asp",
            {
                "conn_type": "postgres",
                "host": "db.internal",
                "port": 5432,
                "login": "loader",
                "password": SECRET,
                "schema": "analytics",
                "extra": {"sslmode": "verify-full", "application_name": "asp"},
            },
            f"postgresql+psycopg://loader:{q}@db.internal:5432/analytics?application_name=asp&sslmode=verify-full",
        ),
        (
            "sqlite",
            f"sqlite:///{db}",  # Airflow parses this path into schema
            {"conn_type": "sqlite", "host": str(db)},
            f"sqlite:///{db}",
        ),
        (
            "duckdb",
            f"duckdb://{quote(str(duck), safe='')}",
            {"conn_type": "duckdb", "host": str(duck)},
            f"duckdb:///{duck}",
        ),
    ]


SHAPE_IDS = [s[0] for s in shapes(Path("/x"))]


@pytest.mark.parametrize("form", ["uri", "json"])
@pytest.mark.parametrize("shape", SHAPE_IDS)
def test_sqlalchemy_url_of_every_connection_shape(shape, form, tmp_path, monkeypatch):
    _, uri, as_json, expected = next(s for s in shapes(tmp_path) if s[0] == shape)
    hook = set_conn(monkeypatch, "dest", uri if form == "uri" else as_json)
    url = hook.get_sqlalchemy_url()
    assert url == make_url(expected)
    assert SECRET not in url.render_as_string(hide_password=True)


def test_extras_give_pipeline_defaults(tmp_path, monkeypatch):
    hook = set_conn(
        monkeypatch,
        "dest",
        f"pipeline-state://{quote(str(tmp_path / 'w.sqlite'), safe='')}?dialect=sqlite&dataset_name=raw"
        "&restore_from_destination=false&max_state_versions=7",
    )
    assert hook.restore_from_destination is False
    assert hook.state_settings()["max_state_versions"] == 7
    # the rest come from the [state_provider] config section, overridable like any Airflow option
    monkeypatch.setenv("AIRFLOW__STATE_PROVIDER__WARN_STATE_BYTES", "2048")
    assert hook.state_settings()["warn_state_bytes"] == 2048
    assert hook.state_settings()["max_state_bytes"] == 16 * 1024 * 1024


def test_json_extras_keep_their_types(tmp_path, monkeypatch):
    hook = set_conn(
        monkeypatch,
        "dest",
        {
            "conn_type": "pipeline_state",
            "host": str(tmp_path / "w.sqlite"),
            "extra": {"dialect": "sqlite", "restore_from_destination": False, "max_state_bytes": 4096},
        },
    )
    assert hook.restore_from_destination is False
    assert hook.state_settings()["max_state_bytes"] == 4096


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"conn_type": "pipeline_state", "host": "h"}, "set the extra 'dialect'"),
        ({"conn_type": "mysql", "host": "h"}, "has type 'mysql'"),
        (
            {
                "conn_type": "pipeline_state",
                "host": "h",
                "extra": {"dialect": "sqlite", "max_state_bytes": "lots"},
            },
            "extra 'max_state_bytes' must be an integer >= 1, got 'lots'",
        ),
    ],
)
def test_bad_connections_say_what_to_fix(value, message, monkeypatch):
    hook = set_conn(monkeypatch, "bad", value)
    with pytest.raises(ValueError, match=message):
        hook.get_sqlalchemy_url()
        hook.state_settings()


def test_validate_extras_reports_every_problem_with_a_bad_dialect(monkeypatch):
    """A misspelt dialect does not hide the other extras' problems; each names its extra alike."""
    extra = {"dialect": "postgress", "max_state_versions": "ten", "lock_timeout": "soon"}
    hook = set_conn(monkeypatch, "form", {"conn_type": "pipeline_state", "host": "h", "extra": extra})
    assert hook.validate_extras() == [
        "extra 'dialect' is 'postgress'; supported dialects: sqlite, duckdb, postgresql",
        "extra 'max_state_versions' must be an integer >= 1, got 'ten'",
        "extra 'lock_timeout' must be a number of seconds, got 'soon'",
    ]


def test_default_connection_id(monkeypatch, tmp_path):
    monkeypatch.setenv(conn_env("pipeline_state_default"), f"sqlite:///{tmp_path / 'w.sqlite'}")
    assert PipelineStateHook().get_sqlalchemy_url().database == str(tmp_path / "w.sqlite")


# -- real databases ---------------------------------------------------------------------------------


def real_connection(dialect: str, form: str, tmp_path: Path, request) -> str | dict:
    """A connection of the real destination ``dialect`` in ``form`` (uri / json)."""
    if dialect in ("sqlite", "duckdb"):
        path = tmp_path / f"w.{dialect}"
        if form == "uri":
            return f"pipeline-state://{quote(str(path), safe='')}?dialect={dialect}"
        return {"conn_type": dialect, "host": str(path)}
    url = make_url(request.getfixturevalue("postgres_url"))
    if form == "uri":
        # trust auth accepts any password: the connection still carries a secret to leak
        return f"postgresql://{url.username}:{q}@{url.host}:{url.port}/{url.database}"
    return {
        "conn_type": "pipeline_state",
        "host": url.host,
        "port": url.port,
        "login": url.username,
        "password": SECRET,
        "schema": url.database,
        "extra": {"dialect": "postgresql", "dataset_name": "from_conn"},
    }


@pytest.fixture(params=["sqlite", "duckdb", "postgresql"])
def dialect(request):
    if request.param == "postgresql":
        request.applymarker(pytest.mark.postgres)
    return request.param


@pytest.mark.parametrize("form", ["uri", "json"])
def test_load_through_a_real_connection(dialect, form, tmp_path, monkeypatch, request, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    hook = set_conn(monkeypatch, "dest", real_connection(dialect, form, tmp_path, request))
    pipeline = hook.get_pipeline("hooked", pipelines_dir=tmp_path / "pipelines")
    info = pipeline.run([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], table_name="items")
    hook.dispose()
    ok, message = hook.test_connection()
    assert ok, message
    assert message.startswith("Connected to ")
    assert info.row_counts == {"items": 2}
    expected_dataset = "from_conn" if form == "json" and dialect == "postgresql" else "hooked_dataset"
    assert pipeline.dataset_name == expected_dataset

    again = PipelineStateHook(destination_conn_id="dest").get_pipeline(
        "hooked", pipelines_dir=tmp_path / "p2"
    )
    with again.sql_client() as client:
        assert client.execute_sql("SELECT id, name FROM items ORDER BY id") == [(1, "a"), (2, "b")]
    assert not again.first_run
    again.engine.dispose()
    assert SECRET not in caplog.text
    assert SECRET not in "".join(capsys.readouterr())


def test_sqlite_test_connection_does_not_create_the_file(tmp_path, monkeypatch):
    path = tmp_path / "new.sqlite"
    hook = set_conn(monkeypatch, "dest", {"conn_type": "sqlite", "host": str(path)})
    ok, message = hook.test_connection()
    assert ok and "first load creates it" in message
    assert not path.exists()
    hook = set_conn(monkeypatch, "dest", {"conn_type": "sqlite", "host": str(tmp_path / "no" / "x.sqlite")})
    ok, message = hook.test_connection()
    assert not ok and "does not exist" in message


@pytest.mark.parametrize("form", ["uri", "json", "sqlalchemy_url"])
def test_unreachable_destination_fails_without_leaking_the_password(form, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    port = closed_port()
    value: str | dict = {
        "uri": f"postgresql://loader:{q}@127.0.0.1:{port}/analytics",
        "json": {
            "conn_type": "pipeline_state",
            "host": "127.0.0.1",
            "port": port,
            "login": "loader",
            "password": SECRET,
            "extra": {"dialect": "postgresql"},
        },
        "sqlalchemy_url": {
            "conn_type": "pipeline_state",
            "extra": {"sqlalchemy_url": f"postgresql+psycopg://loader:{q}@127.0.0.1:{port}/analytics"},
        },
    }[form]
    hook = set_conn(monkeypatch, "down", value)
    ok, message = hook.test_connection()
    assert not ok
    assert f"127.0.0.1:{port}" in message
    assert SECRET not in message and q not in message
    with pytest.raises(Exception) as failure:
        hook.get_pipeline("p").run([{"id": 1}], table_name="t")
    assert SECRET not in str(failure.value) and q not in str(failure.value)
    assert SECRET not in caplog.text and q not in caplog.text
    out, err = capsys.readouterr()
    assert SECRET not in out + err and q not in out + err
