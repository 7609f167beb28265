#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set up, then run on Airflow 3.3 (all tests) and run the
# Airflow tests again on the Airflow 3.1 line. Extra arguments go to the first pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh main
bash scripts/setup.sh airflow31
echo "== Airflow 3.1 line: Airflow tests"
.venv-af31/bin/python -m pytest -q -p no:cacheprovider tests/airflow -m "not e2e and not slow"
echo "== Airflow 3.3 line: whole suite"
.venv/bin/python -m pytest -p no:cacheprovider "$@"
