#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set up, run the Airflow tests on the Airflow 3.1 line,
# then the whole suite on Airflow 3.3. Extra arguments go to the Airflow 3.3 run.
set -euo pipefail
cd "$(dirname "$0")/.."

# DuckDB's bindings print reference-leak reports at interpreter exit, after pytest's summary: drop them
quiet() { "$@" 2>&1 | grep --line-buffered -v -E '^(nanobind: | - leaked | - \.\.\. skipped remainder|See https://nanobind)'; }
bash scripts/setup.sh main
bash scripts/setup.sh airflow31
echo "== lint, types and import layers (configuration in pyproject.toml)"
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
.venv/bin/python -m mypy
# import-linter: the layering rules of docs/architecture.md (no console script: venv copies break shebangs)
.venv/bin/python -c 'from importlinter.cli import lint_imports_command; lint_imports_command()'
echo "== Airflow 3.1 line: Airflow tests"
quiet .venv-af31/bin/python -m pytest -q -p no:cacheprovider tests/airflow -m "not e2e and not slow"
echo "== Airflow 3.3 line: whole suite"
quiet .venv/bin/python -m pytest -p no:cacheprovider "$@"
