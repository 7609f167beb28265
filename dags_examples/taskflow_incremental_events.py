"""An incremental TaskFlow task: ``@task.stateful_load`` over a generator with an ``incremental`` cursor.

The decorated function is the resource. Its ``updated_at`` default argument is bound when the task
runs: the cursor's ``last_value`` is restored from the destination and the task log shows the
``Bind incremental on events ...`` line. The stand-in API returns events updated since the cursor's
start value and up to the run's data interval end; rows the previous run already loaded are
filtered out and ``merge`` upserts on ``id``, so nothing is loaded twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task

from airflow_state_provider import incremental

FIRST_EVENT = datetime(2024, 1, 1, tzinfo=UTC)
#: the stand-in API knows this many events, one every six hours
EVENT_COUNT = 40


def fetch_events(since: str | datetime | None, until: datetime | None) -> list[dict]:
    """Events with ``since <= updated_at < until``, oldest first (a page of a made-up API)."""
    if isinstance(since, str):
        since = datetime.fromisoformat(since)
    events = []
    for n in range(EVENT_COUNT):
        updated_at = FIRST_EVENT + timedelta(hours=6 * n)
        if (since is None or updated_at >= since) and (until is None or updated_at < until):
            events.append(
                {
                    "id": n + 1,
                    "type": ("push", "issue", "comment", "release")[n % 4],
                    "actor": {"login": f"user{n % 5}", "site_admin": n % 5 == 0},
                    "updated_at": updated_at.isoformat(),
                }
            )
    return events


@dag(
    schedule="@daily",
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["airflow-state-provider", "example"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},  # a failed try commits nothing
)
def taskflow_incremental_events():
    @task.stateful_load(
        pipeline_name="events",
        dataset_name="events_data",
        table_name="events",
        write_disposition="merge",
        primary_key="id",
    )
    def events(
        data_interval_end=None,
        updated_at=incremental("updated_at", initial_value="2024-01-01T00:00:00+00:00"),
    ):
        yield fetch_events(since=updated_at.start_value, until=data_interval_end)

    events()


taskflow_incremental_events()
