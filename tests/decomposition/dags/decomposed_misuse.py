"""A decomposed source whose non-writer task writes source state: that task must fail.

``balances`` is the state writer of source ``ledger``; ``entries`` runs in another task and writes
``current.source_state()``, which raises ``ReadOnlyStateError`` naming ``ledger.balances``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag

from airflow_state_provider import current, resource, source
from airflow_state_provider.decomposition import decompose_source


@resource(write_disposition="merge", primary_key="account")
def balances():
    current.source_state()["closed_on"] = "2024-01-31"
    yield [{"account": "cash", "balance": 10}, {"account": "bank", "balance": 20}]


@resource(primary_key="entry_id")
def entries():
    current.resource_state()["pages"] = 1  # resource state: writable in every task
    yield [{"entry_id": 1, "account": "cash", "amount": 10}]
    current.source_state()["last_entry"] = 1  # source state: only the writer task may write it


@source(name="ledger")
def ledger():
    return balances, entries


@dag(schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False)
def decomposed_misuse():
    decompose_source(
        ledger(),
        group_id="ledger",
        pipeline_name="ledger",
        dataset_name="ledger_data",
        mode="parallel",
        state_writer="balances",
    )


decomposed_misuse()
