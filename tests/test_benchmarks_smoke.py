"""A tiny run of the benchmark script, so it cannot rot. It asserts on the report's shape only: no timing
is ever asserted (timings on a shared 2-core machine are not a test)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.postgres import ENV_URL, pg_bindir
from benchmarks.run import CASES

ROOT = Path(__file__).resolve().parent.parent

#: every row of issue 8's table, per database
EXPECTED_ROWS = [
    r"rows incremental run \(restore \+ extract \+ load \+ commit\) into DuckDB",
    r"rows incremental run \(restore \+ extract \+ load \+ commit\) into PostgreSQL",
    r"incremental run with 0 new rows of \S+ seen, DuckDB",
    r"incremental run with 0 new rows of \S+ seen, PostgreSQL",
    r"restore on a clean worker, DuckDB",
    r"restore on a clean worker, PostgreSQL",
    r"rows \u00d7 6 columns into PostgreSQL, vs the same raw path into our exact table shape",
    r"rows \u00d7 6 columns into DuckDB, vs the same raw path into our exact table shape",
    r"rows \u00d7 6 columns into SQLite, vs the same raw path into our exact table shape",
    r"rows \u00d7 6 columns into PostgreSQL with `create_indexes=False`",
    r"rows \u00d7 6 columns into SQLite with `create_indexes=False`",
    r"rows end to end \(new pipeline, extract, load, commit\) into DuckDB",
    r"rows end to end \(new pipeline, extract, load, commit\) into PostgreSQL",
    r"-row backfill .* vs without checkpoints, PostgreSQL",
    r"-row backfill .* vs without checkpoints, DuckDB",
    r"-row backfill .* vs without checkpoints, SQLite",
    r"commit latency with a \S+ \S+ state vs a 1 KiB state, PostgreSQL",
    r"commit latency with a \S+ \S+ state vs a 1 KiB state, DuckDB",
    r"commit latency with a \S+ \S+ state vs a 1 KiB state, SQLite",
    r"historical versions \(retention off\) vs 1 version, PostgreSQL",
    r"historical versions \(retention off\) vs 1 version, DuckDB",
    r"historical versions \(retention off\) vs 1 version, SQLite",
    r"peak RSS loading \S+ rows vs \S+ rows, PostgreSQL",
    r"peak RSS loading \S+ rows vs \S+ rows, DuckDB",
    r"peak RSS loading \S+ rows vs \S+ rows, SQLite",
]


@pytest.fixture
def smoke_run(tmp_path: Path) -> Callable[..., tuple[str, Path]]:
    """Runs ``python -m benchmarks --smoke --only <case>...`` in ``tmp_path`` (PostgreSQL server
    binaries or ``ENV_URL`` needed: CI fails without them, elsewhere the test is skipped); returns the
    report's text and the saved results file."""
    if pg_bindir() is None and not os.environ.get(ENV_URL):
        msg = "PostgreSQL server binaries not found (install Debian's 'postgresql' package)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)

    def run(cases: list[str], timeout: float) -> tuple[str, Path]:
        report, results = tmp_path / "BENCHMARKS.md", tmp_path / "results.json"
        only = [arg for case in cases for arg in ("--only", case)]
        args = ["--smoke", *only, "--output", str(report), "--json", str(results), "--workdir", str(tmp_path)]
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        return report.read_text(encoding="utf-8"), results

    return run


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(1200)
def test_smoke_run_writes_every_row(tmp_path: Path, smoke_run: Callable[..., tuple[str, Path]]) -> None:
    # the Airflow case (a metadata DB, an api-server, `airflow dags test` processes) has its own test
    text, results = smoke_run([case for case in CASES if case != "airflow"], timeout=1150)

    # the saved results render the same report again
    again = tmp_path / "again.md"
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "--render", str(results), "--output", str(again)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert again.read_text(encoding="utf-8") == text

    lines = text.split("## Results", 1)[1].split("\n## ", 1)[0].splitlines()
    table = [line for line in lines if line.startswith("| ") and not line.startswith(("| measure", "| ---"))]
    assert len(table) == len(EXPECTED_ROWS), table
    for pattern in EXPECTED_ROWS:
        matching = [row for row in table if re.search(pattern, row)]
        assert len(matching) == 1, pattern
        cells = [cell.strip() for cell in matching[0].strip("|").split("|")]
        assert len(cells) == 6
        assert re.fullmatch(r"[\u2265\u2264] [\d.]+\u00d7", cells[1])
        assert re.search(r"\d", cells[2]) and re.search(r"\d", cells[3])
        assert re.match(r"[\d.]+\u00d7", cells[4])
        assert cells[5] in ("yes", "**no**")

    sections = ("## Machine and versions", "## Method", "## Details", "## Query plans on the long history")
    for section in sections:
        assert section in text
    assert "smoke run: the sizes differ from the targets'" in text


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
def test_smoke_airflow_task_row(smoke_run: Callable[..., tuple[str, Path]]) -> None:
    """The Airflow case: real `airflow dags test --use-executor` runs (an untimed warm-up and a timed
    run of each DAG), one row in the report."""
    text, _ = smoke_run(["airflow"], timeout=850)
    results_table = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in results_table.splitlines() if line.startswith("| ") and "measure" not in line]
    rows = [row for row in rows if not row.startswith("| ---")]
    assert len(rows) == 1 and "`StatefulLoadOperator` task vs a plain `@task`" in rows[0], rows
