"""Side-by-side benchmarks of airflow-state-provider (DESIGN §11, issue 8).

Run ``python -m benchmarks`` (``--quick`` for a short run); it writes ``BENCHMARKS.md``. Nothing here is
imported by the package or asserted on by the test suite: timings are reported, never tested.
"""
