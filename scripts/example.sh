#!/usr/bin/env bash
# Set up .venv (pinned) and run an example DAG end to end on the embedded default (SQLite): twice, each
# time on a clean pipelines dir, printing the loaded rows and the committed state.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh main
.venv/bin/python scripts/run_example.py "$@"
