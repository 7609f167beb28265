"""``Pipeline``: restore → bind → extract → load + commit, in one transaction (DESIGN §5).

Usable without Airflow; the operator and the TaskFlow decorator are thin wrappers around it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal, get_args

import sqlalchemy as sa

from airflow_state_provider import operations
from airflow_state_provider.destination import engine as destination_engine
from airflow_state_provider.destination import naming
from airflow_state_provider.destination import tables as destination_tables
from airflow_state_provider.destination.commit import Committed, commit
from airflow_state_provider.destination.dialects import dialect_class, dialect_for
from airflow_state_provider.destination.loader import Loader, Writer
from airflow_state_provider.destination.store import (
    DEFAULT_MAX_STATE_BYTES,
    DEFAULT_MAX_VERSIONS,
    DEFAULT_WARN_STATE_BYTES,
    StateStore,
    StoredState,
    new_load_id,
)
from airflow_state_provider.exceptions import (
    ConfigurationError,
    InvalidIdentifierError,
    StateConflictError,
)
from airflow_state_provider.extract.incremental import Incremental
from airflow_state_provider.extract.resource import Resource, WriteDisposition, from_data
from airflow_state_provider.extract.source import Source
from airflow_state_provider.local_state import LocalStateFile
from airflow_state_provider.state import context, model

log = logging.getLogger("airflow_state_provider.pipeline")

#: execution options of connections that only read (SQLite then skips its write lock)
READ_ONLY = {"asp_read_only": True}

#: ``Pipeline.run(refresh=...)`` modes, dlt's names and semantics.
RefreshMode = Literal["drop_sources", "drop_resources", "drop_data"]
REFRESH_MODES: tuple[RefreshMode, ...] = get_args(RefreshMode)

DESTINATION_TYPES = {
    "sqlite": "dlt.destinations.sqlalchemy",
    "duckdb": "dlt.destinations.duckdb",
    "postgresql": "dlt.destinations.postgres",
}


@dataclass
class LoadInfo:
    """What a run committed, returned by :meth:`Pipeline.run`. Small and JSON-friendly: ``asdict()`` is
    what an operator may push to XCom."""

    #: the pipeline that ran
    pipeline_name: str
    #: the dataset (schema; on SQLite an attached database) the rows and state went to, as the database
    #: names it (normalized like dlt; with ``dev_mode`` suffixed with the run's UTC timestamp)
    dataset_name: str
    #: the ``_dlt_loads.load_id`` of the final commit (dlt's format, seconds since the epoch as text);
    #: ``None`` when nothing was committed (no rows and no state change)
    load_id: str | None
    #: rows written per table of this run (final commit and checkpoints together), by table name
    row_counts: dict[str, int] = field(default_factory=dict)
    #: the newest committed state version (``_state_version``) after the run; unchanged when the run
    #: changed no state
    state_version: int = 0
    #: True when the run committed a new state version
    state_changed: bool = False
    #: dotted state paths the run changed (leaves or the smallest changed sub-trees), sorted
    changed_paths: list[str] = field(default_factory=list)
    #: how many checkpoints committed before the final commit (``checkpoint_every``)
    checkpoints: int = 0

    def asdict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-serializable)."""
        return asdict(self)


@dataclass
class _Group:
    """A root resource with the transformers fed by it, all run in one pass."""

    source_key: str
    root: Resource
    children: dict[str, list[Resource]]
    selected: set[str]


class _Run:
    """Mutable bookkeeping of one ``Pipeline.run``."""

    def __init__(self, pipeline: Pipeline, restored: StoredState | None, checkpoint_every: int | None):
        self.pipeline = pipeline
        #: the newest committed document this run knows, and the load id of its state row
        self.committed = model.copy_tree(restored.state) if restored else pipeline._fresh_state()
        self.known_load_id = restored.load_id if restored else None
        #: the merge base kept an older value of a slot than the committed document (a pinned slot that
        #: another writer changed): every later commit must merge, or it would write that value back
        self.diverged = False
        self.has_committed = restored is not None
        #: the document user code and incrementals write (``current.*``)
        self.working = model.copy_tree(self.committed)
        #: per slot, the committed value ``working`` started from (the three-way merge base)
        self.base = model.copy_tree(self.committed)
        self.checkpoint_every = checkpoint_every
        self.rows_since_commit = 0
        self.row_counts: dict[str, int] = {}
        self.changed_paths: list[str] = []
        self.state_changed = False
        self.checkpoints = 0
        self.load_id = new_load_id()
        self.last_committed_load_id: str | None = None
        #: commit even without rows or state change: ``refresh`` dropped or emptied tables
        self.force_commit = False
        #: groups whose resources were bound, with every incremental bound per resource name
        self.started: list[_Group] = []
        self.incrementals: dict[tuple[str, str], list[Incremental]] = {}
        #: groups already told in the log why their rows wait for the final commit
        self.deferred: set[tuple[str, str]] = set()
        #: ``refresh``: its mode and the slots it wiped (and whose tables it dropped or emptied)
        self.refreshed: tuple[str, Callable[[model.Slot], bool]] | None = None

    def pinned(self, slot: model.Slot) -> bool:
        """Slots running code may hold references into: its sources' keys and its resources' slots."""
        if len(slot) == 3:
            return any(g.source_key == slot[1] for g in self.started)
        if len(slot) == 4:
            return (slot[1], slot[3]) in self.incrementals
        return False


