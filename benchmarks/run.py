"""``python -m benchmarks``: run every case and write ``BENCHMARKS.md``.

python -m benchmarks            # full sizes (the targets' own), ~15 minutes on 2 cores
python -m benchmarks --quick    # smaller bulk and RSS sizes, 3 repetitions, a few minutes
python -m benchmarks --smoke --only commit   # tiny sizes, 1 repetition: checks the script runs

A full run writes the report of record, BENCHMARKS.md, and its raw results, benchmarks/last_run.json.
--quick and --smoke runs write theirs to a new temporary directory (or --workdir) unless --output /
--json say where, so a trial run never overwrites the report of record.
python -m benchmarks --only bulk --only history --output /tmp/b.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from benchmarks import cases, saved, user_cases
from benchmarks.data import make_rows
from benchmarks.postgres import start_postgres
from benchmarks.report import RunInfo, machine, render, versions
from benchmarks.results import TIMES, Measure

CASES = ("incremental", "bulk", "history", "rss", "checkpoint", "commit", "e2e", "airflow")
ROOT = Path(__file__).resolve().parent.parent


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller bulk/RSS sizes and 3 repetitions")
    size.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repetition (for the test suite)")
    parser.add_argument("--reps", type=int, help="repetitions per measure (default: 5, quick 3, smoke 1)")
    parser.add_argument("--only", action="append", choices=CASES, help="run only these cases (repeatable)")
    parser.add_argument(
        "--output",
        type=Path,
        help="report file (default: BENCHMARKS.md; for --quick/--smoke a file in a temporary directory)",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip profiling the rows that miss")
    parser.add_argument(
        "--json",
        type=Path,
        help="where the raw results go (default: benchmarks/last_run.json; for --quick/--smoke a file in "
        "a temporary directory)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        action="append",
        metavar="JSON",
        help="only write the report again from saved results (repeat to join the parts of a split run)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="where databases and pipelines dirs go (default: a tmp dir)"
    )
    args = parser.parse_args(argv)
    _default_outputs(args)
    return args


def _default_outputs(args: argparse.Namespace) -> None:
    """Fill in ``--output``/``--json``: the tracked report of record for a full run (or ``--render``),
    a fresh directory under ``--workdir`` or the system's temporary directory for ``--quick``/``--smoke``."""
    if args.output is not None and args.json is not None:
        return
    if (args.quick or args.smoke) and not args.render:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
        where = Path(tempfile.mkdtemp(prefix="asp-bench-report-", dir=args.workdir))
        report, results = where / "BENCHMARKS.md", where / "last_run.json"
        _log(f"a {'quick' if args.quick else 'smoke'} run: the report and results go to {where}")
    else:
        report, results = ROOT / "BENCHMARKS.md", ROOT / "benchmarks" / "last_run.json"
    args.output = report if args.output is None else args.output
    args.json = results if args.json is None else args.json


def _warm_up() -> None:
    """Import everything the contenders use before any clock starts."""
    import dlt  # noqa: F401
    import duckdb  # noqa: F401
    import psycopg  # noqa: F401

    import airflow_state_provider.pipeline  # noqa: F401

    with contextlib.suppress(ImportError):
        import pyarrow  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        info, measures, plans = saved.load_parts(args.render)
        args.output.write_text(render(info, _ordered(measures), plans), encoding="utf-8")
        _log(f"wrote {args.output} from {args.render}")
        return 0
    sizes = cases.SIZES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.reps:
        sizes = cases.Sizes(**{**sizes.__dict__, "reps": args.reps})
    selected = args.only or list(CASES)
    started_at, started = dt.datetime.now(dt.UTC), time.perf_counter()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    _warm_up()
    measures: list[Measure] = []
    with tempfile.TemporaryDirectory(prefix="asp-bench-", dir=args.workdir) as tmp, start_postgres() as pg:
        ctx = cases.Context(sizes, Path(tmp), pg, _log, profile=not args.no_profile)
        steps: list[tuple[str, Callable[[], list[Measure]]]] = []
        if "incremental" in selected:
            for kind in ("duckdb", "postgresql"):
                steps.append((f"incremental vs dlt, {kind}", lambda k=kind: cases.incremental_vs_dlt(ctx, k)))
        rows: list[dict] = []
        if "bulk" in selected:

            def bulk(kind: str) -> list[Measure]:
                if not rows:
                    _log(f"  building {sizes.bulk_rows:,} rows (untimed)")
                    rows.extend(make_rows(0, sizes.bulk_rows))
                return cases.bulk_vs_raw(ctx, kind, rows)

            for kind in ("postgresql", "duckdb", "sqlite"):
                steps.append((f"bulk load, {kind}", lambda k=kind: bulk(k)))
        if "history" in selected:
            for kind in ("postgresql", "duckdb", "sqlite"):
                steps.append(
                    (f"restore with history, {kind}", lambda k=kind: [cases.restore_history(ctx, k)])
                )
        if "rss" in selected:
            for kind in ("postgresql", "duckdb", "sqlite"):
                steps.append((f"peak RSS, {kind}", lambda k=kind: [cases.peak_rss(ctx, k)]))
        if "checkpoint" in selected:
            for kind in ("postgresql", "duckdb", "sqlite"):
                steps.append(
                    (
                        f"checkpointed backfill, {kind}",
                        lambda k=kind: [
                            user_cases.checkpoint_backfill(ctx, k, user_cases.rows_for(ctx, rows))
                        ],
                    )
                )
        if "commit" in selected:
            for kind in ("postgresql", "duckdb", "sqlite"):
                steps.append((f"commit latency, {kind}", lambda k=kind: [user_cases.commit_latency(ctx, k)]))
        if "e2e" in selected:
            for kind in ("duckdb", "postgresql"):
                steps.append(
                    (
                        f"end to end vs dlt, {kind}",
                        lambda k=kind: [user_cases.e2e_vs_dlt(ctx, k, user_cases.rows_for(ctx, rows))],
                    )
                )
        if "airflow" in selected:
            steps.append(("task overhead in Airflow", lambda: [user_cases.airflow_task_overhead(ctx)]))
        for label, step in steps:
            _log(f"== {label}")
            measures.extend(step())
            cases.cleanup(ctx)
        measures = _ordered(measures)
        if ctx.profile:
            for m in measures:
                rerun = ctx.reruns.get(m.key)
                if not m.met and rerun is not None:
                    _log(f"== profiling {m.key}")
                    m.profile = cases.profile(rerun)
        info = RunInfo(
            sizes,
            "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:]),
            started_at,
            time.perf_counter() - started,
            pg.version,
            [*machine(), *versions(pg.version)],
        )
        saved.save(args.json, info, measures, ctx.plans)
        args.output.write_text(render(info, measures, ctx.plans), encoding="utf-8")
    _log(f"wrote {args.output} and {args.json} ({sum(m.met for m in measures)}/{len(measures)} targets met)")
    for m in measures:
        _log(f"  {'ok  ' if m.met else 'MISS'} {m.ratio:8.2f}{TIMES} (target {m.target_text})  {m.key}")
    return 0


_ORDER = (
    "incremental",
    "zero_new",
    "restore",
    "e2e",
    "airflow",
    "bulk",
    "checkpoint",
    "commit",
    "history",
    "rss",
)


def _ordered(measures: list[Measure]) -> list[Measure]:
    """The issue's table order: incremental, 0 new rows, restore, bulk, history, memory."""
    return sorted(measures, key=lambda m: next(i for i, p in enumerate(_ORDER) if m.key.startswith(p)))
