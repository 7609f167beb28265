"""``StatefulLoadOperator``: restore the pipeline state, extract, load and commit in one task."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_state_provider._airflow_compat import AirflowFailException, AirflowTaskTerminated, BaseOperator
from airflow_state_provider.exceptions import PERMANENT_ERRORS, ConfigurationError
from airflow_state_provider.extract.resource import WRITE_DISPOSITIONS, Resource
from airflow_state_provider.hooks.pipeline_state import PipelineStateHook
from airflow_state_provider.state.context import external_interval

if TYPE_CHECKING:
    from airflow_state_provider._airflow_compat import Context


class StatefulLoadOperator(BaseOperator):
    """Run ``data`` through a :class:`~airflow_state_provider.Pipeline` writing to an Airflow connection.

    The task restores the newest committed state of ``pipeline_name`` from the destination, binds the
    incrementals (to the run's data interval where they allow external schedulers), extracts, and
    commits the rows, the load record and the new state version in one transaction. A failed or
    killed try commits nothing, so retries are safe. State never travels through XCom.

    Errors that would fail every try the same way (``SchemaConflictError``, ``StateNotSerializableError``,
    ``StateTooLargeError``, ``IncrementalCursorTypeError``, ``ConfigurationError``) end the task at once
    with ``AirflowFailException`` (chained to the error); anything else, such as ``StateConflictError``,
    a lock timeout or an outage, is retried as the task's ``retries`` allow.

    :param data: a source, a resource, a list of them, rows, or a zero-argument callable returning
        one of these, called when the task runs (keeps extraction out of DAG parsing).
    :param pipeline_name: the pipeline whose state is restored and committed. (templated)
    :param destination_conn_id: a ``pipeline_state``, ``postgres``, ``sqlite`` or ``duckdb``
        connection. (templated)
    :param dataset_name: the dataset (schema); default from the connection, else
        ``<pipeline_name>_dataset``. (templated)
    :param write_disposition: ``append``, ``replace`` or ``merge`` for every resource run. (templated)
    :param table_name: the table (required when ``data`` is plain rows). (templated)
    :param primary_key: primary key hint for every resource run. (templated)
    :param merge_key: merge key hint for every resource run (``merge`` replaces rows by this key).
        (templated)
    :param refresh: ``drop_sources``, ``drop_resources`` or ``drop_data`` (dlt's semantics). (templated)
    :param checkpoint_every: commit data and state every N rows, so a failed backfill resumes.
    :param dev_mode: load into a fresh, timestamped dataset and start from empty state.
    :param read_only_sources: source names whose source-level state this task may only read, mapped
        to the reason a write error shows (set by ``decompose_source`` for non-writer tasks).
    :param do_xcom_push: push :meth:`LoadInfo.asdict` (a small summary, never state). Default False.
    """

    template_fields: Sequence[str] = (
        "pipeline_name",
        "dataset_name",
        "table_name",
        "destination_conn_id",
        "write_disposition",
        "primary_key",
        "merge_key",
        "refresh",
    )
    # sources and resources hold user functions and generators: never deep-copy them
    shallow_copy_attrs: Sequence[str] = ("data",)
    ui_color = "#d8eefb"

    def __init__(
        self,
        *,
        data: Any,
        pipeline_name: str,
        destination_conn_id: str = PipelineStateHook.default_conn_name,
        dataset_name: str | None = None,
        write_disposition: str | None = None,
        table_name: str | None = None,
        primary_key: str | Sequence[str] | None = None,
        merge_key: str | Sequence[str] | None = None,
        refresh: str | None = None,
        checkpoint_every: int | None = None,
        dev_mode: bool = False,
        read_only_sources: dict[str, str] | None = None,
        do_xcom_push: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(do_xcom_push=do_xcom_push, **kwargs)
        self.data = data
        self.pipeline_name = pipeline_name
        self.destination_conn_id = destination_conn_id
        self.dataset_name = dataset_name
        self.write_disposition = write_disposition
        self.table_name = table_name
        self.primary_key = primary_key
        self.merge_key = merge_key
        self.refresh = refresh
        self.checkpoint_every = checkpoint_every
        self.dev_mode = dev_mode
        self.read_only_sources = read_only_sources
        self._running = False

    def resolve_data(self) -> Any:
        """``data``, called first if it is a plain callable (resources are callable but are data)."""
        if callable(self.data) and not isinstance(self.data, Resource):
            return self.data()
        return self.data

    @cached_property
    def hook(self) -> PipelineStateHook:
        """The destination hook, built once per task (on first use, after templates are rendered)."""
        return PipelineStateHook(destination_conn_id=self.destination_conn_id)

    def execute(self, context: Context) -> dict[str, Any] | None:
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        if start is None or end is None:
            self.log.info("No data interval (manual run): incrementals continue from the committed state")
        else:
            self.log.info("Data interval %s to %s", start, end)
        hook = self.hook
        try:
            self._check_arguments()
            pipeline = hook.get_pipeline(
                self.pipeline_name, dataset_name=self.dataset_name, dev_mode=self.dev_mode
            )
            data = self.resolve_data()
            self._running = True
            with external_interval(start, end):
                info = pipeline.run(
                    data,
                    write_disposition=self.write_disposition,
                    table_name=self.table_name,
                    primary_key=self.primary_key,
                    merge_key=self.merge_key,
                    checkpoint_every=self.checkpoint_every,
                    read_only_sources=self.read_only_sources,
                    refresh=self.refresh,
                )
        except PERMANENT_ERRORS as exc:
            # the same inputs fail the same way on every try: do not spend the retries
            raise AirflowFailException(f"{type(exc).__name__}: {exc} (not retried)") from exc
        finally:
            self._running = False
            hook.dispose()
        summary = info.asdict()
        self.log.info("Load summary: %s", format_summary(summary))
        return summary if self.do_xcom_push else None

    def _check_arguments(self) -> None:
        """Rendered arguments that can never work raise ``ConfigurationError`` (not retried).

        A template that renders empty (``"{{ params.refresh or '' }}"``) means "not set".
        """
        from airflow_state_provider.pipeline import REFRESH_MODES

        for name in ("write_disposition", "primary_key", "merge_key", "refresh"):
            if getattr(self, name) == "":
                setattr(self, name, None)

        allowed = {"write_disposition": WRITE_DISPOSITIONS, "refresh": REFRESH_MODES}
        for name, values in allowed.items():
            value = getattr(self, name)
            if value is not None and value not in values:
                raise ConfigurationError(
                    f"task {self.task_id!r}: {name} must be one of {', '.join(values)}, got {value!r}"
                )
        every = self.checkpoint_every
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ConfigurationError(
                f"task {self.task_id!r}: checkpoint_every must be an integer >= 1, got {every!r}"
            )

    def on_kill(self) -> None:
        """Abort a run in progress so that its open transaction rolls back.

        Airflow calls this from the SIGTERM handler in the task's main thread; raising here unwinds
        ``Pipeline.run``, which rolls back before the exception leaves it. On ``execution_timeout``
        the timeout exception has already rolled the run back and nothing is left to do.
        """
        if self._running:
            self._running = False
            self.log.warning(
                "Task killed: aborting pipeline %r; its open transaction is rolled back", self.pipeline_name
            )
            raise AirflowTaskTerminated(f"pipeline {self.pipeline_name!r} aborted by on_kill")


def format_summary(summary: dict[str, Any]) -> str:
    """``LoadInfo.asdict()`` as ``key=value`` pairs; row counts as ``rows.<table>=N``."""
    parts = []
    for key, value in summary.items():
        if key == "row_counts":
            parts += [f"rows.{table}={count}" for table, count in value.items()]
        elif key == "changed_paths":
            parts.append(f"changed_paths={len(value)}")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)
