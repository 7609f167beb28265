"""Long-mode fault injection: SIGKILL loading processes many times and report the figures.

Runs ``tests/reliability/test_fault_injection.py`` (which starts its own throwaway PostgreSQL) with
``ASP_FAULT_TRIALS`` set, collects every series' figures and prints them as Markdown (the tables in
``RELIABILITY.md``)::

    python scripts/fault_injection.py --trials 1000
    python scripts/fault_injection.py --trials 200 --dialects sqlite,postgresql,duckdb --seed 7

Exit status: pytest's (0 when every invariant held after every kill).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = ("extract", "insert", "commit", "anywhere")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=1000, help="trials over all series (default 1000)")
    parser.add_argument(
        "--dialects", default="sqlite,postgresql", help="comma-separated (sqlite,postgresql,duckdb)"
    )
    parser.add_argument("--seed", type=int, help="base seed (default: random, printed in failures)")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.jsonl"
        env = {
            **os.environ,
            "ASP_FAULT_TRIALS": str(args.trials),
            "ASP_FAULT_DIALECTS": args.dialects,
            "ASP_FAULT_REPORT": str(report),
        }
        if args.seed is not None:
            env["ASP_FAULT_SEED"] = str(args.seed)
        started = time.perf_counter()
        test = "tests/reliability/test_fault_injection.py"
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=REPO, env=env
        )
        wall = time.perf_counter() - started
        series = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []

    text = render(series, wall, args)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return done.returncode


def render(series: list[dict], wall: float, args: argparse.Namespace) -> str:
    lines = [
        f"Fault injection, long mode: `ASP_FAULT_TRIALS={args.trials}`, dialects {args.dialects}, "
        f"wall time {wall / 60:.1f} min.",
        "",
        "| destination | disposition | checkpoints | trials | kills: extract | insert | commit | anywhere "
        "| not killed | rows verified | duplicates | missing | seconds |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    totals: Counter = Counter()
    variants: Counter = Counter()
    for s in sorted(series, key=lambda s: (s["dialect"], s["disposition"], s["checkpoints"])):
        k = s["kills"]
        lines.append(
            f"| {s['dialect']} | {s['disposition']} | {'yes' if s['checkpoints'] else 'no'} | {s['trials']} "
            f"| {k['extract']} | {k['insert']} | {k['commit']} | {k['anywhere']} | {s['not_killed']} "
            f"| {s['rows_verified']} | {s['duplicates']} | {s['missing']} | {s['seconds']:.0f} |"
        )
        totals.update({"trials": s["trials"], "not_killed": s["not_killed"], "rows": s["rows_verified"]})
        totals.update({"duplicates": s["duplicates"], "missing": s["missing"], "seconds": s["seconds"]})
        totals.update({f"kills_{p}": k[p] for p in PHASES})
        variants.update(s["variants"])
    kills = sum(totals[f"kills_{p}"] for p in PHASES)
    lines += [
        f"| **total** | | | {totals['trials']} | {totals['kills_extract']} | {totals['kills_insert']} "
        f"| {totals['kills_commit']} | {totals['kills_anywhere']} | {totals['not_killed']} "
        f"| {totals['rows']} | {totals['duplicates']} | {totals['missing']} | {totals['seconds']:.0f} |",
        "",
        f"**{kills} kills** in {totals['trials']} trials; data lost: {totals['missing']} rows; "
        f"duplicated: {totals['duplicates']} rows.",
        "",
        "Kills per variant: " + ", ".join(f"{v} {n}" for v, n in sorted(variants.items())) + ".",
        "",
        "Machine: " + machine() + ".",
    ]
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    postgres = "PostgreSQL (not found)"
    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True)
        postgres = out.stdout.strip().replace("postgres (PostgreSQL)", "PostgreSQL")
        break
    import sqlalchemy

    return (
        f"{cpu}, {os.cpu_count()} cores{memory}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"SQLite {sqlite3.sqlite_version}, {postgres}"
    )


if __name__ == "__main__":
    sys.exit(main())
