"""Chess game archives remembered in resource state (dlt's state example, offline).

A stand-in for the chess.com API lists each player's monthly game archives up to the run's data
interval end (all of them for a manual run). The resource keeps the archives it has loaded in its
private state, ``current.resource_state()["archives"]``, and skips them next time. The state is
committed with the rows and restored from the destination when the task starts, so a retry or a
clean worker neither loses nor duplicates an archive.

``data`` is a callable: the operator calls it when the task runs, so it can read the run's context.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

from airflow.sdk import dag, get_current_context

from airflow_state_provider import current, resource
from airflow_state_provider.operators.stateful_load import StatefulLoadOperator

log = logging.getLogger(__name__)

PLAYERS = ("magnuscarlsen", "vincentkeymer")
#: months the stand-in API has archives for
MONTHS = [date(2024, month, 1) for month in range(1, 7)]


def list_archives(player: str, until: datetime | None) -> list[str]:
    """Archive URLs of ``player``: one per month that had started before ``until``."""
    return [
        f"https://api.chess.example/pub/player/{player}/games/{m.year}/{m.month:02d}"
        for m in MONTHS
        if until is None or datetime(m.year, m.month, 1, tzinfo=UTC) < until
    ]


def fetch_games(archive_url: str) -> list[dict]:
    """The games of one archive (three per month, made up from the URL)."""
    *_, player, _, year, month = archive_url.split("/")
    return [
        {
            "url": f"{archive_url}/{n}",
            "player": player,
            "end_time": datetime(int(year), int(month), 1 + 7 * n, 20, tzinfo=UTC),
            "time_class": ("blitz", "rapid", "bullet")[n],
            "rated": n != 2,
        }
        for n in range(3)
    ]


@resource(write_disposition="append")
def players_games(players: tuple[str, ...] = PLAYERS, until: datetime | None = None):
    checked_archives = current.resource_state().setdefault("archives", [])
    for player in players:
        for url in list_archives(player, until):
            if url in checked_archives:
                log.info("skipping archive %s", url)
                continue
            log.info("getting archive %s", url)
            checked_archives.append(url)
            yield fetch_games(url)


def games_of_this_run():
    """Called by the operator at execute time: archives up to the run's data interval end."""
    return players_games(until=get_current_context().get("data_interval_end"))


@dag(
    schedule="@monthly",
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["airflow-state-provider", "example"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},  # a failed try commits nothing
)
def chess_archives():
    StatefulLoadOperator(
        task_id="load_players_games",
        data=games_of_this_run,
        pipeline_name="chess",
        dataset_name="chess_data",
    )


chess_archives()
