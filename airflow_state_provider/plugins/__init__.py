"""The "Pipeline state" Airflow UI plugin (Airflow 3.1+): see :mod:`.plugin`."""
