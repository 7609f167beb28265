"""DuckDB's memory for an open transaction against its settings and against checkpoints (issue 19).

Peak RSS of a fresh process loading ROWS rows through ``Pipeline.run`` into a new DuckDB file, per
setting: DuckDB's defaults, ``memory_limit`` (with and without ``temp_directory``, passed as URL query
parameters, which duckdb_engine hands to ``duckdb.connect(config=...)``), and ``checkpoint_every``
(plain rows are committed in chunks). Wall time is printed beside it: the trade-off.

    python -m benchmarks.duckdb_memory [--rows 1000000] [--reps 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.duckdb_memory")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--only", action="append", help="run the settings whose label contains this")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="asp-duckmem-") as tmp:
        spill = Path(tmp) / "spill"
        every = args.rows // 10
        settings: dict[str, tuple[str, int | None, bool]] = {
            "defaults": ("", None, False),
            "memory_limit=256MB": ("?memory_limit=256MB", None, False),
            "memory_limit=128MB, temp_directory": (
                f"?memory_limit=128MB&temp_directory={spill}",
                None,
                False,
            ),
            f"checkpoint_every={every:_}, plain rows (staged until the final commit)": ("", every, False),
            "ascending incremental cursor, no checkpoints": ("", None, True),
            f"ascending incremental cursor, checkpoint_every={every:_}": ("", every, True),
        }
        chosen = {k: v for k, v in settings.items() if not args.only or any(o in k for o in args.only)}
        print(f"| setting ({args.rows:,} rows, median of {args.reps}) | peak RSS | baseline | wall time |")
        print("| --- | --- | --- | --- |")
        for label, (query, checkpoint_every, cursor) in chosen.items():
            peaks, bases, times = [], [], []
            for rep in range(args.reps):
                url = f"duckdb:///{Path(tmp) / f'm{rep}_{len(peaks)}_{abs(hash(label))}.duckdb'}{query}"
                started = time.perf_counter()
                result = rss.measure(url, args.rows, checkpoint_every=checkpoint_every, cursor=cursor)
                times.append(time.perf_counter() - started)
                peaks.append(result["peak_kib"] / 1024)
                bases.append(result["baseline_kib"] / 1024)
            print(
                f"| {label} | {statistics.median(peaks):.0f} MiB | {statistics.median(bases):.0f} MiB "
                f"| {statistics.median(times):.1f} s |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
