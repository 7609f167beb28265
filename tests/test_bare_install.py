"""The wheel with only its declared dependencies: the core loads incrementally, the Airflow layer says
what to install.

Catches an import of an undeclared package in the core (pendulum was one) and an Airflow import that
leaks into it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

LOAD = textwrap.dedent(
    """
    import sys
    from airflow_state_provider import Pipeline, incremental, resource

    ROWS = [{"id": i, "updated_at": f"2024-01-0{1 + i % 3}T00:00:00Z"} for i in range(9)]

    @resource(primary_key="id")
    def events(updated_at=incremental("updated_at", initial_value="2024-01-01T00:00:00Z")):
        yield [r for r in ROWS if r["updated_at"] >= updated_at.start_value]

    p = Pipeline("bare", destination=f"sqlite:///{sys.argv[1]}", pipelines_dir=sys.argv[2])
    first = p.run(events)
    ROWS.append({"id": 9, "updated_at": "2024-01-04T00:00:00Z"})
    second = p.run(events)
    print(first.row_counts["events"], second.row_counts["events"], second.state_version)
    for name in ("airflow", "duckdb", "psycopg", "dlt"):
        assert name not in sys.modules, f"the core imported {name}"
    """
)


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)


def test_core_runs_from_a_bare_install_and_the_airflow_layer_names_the_extra(tmp_path: Path):
    """And a DuckDB URL without the DuckDB driver names the ``[duckdb]`` extra."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "airflow_state_provider", src / "airflow_state_provider")
    built = run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", src)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("airflow_state_provider-*.whl")

    # pinned to this venv's versions, so the install only takes what the wheel declares
    frozen = run(sys.executable, "-m", "pip", "freeze", "--exclude-editable").stdout.splitlines()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("\n".join(line for line in frozen if not line.startswith(("-e", "#"))) + "\n")
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    python = venv / "bin" / "python"
    installed = run(python, "-m", "pip", "install", "-q", "-c", constraints, wheel)
    assert installed.returncode == 0, installed.stderr
    names = {line.split("==")[0].lower() for line in run(python, "-m", "pip", "freeze").stdout.splitlines()}
    assert not names & {"apache-airflow", "apache-airflow-core", "dlt", "duckdb", "psycopg"}

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    script = tmp_path / "load.py"
    script.write_text(LOAD)
    loaded = run(python, script, tmp_path / "w.sqlite", tmp_path / "pipelines", env=env, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["9", "1", "2"]  # boundary rows deduplicated, only id 9 is new

    duck = "from airflow_state_provider import Pipeline; Pipeline('p', destination='duckdb:///d.duckdb')"
    duckdb = run(python, "-c", duck, env=env, cwd=tmp_path)
    assert duckdb.returncode != 0
    assert (
        "install the 'duckdb' extra (pip install 'airflow-state-provider[duckdb]', "
        "or pip install -e '.[duckdb]' from a checkout)" in duckdb.stderr
    )

    hook = run(python, "-c", "import airflow_state_provider.hooks.pipeline_state", env=env, cwd=tmp_path)
    assert hook.returncode != 0
    assert (
        "install the 'airflow' extra (pip install 'airflow-state-provider[airflow]', "
        "or pip install -e '.[airflow]' from a checkout)" in hook.stderr
    )
