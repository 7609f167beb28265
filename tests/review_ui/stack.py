"""One api-server (no scheduler: the state is written before it starts) with the simple auth manager,
per-connection read policies (``auth_manager.py``), hostile state and connections with secrets.

``python -m tests.review_ui.stack ROOT`` starts it and keeps it running (for probing by hand); the
tests reuse it when ``REVIEW_UI_ROOT`` names that folder, else start their own.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

from airflow_state_provider import Pipeline, current, resource
from tests.airflow.conftest import REPO, sqlite_conn_json
from tests.airflow_stack import AirflowStack

USERS = {"editor": "op", "viewer": "viewer", "alice": "viewer", "bob": "viewer", "nobody": ""}
SECRET = "Hunter2@pa:ss/wd%"  # needs URL quoting: the quoted form must not leak either
URL_SECRET = "UrlSecret@99"
SECRETS = (SECRET, "Hunter2%40pa%3Ass%2Fwd%25", URL_SECRET, "UrlSecret%4099")
EVIL = "evil<img src=x onerror=alert(1)>"
KEY = "<img src=x onerror=alert(2)>"
VALUE = "</pre><script>alert(3)</script>"


def populate(root: Path) -> None:
    for sub, dataset, names in (
        ("a", "ds", [EVIL, "x' OR 1=1--", "plain"]),
        ("b", "secret_ds", ["secret_pipe"]),
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(f"sqlite:///{root / sub / 'wh.sqlite'}")

        @resource(name="res<b>x</b>", table_name="events")
        def r(n: int):
            current.resource_state()[KEY] = VALUE
            current.resource_state()["n"] = n
            yield [{"id": n}]

        for name in names:
            for n in (1, 2):
                Pipeline(name, destination=engine, dataset_name=dataset).run(r(n))
        engine.dispose()


def make_stack(root: Path) -> tuple[AirflowStack, dict[str, str]]:
    passwords = {user: f"{user}-pw" for user in USERS}
    (root / "passwords.json").write_text(json.dumps(passwords))
    env = {
        "AIRFLOW_CONN_CONN_A": sqlite_conn_json(root / "a" / "wh.sqlite"),
        "AIRFLOW_CONN_SECRETS_B": sqlite_conn_json(root / "b" / "wh.sqlite"),
        "AIRFLOW_CONN_PG_BAD": json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": 1,
                "login": "u",
                "password": SECRET,
                "schema": "db",
            }
        ),
        "AIRFLOW_CONN_URL_BAD": json.dumps(
            {
                "conn_type": "pipeline_state",
                "extra": {"sqlalchemy_url": f"postgresql+psycopg2://u:{quote(URL_SECRET)}@127.0.0.1:1/db"},
            }
        ),
        "AIRFLOW_STATE_PIPELINES_DIR": str(root / "pipelines"),
        "AIRFLOW__CORE__AUTH_MANAGER": "tests.review_ui.auth_manager.PerConnectionAuthManager",
        "PYTHONPATH": str(REPO),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
    }
    (root / "dags").mkdir(exist_ok=True)
    stack = AirflowStack(
        root,
        root / "dags",
        f"sqlite:///{root / 'a' / 'wh.sqlite'}",
        env,
        login=("editor", passwords["editor"]),
    )
    return stack, passwords


def start_api_server(stack: AirflowStack, timeout: float) -> None:
    """Only the api-server: the tests need no DAG runs."""
    import tests.airflow_stack as airflow_stack

    services = airflow_stack.SERVICES
    airflow_stack.SERVICES = ("api-server",)
    try:
        stack.start([], timeout)
    finally:
        airflow_stack.SERVICES = services


if __name__ == "__main__":
    root = Path(sys.argv[1])
    root.mkdir(parents=True, exist_ok=True)
    populate(root)
    stack, _ = make_stack(root)
    start_api_server(stack, 300)
    (root / "base_url").write_text(stack.base_url)
    (root / "jwt_secret").write_text(stack.env["AIRFLOW__API_AUTH__JWT_SECRET"])
    print("up", stack.base_url, flush=True)
    try:
        while True:
            time.sleep(60)
    finally:
        stack.stop(30)
