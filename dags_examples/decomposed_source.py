"""``decompose_source`` in ``parallel`` mode: one task per resource group, one state writer.

``helpdesk`` is an offline source with four resources. ``ticket_events`` is a transformer fed by the
pages of ``tickets``, so both run in the task ``helpdesk.tickets``; ``agents`` and ``ratings`` get a
task each. The three tasks run in parallel and commit to the same pipeline; their commits merge per
state slot. ``agents`` is the state writer: only its task may write the source state
(``sources.helpdesk``); in the other tasks a write raises ``ReadOnlyStateError`` naming
``helpdesk.agents``. Each task keeps its own incremental cursors in resource state, so every manual
run loads the next page of tickets and ratings and nothing twice.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from airflow.sdk import dag

from airflow_state_provider import current, incremental, resource, source, transformer
from airflow_state_provider.decomposition import decompose_source

log = logging.getLogger(__name__)

#: the stand-in helpdesk API knows this many tickets and ratings, and serves a page per call
TICKET_COUNT, RATING_COUNT, PAGE = 20, 10, 10
FIRST_RATING = datetime(2024, 1, 1, tzinfo=UTC)
BEFORE_FIRST_RATING = (FIRST_RATING - timedelta(hours=1)).isoformat()


@resource(write_disposition="merge", primary_key="agent_id")
def agents():
    roster = [{"agent_id": n, "name": f"agent-{n}", "team": ("l1", "l2")[n % 2]} for n in range(1, 5)]
    helpdesk_state = current.source_state()  # writable: this resource's task is the state writer
    helpdesk_state["syncs"] = helpdesk_state.get("syncs", 0) + 1
    # counted here, where it is written: the other tasks restore their state before this commits
    log.info("helpdesk sync %s: committed with this task's rows", helpdesk_state["syncs"])
    helpdesk_state["agent_ids"] = [a["agent_id"] for a in roster]
    current.resource_state()["roster_size"] = len(roster)
    yield roster


@resource(write_disposition="append", primary_key="ticket_id")
def tickets(ticket_id=incremental("ticket_id", initial_value=0)):
    first = ticket_id.start_value + 1
    yield [
        {"ticket_id": n, "subject": f"ticket {n}", "agent_id": n % 4 + 1}
        for n in range(first, min(first + PAGE, TICKET_COUNT + 1))
    ]


@transformer(data_from=tickets, write_disposition="append", primary_key="event_id")
def ticket_events(page):
    seen = current.resource_state()  # resource state is writable in every task
    for t in page:
        seen["events"] = seen.get("events", 0) + 2
        yield [
            {"event_id": f"{t['ticket_id']}-{k}", "ticket_id": t["ticket_id"], "kind": kind}
            for k, kind in enumerate(("opened", "assigned"))
        ]


@resource(write_disposition="append", primary_key="rating_id")
def ratings(rated_at=incremental("rated_at", initial_value=BEFORE_FIRST_RATING)):
    agent_ids = current.source_state().get("agent_ids", [])  # read-only here: agents writes it
    log.info("ratings: agents in the committed source state: %s", agent_ids)
    since = datetime.fromisoformat(rated_at.start_value)
    newer = (FIRST_RATING + timedelta(hours=n) for n in range(RATING_COUNT))
    yield [
        {"rating_id": n + 1, "score": n % 5 + 1, "rated_at": at.isoformat()}
        for n, at in enumerate(newer)
        if at > since
    ][: PAGE // 2]


@source(name="helpdesk")
def helpdesk():
    return agents, tickets, ticket_events, ratings


@dag(schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False, doc_md=__doc__)
def decomposed_source():
    decompose_source(
        helpdesk(),
        group_id="helpdesk",
        pipeline_name="helpdesk",
        dataset_name="helpdesk_data",
        mode="parallel",
        state_writer="agents",
        retries=2,  # safe: a failed try commits nothing; StateConflictError is retried
        retry_delay=timedelta(minutes=1),
    )


decomposed_source()
