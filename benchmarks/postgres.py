"""A throwaway PostgreSQL cluster for the benchmarks, from Debian's ``postgresql`` binaries.

The same recipe as the test suite's fixture (``tests/conftest.py``): ``initdb`` into a temporary
directory, listen on 127.0.0.1 on a free port, run as the ``postgres`` OS user via ``runuser`` when
we are root. Durability settings are relaxed (``fsync=off``, ``synchronous_commit=off``) for every
contender alike. Set ``ASP_BENCH_POSTGRES_URL`` (a ``postgresql+psycopg://`` URL of a server where the
user may create databases) to use an existing server instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

ENV_URL = "ASP_BENCH_POSTGRES_URL"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> str | None:
    """Directory of the newest installed ``initdb``, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


@dataclass
class PostgresServer:
    """A PostgreSQL server to create benchmark databases in; ``close()`` removes a throwaway one."""

    admin_url: str
    version: str = ""
    _base: str | None = None
    _stop: list[str] | None = None

    def create_database(self, prefix: str = "b") -> str:
        """A new empty database; returns its ``postgresql+psycopg://`` URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        engine = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return str(sa.make_url(self.admin_url).set(database=name).render_as_string(hide_password=False))

    def drop_database(self, url: str) -> None:
        name = sa.make_url(url).database
        engine = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            engine.dispose()

    def close(self) -> None:
        if self._stop is not None:
            subprocess.run(self._stop, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._stop = None
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _server_version(admin_url: str) -> str:
    engine = sa.create_engine(admin_url)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SHOW server_version").scalar())
    finally:
        engine.dispose()


def start_postgres() -> PostgresServer:
    """The server named by ``ASP_BENCH_POSTGRES_URL``, or a new throwaway cluster.

    Raises RuntimeError when neither is available (install Debian's ``postgresql`` package).
    """
    external = os.environ.get(ENV_URL)
    if external:
        return PostgresServer(external, _server_version(external))
    bindir = pg_bindir()
    if bindir is None:
        raise RuntimeError(
            f"PostgreSQL server binaries not found: install Debian's 'postgresql' package or set {ENV_URL}"
        )
    base = tempfile.mkdtemp(prefix="asp-bench-pg-")
    datadir = os.path.join(base, "data")
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        os.chmod(base, 0o755)
        run_as = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run(
            [*run_as, f"{bindir}/initdb", "-D", datadir, "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        port = _free_port()
        opts = (
            f"-p {port} -k {datadir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        ctl = [*run_as, f"{bindir}/pg_ctl", "-D", datadir, "-w"]
        subprocess.run(
            [*ctl, "-o", opts, "-l", f"{datadir}/server.log", "start"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    admin_url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    server = PostgresServer(admin_url, "", base, [*ctl, "-m", "immediate", "stop"])
    try:
        server.version = _server_version(admin_url)
    except BaseException:
        server.close()
        raise
    return server
