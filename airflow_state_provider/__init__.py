"""airflow-state-provider: persistent, scoped pipeline state committed with the loaded rows.

The public API (DESIGN §3). Nothing here imports Airflow.
"""
