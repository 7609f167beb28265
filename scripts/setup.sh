#!/usr/bin/env bash
# Prepare this machine for the project: PostgreSQL server binaries (Debian's package, when root and
# missing) and a virtual environment with the pinned Python packages.
#   scripts/setup.sh            -> .venv       (Airflow 3.3 line, everything the tests need)
#   scripts/setup.sh airflow31  -> .venv-af31  (Airflow 3.1 line, for the Airflow tests)
# Idempotent: a venv whose lock file has not changed is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

flavour="${1:-main}"
case "$flavour" in
  main) venv=.venv; lock=requirements/test.txt ;;
  airflow31) venv=.venv-af31; lock=requirements/airflow31.txt ;;
  *) echo "usage: $0 [main|airflow31]" >&2; exit 2 ;;
esac

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "== installing PostgreSQL (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi

stamp="$venv/.lock-sha"
want="$(sha256sum "$lock" pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== creating $venv from $lock"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$lock"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi
