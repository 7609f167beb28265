"""A task process for the lock tests: holds a DuckDB file the way a running task does.

``python -m tests.reliability.lock_worker MODE URL DIR``

- ``run``: ``Pipeline("locks").run`` of a resource that yields ids 1..50, writes ``DIR/started`` and
  waits for ``DIR/go`` before its last page, so the run (and the file) stays open until the test says.
- ``open``: opens the file with plain ``duckdb.connect`` (another program, not ours), writes
  ``DIR/started`` and waits for ``DIR/go``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.02)


def main(mode: str, url: str, folder: str) -> None:
    signals = Path(folder)
    if mode == "open":
        import duckdb

        conn = duckdb.connect(url.removeprefix("duckdb:///"))
        (signals / "started").touch()
        wait_for(signals / "go")
        conn.close()
        return
    from airflow_state_provider import Pipeline, current, resource

    @resource(name="numbers", primary_key="id")
    def numbers():
        slot = current.resource_state()
        start = slot.get("max_id", 0)
        yield [{"id": i} for i in range(start + 1, start + 26)]
        (signals / "started").touch()
        wait_for(signals / "go")
        yield [{"id": i} for i in range(start + 26, start + 51)]
        slot["max_id"] = start + 50

    pipeline = Pipeline("locks", destination=url, dataset_name="ds", pipelines_dir=signals / "w")
    info = pipeline.run(numbers())
    print(info.row_counts)


if __name__ == "__main__":
    main(*sys.argv[1:])
