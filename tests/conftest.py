"""Shared fixtures: real SQLite, DuckDB and PostgreSQL destinations.

PostgreSQL is a throwaway cluster started once per test session from Debian's ``postgresql``
binaries, on 127.0.0.1 with a free port. Run as root (CI), the server runs as the ``postgres`` OS user.
Set ``ASP_TEST_POSTGRES_URL`` to use an existing server instead. Where the binaries are missing the
Postgres tests fail under CI (``CI=true``) and skip elsewhere, so a missing install step cannot hide.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings

# the suite shares 2 cores with database servers and Airflow processes: time limits would only flake
settings.register_profile(
    "project", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
settings.load_profile("project")

DIALECTS = ("sqlite", "duckdb", "postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


@dataclass
class PostgresServer:
    """A running throwaway cluster; ``stop()``/``start()`` let outage tests cut it off."""

    bindir: str
    datadir: str
    port: int
    run_as: list[str]

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.run_as, f"{self.bindir}/pg_ctl", "-D", self.datadir, "-w", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._ctl("-o", opts, "-l", f"{self.datadir}/server.log", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "stop")

    def create_database(self, template: str | None = None) -> str:
        """A new database (a copy of ``template``, which nobody may be connected to); its name."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        engine = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(
                f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
            )
        engine.dispose()
        return name


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | str]:
    external = os.environ.get("ASP_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    bindir = _pg_bindir()
    if bindir is None:
        msg = "PostgreSQL server binaries not found (install Debian's 'postgresql' package)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    base = tempfile.mkdtemp(prefix="asp-pg-")
    datadir = os.path.join(base, "data")
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        os.chmod(base, 0o755)
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*run_as, f"{bindir}/initdb", "-D", datadir, "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    server = PostgresServer(bindir, datadir, _free_port(), run_as)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop("immediate")
        finally:
            shutil.rmtree(base, ignore_errors=True)


_counter = itertools.count()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """URL of a fresh, empty PostgreSQL database."""
    if isinstance(postgres_server, str):
        return postgres_server
    return postgres_server.url(postgres_server.create_database())


def make_url(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path / f'db{next(_counter)}.sqlite'}"
    if dialect == "duckdb":
        return f"duckdb:///{tmp_path / f'db{next(_counter)}.duckdb'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=DIALECTS)
def dest_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh destination database URL, once per dialect."""
    if request.param == "postgresql":
        request.applymarker(pytest.mark.postgres)
    return make_url(request.param, tmp_path, request)


@pytest.fixture
def pipelines_dir(tmp_path: Path) -> Path:
    """An empty pipelines dir, as on a clean Airflow worker."""
    path = tmp_path / "pipelines"
    path.mkdir()
    return path
