"""``BENCHMARKS.md``: machine, versions, method, the results table, details, plans and profiles."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.cases import Sizes
from benchmarks.results import TIMES, Measure

PACKAGES = (
    "airflow-state-provider",
    "dlt",
    "duckdb",
    "duckdb_engine",
    "psycopg",
    "SQLAlchemy",
    "pyarrow",
    "orjson",
)
ANALYSIS = Path(__file__).with_name("analysis.md")


@dataclass
class RunInfo:
    sizes: Sizes
    command: str
    started: dt.datetime
    seconds: float
    postgres_version: str | None
    #: the "Machine and versions" lines, taken when the run happened
    environment: list[str] = field(default_factory=list)


def machine() -> list[str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
            memory = f", {kib / 1024 / 1024:.0f} GiB memory"
    except (OSError, StopIteration):
        pass
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores{memory}",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
    ]


def versions(postgres_version: str | None) -> list[str]:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    found.append(f"SQLite {sqlite3.sqlite_version}")
    found.append(f"PostgreSQL {postgres_version}" if postgres_version else "PostgreSQL (not available)")
    return [f"- {', '.join(found)}", f"- source: {_git_revision()}"]


def _git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "airflow_state_provider",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"git {rev}" + (" with uncommitted changes to the package" if dirty else "")


def _value(seconds: float, unit: str) -> str:
    if unit == "MiB":
        return f"{seconds:.0f} MiB"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def _ratio(m: Measure) -> str:
    return f"{m.ratio:.2f}{TIMES}" if m.ratio < 10 else f"{m.ratio:.1f}{TIMES}"


def summary_table(measures: list[Measure]) -> list[str]:
    lines = [
        "| measure | target | ours (median) | reference (median) | ratio | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in measures:
        lines.append(
            f"| {m.title} | {m.target_text} | {_value(m.ours.median, m.unit)} | "
            f"{m.reference.name}: {_value(m.reference.median, m.unit)} | {_ratio(m)} ({m.ratio_label}) | "
            f"{'yes' if m.met else '**no**'} |"
        )
    return lines


def details(measures: list[Measure]) -> list[str]:
    lines = [
        "| measure | series | n | median | min | max | rows/s (median) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in measures:
        for label, s in (
            ("ours", m.ours),
            ("reference", m.reference),
            *(("also measured", e) for e in m.extras),
        ):
            name = "ours" if label == "ours" else s.name
            if label == "ours" and m.key.startswith(("history", "rss")):
                name = s.name
            rate = f"{m.rows / s.median:,.0f}" if m.rows and m.unit == "s" else ""
            lines.append(
                f"| {m.key} | {name} | {len(s.samples)} | {_value(s.median, m.unit)} | "
                f"{_value(s.min, m.unit)} | {_value(s.max, m.unit)} | {rate} |"
            )
    notes = [f"- `{m.key}`: {note}" for m in measures for note in m.notes]
    return lines + (["", *notes] if notes else [])


METHOD = """\
- **Side by side, alternating.** Every measure runs its contenders in one process, interleaved: repetition
  *i* runs them in an order rotated by *i* (A B, B A, ...), so drift of the machine hits each alike. Each
  cell is the median of {reps} samples, with min and max in the details. A garbage collection runs before
  every sample, outside the clock. The ratio of a row compares the two medians of that run.
- **Same rows.** All contenders get the same deterministic Python dicts (`benchmarks/data.py`: `id` int,
  `updated_at` UTC datetime, `name` str, `amount` float, `active` bool, `quantity` int). Rows are built
  **before** the clock starts, for every contender alike (generation excluded), except for peak RSS,
  where the child process generates them page by page while loading.
- **Incremental runs vs dlt.** One resource with an `incremental("updated_at")` cursor yielding pages of
  1,000 rows, `write_disposition="append"`, for us (`airflow_state_provider.resource`/`incremental`) and
  for dlt (`dlt.resource`/`dlt.sources.incremental`), each into its own database of the same kind. Every
  run builds a new pipeline object on a new, empty pipelines dir (as a task on a clean Airflow worker:
  `dlt.pipeline(..., pipelines_dir=<new tmp>, dev_mode=False)` with `dlt.destinations.duckdb(path)` /
  `dlt.destinations.postgres(url)`; ours `Pipeline(..., pipelines_dir=<new tmp>)`), and the clock covers
  the pipeline's construction through `run()` returning (ours also disposes its engine, dlt closes its
  own connections). After one untimed first run each, every timed run loads the next {inc} new rows; the
  "0 new rows" runs re-deliver the previous run's rows, all filtered out by the cursor (boundary
  deduplication included). Restore: a new pipeline object on an empty pipelines dir reading the newest
  state: `Pipeline.sync_destination()` vs dlt's `pipeline.sync_destination()` (which also restores its
  schemas). Afterwards both tables must hold the same number of rows, or the run fails.
  dlt's telemetry is off (`RUNTIME__DLTHUB_TELEMETRY=false`: this machine has no network).
