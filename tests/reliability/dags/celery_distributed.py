"""The CeleryExecutor end-to-end test's DAG (``tests/reliability/test_celery_e2e.py``), issue 13.

Three pipelines into one PostgreSQL warehouse, every task on whichever Celery worker takes it:

- ``support``: a source decomposed in ``parallel`` mode, three tasks side by side; ``agents`` is the
  state writer (source state ``syncs``), ``tickets`` feeds the transformer ``ticket_events``.
- ``orders``: a ``@task.stateful_load`` mapped over three regions, one state slot per region.
- ``flaky``: a task whose first try loads a page, then fails; its retry loads everything once.

Every resource loads the next page after its committed cursor, so each run loads new rows and a lost
or shared cursor shows up as a duplicate or a gap. ``max_active_runs=1``: triggered twice, the second
run starts after the first and continues from what it committed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, task

from airflow_state_provider import current, incremental, resource, source, transformer
from airflow_state_provider.decomposition import decompose_source

PAGE = 5
REGIONS = ["eu", "us", "ap"]
AGENTS = [{"agent_id": n, "name": f"agent-{n}"} for n in range(1, 4)]


@resource(write_disposition="merge", primary_key="agent_id")
def agents():
    support_state = current.source_state()  # writable: this task is the state writer
    support_state["syncs"] = support_state.get("syncs", 0) + 1
    current.resource_state()["roster_size"] = len(AGENTS)
    yield AGENTS


@resource(write_disposition="append", primary_key="ticket_id")
def tickets(ticket_id=incremental("ticket_id", initial_value=0)):
    first = ticket_id.start_value + 1
    yield [{"ticket_id": n, "agent_id": n % 3 + 1} for n in range(first, first + PAGE)]


@transformer(data_from=tickets, write_disposition="append", primary_key="event_id")
def ticket_events(page):
    seen = current.resource_state()
    for t in page:
        seen["events"] = seen.get("events", 0) + 2
        yield [{"event_id": f"{t['ticket_id']}-{kind}", "kind": kind} for kind in ("opened", "assigned")]


@resource(write_disposition="append", primary_key="rating_id")
def ratings(rating_id=incremental("rating_id", initial_value=0)):
    first = rating_id.start_value + 1
    yield [{"rating_id": n, "score": n % 5 + 1} for n in range(first, first + PAGE)]


@source(name="support")
def support():
    return agents, tickets, ticket_events, ratings


with DAG(
    "celery_distributed",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    # a try lost to the machine (an execution-API timeout) may retry: it commits nothing
    default_args={"retries": 2, "retry_delay": timedelta(seconds=2)},
):
    decompose_source(
        support(),
        group_id="support",
        pipeline_name="support",
        dataset_name="support_data",
        mode="parallel",
        state_writer="agents",
    )

    @task.stateful_load(
        pipeline_name="orders", dataset_name="orders_data", table_name="orders", primary_key="id"
    )
    def orders(region: str, seq=incremental("seq", initial_value=0)):
        first = seq.start_value + 1
        yield [{"id": f"{region}-{n}", "region": region, "seq": n} for n in range(first, first + PAGE)]

    orders.expand(region=REGIONS)

    @task.stateful_load(
        pipeline_name="flaky",
        dataset_name="flaky_data",
        table_name="events",
        primary_key="id",
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
    def flaky(ti=None, event_id=incremental("id", initial_value=0)):
        first = event_id.start_value + 1
        current.resource_state()["loaded_by_try"] = ti.try_number
        yield [{"id": n} for n in range(first, first + PAGE)]
        if ti.try_number == 1:
            raise RuntimeError("simulated outage after the first page (try 1)")
        yield [{"id": n} for n in range(first + PAGE, first + 2 * PAGE)]

    flaky()
