"""A wheel built from the repository installs into a fresh virtual environment and registers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_state_provider import __version__
from tests.airflow.conftest import REPO

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kwargs)


def test_wheel_installs_into_a_fresh_venv_and_airflow_lists_it(tmp_path: Path):
    # build from a copy: an in-tree build would write build/ and *.egg-info into the work tree
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "airflow_state_provider", src / "airflow_state_provider")
    # build isolation: a fresh venv's setuptools is too old for pyproject's PEP 639 license field
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp_path / "dist", src)
    (wheel,) = (tmp_path / "dist").glob("airflow_state_provider-*.whl")

    # the fresh venv gets this venv's exact versions, so the install resolves nothing new
    frozen = run(sys.executable, "-m", "pip", "freeze", "--exclude-editable").stdout.splitlines()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("\n".join(line for line in frozen if not line.startswith(("-e", "#"))) + "\n")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", "-c", constraints, f"{wheel}[airflow]")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow_home")
    listed = run(venv / "bin" / "airflow", "providers", "list", env=env, cwd=tmp_path).stdout
    line = next(line for line in listed.splitlines() if line.startswith("airflow-state-provider"))
    assert __version__ in line
    where = run(
        venv / "bin" / "python",
        "-c",
        "import airflow_state_provider.hooks.pipeline_state as m; print(m.__file__)",
        env=env,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(str(venv))
