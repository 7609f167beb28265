"""A worker process of the concurrency stress test: ``runs`` commits of one pipeline, each with new
``Pipeline`` objects, as parallel Airflow tasks of a decomposed source would make them.

Kept out of the test module so that spawned processes import it without pytest's test collection.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_state_provider import Pipeline, current, resource, source
from airflow_state_provider.exceptions import StateConflictError

PIPELINE, DATASET, SOURCE = "stress", "stress_data", "stress"
ROWS_PER_RUN = 4
WRITER = "r0"


@dataclass
class Outcome:
    worker: int
    committed: list[str] = field(default_factory=list)  # run tags whose rows and state were committed
    conflicts: int = 0
    merges: int = 0
    errors: list[str] = field(default_factory=list)


def counting_resource(name: str, tag: str, writer: bool) -> Any:
    @resource(name=name, primary_key="row_id")
    def produce():
        slot = current.resource_state()
        slot["commits"] = slot.get("commits", 0) + 1
        slot["last_run"] = tag  # two concurrent runs never leave a shared slot equal
        if writer:
            shared = current.source_state()
            shared["writer_commits"] = shared.get("writer_commits", 0) + 1
        time.sleep(random.uniform(0, 0.02))  # extraction overlaps other workers' commits
        yield [{"row_id": f"{tag}-{j}", "run": tag} for j in range(ROWS_PER_RUN)]

    return produce


@source(name=SOURCE)
def stress(names: tuple[str, ...], tag: str):
    return [counting_resource(name, tag, name == WRITER) for name in names]


class _CountMerges(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "merged with concurrent state version" in record.getMessage():
            self.count += 1


def work(url: str, worker: int, resource_name: str, runs: int, barrier: Any, results: Any) -> None:
    """Commit ``runs`` times loading ``resource_name``; the writer resource may write source state."""
    outcome = Outcome(worker)
    merges = _CountMerges()
    log = logging.getLogger("airflow_state_provider.commit")  # where the one commit path logs merges
    log.addHandler(merges)
    log.setLevel(logging.INFO)
    read_only = (
        None
        if resource_name == WRITER
        else {SOURCE: f"worker {worker} is not the state writer of source {SOURCE!r} (r0 is)"}
    )
    barrier.wait()
    for run in range(runs):
        tag = f"w{worker}-{run}"
        pipeline = Pipeline(PIPELINE, destination=url, dataset_name=DATASET)
        try:
            pipeline.run(stress((resource_name,), tag), read_only_sources=read_only)
            outcome.committed.append(tag)
        except StateConflictError:
            outcome.conflicts += 1
        except Exception as exc:  # reported to the test, which fails on any
            outcome.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            pipeline.engine.dispose()
    outcome.merges = merges.count
    results.put(outcome)
