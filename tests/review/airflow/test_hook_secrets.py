"""Review (adversary) of issue 16's hook: URLs and lineage names asked from the Dialect classes.

A DuckDB connection whose host is MotherDuck's documented form ``md:<db>?motherduck_token=<token>``
(the README: "for SQLite and DuckDB the file path goes in host") becomes a URL whose *database* holds
the query, so the one URL mask does not see the token, and the lineage namespace and asset URI (stored
in Airflow's metadata database, sent to OpenLineage) carry it. Same as before issue 16 (975ab11).
"""

from __future__ import annotations

import json

import pytest

from airflow_state_provider.destination.engine import mask_url
from airflow_state_provider.hooks.pipeline_state import PipelineStateHook
from tests.airflow.conftest import conn_env

TOKEN = "mdTok3nSuperSecret"


@pytest.mark.parametrize("conn_type, extra", [("duckdb", {}), ("pipeline_state", {"dialect": "duckdb"})])
def test_a_motherduck_token_in_the_host_is_never_shown(monkeypatch, conn_type: str, extra: dict):
    conn = {"conn_type": conn_type, "host": f"md:warehouse?motherduck_token={TOKEN}", "extra": extra}
    monkeypatch.setenv(conn_env("md"), json.dumps(conn))
    hook = PipelineStateHook(destination_conn_id="md")
    shown = [
        mask_url(hook.get_sqlalchemy_url()),
        hook.lineage_namespace(),
        hook.lineage_name("raw", "events"),
        hook.table_asset_uri("raw", "events"),
    ]
    assert not [s for s in shown if TOKEN in s], shown