def _holding_destination(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``method`` inside ``self.dialect.holding()``: a DuckDB file stays open for the whole run and
    is released when it returns (see :meth:`Dialect.holding`)."""

    @functools.wraps(method)
    def wrapper(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        with self.dialect.holding():
            return method(self, *args, **kwargs)

    return wrapper


class Pipeline:
    """A named pipeline whose state lives in ``dataset_name`` of ``destination``.

    ``destination`` is a SQLAlchemy URL (``sqlite:///f.db``, ``duckdb:///f.duckdb``,
    ``postgresql+psycopg://...``), an ``Engine``, or an Airflow ``PipelineStateHook``. An ``Engine`` you
    pass is never changed: the pipeline opens its own connections the way it does (same URL, connect
    arguments and connect-time listeners) in a pool of its own, :attr:`engine`; an in-memory SQLite or
    DuckDB engine raises ``ConfigurationError`` (pass its URL instead).

    ``restore_from_destination=False`` keeps the state only in ``<pipelines_dir>/<pipeline>/state.json``
    (a persistent worker): the destination gets data and ``_dlt_loads`` rows but no state rows.
    ``dev_mode=True`` suffixes the dataset with a UTC timestamp, so the pipeline starts from fresh state
    (``full_refresh`` is its deprecated alias). ``max_state_versions``, ``max_state_bytes`` and
    ``warn_state_bytes`` set retention and the size guard (DESIGN §5.4). ``lock_timeout`` (seconds,
    default 300) bounds every wait for a lock (the commit lock, a table's DDL lock, a DuckDB file held
    by another process, a SQLite write lock); a longer wait raises ``LockTimeoutError``.
    """

    def __init__(
        self,
        pipeline_name: str,
        destination: Any = None,
        dataset_name: str | None = None,
        *,
        restore_from_destination: bool = True,
        dev_mode: bool = False,
        full_refresh: bool | None = None,
        pipelines_dir: str | os.PathLike[str] | None = None,
        max_state_versions: int | None = DEFAULT_MAX_VERSIONS,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
        warn_state_bytes: int = DEFAULT_WARN_STATE_BYTES,
        batch_size: int = 10_000,
        lock_timeout: float | None = None,
        create_indexes: bool | None = None,
    ) -> None:
        """``create_indexes`` is dlt's destination option of that name: whether a table this pipeline
        creates gets a UNIQUE index on ``_dlt_id``. None (default) follows dlt's default per database:
        yes on PostgreSQL and SQLite, no on DuckDB. ``False`` loads faster (no index to maintain); the
        ids stay unique by construction. Tables that already exist keep what they have."""
        if not pipeline_name or not isinstance(pipeline_name, str):
            raise ValueError("pipeline_name must be a non-empty string")
        _check_pipeline_name(pipeline_name)
        if destination is None:
            raise ValueError(f"pipeline {pipeline_name!r}: a destination (URL, Engine or hook) is required")
        if full_refresh is not None:
            warnings.warn(
                "Pipeline(full_refresh=...) is deprecated; use dev_mode=... (dlt renamed it too)",
                DeprecationWarning,
                stacklevel=2,
            )
            dev_mode = dev_mode or full_refresh
        self.pipeline_name = pipeline_name
        self.dev_mode = dev_mode
        dataset = dataset_name or f"{pipeline_name}_dataset"
        if dev_mode:
            dataset = f"{dataset}_{datetime.now(UTC):%Y%m%d%H%M%S}"
        # dev mode starts fresh because its dataset is new; its state rows go there, as in dlt
        self.restore_from_destination = restore_from_destination
        self.batch_size = batch_size
        self.create_indexes = create_indexes
        # seconds any lock wait may take (default DEFAULT_LOCK_TIMEOUT), then LockTimeoutError
        self.dialect = dialect_for(
            _engine_from(destination), lock_timeout=lock_timeout, pipeline_name=pipeline_name
        )
        #: the engine the pipeline works on: a caller's Engine is used through a private one that opens
        #: connections like it (Dialect.working_engine), so the caller's engine is never changed
        self.engine = self.dialect.engine
        #: the configured name, as the state document records it (dlt keeps it unnormalized there)
        self.configured_dataset_name = dataset
        dataset = _physical_dataset_name(dataset, self.engine)
        self.dataset_name = dataset
        self.dialect.prepare(dataset)
        self.store = StateStore(
            self.dialect,
            dataset,
            pipeline_name,
            max_versions=max_state_versions,
            max_state_bytes=max_state_bytes,
            warn_state_bytes=warn_state_bytes,
        )
        base_dir = Path(pipelines_dir) if pipelines_dir else default_pipelines_dir()
        self.working_dir = base_dir / pipeline_name
        if dev_mode:
            # unlike dlt, which wipes the working dir, leave the normal local state alone
            self.working_dir = self.working_dir / "dev_mode" / dataset
        #: the local copy of the state (the only one with ``restore_from_destination=False``)
        self.local_state = LocalStateFile(self.working_dir, dev_mode=dev_mode)
        self._committed: dict | None = None
        self._first_run = True
        self._tables_ready = False

    # -- properties -------------------------------------------------------------------------------
    @property
    def destination_type(self) -> str:
        return DESTINATION_TYPES.get(self.engine.dialect.name, f"sqlalchemy.{self.engine.dialect.name}")

    @property
    def state(self) -> dict:
        """A deep copy of the newest committed state document (restored on first access)."""
        if self._committed is None:
            self.sync_destination()
        assert self._committed is not None
        return model.copy_tree(self._committed)

    @property
    def first_run(self) -> bool:
        """True until a committed state exists for this pipeline."""
        if self._committed is None:
            self.sync_destination()
        return self._first_run

    def _fresh_state(self) -> dict:
        return model.default_state(
            self.pipeline_name,
            self.configured_dataset_name,
            self.destination_type,
            schema_name=default_schema_name(self.pipeline_name),
        )

    def _standalone_source_key(self) -> str:
        """Where resources run without a source keep their state: the default schema, as in dlt."""
        restored = (self._committed or {}).get("default_schema_name")
        return restored or default_schema_name(self.pipeline_name)

    # -- restore ----------------------------------------------------------------------------------
    def sync_destination(self) -> StoredState | None:
        """Restore the newest committed state now (DESIGN §5.1); returns the row or None."""
        started = time.perf_counter()
        stored = self.local_state.read() if not self.restore_from_destination else self._read_destination()
        elapsed = (time.perf_counter() - started) * 1000
        if stored is None:
            self._committed, self._first_run = self._fresh_state(), True
            where = (
                f"dataset {self.dataset_name!r}" if self.restore_from_destination else str(self.working_dir)
            )
            log.info(
                "No committed state of pipeline %r in %s: first run (looked up in %.1f ms)",
                self.pipeline_name,
                where,
                elapsed,
            )
        else:
            restored_dataset = stored.state.get("dataset_name")
            if restored_dataset != self.configured_dataset_name:
                log.warning(
                    "Pipeline %r got restored from destination but the remote state contains a "
                    "different dataset_name %r. The current dataset_name %r will be used and the "
                    "pipeline state will be updated accordingly.",
                    self.pipeline_name,
                    restored_dataset,
                    self.configured_dataset_name,
                )
            stored.state["dataset_name"] = self.configured_dataset_name
            self._committed, self._first_run = stored.state, False
            log.info(
                "Restored state version %d of pipeline %r from %s (load %s, %d bytes) in %.1f ms",
                stored.version,
                self.pipeline_name,
                f"dataset {self.dataset_name!r}" if self.restore_from_destination else self.working_dir,
                stored.load_id,
                stored.size,
                elapsed,
            )
        return stored

    def _read_destination(self) -> StoredState | None:
        try:
            return self._read_newest()
        except sa.exc.DBAPIError as e:
            if not e.connection_invalidated:
                raise
        # a pooled connection the server had dropped (restart, failover, idle timeout): SQLAlchemy
        # renewed the pool and nothing ran yet, so read once more on a fresh connection
        return self._read_newest()

    def _read_newest(self, *, retry_if_created: bool = True) -> StoredState | None:
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**READ_ONLY)
                stored = self.store.newest(conn)
            self._tables_ready = True
            return stored
        except sa.exc.DBAPIError:
            # a missing table means "never committed"; anything else (an outage) must surface
            with self.engine.connect() as conn:
                exists = self.store.tables_exist(conn)
            if not exists:
                return None
            if retry_if_created:
                # a concurrent first run may have created the tables after our query failed
                return self._read_newest(retry_if_created=False)
            raise

    def adopt(self, state: dict) -> None:
        """Remember ``state`` as the newest committed document (what :attr:`state` returns next)."""
        self._committed, self._first_run = model.copy_tree(state), False

    # -- run --------------------------------------------------------------------------------------
    @_holding_destination
    def run(
        self,
        data: Any,
        *,
        write_disposition: WriteDisposition | None = None,
        table_name: str | None = None,
        primary_key: str | Sequence[str] | None = None,
        merge_key: str | Sequence[str] | None = None,
        checkpoint_every: int | None = None,
        read_only_sources: dict[str, str] | None = None,
        refresh: RefreshMode | None = None,
    ) -> LoadInfo:
        """Restore, extract, load and commit ``data`` (a source, resource, list of them, or rows).

        Data rows, the ``_dlt_loads`` row and the new state version are written in one transaction;
        with ``checkpoint_every=N``, a checkpoint after at least N rows also commits the rows and cursors
        of resources whose ``incremental(..., row_order="asc")`` covers them (other rows wait for the final
        commit; see ``docs/checkpoints.md``). An exception anywhere rolls the current transaction back.
        ``read_only_sources`` maps source names whose source-level state this run may only read to the
        reason a write error shows.

        ``refresh`` resets what this run extracts first, with dlt's semantics, in the same transaction
        as the load (a failed run leaves tables and state as they were): ``"drop_sources"`` drops the
        tables of every resource of the sources run and wipes their whole source state;
        ``"drop_resources"`` drops the tables and wipes the state of the resources run;
        ``"drop_data"`` empties those tables and wipes those resources' state. A resource's tables are
        its ``table_name`` and, for resources known only from the state, the table named like it.

        ``write_disposition``, ``table_name``, ``primary_key`` and ``merge_key`` override the hints of
        every resource run (``table_name`` also names the table of plain rows); ``checkpoint_every`` is
        a number of rows.

        Returns:
            :class:`LoadInfo`: the load id, rows written per table, the committed state version and
            the state paths that changed.

        Raises:
            ValueError: a bad argument (``refresh``, ``checkpoint_every``, a hint), before anything runs.
            StateConflictError: a concurrent commit changed a state slot this run changed too; nothing
                of the run was committed (retry: it restores the newest state).
            LockTimeoutError: a lock wait exceeded ``lock_timeout``; nothing was committed (retryable).
            SchemaConflictError, InvalidRowError: a row that does not fit its table; nothing committed.
            StateTooLargeError, StateNotSerializableError: the state cannot be stored.
            MissingLoadsError, StateCorruptError: the committed state cannot be restored safely.
            IncrementalCursorPathMissing, IncrementalCursorTypeError, IncrementalPrimaryKeyMissing:
                rows an incremental cannot filter.
            Any exception the resources raise, after the transaction is rolled back (rows committed by
            earlier checkpoints stay, with their state).
        """
        if refresh not in (None, *REFRESH_MODES):
            raise ValueError(
                f"pipeline {self.pipeline_name!r}: refresh must be one of {', '.join(REFRESH_MODES)} "
                f"or None, got {refresh!r}"
            )
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError(f"pipeline {self.pipeline_name!r}: checkpoint_every must be >= 1")
        hints = {
            "write_disposition": write_disposition,
            "table_name": table_name,
            "primary_key": primary_key,
            "merge_key": merge_key,
        }
        items = _as_items(data, table_name, self.pipeline_name, checkpoint_every)
        restored = self.sync_destination()
        if not self._tables_ready:
            if self.restore_from_destination:
                self.store.ensure_tables(self.engine)
            else:
                self.store.ensure_loads_table(self.engine)  # loads are recorded; state stays local
            self._tables_ready = True
        run = _Run(self, restored, checkpoint_every)
        ctx = context.RunContext(
            pipeline=self,
            state=run.working,
            read_only_sources=dict(read_only_sources or {}),
            interval=context.current_interval(),
        )
        with context.run_context(ctx):
            catalog: dict[str, dict[str, Resource]] = {}
            groups = self._plan(items, hints, catalog)
            _check_replace_not_shared(groups, self)
            _check_moved_slots(groups, run.working, self)
            _reset_replace_slots(groups, run.working)
            refresh_tables = _refresh_state(refresh, groups, catalog, run.working, self)
            if refresh is not None:
                run.refreshed = (refresh, _refresh_scope(refresh, groups))
            if refresh_tables and checkpoint_every:
                # the refreshed tables and state must land together: everything waits for the end
                log.info(
                    "pipeline %r: refresh=%s: checkpoints wait for the final commit in this run",
                    self.pipeline_name,
                    refresh,
                )
                run.checkpoint_every = None
            with self.engine.connect() as conn:
                conn.begin()
                try:
                    loader = Loader(
                        conn,
                        self.dialect,
                        self.dataset_name,
                        run.load_id,
                        pipeline_name=self.pipeline_name,
                        batch_size=self.batch_size,
                        create_indexes=self.create_indexes,
                        stage=bool(run.checkpoint_every),
                    )
                    if refresh_tables:
                        run.force_commit = self._refresh_tables(conn, refresh, refresh_tables)
                    for group in groups:
                        self._extract_group(group, loader, run, conn)
                    self._commit(conn, loader, run, final=True)
                except BaseException:
                    _rollback_after_failure(conn, self.pipeline_name)
                    raise
        committed_version = int(run.committed.get("_state_version", 0))
        info = LoadInfo(
            pipeline_name=self.pipeline_name,
            dataset_name=self.dataset_name,
            load_id=run.last_committed_load_id,
            row_counts=dict(run.row_counts),
            state_version=committed_version,
            state_changed=run.state_changed,
            changed_paths=run.changed_paths,
            checkpoints=run.checkpoints,
        )
        return info

    def _refresh_tables(self, conn: sa.Connection, refresh: str | None, tables: list[str]) -> bool:
        """Drop or empty the refreshed tables inside the load transaction; True if any existed."""
        existing = destination_tables.existing_tables(conn, self.dataset_name, tables)
        if refresh == "drop_data":
            destination_tables.truncate_tables(conn, self.dataset_name, existing)
        else:
            # all at once or none (no deadlock with a load writing to some of them), bounded wait
            self.dialect.lock_tables(conn, self.dataset_name, existing, self.pipeline_name)
            destination_tables.drop_tables(conn, self.dataset_name, existing)
        if existing:
            log.info(
                "refresh=%s: %s tables %s of dataset %r (committed with this load)",
                refresh,
                "emptied" if refresh == "drop_data" else "dropped",
                ", ".join(existing),
                self.dataset_name,
            )
        return bool(existing)

    # -- planning ---------------------------------------------------------------------------------
    def _plan(
        self,
        items: list[Resource | Source],
        hints: dict[str, Any],
        catalog: dict[str, dict[str, Resource]] | None = None,
    ) -> list[_Group]:
        """Group the resources to run; ``catalog`` (if given) receives every resource per source key."""
        groups: list[_Group] = []
        for item in items:
            if isinstance(item, Source):
                resources = item.evaluate()  # again, now with the restored state visible
                selected = set(item.selection(resources))
                source_key = item.name
            else:
                resources = {item.name: item}
                parent = item.data_from
                while parent is not None:
                    resources.setdefault(parent.name, parent)
                    parent = parent.data_from
                selected = {item.name}
                source_key = item.source_key or self._standalone_source_key()
            resources = {n: r.with_hints(**hints) for n, r in resources.items()}
            self._check_names(source_key, resources)
            if suffix := context.current_slot_suffix():
                resources, selected = _with_slot_suffix(resources, selected, suffix, source_key)
            if catalog is not None:
                catalog.setdefault(source_key, {}).update(resources)
            groups.extend(_groups_of(resources, selected, source_key))
        return groups

    def _check_names(self, source_key: str, resources: dict[str, Resource]) -> None:
        """Source and resource names are state keys (and are logged): they must be valid Unicode."""
        for what, name in (("source", source_key), *(("resource", n) for n in resources)):
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigurationError(
                    f"pipeline {self.pipeline_name!r}: {what} name {name!r} is not valid Unicode (an "
                    "unpaired surrogate); it would be a state key. Rename the "
                    f"{what}. Nothing was loaded."
                ) from None

    # -- extraction -------------------------------------------------------------------------------
    def _bind(self, res: Resource, source_key: str) -> tuple[Any, list[Incremental]]:
        """Bind the resource's call arguments; every incremental argument gets a bound copy."""
        arguments = res.call_arguments()
        bound: list[Incremental] = []
        if arguments is None:
            return None, bound
        ctx = context.active_run()
        assert ctx is not None
        for name, value in list(arguments.arguments.items()):
            if isinstance(value, Incremental):
                inc = value.bind(
                    pipeline_name=self.pipeline_name,
                    resource_name=res.name,
                    resource_state=model.resource_slot(ctx.state, source_key, res.name),
                    primary_key=res.primary_key,
                    interval=ctx.interval,
                    log=logging.getLogger("airflow_state_provider.incremental"),
                )
                arguments.arguments[name] = inc
                bound.append(inc)
                if inc.interval_watermark is not None:
                    ctx.interval_records.append((source_key, res.name, inc))
        return arguments, bound

    def _extract_group(self, group: _Group, loader: Loader, run: _Run, conn: sa.Connection) -> None:
        for name in sorted(group.selected):
            res = _find(group, name)
            if res is not None and res.write_disposition == "replace":
                # a replace resource that yields nothing still empties its table (dlt semantics)
                self._write(loader, res, [], group.source_key)
        with context.scope(group.source_key, group.root.name):
            arguments, incrementals = self._bind(group.root, group.source_key)
            children = {child.name: child for kids in group.children.values() for child in kids}
            run.started.append(group)
            run.incrementals[(group.source_key, group.root.name)] = incrementals
            for child in children.values():
                # bound per parent item in _deliver; registered now so that its slot is pinned
                run.incrementals[(group.source_key, child.name)] = []
            generator = group.root.open(arguments)
            try:
                for item in generator:
                    # every item received before this one has been delivered and filtered: the
                    # moment where a cursor covers exactly the rows written
                    if run.checkpoint_every and run.rows_since_commit >= run.checkpoint_every:
                        self._checkpoint(conn, loader, run)
                    item, stop = _filter(item, incrementals)
                    if item is not None:
                        self._deliver(group, group.root, item, loader, run, children)
                    if stop:
                        break
            finally:
                close = getattr(generator, "close", None)
                if close is not None:
                    close()

    def _deliver(
        self,
        group: _Group,
        res: Resource,
        item: Any,
        loader: Loader,
        run: _Run,
        children: dict[str, Resource],
    ) -> None:
        """Load an item of ``res`` (if selected) and feed it to the transformers below it."""
        if res.name in group.selected:
            rows = item if isinstance(item, list) else [item]
            self._write(loader, res, rows, group.source_key)
            run.rows_since_commit += len(rows)
        for kid in group.children.get(res.name, ()):
            child = children[kid.name]
            with context.scope(group.source_key, child.name):
                # as in dlt, a transformer's incrementals are bound per parent item: each item starts
                # from the state the previous one left (start value, boundary hashes, no stop flag)
                arguments, incrementals = self._bind(child, group.source_key)
                run.incrementals[(group.source_key, child.name)] = incrementals
                for out in child.open(arguments, item):
                    out, stop = _filter(out, incrementals)
                    if out is not None:
                        self._deliver(group, child, out, loader, run, children)
                    if stop:
                        break

    @staticmethod
    def _write(loader: Loader, res: Resource, rows: list[Any], source_key: str) -> None:
        loader.write(
            res.table_name,
            rows,
            write_disposition=res.write_disposition,
            primary_key=res.primary_key,
            merge_key=res.merge_key,
            resource_name=res.name,
            source_name=source_key,
        )

    # -- commit -----------------------------------------------------------------------------------
    def _checkpoint(self, conn: sa.Connection, loader: Loader, run: _Run) -> None:
        """Commit early what is provably consistent now (see ``docs/checkpoints.md``).

        A group (a resource with its transformers) commits its rows and its resource slots before the
        run ends only if every cursor of it can (:meth:`Incremental.checkpoint_blocker`), the root has
        one, no code wrote other state of its source since the last commit, it is not ``replace``, and
        no other resource wrote to its tables since then. Everything else waits in session staging.
        """
        run.rows_since_commit = 0
        ready = [g for g in run.started if self._checkpoint_blocker(g, run) is None]
        while ready:
            movable = loader.flushable({w for g in ready for w in _writers(g)})
            still = [g for g in ready if _writers(g) <= movable]
            if len(still) == len(ready):
                break
            ready = still
        if not ready:
            return
        names = {w for g in ready for w in _writers(g)}
        slots = {("sources", source, "resources", name) for source, name in names}
        ours = model.with_slots(run.base, run.working, slots.__contains__)
        if not loader.pending(names) and model.content_equal(ours, run.base):
            return
        self._commit(conn, loader, run, final=False, ours=ours, resources=names)

    def _checkpoint_blocker(self, group: _Group, run: _Run) -> str | None:
        """Why ``group`` cannot commit at a checkpoint now (logged once per run), or None."""
        reason = _blocker(group, run)
        key = (group.source_key, group.root.name)
        if reason is not None and key not in run.deferred:
            run.deferred.add(key)
            log.info(
                "pipeline %r: checkpoint: rows of resource %r wait for the final commit: %s",
                self.pipeline_name,
                group.root.name,
                reason,
            )
        return reason

    def _commit(
        self,
        conn: sa.Connection,
        loader: Loader,
        run: _Run,
        *,
        final: bool,
        ours: dict | None = None,
        resources: set[Writer] | None = None,
    ) -> None:
        """Move the rows of ``resources`` (all at the final commit) into their tables and commit them with
        ``ours`` (default: the whole working document) through the one commit path."""
        counts = loader.finish(None if final else resources)
        rows = sum(counts.values())
        committed = commit(
            conn,
            self.store,
            run.working if ours is None else ours,
            base=run.base,
            known_load_id=None if run.diverged else run.known_load_id,
            load_id=loader.load_id,
            wrote_data=rows > 0 or bool(loader.tables_written) or not final,
            new_version=run.force_commit or (not run.has_committed and rows > 0),
            local=self.local_state,
            local_only=not self.restore_from_destination,
            on_load_id=loader.restamp,
            # interval runs move their cursors past the interval, on the newest state, under the lock
            adjust=partial(_final_adjust, run) if final else None,
        )
        if committed is None:
            conn.rollback()
            log.info(
                "pipeline %r: no rows and no state change: nothing committed (state version %s)",
                self.pipeline_name,
                run.committed.get("_state_version"),
            )
            return
        self._committed_run(committed, counts, run)
        if not final:
            run.checkpoints += 1
            loader.load_id = run.load_id = new_load_id(after=committed.load_id)
            conn.begin()

    def _committed_run(self, committed: Committed, counts: dict[str, int], run: _Run) -> None:
        for table, count in counts.items():
            run.row_counts[table] = run.row_counts.get(table, 0) + count
            log.info("Loaded %d rows into %s.%s", count, self.dataset_name, table)
        if committed.state_changed:
            run.changed_paths = sorted(set(run.changed_paths) | set(committed.changed_paths))
            run.state_changed = True
            log.info(
                "Committed state version %d of pipeline %r with load %s; changed paths: %s",
                committed.version,
                self.pipeline_name,
                committed.load_id,
                ", ".join(committed.changed_paths)
                or ("(none: refresh)" if run.force_commit else "(none: first version)"),
            )
        else:
            log.info(
                "Committed load %s of pipeline %r; state unchanged (version %s)",
                committed.load_id,
                self.pipeline_name,
                committed.version,
            )
        # continue from the committed document: a later commit must not write back what other writers
        # changed meanwhile (their slots come in; ours stay ours)
        run.base = model.rebase(run.working, run.base, committed.state, run.pinned)
        run.diverged = model.slot_map(run.base) != model.slot_map(committed.state)
        run.committed = committed.state
        run.known_load_id = committed.state_load_id
        run.has_committed = run.has_committed or committed.state_changed
        run.last_committed_load_id = committed.load_id
        run.force_commit = False
        self.adopt(committed.state)

    # -- operating state --------------------------------------------------------------------------
    def drop(
        self,
        resources: str | Resource | Sequence[str | Resource] | None = None,
        state_paths: str | Sequence[str] | None = None,
        state_only: bool = False,
        *,
        drop_all: bool = False,
        sources: Sequence[str] | None = None,
        dry_run: bool = False,
        expect_version: int | None = None,
    ) -> operations.EditResult:
        """Drop resources (their tables and state slots) and source state paths, with dlt's semantics.

        ``resources`` are names, ``re:<regex>`` patterns or :class:`Resource` objects; ``state_paths``
        are JSONPaths relative to each source's state; ``state_only`` keeps the tables; ``drop_all``
        drops every resource; ``sources`` limits it to those source keys. The change is a new state
        version committed with the table drops in one transaction, under the commit lock; nothing
        else in the state changes. ``dry_run`` plans without writing (see ``result.plan.changes``).
        ``expect_version`` fails with ``ConcurrentEditError`` unless it is the newest version.
        """
        plan = operations.plan_drop(
            self,
            [resources] if isinstance(resources, str | Resource) else list(resources or ()),
            [state_paths] if isinstance(state_paths, str) else list(state_paths or ()),
            drop_all=drop_all,
            state_only=state_only,
            sources=sources,
            expect_version=expect_version,
        )
        if dry_run:
            return operations.EditResult(plan, False, plan.base.version, None)
        return operations.apply(plan, write_local=True)

    # -- SQL access -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def sql_client(self) -> Iterator[SqlClient]:
        """A client whose unqualified table names resolve in the pipeline's dataset."""
        with self.engine.connect() as conn:
            conn.execution_options(**READ_ONLY)  # SQLite: takes a write lock only when it writes
            self.dialect.use_dataset(conn, self.dataset_name)
            yield SqlClient(conn, self.dataset_name)


class SqlClient:
    """Plain SQL against the pipeline's dataset."""

    def __init__(self, conn: sa.Connection, dataset_name: str) -> None:
        self.connection = conn
        self.dataset_name = dataset_name

    def execute_sql(self, sql: str, *args: Any, **kwargs: Any) -> list[tuple]:
        """Run ``sql`` (``:name`` bind parameters as keyword arguments); returns the rows, if any."""
        if args:
            raise TypeError("execute_sql takes bind parameters as keyword arguments (:name style)")
        result = self.connection.execute(sa.text(sql), kwargs)
        rows = [tuple(r) for r in result] if result.returns_rows else []
        self.connection.commit()
        return rows


# ---------------------------------------------------------------------------------------------------


def _check_pipeline_name(name: str) -> None:
    """The name is also the pipeline's working directory: it must be one safe path component.

    Anything else (quotes, semicolons, ``__``, any Unicode) is fine: in SQL the name is always a bound
    value, never part of the statement.
    """
    problem = None
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        problem = "it is not valid Unicode (an unpaired surrogate)"
    else:
        if name in (".", "..") or any(c in name for c in "/\\\0"):
            problem = "it must not contain '/', '\\' or NUL, nor be '.' or '..'"
        elif size > 255:
            problem = f"it is {size} bytes long in UTF-8, over the 255 a directory name may have"
    if problem:
        raise ValueError(
            f"pipeline name {name[:80]!r} is not usable: it names the pipeline's working directory, and "
            f"{problem}. Choose another pipeline name."
        )


def _physical_dataset_name(dataset: str, engine: sa.Engine) -> str:
    """dlt's normalized dataset name (``MyData`` -> ``my_data``), with dlt's warning when it changes."""
    max_length = dialect_class(engine).identifier_length(engine)
    try:
        physical = naming.normalize_dataset_name(dataset, max_length)
    except naming.InvalidIdentifierError as e:
        raise ValueError(f"dataset_name {dataset!r} is not usable: {e}") from None
    if physical != dataset:
        log.warning(
            "Due to normalization dataset name got changed from %r to %r which will be used to create "
            "db schemas, as dlt does; the state document keeps %r. Use a dataset name that needs no "
            "normalization to avoid this warning.",
            dataset,
            physical,
            dataset,
        )
    return physical


def _rollback_after_failure(conn: sa.Connection, pipeline_name: str) -> None:
    """Roll the load transaction back without hiding why it failed.

    After an outage the rollback fails too (the connection is gone; the server discards the
    transaction by itself). That secondary error must not replace the database's own error.
    """
    try:
        conn.rollback()
    except Exception as e:
        log.warning("pipeline %r: the rollback after the failure failed too: %s", pipeline_name, e)


def default_schema_name(pipeline_name: str) -> str:
    """dlt's default schema name of a new pipeline: its name without a ``_pipeline`` suffix, snake_case.

    dlt keeps the state of resources run without a source under the pipeline's default schema name
    (``dlt/extract/utils.py::make_schema_with_default_name``), e.g. ``chess_pipeline`` -> ``chess`` and
    ``Orders-Sync`` -> ``orders_sync``; so do we, so both tools address the same state slots.
    """
    name = pipeline_name[: -len("_pipeline")] if pipeline_name.endswith("_pipeline") else pipeline_name
    try:
        return naming.normalize_identifier(name, 64)
    except naming.InvalidIdentifierError:  # e.g. "_pipeline": no usable schema name (dlt refuses it)
        return pipeline_name


def default_pipelines_dir() -> Path:
    """``$AIRFLOW_STATE_PIPELINES_DIR`` or ``~/.airflow_state/pipelines``."""
    env = os.environ.get("AIRFLOW_STATE_PIPELINES_DIR")
    return Path(env) if env else Path.home() / ".airflow_state" / "pipelines"


def _engine_from(destination: Any) -> sa.Engine:
    if isinstance(destination, sa.Engine):
        return destination
    if isinstance(destination, str | sa.URL):
        return destination_engine.create_engine(destination)
    get_engine = getattr(destination, "get_engine", None)  # PipelineStateHook, without importing Airflow
    if callable(get_engine):
        return get_engine()
    raise TypeError(
        "destination must be a SQLAlchemy URL, an Engine or a PipelineStateHook, "
        f"got {type(destination).__name__}"
    )


#: rows of a plain iterable go to the loader in pages of up to this many (one call per page, not per row)
PLAIN_PAGE_ROWS = 1_000


class _Pages:
    """A plain iterable's consecutive dict rows grouped into lists; anything else passes through as is.

    With ``checkpoint_every=N`` a page holds a divisor of N rows, so checkpoints fall exactly where they
    would row by row.
    """

    def __init__(self, data: Iterable[Any], checkpoint_every: int | None) -> None:
        self.data = data
        size = PLAIN_PAGE_ROWS
        if checkpoint_every:
            size = max(d for d in range(1, min(checkpoint_every, size) + 1) if checkpoint_every % d == 0)
        self.size = size

    def __iter__(self) -> Iterator[Any]:
        size, data = self.size, self.data
        if type(data) is list:
            # slices of a list of dicts are its pages (checked in C, no Python step per row)
            for start in range(0, len(data), size):
                page = data[start : start + size]
                if set(map(type, page)) != {dict}:
                    yield from self._grouped(itertools.islice(data, start, None), size)
                    return
                yield page
            return
        yield from self._grouped(data, size)

    @staticmethod
    def _grouped(data: Iterable[Any], size: int) -> Iterator[Any]:
        page: list[dict] = []
        for item in data:
            if type(item) is dict:
                page.append(item)
                if len(page) >= size:
                    yield page
                    page = []
            else:
                if page:
                    yield page
                    page = []
                yield item
        if page:
            yield page


def _as_items(
    data: Any, table_name: str | None, pipeline_name: str, checkpoint_every: int | None = None
) -> list[Resource | Source]:
    if isinstance(data, Resource | Source):
        return [data]
    if isinstance(data, list | tuple) and data and all(isinstance(d, Resource | Source) for d in data):
        return list(data)
    if isinstance(data, dict) or (isinstance(data, Iterable) and not isinstance(data, str | bytes)):
        if not table_name:
            raise ValueError(
                f"pipeline {pipeline_name!r}: table_name is required to load a plain iterable of rows"
            )
        rows = [data] if isinstance(data, dict) else data
        return [from_data(_Pages(rows, checkpoint_every), table_name=table_name)]
    raise TypeError(
        f"pipeline {pipeline_name!r}: cannot run {type(data).__name__}; pass a source, a resource, "
        "a list of them, or an iterable of dict rows with table_name"
    )


def _groups_of(resources: dict[str, Resource], selected: set[str], source_key: str) -> list[_Group]:
    """One group per root resource that a selected resource depends on."""
    needed: set[str] = set()
    for name in selected:
        res: Resource | None = resources[name]
        while res is not None:
            needed.add(res.name)
            res = res.data_from
    groups: dict[str, _Group] = {}
    for name in resources:
        if name not in needed:
            continue
        res = resources[name]
        root = res
        while root.data_from is not None:
            root = resources[root.data_from.name]
        group = groups.setdefault(root.name, _Group(source_key, root, {}, set()))
        if res.data_from is not None:
            group.children.setdefault(res.data_from.name, []).append(res)
        if name in selected:
            group.selected.add(name)
    return list(groups.values())


def _with_slot_suffix(
    resources: dict[str, Resource], selected: set[str], suffix: str, source_key: str
) -> tuple[dict[str, Resource], set[str]]:
    """Rename every resource to ``<name><suffix>`` (its state slot), keeping its table name."""
    renamed = {
        n + suffix: r.with_hints(name=n + suffix, table_name=r.table_name) for n, r in resources.items()
    }
    for res in renamed.values():
        if res.data_from is not None:
            res.data_from = renamed.get(res.data_from.name + suffix, res.data_from)
    for name in sorted(selected):
        log.info(
            "Resource %s keeps its state in slot sources.%s.resources.%s%s", name, source_key, name, suffix
        )
    return renamed, {n + suffix for n in selected}


def _find(group: _Group, name: str) -> Resource | None:
    if group.root.name == name:
        return group.root
    for kids in group.children.values():
        for kid in kids:
            if kid.name == name:
                return kid
    return None


def _names(group: _Group) -> set[str]:
    """The resources of a group: its root and every transformer below it."""
    return {group.root.name} | {kid.name for kids in group.children.values() for kid in kids}


def _writers(group: _Group) -> set[Writer]:
    """The resources of a group as the loader knows its writers: (source key, resource name)."""
    return {(group.source_key, name) for name in _names(group)}


def _without(slot: Any, key: str) -> Any:
    return {k: v for k, v in slot.items() if k != key} if isinstance(slot, dict) else slot


def _blocker(group: _Group, run: _Run) -> str | None:
    """Why the rows and cursors of ``group`` cannot be committed by a checkpoint now, or None."""
    resources = [r for r in map(partial(_find, group), group.selected) if r]
    if any(r.write_disposition == "replace" for r in resources):
        return "write_disposition 'replace' (the table is replaced when the run ends)"
    if any(r.write_disposition == "merge" and r.merge_key for r in resources):
        # a retry would delete the merge_key partitions again, with the rows a checkpoint committed
        return "a merge_key (its partitions are replaced once, when the run ends)"
    if not run.incrementals.get((group.source_key, group.root.name)):
        return (
            "it has no incremental cursor that tracks its progress (declare "
            "incremental(..., row_order='asc') if its rows come in ascending cursor order)"
        )
    for name in sorted(_names(group)):
        for inc in run.incrementals.get((group.source_key, name), ()):
            reason = inc.checkpoint_blocker()
            if reason is not None:
                return f"{reason} (resource {name!r})"
    now = (run.working.get("sources") or {}).get(group.source_key) or {}
    then = (run.base.get("sources") or {}).get(group.source_key) or {}
    if not model.same_value(_without(now, "resources"), _without(then, "resources")):
        return f"the state of source {group.source_key!r} was written since the last commit"
    for name in sorted(_names(group)):
        mine = (now.get("resources") or {}).get(name) or {}
        before = (then.get("resources") or {}).get(name) or {}
        if not model.same_value(_without(mine, "incremental"), _without(before, "incremental")):
            return f"the code of resource {name!r} wrote its state since the last commit"
    return None


def _refresh_scope(refresh: str, groups: list[_Group]) -> Callable[[model.Slot], bool]:
    """The slots ``refresh`` wipes: every slot of the sources run (``drop_sources``), else the slots of
    the resources run."""
    if refresh == "drop_sources":
        keys = {g.source_key for g in groups}
        return lambda slot: len(slot) > 2 and slot[0] == "sources" and slot[1] in keys
    names = {(g.source_key, n) for g in groups for n in g.selected}
    return lambda slot: len(slot) == 4 and (slot[1], slot[3]) in names


def _final_adjust(run: _Run, doc: dict) -> None:
    """``commit``'s ``adjust`` for a final commit: refuse a refresh that would keep what another writer
    committed into the refreshed scope after this run restored (its rows are in the tables this run
    dropped or emptied), then record the data intervals."""
    if run.refreshed is not None:
        mode, scope = run.refreshed
        merged, ours = model.slot_map(doc), model.slot_map(run.working)
        changed = sorted(
            slot
            for slot in merged.keys() | ours.keys()
            if scope(slot) and not model.same_value(merged.get(slot, {}), ours.get(slot, {}))
        )
        if changed:
            raise StateConflictError(
                f"pipeline {run.pipeline.pipeline_name!r}: refresh={mode!r} dropped or emptied the tables "
                f"and state of {', '.join(model.slot_path(s) for s in changed)}, but a concurrent commit "
                f"(state version {doc.get('_state_version')}) wrote there after this run restored: keeping "
                "it would leave state whose rows were dropped. Nothing was committed. Retry the task (it "
                "restores the newest state and refreshes again)."
            )
    context.record_intervals(doc)


def _check_replace_not_shared(groups: list[_Group], pipeline: Pipeline) -> None:
    """Refuse (:class:`ConfigurationError`, before anything is written) a ``replace`` resource whose
    table another resource loads: in this run, or recorded in the resource-to-table map for this or
    another pipeline of the dataset. Replacing the table would empty that resource's rows while its
    state (an incremental cursor) says they were loaded, so its next runs would never load them again.
    """
    replaced: dict[str, list[operations.Target]] = {}
    loaders: dict[str, list[operations.Target]] = {}
    for group in groups:
        extracted = [group.root, *(kid for kids in group.children.values() for kid in kids)]
        for res in extracted:
            try:
                table = destination_tables.table_name_of(res.table_name, pipeline.engine)
            except InvalidIdentifierError:
                continue  # the loader refuses the name with its pipeline and resource when rows arrive
            owner = (group.source_key, res.name)
            (replaced if res.write_disposition == "replace" else loaders).setdefault(table, []).append(owner)
    if not replaced:
        return
    advice = (
        "Give the replace resource a table of its own (table_name=...), or load the table with one "
        "write disposition from one resource."
    )
    for table, owners in replaced.items():
        if table in loaders:
            names = ", ".join(sorted({f"{n!r} of source {s!r}" for s, n in owners}))
            others = ", ".join(sorted({f"{n!r} of source {s!r}" for s, n in loaders[table]}))
            raise ConfigurationError(
                f"pipeline {pipeline.pipeline_name!r}: resource {names} has write_disposition='replace' on "
                f"table {pipeline.dataset_name}.{table}, which resource {others} also loads in this run: "
                f"replacing it would lose that resource's rows while its state says they were loaded. "
                f"{advice} Nothing was written."
            )
    with pipeline.engine.connect() as conn:
        existing = destination_tables.existing_tables(conn, pipeline.dataset_name, list(replaced))
        for table in existing:
            operations.check_not_shared(
                pipeline,
                conn,
                [table],
                replaced[table],
                action="write_disposition='replace'",
                advice=f"{advice} To take the table over, drop the other first (airflow-state drop).",
                error=ConfigurationError,
            )


def _check_moved_slots(groups: list[_Group], state: dict, pipeline: Pipeline) -> None:
    """Refuse (:class:`ConfigurationError`, before any resource runs) a resource whose state slot has a
    suffix (``orders__region_eu``: a mapped task instance, or a ``state_key``) while that slot is new and
    the slot without the suffix (``orders``, from the task's unmapped runs) holds state. Starting the
    new slot from ``initial_value`` would load again the rows the old slot's cursor covers."""
    suffix = context.current_slot_suffix()
    if not suffix:
        return
    for group in groups:
        slots = state.get("sources", {}).get(group.source_key, {}).get("resources", {})
        extracted = [group.root, *(kid for kids in group.children.values() for kid in kids)]
        for res in extracted:
            old = res.name.removesuffix(suffix)
            if (
                res.write_disposition == "replace"
                or old == res.name
                or slots.get(res.name)
                or not slots.get(old)
            ):
                continue
            base = f"sources.{group.source_key}.resources"
            name = pipeline.pipeline_name
            raise ConfigurationError(
                f"pipeline {name!r}: resource {old!r} now keeps its state in slot {base}.{res.name} (a "
                f"mapped task instance or a state_key), which is new, while slot {base}.{old} (from runs "
                f"without that suffix, e.g. before the task was mapped) holds state: starting from "
                "initial_value would load again the rows its cursor covers. Move the old state into the "
                f"new slot (airflow-state get {name} {base}.{old}, then airflow-state set {name} "
                f"{base}.{res.name} '<that JSON>' --create), then remove the old slot (airflow-state drop "
                f"{name} {old} --source {group.source_key} --state-only); or, if the instances should "
                f"start over, just remove the old slot. Nothing was written."
            )


def _reset_replace_slots(groups: list[_Group], state: dict) -> None:
    """dlt semantics: a ``replace`` resource starts every run with empty resource state.

    As in dlt this covers every resource the run extracts: the selected ones and the parents feeding
    them (``run(transformer, write_disposition="replace")`` gives the parent that disposition too).
    """
    for group in groups:
        extracted = [group.root, *(kid for kids in group.children.values() for kid in kids)]
        for res in extracted:
            if res.write_disposition == "replace":
                state.get("sources", {}).get(group.source_key, {}).get("resources", {}).pop(res.name, None)


def _refresh_state(
    refresh: str | None,
    groups: list[_Group],
    catalog: dict[str, dict[str, Resource]],
    state: dict,
    pipeline: Pipeline,
) -> list[str]:
    """Wipe the state ``refresh`` resets (dlt semantics) and return the tables it drops or empties.

    A resource run now drops its ``table_name``; one known only from the state, the tables the
    resource-to-table map records for it (:func:`.operations.resource_tables`)."""
    if refresh is None:
        return []
    engine = pipeline.engine
    sources = state.get("sources", {})
    tables: list[str] = []
    targets: list[operations.Target] = []
    whole: list[str] = []
    if refresh == "drop_sources":
        for source_key in dict.fromkeys(g.source_key for g in groups):
            whole.append(source_key)
            known = catalog.get(source_key, {})
            tables += [r.table_name for r in known.values()]
            targets += [(source_key, name) for name in known]
            wiped = sources.pop(source_key, None) or {}
            unknown = [name for name in wiped.get("resources") or {} if name not in known]
            if unknown:
                with engine.connect() as conn:
                    recorded = operations.resource_tables(pipeline, conn, [(source_key, n) for n in unknown])
                tables += [t for ts in recorded.values() for t in ts]
                targets += recorded
    else:
        for group in groups:
            slots = sources.get(group.source_key, {}).get("resources", {})
            for name in sorted(group.selected):
                res = _find(group, name)
                tables.append(res.table_name if res is not None else name)
                targets.append((group.source_key, name))
                slots.pop(name, None)
    tables = list(dict.fromkeys(destination_tables.table_name_of(t, engine) for t in tables))
    if tables:
        with engine.connect() as conn:
            operations.check_not_shared(
                pipeline,
                conn,
                destination_tables.existing_tables(conn, pipeline.dataset_name, tables),
                targets,
                action=f"refresh={refresh!r}",
                whole_sources=whole,
                advice="Run every resource that loads it with this refresh (or refresh='drop_sources' of "
                "a source holding all of them), or drop the other resources' tables first "
                "(airflow-state drop).",
                error=ConfigurationError,
            )
    return tables


def _filter(item: Any, incrementals: list[Incremental]) -> tuple[Any, bool]:
    stop = False
    for inc in incrementals:
        if item is None:
            break
        item, halt = inc.process(item)
        stop = stop or halt
    if isinstance(item, list) and not item:
        item = None
    return item, stop
