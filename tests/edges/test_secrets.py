"""Issue 14 items 7, 16, 17: one URL mask everywhere, one engine factory, supported databases only."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline
from airflow_state_provider.cli import main as cli_main
from airflow_state_provider.destination.engine import SUPPORTED_DIALECTS, create_engine, mask_url
from airflow_state_provider.exceptions import UnsupportedDestinationError
from tests.edges.support import DATASET, NAME, new_pipeline

SECRET = "s3cret-XYZ"


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        (f"postgresql+psycopg://loader:{SECRET}@db/wh?sslmode=require", ["loader:***@db", "sslmode=require"]),
        (f"postgresql+psycopg://loader@db/wh?password={SECRET}&application_name=x", ["password=***"]),
        (f"duckdb:///md:wh?motherduck_token={SECRET}", ["motherduck_token=***"]),
        (f"duckdb:///w.duckdb?api_key={SECRET}&threads=2", ["api_key=***", "threads=2"]),
        (f"postgresql://u@h/db?sslpassword={SECRET}&access_token={SECRET}", ["sslpassword=***"]),
    ],
    ids=["password", "libpq_password", "motherduck", "api_key", "several"],
)
def test_mask_url_hides_passwords_and_secret_query_parameters(url, kept):
    shown = mask_url(url)
    assert SECRET not in shown
    assert all(k in shown for k in kept), shown
    assert mask_url(sa.make_url(url)) == shown


@pytest.mark.postgres
def test_a_password_in_the_query_never_shows_in_cli_output_or_errors(postgres_url, tmp_path, capsys):
    url = f"{postgres_url}?password={SECRET}"  # libpq's documented form; trust auth ignores it
    new_pipeline(url, tmp_path).run([{"id": 1}], table_name="events")
    pd = ["--dataset", DATASET, "--pipelines-dir", str(tmp_path / "cli")]
    assert cli_main(["info", NAME, "--url", url, *pd]) == 0
    assert cli_main(["set", NAME, "sources", "{}", "--create", "--dry-run", "--url", url, *pd]) == 0
    assert cli_main(["info", "nobody", "--url", url, *pd]) == 2  # the error names the destination
    out = capsys.readouterr()
    assert "password=***" in out.out and "password=***" in out.err
    assert SECRET not in out.out + out.err


def test_the_hook_log_line_and_test_connection_mask_query_secrets(tmp_path, monkeypatch, capsys):
    pytest.importorskip("airflow")
    from airflow_state_provider.hooks.pipeline_state import PipelineStateHook

    url = f"duckdb:///{tmp_path / 'w.duckdb'}?motherduck_token={SECRET}"
    conn = {"conn_type": "pipeline_state", "extra": {"sqlalchemy_url": url}}
    monkeypatch.setenv("AIRFLOW_CONN_EDGES_SECRET", json.dumps(conn))
    hook = PipelineStateHook(destination_conn_id="edges_secret")
    hook.get_engine()  # Airflow's structlog writes the line to stdout
    _, message = hook.test_connection()
    logged = capsys.readouterr()
    assert "Destination duckdb:///" in logged.out and "motherduck_token=***" in logged.out
    assert SECRET not in logged.out + logged.err + message


def test_every_engine_from_a_url_hides_sql_parameters(dest_url, tmp_path):
    pipeline = new_pipeline(dest_url, tmp_path)
    for engine in (pipeline.engine, create_engine(dest_url)):
        assert engine.hide_parameters and engine.pool._pre_ping
    if not dest_url.startswith("postgresql"):
        return
    with pytest.raises(sa.exc.DataError) as failure, pipeline.engine.connect() as conn:
        conn.execute(sa.text("SELECT 1 / 0, CAST(:v AS TEXT)"), {"v": "row-value-42"})
    assert "row-value-42" not in str(failure.value) and "parameters hidden" in str(failure.value)


@pytest.mark.parametrize(
    "url",
    [
        f"mysql+pymysql://u:{SECRET}@h/db",
        f"mariadb://u:{SECRET}@h/db",
        f"mssql+pyodbc://u:{SECRET}@h/db",
        f"oracle://u@h/db?password={SECRET}",
    ],
)
def test_unsupported_databases_are_refused_at_construction(tmp_path, url):
    with pytest.raises(UnsupportedDestinationError) as failure:
        Pipeline(NAME, destination=url, pipelines_dir=tmp_path)
    message = str(failure.value)
    assert "not supported" in message and ", ".join(SUPPORTED_DIALECTS) in message
    assert SECRET not in message
