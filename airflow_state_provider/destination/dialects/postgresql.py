"""PostgreSQL: transaction-scoped advisory lock per pipeline."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from airflow_state_provider.destination.dialects.base import Dialect


def advisory_key(dataset: str, pipeline_name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock``."""
    digest = hashlib.blake2b(f"asp:{dataset}:{pipeline_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresDialect(Dialect):
    name = "postgresql"

    def lock_pipeline(self, conn: sa.Connection, dataset: str, pipeline_name: str) -> None:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key(dataset, pipeline_name)})

    def use_dataset(self, conn: sa.Connection, dataset: str) -> None:
        conn.execute(sa.text("SELECT set_config('search_path', :p, false)"), {"p": _quoted(dataset) + ", public"})
        conn.commit()


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
