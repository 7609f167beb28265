"""``StatefulLoadOperator``: restore the pipeline state, extract, load and commit in one task."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pendulum

from airflow_state_provider._airflow_compat import (
    AirflowFailException,
    AirflowTaskTerminated,
    AssetAlias,
    BaseOperator,
)
from airflow_state_provider.destination.audit import task_writer, writing_as
from airflow_state_provider.exceptions import PERMANENT_ERRORS, ConfigurationError
from airflow_state_provider.extract.resource import WRITE_DISPOSITIONS, Resource
from airflow_state_provider.hooks.pipeline_state import PipelineStateHook
from airflow_state_provider.operators._mapping import mapped_slot
from airflow_state_provider.state.context import MISSING_INTERVAL_POLICIES, external_interval, slot_suffix

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
    :param checkpoint_every: commit ascending cursors (``row_order="asc"``) with their rows every N
        rows, so a failed backfill resumes; other rows wait for the final commit (docs/checkpoints.md).
    :param dev_mode: load into a fresh, timestamped dataset and start from empty state.
    :param read_only_sources: source names whose source-level state this task may only read, mapped
        to the reason a write error shows (set by ``decompose_source`` for non-writer tasks).
    :param state_key: a suffix for the state slots of this task: each resource keeps its state under
        ``<resource>__<state_key>`` (its table keeps its name). Default: none for an unmapped task;
        for a mapped task, one derived from the values of the instance's mapped arguments
        (``orders__region_eu``). Letters, digits, ``.``, ``-`` and single ``_``. (templated)
    :param interval_timezone: IANA zone the data interval is taken in, which decides the days of
        ``date`` cursors. Default: the timezone of the DAG's timetable, else of the DAG.
    :param on_missing_interval: what incrementals with ``allow_external_schedulers=True`` do in a run
        without a range (no data interval, or a zero-length one): ``"continue"`` from the committed
        cursor (the default; the log says so) or ``"raise"``.
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
        "state_key",
    )
    #: the mapped arguments that key a mapped instance's slot are the function's (decorator) or data
    _maps_function_arguments = False
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
        state_key: str | None = None,
        interval_timezone: str | None = None,
        on_missing_interval: str = "continue",
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
        self.state_key = state_key
        self.interval_timezone = interval_timezone
        if on_missing_interval not in MISSING_INTERVAL_POLICIES:
            raise ValueError(
                f"task {kwargs.get('task_id')!r}: on_missing_interval must be one of "
                f"{', '.join(MISSING_INTERVAL_POLICIES)}, got {on_missing_interval!r}"
            )
        self.on_missing_interval = on_missing_interval
        self._running = False
        #: (dataset, table, rows, [(column, type)]) of the last load, for the OpenLineage facets
        self._loaded: list[tuple[str, str, int, list[tuple[str, str]]]] = []
        # the loaded tables are known when the task runs: their asset events go through this alias
        self._asset_alias = AssetAlias(name=asset_alias_name(pipeline_name))
        self.outlets = [*self.outlets, self._asset_alias]

    def resolve_data(self) -> Any:
        """``data``, called first if it is a plain callable (resources are callable but are data)."""
        if callable(self.data) and not isinstance(self.data, Resource):
            return self.data()
        return self.data

    @cached_property
    def hook(self) -> PipelineStateHook:
        """The destination hook, built once per task (on first use, after templates are rendered)."""
        return PipelineStateHook(destination_conn_id=self.destination_conn_id)

    def _timezone(self) -> Any:
        """The zone interval bounds are taken in: ``interval_timezone``, the timetable's, the DAG's."""
        if self.interval_timezone:
            return pendulum.timezone(self.interval_timezone)
        dag = self.dag if self.has_dag() else None
        zone = getattr(getattr(dag, "timetable", None), "_timezone", None)
        return zone or getattr(dag, "timezone", None) or pendulum.UTC

    def _interval(self, context: Context) -> tuple[Any, Any]:
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        if start is None or end is None:
            self.log.info(
                "No data interval (a run without a logical date): incrementals with "
                "allow_external_schedulers %s",
                "raise (on_missing_interval='raise')"
                if self.on_missing_interval == "raise"
                else "continue from the committed cursor",
            )
            return None, None
        zone = self._timezone()
        start, end = pendulum.instance(start).in_timezone(zone), pendulum.instance(end).in_timezone(zone)
        self.log.info("Data interval %s to %s (timezone %s)", start, end, getattr(zone, "name", zone))
        return start, end

    def execute(self, context: Context) -> dict[str, Any] | None:
        suffix = mapped_slot(
            self, context, decorated=self._maps_function_arguments, state_key=self.state_key, log=self.log
        )
        if suffix:
            map_index = getattr(context.get("ti"), "map_index", -1)
            self.log.info(
                "State slots of this task%s: each resource keeps its state under <resource>%s",
                f" (mapped instance {map_index})" if map_index >= 0 else "",
                suffix,
            )
        start, end = self._interval(context)
        hook = self.hook
        try:
            self._check_arguments()
            pipeline = hook.get_pipeline(
                self.pipeline_name, dataset_name=self.dataset_name, dev_mode=self.dev_mode
            )
            data = self.resolve_data()
            self._running = True
            with (
                external_interval(start, end, on_missing=self.on_missing_interval),
                slot_suffix(suffix),
                writing_as(task_writer(context.get("ti"))),
            ):
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
        else:
            self._running = False
            # on the run's engine, before it is disposed: no second connection for lineage
            self._record_tables(pipeline, info)
        finally:
            self._running = False
            hook.dispose()
        summary = info.asdict()
        self.log.info("Load summary: %s", format_summary(summary))
        self._emit_asset_events(context, info)
        return summary if self.do_xcom_push else None

    def _record_tables(self, pipeline: Any, info: Any) -> None:
        """Remember each loaded table's columns (read back from the database) for lineage."""
        import sqlalchemy as sa

        from airflow_state_provider.destination.dialects import dialect_class

        self._loaded = []
        try:
            with pipeline.engine.connect() as conn:
                existing_columns = dialect_class(conn).existing_columns
                for table, rows in info.row_counts.items():
                    columns = existing_columns(conn, info.dataset_name, table) or {}
                    fields = [(name, str(type_)) for name, type_ in columns.items()]
                    self._loaded.append((info.dataset_name, table, rows, fields))
        except sa.exc.SQLAlchemyError as exc:  # lineage is a report: never fail a committed load on it
            self.log.warning("Could not read the loaded tables' columns for lineage: %s", exc)

    def _emit_asset_events(self, context: Context, info: Any) -> None:
        """One asset event per loaded table, with the load id, row count and state version."""
        outlet_events = context.get("outlet_events")
        if outlet_events is None:  # execute() called outside a task run
            return
        alias = outlet_events[self._asset_alias]
        for dataset, table, rows, _ in self._loaded:
            asset = self.hook.table_asset(dataset, table)
            extra = {"load_id": info.load_id, "row_count": rows, "state_version": info.state_version}
            alias.add(asset, extra=extra)
            self.log.info("Asset event %s %s", asset.uri, format_summary(extra))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: one output dataset per loaded table (namespace from the connection, the
        table's schema facet, its row count as output statistics). None without the OpenLineage
        provider, or before a load."""
        try:
            from airflow.providers.common.compat.openlineage.facet import (
                OutputDataset,
                OutputStatisticsOutputDatasetFacet,
                SchemaDatasetFacet,
                SchemaDatasetFacetFields,
            )
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        namespace = self.hook.lineage_namespace()
        outputs = [
            OutputDataset(
                namespace=namespace,
                name=self.hook.lineage_name(dataset, table),
                facets={
                    "schema": SchemaDatasetFacet(
                        fields=[SchemaDatasetFacetFields(name=n, type=t) for n, t in fields]
                    )
                },
                outputFacets={"outputStatistics": OutputStatisticsOutputDatasetFacet(rowCount=rows)},
            )
            for dataset, table, rows, fields in self._loaded
        ]
        return OperatorLineage(outputs=outputs)

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


def asset_alias_name(pipeline_name: str) -> str:
    """The asset alias through which a pipeline's tasks emit their tables' asset events."""
    return f"pipeline_state/{pipeline_name}"


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
