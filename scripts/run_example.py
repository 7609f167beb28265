"""Run an example DAG twice, end to end, on the embedded default destination (a SQLite file).

    python scripts/run_example.py [DAG_ID] [--workdir DIR]

Sets up a private AIRFLOW_HOME (metadata DB migrated), points the ``pipeline_state_default``
connection at ``<workdir>/warehouse.sqlite``, and runs the DAG with ``dag.test()`` for two logical
dates, each on an empty pipelines dir as on a fresh worker. After each run it prints the rows loaded
and the state committed in the destination, decoded. The second run restores the first one's state
and continues from it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAGS_FOLDER = REPO / "dags_examples"

#: example DAG id -> the logical dates of its two runs
EXAMPLES = {
    "taskflow_incremental_events": (datetime(2024, 1, 4, tzinfo=UTC), datetime(2024, 1, 8, tzinfo=UTC)),
    "chess_archives": (datetime(2024, 3, 15, tzinfo=UTC), datetime(2024, 6, 15, tzinfo=UTC)),
    "shop_source": (datetime(2024, 1, 4, tzinfo=UTC), datetime(2024, 1, 8, tzinfo=UTC)),
    "decomposed_source": (datetime(2024, 1, 4, tzinfo=UTC), datetime(2024, 1, 8, tzinfo=UTC)),
}
SHOWN_ROWS = 3
#: tables the provider keeps for itself in a dataset (state, loads, audit, resource map): not loaded data
BOOKKEEPING_PREFIXES = ("_dlt", "_asp_", "_pipeline_state")


def airflow_env(workdir: Path) -> dict[str, str]:
    """The environment an example runs in; set before Airflow is imported."""
    conn = {
        "conn_type": "pipeline_state",
        "host": str(workdir / "warehouse.sqlite"),
        "extra": {"dialect": "sqlite"},
    }
    return {
        "AIRFLOW_HOME": str(workdir / "airflow_home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_PIPELINE_STATE_DEFAULT": json.dumps(conn),
    }


def plain(value: object) -> str:
    """Typed state values (datetimes, decimals, ...) in their ISO / str form."""
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if isoformat else str(value)


def show(dag, warehouse: Path) -> None:
    """Print rows and committed state of every stateful task of ``dag``."""
    core_log = logging.getLogger("airflow_state_provider")
    level = core_log.level
    core_log.setLevel(logging.WARNING)  # quiet this reader's own restore lines
    try:
        pipelines = {(t.pipeline_name, t.dataset_name) for t in dag.tasks if hasattr(t, "pipeline_name")}
        for pipeline_name, dataset_name in sorted(pipelines):
            show_pipeline(pipeline_name, dataset_name, warehouse)
    finally:
        core_log.setLevel(level)


def show_pipeline(pipeline_name: str, dataset_name: str, warehouse: Path) -> None:
    """Print the tables of a pipeline's dataset (count and a few rows of the last load) and its state."""
    import sqlalchemy as sa

    from airflow_state_provider import Pipeline

    pipeline = Pipeline(pipeline_name, destination=f"sqlite:///{warehouse}", dataset_name=dataset_name)
    with pipeline.sql_client() as client:
        conn = client.connection
        tables = sorted(sa.inspect(conn).get_table_names(schema=dataset_name))
        bookkeeping = [t for t in tables if t.startswith(BOOKKEEPING_PREFIXES)]
        for table in (t for t in tables if t not in bookkeeping):
            count = conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar()
            print(f"\n  table {dataset_name}.{table}: {count} rows; some of the last load:")
            newest = conn.execute(
                sa.text(
                    f'SELECT * FROM "{table}" WHERE _dlt_load_id = (SELECT max(_dlt_load_id) FROM "{table}")'
                )
            )
            for row in newest.mappings().fetchmany(SHOWN_ROWS):
                print("   ", dict(row))
        print(f"\n  bookkeeping tables (the provider's, not loaded data): {', '.join(bookkeeping)}")
        versions = conn.execute(
            sa.text("SELECT count(*) FROM _dlt_pipeline_state WHERE pipeline_name = :p"), {"p": pipeline_name}
        ).scalar()
    state = pipeline.state
    pipeline.engine.dispose()
    print(f"\n  committed state of {pipeline_name!r}, version {state['_state_version']} ({versions} kept):")
    print("   ", json.dumps(state, indent=2, default=plain).replace("\n", "\n    "))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dag_id", nargs="?", default="taskflow_incremental_events", choices=sorted(EXAMPLES))
    parser.add_argument("--workdir", type=Path, help="keep Airflow home, warehouse and pipelines dirs here")
    args = parser.parse_args()
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="asp-example-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.update(airflow_env(workdir))

    print(f"== {args.dag_id}: Airflow home and warehouse in {workdir}")
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)

    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        print(bag.import_errors, file=sys.stderr)
        return 1
    dag = bag.dags[args.dag_id]
    for number, logical_date in enumerate(EXAMPLES[args.dag_id], start=1):
        pipelines_dir = workdir / f"pipelines-run{number}"
        pipelines_dir.mkdir(exist_ok=True)
        os.environ["AIRFLOW_STATE_PIPELINES_DIR"] = str(pipelines_dir)
        print(f"\n== run {number}: dag.test(logical_date={logical_date:%Y-%m-%d}), clean dir {pipelines_dir}")
        run = dag.test(logical_date=logical_date)
        print(f"\n== run {number} finished: {run.state}")
        if run.state != "success":
            return 1
        show(dag, workdir / "warehouse.sqlite")
    return 0


if __name__ == "__main__":
    sys.exit(main())
