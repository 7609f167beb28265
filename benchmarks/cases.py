"""The benchmark cases of issue 8, each producing :class:`~benchmarks.results.Measure` rows."""

from __future__ import annotations

import contextlib
import cProfile
import io
import os
import pstats
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks import contenders as c
from benchmarks import rss
from benchmarks.data import make_rows
from benchmarks.history import query_plans, seed_history, state_rows
from benchmarks.postgres import PostgresServer
from benchmarks.results import TIMES, Measure
from benchmarks.timing import alternate


@dataclass(frozen=True)
class Sizes:
    """How big and how often; ``full`` is what the targets are stated for."""

    name: str
    reps: int
    incremental_rows: int
    bulk_rows: int
    history_versions: int
    rss_small: int
    rss_large: int


SIZES = {
    "full": Sizes("full", 5, 10_000, 1_000_000, 100_000, 100_000, 1_000_000),
    "quick": Sizes("quick", 3, 10_000, 100_000, 100_000, 20_000, 200_000),
    "smoke": Sizes("smoke", 1, 200, 2_000, 500, 1_000, 10_000),
}


@dataclass
class Context:
    sizes: Sizes
    workdir: Path
    postgres: PostgresServer | None
    log: Callable[[str], None]
    profile: bool = True
    #: query plans collected by the history case, per database
    plans: dict[str, dict[str, str]] = field(default_factory=dict)
    #: reruns of our side, for profiling the measures that miss their target
    reruns: dict[str, Callable[[], None]] = field(default_factory=dict)
    _counter: int = 0

    def new_db(self, kind: str, label: str) -> c.Database:
        """A new, empty database (a new file, or a new PostgreSQL database)."""
        self._counter += 1
        if kind == "postgresql":
            assert self.postgres is not None
            return c.Database(kind, self.postgres.create_database(label))
        suffix = {"duckdb": "duckdb", "sqlite": "sqlite"}[kind]
        folder = self.workdir / "db"
        folder.mkdir(exist_ok=True)
        return c.Database(kind, f"{kind}:///{folder / f'{label}_{self._counter}.{suffix}'}")

    def drop_db(self, db: c.Database) -> None:
        if db.kind == "postgresql":
            assert self.postgres is not None
            self.postgres.drop_database(db.url)
            return
        stem, suffix = os.path.splitext(db.path)
        for path in Path(db.path).parent.glob(Path(stem).name + "*" + suffix + "*"):
            path.unlink(missing_ok=True)


def _label(kind: str) -> str:
    return {"duckdb": "DuckDB", "postgresql": "PostgreSQL", "sqlite": "SQLite"}[kind]


def _fmt(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


# -- 1-3: incremental runs and restore, ours vs dlt ------------------------------------------------


def incremental_vs_dlt(ctx: Context, kind: str) -> list[Measure]:
    n, reps = ctx.sizes.incremental_rows, ctx.sizes.reps
    dbs = {"ours": ctx.new_db(kind, "inc_ours"), "dlt": ctx.new_db(kind, "inc_dlt")}
    runs = {"ours": c.ours_run, "dlt": c.dlt_run}
    restores = {"ours": c.ours_restore, "dlt": c.dlt_restore}
    loaded_rows = {"ours": 0, "dlt": 0}
    next_id = {"ours": 0, "dlt": 0}
    work = ctx.workdir / "pipelines"

    def run(name: str, new: bool) -> float:
        start = next_id[name] if new else next_id[name] - n
        seconds, loaded = runs[name](dbs[name], make_rows(start, n), work)
        expected = n if new else 0
        if loaded != expected:
            raise RuntimeError(f"{name} loaded {loaded} rows into {kind}, expected {expected}")
        loaded_rows[name] += loaded
        next_id[name] = max(next_id[name], start + n)
        return seconds

    ctx.log(f"  warm-up: first run of each pipeline into {_label(kind)} (untimed)")
    for name in runs:
        run(name, new=True)

    title = f"{_fmt(n)} rows incremental run (restore + extract + load + commit) into {_label(kind)}"
    ctx.log(f"  {title}")
    fresh = alternate({name: lambda _rep, name=name: run(name, True) for name in runs}, reps, ctx.log)
    ctx.log(f"  0 new rows of {_fmt(n)} seen, {_label(kind)}")
    seen = alternate({name: lambda _rep, name=name: run(name, False) for name in runs}, reps, ctx.log)
    ctx.log(f"  restore on a clean worker, {_label(kind)}")
    restore = alternate(
        {name: lambda _rep, name=name: restores[name](dbs[name], work)[0] for name in restores}, reps, ctx.log
    )
    counts = {name: db.count(c.TABLE, c.DATASET) for name, db in dbs.items()}
    if len(set(counts.values())) != 1 or counts["ours"] != loaded_rows["ours"]:
        raise RuntimeError(f"{_label(kind)}: tables differ after the runs: {counts}, loaded {loaded_rows}")
    versions = {name: restores[name](db, work)[1] for name, db in dbs.items()}

    def rerun_fresh() -> None:
        run("ours", new=True)

    def rerun_seen() -> None:
        run("ours", new=False)

    def rerun_restore() -> None:
        c.ours_restore(dbs["ours"], work)

    key = f"incremental_{kind}"
    ctx.reruns.update({key: rerun_fresh, f"zero_new_{kind}": rerun_seen, f"restore_{kind}": rerun_restore})
    note = f"both tables hold {counts['ours']:,} rows afterwards; state versions: {versions}"
    return [
        Measure(
            key, title, 10, True, fresh["ours"], fresh["dlt"], "dlt time / our time", notes=[note], rows=n
        ),
        Measure(
            f"zero_new_{kind}",
            f"incremental run with 0 new rows of {_fmt(n)} seen, {_label(kind)}",
            5,
            True,
            seen["ours"],
            seen["dlt"],
            "dlt time / our time",
        ),
        Measure(
            f"restore_{kind}",
            f"restore on a clean worker, {_label(kind)} (`Pipeline.sync_destination` vs dlt's)",
            10,
            True,
            restore["ours"],
            restore["dlt"],
            "dlt time / our time",
        ),
    ]


# -- 4-6: bulk loads, ours vs the raw path of each database ----------------------------------------

#: issue 19: against the raw path into our exact table shape (the floor), and without the index
_FLOOR_TARGET, _NO_INDEX_TARGET = 0.8, 0.5
NO_INDEX = "ours, create_indexes=False"
FLOOR_NO_INDEX = "floor without the UNIQUE index"


def bulk_vs_raw(ctx: Context, kind: str, rows: list[dict]) -> list[Measure]:
    n, reps = len(rows), ctx.sizes.reps
    work = ctx.workdir / "pipelines"
    contenders: dict[str, Callable[[int], float]] = {}
    extra = c.dlt_columns(n)

    if kind == "postgresql":
        ours_db, raw_db = ctx.new_db(kind, "bulk_ours"), ctx.new_db(kind, "bulk_raw")

        def ours_with(**kw: Any) -> Callable[[int], float]:
            def ours(rep: int) -> float:
                seconds = c.ours_bulk(ours_db, rows, f"bulk{rep}", work, **kw)
                _pg_exec(ours_db, f'DROP SCHEMA "bulk{rep}" CASCADE')
                return seconds

            return ours

        def copy(binary: bool) -> Callable[[int], float]:
            def contender(rep: int) -> float:
                table = f"raw_{'binary' if binary else 'text'}_{rep}"
                seconds = c.raw_pg_copy(raw_db, rows, table, binary=binary)
                _pg_exec(raw_db, f"DROP TABLE {table}")
                return seconds

            return contender

        def floor(unique: bool) -> Callable[[int], float]:
            def contender(rep: int) -> float:
                seconds = c.floor_pg_copy(raw_db, rows, extra, f"floor_{rep}", unique)
                _pg_exec(raw_db, f"DROP TABLE floor_{rep}")
                return seconds

            return contender

        floor_label = f"{c.FLOOR_LABEL} (binary COPY, UNIQUE _dlt_id)"
        contenders = {
            "ours": ours_with(),
            NO_INDEX: ours_with(create_indexes=False),
            "psycopg COPY (binary)": copy(True),
            "psycopg COPY (text)": copy(False),
            floor_label: floor(True),
            FLOOR_NO_INDEX: floor(False),
        }
    else:

        def ours_with(**kw: Any) -> Callable[[int], float]:
            def ours(rep: int) -> float:
                db = ctx.new_db(kind, "bulk_ours")
                try:
                    return c.ours_bulk(db, rows, "bulk", work, **kw)
                finally:
                    ctx.drop_db(db)

            return ours

        def raw(fn: Callable[[str, list[dict]], float]) -> Callable[[int], float]:
            def contender(rep: int) -> float:
                db = ctx.new_db(kind, "bulk_raw")
                try:
                    return fn(db.path, rows)
                finally:
                    ctx.drop_db(db)

            return contender

        def floor(fn: Callable[..., float], **kw: Any) -> Callable[[int], float]:
            return raw(lambda path, rows: fn(path, rows, extra, **kw))

        if kind == "duckdb":
            # our DuckDB tables have no UNIQUE index by default (dlt's create_indexes=False there)
            floor_label = f"{c.FLOOR_LABEL} (Arrow scan, no index as dlt's duckdb)"
            contenders = {
                "ours": ours_with(),
                "DuckDB INSERT ... SELECT UNNEST(lists)": raw(c.raw_duckdb_unnest),
            }
            if c.has_pyarrow():
                contenders["DuckDB Arrow scan (pyarrow.Table)"] = raw(c.raw_duckdb_arrow)
                contenders[floor_label] = floor(c.floor_duckdb_arrow)
        else:
            floor_label = f"{c.FLOOR_LABEL} (executemany, UNIQUE _dlt_id)"
            contenders = {
                "ours": ours_with(),
                NO_INDEX: ours_with(create_indexes=False),
                "sqlite3 executemany": raw(c.raw_sqlite_executemany),
                floor_label: floor(c.floor_sqlite_executemany),
                FLOOR_NO_INDEX: floor(c.floor_sqlite_executemany, unique=False),
            }

    title = f"{_fmt(n)} rows {TIMES} 6 columns into {_label(kind)}"
    ctx.log(f"  {title}")
    series = alternate(contenders, reps, ctx.log)
    ours_series = series.pop("ours")
    floor_series = series.pop(floor_label)
    ctx.reruns[f"bulk_{kind}"] = lambda: contenders["ours"](reps)
    measures = [
        Measure(
            f"bulk_{kind}",
            f"{title}, vs the same raw path into our exact table shape ({floor_label.split('(', 1)[1]}",
            _FLOOR_TARGET,
            True,
            ours_series,
            floor_series,
            "our throughput / floor throughput",
            extras=[s for name, s in series.items() if name not in (NO_INDEX, FLOOR_NO_INDEX)],
            rows=n,
            notes=["the other series are the raw paths into a plain 6-column table (no dlt columns)"],
        )
    ]
    if NO_INDEX in series:
        ctx.reruns[f"bulk_noindex_{kind}"] = lambda: contenders[NO_INDEX](reps)
        measures.append(
            Measure(
                f"bulk_noindex_{kind}",
                f"{title} with `create_indexes=False`, vs the same raw path into our table shape without the "
                "UNIQUE `_dlt_id` index",
                _NO_INDEX_TARGET,
                True,
                series[NO_INDEX],
                series[FLOOR_NO_INDEX],
                "our throughput / floor throughput",
                rows=n,
            )
        )
    return measures


def _pg_exec(db: c.Database, sql: str) -> None:
    engine = sa.create_engine(db.url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


# -- 7: restore with a long history ------------------------------------------------------------------


def restore_history(ctx: Context, kind: str) -> Measure:
    from airflow_state_provider import Pipeline

    versions, reps = ctx.sizes.history_versions, ctx.sizes.reps
    work = ctx.workdir / "pipelines"
    short, long = ctx.new_db(kind, "hist_1"), ctx.new_db(kind, "hist_long")
    for db in (short, long):
        c.ours_run(db, make_rows(0, 100), work, max_state_versions=None)
    p = Pipeline(c.PIPELINE, destination=long.url, dataset_name=c.DATASET, max_state_versions=None)
    with contextlib.closing(_Disposer(p.engine)):
        started = time.perf_counter()
        seed_history(p.engine, kind, versions)
        ctx.log(
            f"  seeded {versions:,} versions into {_label(kind)} in {time.perf_counter() - started:.1f} s"
        )
        total = state_rows(p.engine)
    labels = {"1 version": short, f"{_fmt(versions)} versions": long}
    ctx.log(f"  restore with {_fmt(versions)} historical versions vs 1, {_label(kind)}")
    series = alternate(
        {
            label: lambda _rep, db=db: c.ours_restore(db, work, max_state_versions=None)[0]
            for label, db in labels.items()
        },
        reps,
        ctx.log,
    )
    ctx.plans[_label(kind)] = query_plans(long)

    def rerun() -> None:
        c.ours_restore(long, work, max_state_versions=None)

    ctx.reruns[f"history_{kind}"] = rerun
    return Measure(
        f"history_{kind}",
        f"restore with {_fmt(versions)} historical versions (retention off) vs 1 version, {_label(kind)}",
        1.5,
        False,
        series[f"{_fmt(versions)} versions"],
        series["1 version"],
        "time with history / time with 1 version",
        notes=[f"{total:,} state rows in the long history"],
    )


class _Disposer:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        self.engine.dispose()


# -- 8: peak memory ---------------------------------------------------------------------------------


def peak_rss(ctx: Context, kind: str) -> Measure:
    small, large, reps = ctx.sizes.rss_small, ctx.sizes.rss_large, ctx.sizes.reps
    baselines: list[int] = []

    def sample(rows: int) -> Callable[[int], float]:
        def contender(_rep: int) -> float:
            db = ctx.new_db(kind, "rss")
            try:
                result = rss.measure(db.url, rows)
            finally:
                ctx.drop_db(db)
            baselines.append(result["baseline_kib"])
            return result["peak_kib"] / 1024

        return contender

    ctx.log(f"  peak RSS loading {_fmt(large)} rows vs {_fmt(small)}, {_label(kind)} (fresh process each)")
    series = alternate(
        {f"{_fmt(small)} rows": sample(small), f"{_fmt(large)} rows": sample(large)}, reps, ctx.log
    )
    where = (
        "the server's memory is not in it" if kind == "postgresql" else "the database engine runs in-process"
    )
    return Measure(
        f"rss_{kind}",
        f"peak RSS loading {_fmt(large)} rows vs {_fmt(small)} rows, {_label(kind)}",
        1.3,
        False,
        series[f"{_fmt(large)} rows"],
        series[f"{_fmt(small)} rows"],
        "peak RSS at the large size / at the small size",
        unit="MiB",
        notes=[
            f"RSS after imports, before loading: {min(baselines) / 1024:.0f} to "
            f"{max(baselines) / 1024:.0f} MiB; "
            f"{where}; rows are generated page by page inside the child"
        ],
    )


# -- profiles of what misses its target ---------------------------------------------------------------

_SITE = re.compile(r"\S*/(site-packages|lib/python3\.\d+)/")


def profile(fn: Callable[[], None], top: int = 22) -> str:
    """cProfile of one call: the top functions by cumulative and by own time, paths shortened."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        fn()
    finally:
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    text = out.getvalue().replace(str(Path.cwd()) + "/", "")
    text = _SITE.sub("", text)
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(line for line in lines if not line.startswith(("Ordered by", "List reduced")))


def cleanup(ctx: Context) -> None:
    shutil.rmtree(ctx.workdir / "pipelines", ignore_errors=True)
