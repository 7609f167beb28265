"""UI benchmark (issue 18): opening a pipeline with 100k state versions in the "Pipeline state" page.

What the page reads, timed without HTTP: the newest version (restore query), the first history page
(50 versions, their writers and changed paths) and the incrementals; a page deep in the history
(keyset pagination, ``before`` a load id 90% of the way back); and the overview of the dataset. Every
seeded version has an audit row. PostgreSQL, a throwaway server.

    python -m benchmarks.ui_history [--versions 100000] [--reps 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from airflow_state_provider import Pipeline, incremental, operations, resource
from airflow_state_provider.plugins import browser
from benchmarks.contenders import DATASET, PIPELINE
from benchmarks.history import seed_history, state_rows
from benchmarks.postgres import start_postgres

TARGET_SECONDS = 1.0


def _pipeline(url: str, workdir: Path) -> Pipeline:
    return Pipeline(
        PIPELINE, destination=url, dataset_name=DATASET, pipelines_dir=workdir, max_state_versions=None
    )


def _open_page(pipeline: Pipeline) -> int:
    newest = operations.newest(pipeline)
    page = browser.history_page(pipeline)
    browser.incrementals(newest.state)
    return len(page.versions)


def _median_ms(fn, reps: int) -> tuple[float, float, float]:
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), min(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    with start_postgres() as server, tempfile.TemporaryDirectory() as tmp:
        url = server.create_database("ui")
        workdir = Path(tmp)

        @resource(name="events")
        def events(updated_at=incremental("updated_at", initial_value="2024-01-01T00:00:00+00:00")):
            yield [{"id": n, "updated_at": f"2024-01-01T{n:02d}:00:00+00:00"} for n in range(1, 11)]

        pipeline = _pipeline(url, workdir)
        pipeline.run(events())
        seed_history(pipeline.engine, "postgresql", args.versions)
        with pipeline.engine.begin() as conn:  # a writer for every seeded version, as a task writes it
            conn.exec_driver_sql(
                f'INSERT INTO "{DATASET}"._pipeline_state_audit (pipeline_name, _dlt_load_id, version, '
                "written_at, writer, dag_id, run_id, task_id, try_number) "
                "SELECT pipeline_name, _dlt_load_id, version, created_at, 'task', 'd', 'r' || version, 't', "
                "1 "
                f'FROM "{DATASET}"._dlt_pipeline_state s WHERE NOT EXISTS (SELECT 1 FROM '
                f'"{DATASET}"._pipeline_state_audit a WHERE a._dlt_load_id = s._dlt_load_id)'
            )
            conn.exec_driver_sql(f'ANALYZE "{DATASET}"._pipeline_state_audit')
        pipeline.engine.dispose()
        pipeline = _pipeline(url, workdir)
        total = state_rows(pipeline.engine)
        s = pipeline.store.state_table
        with pipeline.engine.connect() as conn:
            deep = conn.execute(
                sa.select(s.c._dlt_load_id)
                .where(s.c.pipeline_name == PIPELINE)
                .order_by(s.c._dlt_load_id.desc())
                .offset(int(total * 0.9))
                .limit(1)
            ).scalar_one()
        _open_page(pipeline)  # warm the pool and the catalog cache, as a running api-server has them
        first = _median_ms(lambda: _open_page(pipeline), args.reps)
        deep_page = _median_ms(lambda: browser.history_page(pipeline, before=deep), args.reps)
        overview = _median_ms(lambda: browser.pipelines(pipeline.engine, DATASET), args.reps)
        pipeline.engine.dispose()
    print(f"state versions: {total}")
    print("| measure | target | median | min | max | met |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, (med, lo, hi) in (
        (f"open a pipeline with {total:,} versions (newest + first history page + incrementals)", first),
        (f"history page 90% deep in {total:,} versions (keyset)", deep_page),
        (f"overview of the dataset (pipelines, newest version and load) with {total:,} versions", overview),
    ):
        met = "yes" if med / 1000 < TARGET_SECONDS else "**no**"
        print(f"| {label}, PostgreSQL | < 1 s | {med:.1f} ms | {lo:.1f} ms | {hi:.1f} ms | {met} |")


if __name__ == "__main__":
    main()