- **Bulk loads vs raw paths.** Ours is `Pipeline("bulk", ...).run(rows, table_name="t")`, the whole run:
  restore, table creation, load with dlt's `_dlt_load_id`/`_dlt_id` columns, `_dlt_loads` row and state
  commit, into a new dataset. The raw contenders insert the same dicts' values into a table created before
  the clock starts, in one transaction: psycopg 3 `COPY ... FROM STDIN` (binary with `set_types`, and
  text), DuckDB `INSERT ... SELECT UNNEST(?), ...` of column lists and (with pyarrow installed) an Arrow
  table scan, and `sqlite3` `executemany`. The reference of a bulk row is the **floor**: the fastest raw
  path again, into our exact table shape (the 6 columns plus `_dlt_load_id` and `_dlt_id`, with the UNIQUE
  `_dlt_id` index where our default creates it: PostgreSQL and SQLite), ids made before the clock; the
  `create_indexes=False` rows compare `Pipeline(..., create_indexes=False)` with the floor without that
  index. The plain-table raw paths are in the details. DuckDB and SQLite get a new database file per
  sample; PostgreSQL a new schema or table, dropped after.
- **End to end vs dlt (1M rows).** The incremental resource above over 1M rows (pages of 1,000), into a
  new database per sample: our `Pipeline.run` against dlt's `pipeline.run` (extract, normalize, load),
  3 samples each; the table must hold every row.
- **Task in Airflow.** One process of `airflow dags test <dag> --use-executor` per sample (LocalExecutor,
  an api-server for the task's execution API, SQLite metadata DB): a DAG whose one task is a
  `StatefulLoadOperator` appending {inc} rows into PostgreSQL, against one whose plain `@task` inserts the
  same rows through `PipelineStateHook`'s engine (SQLAlchemy `executemany`). Wall time of the CLI process;
  one untimed run of each first.
- **Checkpoints.** A 1M-row backfill through an ascending incremental cursor (`row_order="asc"`) with
  `checkpoint_every=100_000` against the same run without checkpoints, a new database per sample.
- **Commit latency.** One pipeline per state size (1 KiB, 64 KiB, 1 MiB, 16 MiB of resource state) in
  one database; a sample changes one key and times the commit function on an open transaction (lock, read
  and decode the newest version, compare, encode, insert, prune, commit).
- **History.** Two databases with one real committed run each (retention off); one then gets
  {versions} older committed versions inserted by a single `INSERT ... SELECT` from a generated series
  per table (`benchmarks/history.py`; PostgreSQL then gets the `VACUUM ANALYZE` autovacuum would run). The
  clock covers a clean worker's restore as above.
- **Peak RSS.** Each sample is a fresh `python -m benchmarks.rss` process that streams the rows (pages of
  1,000 generated on the fly) through `Pipeline.run` into a new database and reports its own `VmHWM`
  (peak resident set) from `/proc/self/status`.
- **PostgreSQL** is a throwaway local cluster from Debian's binaries (`benchmarks/postgres.py`), with
  `fsync=off`, `synchronous_commit=off`, `full_page_writes=off` for every contender alike; clients
  connect over TCP on 127.0.0.1. DuckDB and SQLite files live on the local disk.
"""


def render(info: RunInfo, measures: list[Measure], plans: dict[str, dict[str, str]]) -> str:
    s = info.sizes
    out = [
        "# Benchmarks",
        "",
        "<!-- generated by `python -m benchmarks`; edit benchmarks/, not this file -->",
        "",
        f"Generated {info.started:%Y-%m-%d %H:%M} UTC by `{info.command}` in {info.seconds / 60:.1f} min "
        f"({s.name} sizes: {s.reps} repetitions, {s.incremental_rows:,}-row incremental runs, "
        f"{s.bulk_rows:,}-row bulk loads, {s.history_versions:,} historical versions, "
        f"peak RSS at {s.rss_small:,} and {s.rss_large:,} rows).",
    ]
    if s.name != "full":
        out += ["", f"**{s.name} run: the sizes differ from the targets' — not the numbers of record.**"]
    met = sum(m.met for m in measures)
    out += [
        "",
        "## Results",
        "",
        f"{met} of {len(measures)} rows meet their target. Times include everything the contender does "
        "(see Method); ratios > 1 mean we are faster for the dlt and raw rows.",
        "",
        *summary_table(measures),
        "",
        "## Machine and versions",
        "",
        *info.environment,
        "",
        "## Method",
        "",
        METHOD.format(
            reps=s.reps, inc=f"{s.incremental_rows:,}", versions=f"{s.history_versions:,}"
        ).rstrip(),
        "",
        "## Details",
        "",
        *details(measures),
    ]
    if plans:
        out += ["", "## Query plans on the long history", ""]
        out += [
            "The restore query and the retention cutoff a commit runs (with `max_state_versions=100`), as "
            "the database plans them on the table with the long history (PostgreSQL: `EXPLAIN ANALYZE`, "
            "actual row counts; SQLite: `EXPLAIN QUERY PLAN`; DuckDB: `EXPLAIN`).",
        ]
        for database, queries in plans.items():
            for label, plan in queries.items():
                out += ["", f"### {database}: {label}", "", "```", plan, "```"]
    profiled = [m for m in measures if m.profile]
    if profiled:
        out += ["", "## Profiles of the rows that miss their target", ""]
        out += ["cProfile of one extra run of our side, right after the measurement."]
        for m in profiled:
            out += ["", f"### {m.key}: {m.title}", "", "```", m.profile or "", "```"]
    if ANALYSIS.exists():
        out += ["", ANALYSIS.read_text(encoding="utf-8").strip()]
    return "\n".join(out) + "\n"
