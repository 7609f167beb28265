"""``Pipeline``: restore → bind → extract → load + commit, in one transaction (DESIGN §5).

Usable without Airflow; the operator and the TaskFlow decorator are thin wrappers around it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from airflow_state_provider import operations
from airflow_state_provider.destination import naming
from airflow_state_provider.destination.dialects import dialect_for
from airflow_state_provider.destination.loader import Loader
from airflow_state_provider.destination.store import (
    DEFAULT_MAX_STATE_BYTES,
    DEFAULT_MAX_VERSIONS,
    DEFAULT_WARN_STATE_BYTES,
    StateStore,
    StoredState,
    new_load_id,
)
from airflow_state_provider.exceptions import StateNotSerializableError
from airflow_state_provider.extract.incremental import Incremental
from airflow_state_provider.extract.resource import Resource, from_data
from airflow_state_provider.extract.source import Source
from airflow_state_provider.state import codec, context, model

log = logging.getLogger("airflow_state_provider.pipeline")

#: execution options of connections that only read (SQLite then skips its write lock)
READ_ONLY = {"asp_read_only": True}

#: ``Pipeline.run(refresh=...)`` modes, dlt's names and semantics.
REFRESH_MODES = ("drop_sources", "drop_resources", "drop_data")

DESTINATION_TYPES = {
    "sqlite": "dlt.destinations.sqlalchemy",
    "duckdb": "dlt.destinations.duckdb",
    "postgresql": "dlt.destinations.postgres",
}


@dataclass
class LoadInfo:
    """What a run committed. Small and JSON-friendly: ``asdict()`` is what an operator may push to XCom."""

    pipeline_name: str
    dataset_name: str
    load_id: str | None
    row_counts: dict[str, int] = field(default_factory=dict)
    state_version: int = 0
    state_changed: bool = False
    changed_paths: list[str] = field(default_factory=list)
    checkpoints: int = 0

    def asdict(self) -> dict[str, Any]:
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
        self.committed = copy.deepcopy(restored.state) if restored else pipeline._fresh_state()
        self.committed_load_id = restored.load_id if restored else None
        self.has_committed = restored is not None
        self.working = copy.deepcopy(self.committed)
        self.base = copy.deepcopy(self.committed)
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


class Pipeline:
    """A named pipeline whose state lives in ``dataset_name`` of ``destination``.

    ``destination`` is a SQLAlchemy URL (``sqlite:///f.db``, ``duckdb:///f.duckdb``,
    ``postgresql+psycopg://...``), an ``Engine``, or an Airflow ``PipelineStateHook``.

    ``restore_from_destination=False`` keeps the state only in ``<pipelines_dir>/<pipeline>/state.json``
    (a persistent worker): the destination gets data and ``_dlt_loads`` rows but no state rows.
    ``dev_mode=True`` suffixes the dataset with a UTC timestamp, so the pipeline starts from fresh state
    (``full_refresh`` is its deprecated alias). ``max_state_versions``, ``max_state_bytes`` and
    ``warn_state_bytes`` set retention and the size guard (DESIGN §5.4).
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
    ) -> None:
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
        self.engine = _engine_from(destination)
        #: the configured name, as the state document records it (dlt keeps it unnormalized there)
        self.configured_dataset_name = dataset
        dataset = _physical_dataset_name(dataset, self.engine)
        self.dataset_name = dataset
        self.dialect = dialect_for(self.engine)
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
        return copy.deepcopy(self._committed)

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
        stored = self._read_local() if not self.restore_from_destination else self._read_destination()
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

    def _state_file(self) -> Path:
        return self.working_dir / "state.json"

    def _read_local(self) -> StoredState | None:
        path = self._state_file()
        if not path.exists():
            return None
        raw = path.read_bytes()
        state = codec.decode_state(raw.decode("utf-8"), where=f"local state file {path}")
        state.pop("_local", None)
        return StoredState(int(state.get("_state_version", 0)), "", None, state, len(raw))

    def _write_local(self, state: dict, load_id: str | None) -> None:
        """Keep the committed state in the working dir too (``airflow-state sync`` restores it)."""
        self.working_dir.mkdir(parents=True, exist_ok=True)
        doc = dict(state)
        doc["_local"] = {"first_run": False, "last_load_id": load_id, "_dev_mode": self.dev_mode}
        tmp = self._state_file().with_suffix(".tmp")
        tmp.write_bytes(codec.typed_dumps(doc))
        tmp.replace(self._state_file())

    # -- run --------------------------------------------------------------------------------------
    def run(
        self,
        data: Any,
        *,
        write_disposition: str | None = None,
        table_name: str | None = None,
        primary_key: str | Sequence[str] | None = None,
        merge_key: str | Sequence[str] | None = None,
        checkpoint_every: int | None = None,
        read_only_sources: dict[str, str] | None = None,
        refresh: str | None = None,
    ) -> LoadInfo:
        """Restore, extract, load and commit ``data`` (a source, resource, list of them, or rows).

        Data rows, the ``_dlt_loads`` row and the new state version are written in one transaction;
        with ``checkpoint_every=N`` in several, each after at least N rows. An exception anywhere
        rolls the current transaction back. ``read_only_sources`` maps source names whose
        source-level state this run may only read to the reason a write error shows.

        ``refresh`` resets what this run extracts first, with dlt's semantics, in the same transaction
        as the load (a failed run leaves tables and state as they were): ``"drop_sources"`` drops the
        tables of every resource of the sources run and wipes their whole source state;
        ``"drop_resources"`` drops the tables and wipes the state of the resources run;
        ``"drop_data"`` empties those tables and wipes those resources' state. A resource's tables are
        its ``table_name`` and, for resources known only from the state, the table named like it.
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
            _reset_replace_slots(groups, run.working)
            refresh_tables = _refresh_state(refresh, groups, catalog, run.working, self.engine)
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
        existing = operations.existing_tables(conn, self.dataset_name, tables)
        if refresh == "drop_data":
            operations.truncate_tables(conn, self.dataset_name, existing)
        else:
            operations.drop_tables(conn, self.dataset_name, existing)
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
            if catalog is not None:
                catalog.setdefault(source_key, {}).update(resources)
            groups.extend(_groups_of(resources, selected, source_key))
        return groups

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
        return arguments, bound

    def _extract_group(self, group: _Group, loader: Loader, run: _Run, conn: sa.Connection) -> None:
        for name in sorted(group.selected):
            res = _find(group, name)
            if res is not None and res.write_disposition == "replace":
                # a replace resource that yields nothing still empties its table (dlt semantics)
                self._write(loader, res, [])
        with context.scope(group.source_key, group.root.name):
            arguments, incrementals = self._bind(group.root, group.source_key)
            children = {child.name: child for kids in group.children.values() for child in kids}
            generator = group.root.open(arguments)
            try:
                for item in generator:
                    # the generator has just resumed past its previous yield: state written there
                    # belongs to the rows already received, so this is the checkpoint moment
                    if run.checkpoint_every and run.rows_since_commit >= run.checkpoint_every:
                        self._commit(conn, loader, run, final=False)
                        conn.begin()
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
            self._write(loader, res, rows)
            run.rows_since_commit += len(rows)
        for kid in group.children.get(res.name, ()):
            child = children[kid.name]
            with context.scope(group.source_key, child.name):
                # as in dlt, a transformer's incrementals are bound per parent item: each item starts
                # from the state the previous one left (start value, boundary hashes, no stop flag)
                arguments, incrementals = self._bind(child, group.source_key)
                for out in child.open(arguments, item):
                    out, stop = _filter(out, incrementals)
                    if out is not None:
                        self._deliver(group, child, out, loader, run, children)
                    if stop:
                        break

    @staticmethod
    def _write(loader: Loader, res: Resource, rows: list[Any]) -> None:
        loader.write(
            res.table_name,
            rows,
            write_disposition=res.write_disposition,
            primary_key=res.primary_key,
            merge_key=res.merge_key,
            resource_name=res.name,
        )

    # -- commit -----------------------------------------------------------------------------------
    def _commit(self, conn: sa.Connection, loader: Loader, run: _Run, *, final: bool) -> None:
        """Finish the load and commit it with the state, under the pipeline's lock (DESIGN §5.3)."""
        counts = loader.finish()
        rows = sum(counts.values())
        ours = run.working
        if self.restore_from_destination:
            self.store.lock(conn)
            newest = self.store.newest(conn)
        else:
            newest = None
        if newest is not None and newest.load_id != run.committed_load_id:
            theirs = newest.state
            merged = model.merge(run.base, ours, theirs, pipeline_name=self.pipeline_name)
            log.info(
                "pipeline %r: merged with concurrent state version %d (load %s)",
                self.pipeline_name,
                newest.version,
                newest.load_id,
            )
        else:
            theirs = run.committed
            merged = copy.deepcopy(ours)
            for key in model.VERSION_KEYS:
                if key in theirs:
                    merged[key] = theirs[key]
        merged.pop(model.LOCAL_KEY, None)
        model.drop_untouched_empty_slots(merged, theirs)
        try:
            changed = not model.content_equal(merged, theirs) or (not run.has_committed and rows > 0)
        except StateNotSerializableError as e:  # the codec knows the path, not the pipeline
            message = f"pipeline {self.pipeline_name!r}: {e} Nothing was committed."
            raise StateNotSerializableError(message) from e
        changed = changed or run.force_commit
        if not changed and rows == 0 and not loader.tables_written:
            conn.rollback()
            if final:
                log.info(
                    "pipeline %r: no rows and no state change: nothing committed (state version %s)",
                    self.pipeline_name,
                    theirs.get("_state_version"),
                )
            return
        if changed:
            merged["_state_version"] = int(theirs.get("_state_version", 0))
            merged["_version_hash"] = theirs.get("_version_hash")
            model.bump_version(merged)
            if merged["_version_hash"] == theirs.get("_version_hash"):
                # first commit of an unchanged default state still gets its own version
                merged["_state_version"] += 1
            self.store.check_size(merged)
        load_id = run.load_id
        if newest is not None and newest.load_id >= load_id:
            # keep load ids in commit order: dlt restores the state with the greatest load id
            load_id = new_load_id(after=newest.load_id)
            loader.restamp(load_id)
        self.store.insert_load(conn, load_id)
        if changed and self.restore_from_destination:
            self.store.insert_state(conn, merged, load_id)
            self.store.prune(conn)
        conn.commit()

        paths = model.changed_paths(theirs, merged) if changed else []
        for table, count in counts.items():
            run.row_counts[table] = run.row_counts.get(table, 0) + count
            log.info("Loaded %d rows into %s.%s", count, self.dataset_name, table)
        if changed:
            run.changed_paths = sorted(set(run.changed_paths) | set(paths))
            run.state_changed = True
            log.info(
                "Committed state version %d of pipeline %r with load %s; changed paths: %s",
                merged["_state_version"],
                self.pipeline_name,
                load_id,
                ", ".join(paths) or ("(none: refresh)" if run.force_commit else "(none: first version)"),
            )
        else:
            log.info(
                "Committed load %s of pipeline %r; state unchanged (version %s)",
                load_id,
                self.pipeline_name,
                merged.get("_state_version"),
            )
        run.committed = merged
        run.committed_load_id = load_id if changed else run.committed_load_id
        run.has_committed = run.has_committed or changed
        run.base = copy.deepcopy(ours)
        run.last_committed_load_id = load_id
        run.rows_since_commit = 0
        run.force_commit = False
        if not final:
            run.checkpoints += 1
            run.load_id = new_load_id(after=load_id)
            loader.load_id = run.load_id
        self._committed, self._first_run = copy.deepcopy(merged), False
        if changed:
            self._write_local(merged, load_id)

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
    max_length = None if engine.dialect.name == "duckdb" else engine.dialect.max_identifier_length
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
        return sa.create_engine(destination)
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
        size = self.size
        page: list[dict] = []
        for item in self.data:
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


def _find(group: _Group, name: str) -> Resource | None:
    if group.root.name == name:
        return group.root
    for kids in group.children.values():
        for kid in kids:
            if kid.name == name:
                return kid
    return None


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
    engine: sa.Engine,
) -> list[str]:
    """Wipe the state ``refresh`` resets (dlt semantics) and return the tables it drops or empties."""
    if refresh is None:
        return []
    sources = state.get("sources", {})
    tables: list[str] = []
    if refresh == "drop_sources":
        for source_key in dict.fromkeys(g.source_key for g in groups):
            known = catalog.get(source_key, {})
            tables += [r.table_name for r in known.values()]
            wiped = sources.pop(source_key, None) or {}
            tables += [name for name in wiped.get("resources") or {} if name not in known]
    else:
        for group in groups:
            slots = sources.get(group.source_key, {}).get("resources", {})
            for name in sorted(group.selected):
                res = _find(group, name)
                tables.append(res.table_name if res is not None else name)
                slots.pop(name, None)
    return list(dict.fromkeys(operations.table_name_of(t, engine) for t in tables))


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
