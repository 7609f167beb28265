"""Peak memory of one load, measured in a fresh process.

``python -m benchmarks.rss URL ROWS`` streams ``ROWS`` generated rows (pages of 1,000, built on the fly)
through ``Pipeline.run`` into ``URL`` and prints one JSON line: the process's peak resident set
(``VmHWM``) after the imports and at the end. The parent runs it once per sample, so every sample
starts from a clean interpreter.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def peak_rss_kib() -> int:
    """This process's peak resident set size in KiB (``VmHWM``; ``ru_maxrss`` where /proc is missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def measure(
    url: str, rows: int, timeout: float = 900, checkpoint_every: int | None = None, cursor: bool = False
) -> dict[str, int]:
    """Run one load in a child process; returns ``{"baseline_kib": ..., "peak_kib": ...}``.

    ``cursor``: the rows come from a resource with an ascending incremental cursor (``row_order="asc"``,
    whose rows checkpoints commit early) instead of plain rows (which wait for the final commit)."""
    extra = [str(checkpoint_every or 0), "cursor" if cursor else "rows"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.rss", url, str(rows), *extra],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(url: str, rows: int, checkpoint_every: int | None = None, cursor: bool = False) -> None:
    from airflow_state_provider import Pipeline
    from benchmarks.data import stream_rows

    import_peak = peak_rss_kib()
    with tempfile.TemporaryDirectory() as pipelines_dir:
        p = Pipeline("rss", destination=url, dataset_name="rss", pipelines_dir=pipelines_dir)
        if cursor:
            from airflow_state_provider import incremental, resource
            from benchmarks.data import INITIAL_VALUE

            @resource(name="t")
            def t(updated_at=incremental("updated_at", initial_value=INITIAL_VALUE, row_order="asc")):
                yield from stream_rows(rows)

            info = p.run(t(), checkpoint_every=checkpoint_every)
        else:
            info = p.run(stream_rows(rows), table_name="t", checkpoint_every=checkpoint_every)
        p.engine.dispose()
    if info.row_counts.get("t") != rows:
        raise SystemExit(f"loaded {info.row_counts}, expected {rows}")
    print(json.dumps({"baseline_kib": import_peak, "peak_kib": peak_rss_kib()}))


if __name__ == "__main__":
    every = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    _child(sys.argv[1], int(sys.argv[2]), every or None, len(sys.argv) > 4 and sys.argv[4] == "cursor")
