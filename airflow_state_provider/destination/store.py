"""The state and loads tables: restore, locked commit, retention (DESIGN §5).

The tables are dlt's ``_dlt_pipeline_state`` and ``_dlt_loads`` with dlt's columns, so dlt reads what
we write and the other way round. A state row counts only when its load is in ``_dlt_loads`` with
status 0; we write both in the transaction that carries the data, so there are no orphans.
"""

from __future__ import annotations

import base64
import heapq
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from airflow_state_provider.destination.audit import AuditLog
from airflow_state_provider.destination.dialects import Dialect, dialect_class
from airflow_state_provider.destination.engine import check_supported
from airflow_state_provider.exceptions import MissingLoadsError, StateCorruptError, StateTooLargeError
from airflow_state_provider.state import codec

log = logging.getLogger("airflow_state_provider.store")

STATE_TABLE = "_dlt_pipeline_state"
LOADS_TABLE = "_dlt_loads"
DEFAULT_MAX_VERSIONS = 100
DEFAULT_MAX_STATE_BYTES = 16 * 1024 * 1024
DEFAULT_WARN_STATE_BYTES = 1024 * 1024


def state_table(metadata: sa.MetaData, dataset: str) -> sa.Table:
    """dlt's ``_dlt_pipeline_state``; the column order matters to dlt."""
    return sa.Table(
        STATE_TABLE,
        metadata,
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("engine_version", sa.BigInteger, nullable=False),
        sa.Column("pipeline_name", sa.String, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version_hash", sa.String, nullable=True),
        sa.Column("_dlt_load_id", sa.String(64), nullable=False),
        sa.Column("_dlt_id", sa.String(64), nullable=False, unique=True),
        sa.Index("ix__dlt_pipeline_state__pipeline_load", "pipeline_name", "_dlt_load_id"),
        schema=dataset,
    )


def loads_table(metadata: sa.MetaData, dataset: str) -> sa.Table:
    """dlt's ``_dlt_loads``: one row per committed load, status 0."""
    return sa.Table(
        LOADS_TABLE,
        metadata,
        sa.Column("load_id", sa.String(64), nullable=False),
        sa.Column("schema_name", sa.String, nullable=True),
        sa.Column("status", sa.BigInteger, nullable=False),
        sa.Column("inserted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version_hash", sa.String, nullable=True),
        sa.Index("ix__dlt_loads__load_id", "load_id"),
        schema=dataset,
    )


#: our own table: which tables each resource of each source of each pipeline loaded (dlt keeps this
#: in its schema)
RESOURCE_TABLES = "_asp_resource_tables"


def resource_tables_table(metadata: sa.MetaData, dataset: str) -> sa.Table:
    """``(pipeline_name, resource_name, table_name, _dlt_load_id, source_name)`` rows, one per table a
    resource of a source loaded, written with the load that first loaded it. ``drop`` and ``refresh``
    read it to find a resource's tables (its ``table_name`` hint may differ from its name) and the
    other resources that load the same table. A table of its own, so the state document, its hash and
    what dlt reads stay exactly dlt's.

    ``source_name`` came last (a column added to existing maps by :func:`upgrade_resource_tables`):
    NULL in rows written before, which then stand for the resource in any source.
    """
    return sa.Table(
        RESOURCE_TABLES,
        metadata,
        sa.Column("pipeline_name", sa.String, nullable=False),
        sa.Column("resource_name", sa.String, nullable=False),
        sa.Column("table_name", sa.String, nullable=False),
        sa.Column("_dlt_load_id", sa.String(64), nullable=False),
        sa.Column("source_name", sa.String, nullable=True),
        schema=dataset,
    )


@dataclass(frozen=True)
class RecordedTable:
    """A row of the resource-to-table map. ``source_name`` is None for rows written before the map
    recorded sources: they match the resource in every source."""

    pipeline_name: str
    source_name: str | None
    resource_name: str
    table_name: str

    def describe(self) -> str:
        source = f"source {self.source_name!r}" if self.source_name is not None else "any source"
        return f"resource {self.resource_name!r} of {source} of pipeline {self.pipeline_name!r}"


def has_source_column(conn: sa.Connection, dataset: str) -> bool:
    """Whether the map (which must exist) has ``source_name`` (see :func:`upgrade_resource_tables`)."""
    columns = dialect_class(conn).existing_columns(conn, dataset, RESOURCE_TABLES)
    return "source_name" in (columns or {})


def upgrade_resource_tables(conn: sa.Connection, dataset: str) -> None:
    """Add ``source_name`` to a map written before it recorded sources (in the caller's transaction,
    under its DDL lock on the table). Existing rows keep their values, with NULL sources."""
    if not has_source_column(conn, dataset):
        table = resource_tables_table(sa.MetaData(), dataset)
        quoted = conn.dialect.identifier_preparer.format_table(table)
        conn.exec_driver_sql(f"ALTER TABLE {quoted} ADD COLUMN source_name VARCHAR")


def recorded_resource_tables(conn: sa.Connection, dataset: str) -> list[RecordedTable]:
    """Every row of :data:`RESOURCE_TABLES` in ``dataset`` (all pipelines), deduplicated; empty if the
    table is missing (loads made before it existed, or by dlt). Reads maps from before
    ``source_name`` too (their sources are None)."""
    if not sa.inspect(conn).has_table(RESOURCE_TABLES, schema=dataset):
        return []
    t = resource_tables_table(sa.MetaData(), dataset)
    source = t.c.source_name if has_source_column(conn, dataset) else sa.null().label("source_name")
    rows = conn.execute(
        sa.select(t.c.pipeline_name, source, t.c.resource_name, t.c.table_name)
        .distinct()
        .order_by(t.c.pipeline_name, t.c.resource_name, t.c.table_name)
    )
    return [RecordedTable(*row) for row in rows]


def forget_tables(conn: sa.Connection, dataset: str, tables: list[str]) -> None:
    """Delete the map's rows of dropped ``tables`` (of every pipeline: a dropped table holds nobody's
    rows any more), in the caller's transaction."""
    if tables and sa.inspect(conn).has_table(RESOURCE_TABLES, schema=dataset):
        t = resource_tables_table(sa.MetaData(), dataset)
        conn.execute(sa.delete(t).where(t.c.table_name.in_(tables)))


def new_dlt_id() -> str:
    """dlt's row key: 10 random bytes, base64 without padding (14 characters)."""
    return base64.b64encode(secrets.token_bytes(10)).decode("ascii").rstrip("=")


#: integer digits of every load id we write: text order equals numeric order (see :func:`new_load_id`)
LOAD_ID_INT_DIGITS = 10


def load_id_key(load_id: str) -> tuple[int, float | str]:
    """Sort key of a load id in commit order: numeric ids by value, then anything else as text.

    dlt's load ids are unix times as text (``"1732959608.1234567"``); a foreign id that is not one
    (not 1 to 10 ASCII digits with an optional fraction: also ``"1E100"``, ``"inf"``, ``"nan"``)
    sorts before every numeric one, so a new id can always sort after it.
    """
    if isinstance(load_id, str) and _UNIX_TIME.fullmatch(load_id):
        return (1, float(load_id))
    return (0, str(load_id))


_UNIX_TIME = re.compile(r"[0-9]{1,10}(\.[0-9]*)?")


def new_load_id(after: str | None = None) -> str:
    """A load id in dlt's form (unix time as text), numerically greater than ``after``.

    The integer part is always 10 digits (zero-padded; the clock is clamped to 0..9999999999) and
    the fraction 7 digits, so text order (dlt restores the state row with the greatest
    ``_dlt_load_id`` as text) equals numeric order, whatever the clock says: a worker whose clock is
    before 2001-09-09 writes ``0999999999.x``, which sorts before every later id, not after.
    """
    now = min(max(time.time(), 0.0), 9_999_999_999.0)
    if after is not None:
        kind, value = load_id_key(after)
        if kind == 1:  # a foreign, non-numeric load id orders as text only
            now = max(now, float(value) + 1e-6)
    return f"{now:0{LOAD_ID_INT_DIGITS + 8}.7f}"


def later_load_id(candidate: str, newest: str | None) -> str:
    """``candidate`` if it is numerically greater than ``newest``, else a new id that is."""
    if newest is None or load_id_key(candidate) > load_id_key(newest):
        return candidate
    return new_load_id(after=newest)


def commit_order_key(version: int, load_id: str) -> tuple[int, tuple[int, float | str]]:
    """Sort key of a state row in commit order when its load id may be in a legacy form (fewer than
    10 integer digits: a clock before 2001-09-09 written before ids were padded, or by dlt; or not a
    number): such an id is in commit order neither as text nor as a number, so the state version
    (which every commit increases) decides, then the load id's value."""
    return (int(version), load_id_key(load_id))


def _padded(load_id: str) -> str | None:
    """A short numeric id with 10 integer digits (same value), or None if it is not a unix time."""
    head, dot, tail = load_id.partition(".")
    if not head.isdigit() or len(head) > LOAD_ID_INT_DIGITS or (dot and not tail.isdigit()):
        return None
    return head.zfill(LOAD_ID_INT_DIGITS) + "." + (tail + "0" * 7)[: max(7, len(tail))]


def _canonical_after(load_id: str) -> str:
    """The smallest canonical id (7 fractional digits) greater than canonical ``load_id``."""
    head, _, tail = load_id.partition(".")
    units = int(head) * 10**7 + int((tail + "0" * 7)[:7]) + 1
    return f"{units // 10**7:0{LOAD_ID_INT_DIGITS}d}.{units % 10**7:07d}"


def is_canonical_load_id(load_id: str) -> bool:
    """True for ids whose text order is their numeric order: 10 integer digits, then a fraction."""
    head, dot, tail = load_id.partition(".")
    return len(head) == LOAD_ID_INT_DIGITS and head.isdigit() and (not dot or tail.isdigit())


#: a LIKE pattern matching ids with 10 characters before the first dot (dlt's ids until 2286, ours)
_CANONICAL_LIKE = "_" * LOAD_ID_INT_DIGITS + ".%"


def load_id_after(newest: str | None, proposed: str | None = None) -> str:
    """The load id of a commit whose newest committed state has load id ``newest`` (None: no state yet).

    ``proposed`` (the id the rows were written under) when it sorts after ``newest``, else a new id after
    it: dlt restores the state with the greatest load id, so load ids must follow commit order.
    """
    return later_load_id(proposed or new_load_id(after=newest), newest)


@dataclass
class StoredState:
    """One committed state row, decoded.

    ``content_hash`` is the version hash of ``state`` as decoded (checked against the row's
    ``version_hash``), None where it was not computed; it no longer describes ``state`` once that
    is changed.
    """

    version: int
    load_id: str
    created_at: datetime | None
    state: dict
    size: int
    content_hash: str | None = None


class StateStore:
    """Reads and writes one pipeline's state rows in one dataset."""

    def __init__(
        self,
        dialect: Dialect,
        dataset: str,
        pipeline_name: str,
        *,
        max_versions: int | None = DEFAULT_MAX_VERSIONS,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
        warn_state_bytes: int = DEFAULT_WARN_STATE_BYTES,
    ) -> None:
        check_supported(dialect.engine)
        dialect.check_dataset_name(dataset)
        self.dialect = dialect
        self.dataset = dataset
        self.pipeline_name = pipeline_name
        self.max_versions = max_versions
        self.max_state_bytes = max_state_bytes
        self.warn_state_bytes = warn_state_bytes
        metadata = sa.MetaData()
        self.state_table = state_table(metadata, dataset)
        self.loads_table = loads_table(metadata, dataset)
        #: who wrote each version, in a table of our own (ensure_tables creates it with the others)
        self.audit = AuditLog(dataset, metadata)
        self._metadata = metadata

    # -- tables -----------------------------------------------------------------------------------
    def tables_exist(self, conn: sa.Connection) -> bool:
        """True if both tables exist. Raises :class:`MissingLoadsError` if ``_dlt_loads`` is gone while
        the pipeline has state rows (restoring would silently start over)."""
        insp = sa.inspect(conn)
        has_state, has_loads = (insp.has_table(t, schema=self.dataset) for t in (STATE_TABLE, LOADS_TABLE))
        if has_state and not has_loads:
            self.refuse_without_loads(conn, f"the table {self.dataset}.{LOADS_TABLE} does not exist")
        return has_state and has_loads

    def refuse_without_loads(self, conn: sa.Connection, why: str) -> None:
        """Raise :class:`MissingLoadsError` if the pipeline has state rows (committed or not)."""
        s = self.state_table
        count, version, load_id = conn.execute(
            sa.select(sa.func.count(), sa.func.max(s.c.version), sa.func.max(s.c._dlt_load_id)).where(
                s.c.pipeline_name == self.pipeline_name
            )
        ).one()
        if not count:
            return
        raise MissingLoadsError(
            f"pipeline {self.pipeline_name!r} has {count} state row(s) in dataset {self.dataset!r} "
            f"(newest version {version}, load {load_id}) but {why}, so none of them counts as committed. "
            "Refusing to start over silently (that would reload everything). If the load records were "
            f"deleted, restore {LOADS_TABLE} (a row per load id with status 0) from a backup or re-insert "
            f"them; to start over deliberately, delete this pipeline's rows from {STATE_TABLE}.",
            pipeline_name=self.pipeline_name,
            table=LOADS_TABLE,
        )

    def ensure_tables(self, engine: sa.Engine) -> None:
        """Create the dataset, both tables and their indexes if missing, in a short transaction of
        its own (also on tables dlt created without our indexes). Safe to race with other workers."""
        self._create(engine, lambda conn: self._metadata.create_all(conn, checkfirst=True))

    def ensure_loads_table(self, engine: sa.Engine) -> None:
        """Create the dataset and ``_dlt_loads`` only: pipelines that keep their state locally
        (``restore_from_destination=False``) record their loads but write no state rows."""
        self._create(engine, lambda conn: self.loads_table.create(conn, checkfirst=True))

    def _create(self, engine: sa.Engine, create: Callable[[sa.Connection], None]) -> None:
        for attempt in range(3):
            try:
                with engine.begin() as conn:
                    if self.dialect.creates_schemas:
                        self.dialect.create_dataset(conn, self.dataset)
                    create(conn)
                return
            except sa.exc.DBAPIError:
                # two workers creating the same table at once: the loser sees a duplicate; retry
                if attempt == 2:
                    raise
                time.sleep(0.05 * (attempt + 1))

    # -- reading ----------------------------------------------------------------------------------
    def _committed_rows(self) -> sa.Select:
        """The pipeline's state rows whose load is committed (status 0 in ``_dlt_loads``)."""
        s, loads = self.state_table, self.loads_table
        committed = sa.select(loads.c.load_id).where(loads.c.load_id == s.c._dlt_load_id, loads.c.status == 0)
        return sa.select(s.c.version, s.c.state, s.c.created_at, s.c.version_hash, s.c._dlt_load_id).where(
            s.c.pipeline_name == self.pipeline_name, committed.exists()
        )

    def _history_query(self) -> sa.Select:
        return self._committed_rows().order_by(self.state_table.c._dlt_load_id.desc())

    def _newest_query(self) -> sa.Select:
        return self._history_query().limit(1)

    def _newest_row_query(self) -> sa.Select:
        """The pipeline's state row with the greatest load id, if that load is committed.

        Independent of the history length on all three databases: PostgreSQL and SQLite read the
        maximum from the end of the ``(pipeline_name, _dlt_load_id)`` index; DuckDB (whose indexes serve
        point lookups only) scans the two key columns, never the state blobs, which the semi-joined
        search of :meth:`_newest_query` reads for every row there (100k versions: ~6 ms vs ~60 ms).
        """
        s = self.state_table
        newest_load = (
            sa.select(sa.func.max(s.c._dlt_load_id)).where(s.c.pipeline_name == self.pipeline_name)
        ).scalar_subquery()
        # and, in the same statement, whether :meth:`_has_short_ids` (one round trip fewer per restore)
        legacy = sa.exists(self._short_ids_query(s.alias("legacy"))).label("legacy_ids")
        return self._committed_rows().add_columns(legacy).where(s.c._dlt_load_id == newest_load).limit(1)

    def newest(self, conn: sa.Connection) -> StoredState | None:
        """The newest committed state of the pipeline, or None.

        Looks at the newest state row first; only when its load is not committed (a load that failed
        after writing its state row, e.g. by dlt) does it search back through the history.
        """
        row = conn.execute(self._newest_row_query()).first()
        if row is not None:
            legacy = bool(row.legacy_ids)
        else:
            row = conn.execute(self._newest_query()).first()
            legacy = row is not None and self._has_short_ids(conn)
        if legacy:
            # ids in a legacy form (a clock before 2001-09-09, written before ids were padded, or by
            # dlt) are in commit order neither as text nor as numbers: follow the state versions
            row = self._in_commit_order(conn)[0]
        if row is None:
            self.refuse_without_loads(
                conn, f"no load of theirs is in {self.dataset}.{LOADS_TABLE} with status 0"
            )
            return None
        return self._decode(row)

    def _decode(self, row: sa.Row, *, check_structure: bool = True) -> StoredState:
        where = f"pipeline {self.pipeline_name!r} state version {row.version} (load {row._dlt_load_id})"
        state = codec.decode_state(row.state, max_bytes=self.max_state_bytes * 4, where=where)
        problem = codec.structure_problem(state) if check_structure else None
        if problem is not None:
            raise StateCorruptError(
                f"{where} in {self.dataset}.{STATE_TABLE}: {problem[0] or 'the document'} {problem[1]}. "
                "Roll back to an earlier version (airflow-state rollback) or fix the path "
                "(airflow-state set).",
                pipeline_name=self.pipeline_name,
                state_path=problem[0],
                table=STATE_TABLE,
            )
        stored_hash = row.version_hash
        content_hash = codec.state_version_hash(state)
        if stored_hash and content_hash != stored_hash:
            raise StateCorruptError(
                f"{where} in {self.dataset}.{STATE_TABLE}: the content does not match its version_hash. "
                "Roll back to an earlier version (airflow-state rollback) or drop the state.",
                pipeline_name=self.pipeline_name,
                table=STATE_TABLE,
            )
        return StoredState(
            int(row.version), row._dlt_load_id, row.created_at, state, len(row.state), content_hash
        )

    def version(self, conn: sa.Connection, number: int) -> StoredState | None:
        """The committed row with state version ``number`` (the newest such row), or None."""
        row = conn.execute(self._history_query().where(self.state_table.c.version == number).limit(1)).first()
        return None if row is None else self._decode(row)

    def history_rows(self, conn: sa.Connection, limit: int | None = None) -> list[sa.Row]:
        """Committed state rows, newest first, undecoded (decode each with :meth:`decode_row`), so one
        corrupt version does not hide the others."""
        if self._has_short_ids(conn):
            return self._in_commit_order(conn)[:limit]
        query = self._history_query()
        if limit:
            query = query.limit(limit)
        return list(conn.execute(query))

    def _has_short_ids(self, conn: sa.Connection) -> bool:
        """Whether a state row of the pipeline has a load id whose text order is not its commit
        order (see :func:`commit_order_key`). A scan of the ``(pipeline_name, _dlt_load_id)`` index."""
        return conn.execute(self._short_ids_query(self.state_table).limit(1)).first() is not None

    def _short_ids_query(self, s: sa.FromClause) -> sa.Select:
        return sa.select(s.c._dlt_load_id).where(
            s.c.pipeline_name == self.pipeline_name, s.c._dlt_load_id.not_like(_CANONICAL_LIKE)
        )

    def _in_commit_order(self, conn: sa.Connection) -> list[sa.Row]:
        """The committed rows, newest first by :func:`commit_order_key` (for histories with legacy ids)."""
        rows = list(conn.execute(self._committed_rows()))
        return sorted(rows, key=lambda r: commit_order_key(r.version, r._dlt_load_id), reverse=True)

    def decode_row(self, row: sa.Row, *, check_structure: bool = True) -> StoredState:
        """Decode a row of :meth:`history_rows`; raises :class:`StateCorruptError` like a restore
        (without ``check_structure``, only for a row that does not decode or match its hash)."""
        return self._decode(row, check_structure=check_structure)

    def pipeline_names(self, conn: sa.Connection) -> list[str]:
        """Names of the pipelines with committed state in this dataset (for error messages)."""
        s = self.state_table
        return sorted(conn.execute(sa.select(s.c.pipeline_name).distinct()).scalars())

    def newest_per_pipeline(self, conn: sa.Connection) -> list[sa.Row]:
        """Every pipeline with committed state in this dataset, by name: rows of ``pipeline_name``,
        ``version``, ``load_id`` and ``created_at`` of its newest committed version, and ``versions``
        (how many are retained). Reads only key columns, never the state documents."""
        s, loads = self.state_table, self.loads_table
        newest = (
            sa.select(
                s.c.pipeline_name,
                sa.func.max(s.c._dlt_load_id).label("load_id"),
                sa.func.count().label("versions"),
            )
            .select_from(s.join(loads, loads.c.load_id == s.c._dlt_load_id))
            .where(loads.c.status == 0)
            .group_by(s.c.pipeline_name)
            .subquery()
        )
        query = (
            sa.select(
                newest.c.pipeline_name, s.c.version, newest.c.load_id, s.c.created_at, newest.c.versions
            )
            .join(s, (s.c.pipeline_name == newest.c.pipeline_name) & (s.c._dlt_load_id == newest.c.load_id))
            .order_by(newest.c.pipeline_name)
        )
        return list(conn.execute(query))

    # -- writing (inside the caller's load transaction) -------------------------------------------
    def lock(self, conn: sa.Connection) -> None:
        """Serialize commits of this pipeline until the transaction ends."""
        self.dialect.lock_pipeline(conn, self.dataset, self.pipeline_name)

    def next_load_id(self, conn: sa.Connection, candidate: str | None = None) -> str:
        """Call under :meth:`lock`: ``candidate`` (default: a new id) if it is greater than the load id
        of every state row of the pipeline (committed or not), else a new id that is.

        So load ids follow commit order whatever the workers' clocks say, and dlt, which restores
        the row with the greatest ``_dlt_load_id`` as text, restores the newest commit. State rows
        with ids in a legacy form (see :func:`commit_order_key`) are first given canonical ids in
        commit order, each with a matching ``_dlt_loads`` row, so text order, numeric order and commit
        order agree for us and for dlt from then on.
        """
        s = self.state_table
        newest_query = sa.select(sa.func.max(s.c._dlt_load_id)).where(s.c.pipeline_name == self.pipeline_name)
        # the legacy-id check in the same statement: one round trip when there is nothing to renumber
        # (two scalar subqueries, so that each keeps its own plan: max() reads the end of the index)
        legacy = sa.exists(self._short_ids_query(s.alias("legacy")))
        newest, has_legacy = conn.execute(sa.select(newest_query.scalar_subquery(), legacy)).one()
        if has_legacy:
            self._renumber_legacy_ids(conn)
            newest = conn.execute(newest_query).scalar()
        return later_load_id(candidate or new_load_id(), newest)

    def _renumber_legacy_ids(self, conn: sa.Connection) -> None:
        s, loads = self.state_table, self.loads_table
        rows = conn.execute(
            sa.select(s.c._dlt_load_id, sa.func.max(s.c.version))
            .where(s.c.pipeline_name == self.pipeline_name)
            .group_by(s.c._dlt_load_id)
        ).all()
        previous: str | None = None
        for old, version in sorted(rows, key=lambda r: commit_order_key(r[1], r[0])):
            new = old if is_canonical_load_id(old) else _padded(old)
            if new is None or (previous is not None and new <= previous):
                new = _canonical_after(previous or "0000000000.0000000")
            while (
                new != old and conn.execute(sa.select(loads.c.load_id).where(loads.c.load_id == new)).first()
            ):
                new = _canonical_after(new)  # another load (of another pipeline) has that id
            previous = new
            if new == old:
                continue
            conn.execute(
                sa.update(s)
                .where(s.c.pipeline_name == self.pipeline_name, s.c._dlt_load_id == old)
                .values(_dlt_load_id=new)
            )
            recorded = sa.select(loads.c.load_id).where(loads.c.load_id == new)
            if conn.execute(recorded).first() is None:
                copy = sa.select(
                    sa.literal(new),
                    loads.c.schema_name,
                    loads.c.status,
                    loads.c.inserted_at,
                    loads.c.schema_version_hash,
                ).where(loads.c.load_id == old)
                conn.execute(
                    sa.insert(loads).from_select(
                        ["load_id", "schema_name", "status", "inserted_at", "schema_version_hash"], copy
                    )
                )
            log.warning(
                "pipeline %r: load id %s of state version %d was out of commit order; it is now %s",
                self.pipeline_name,
                old,
                version,
                new,
            )

    def check_size(self, state: dict, dumped: bytes | None = None) -> int:
        """Raise :class:`StateTooLargeError` over the limit, warn over the warning threshold; returns the
        size in bytes of the typed JSON (``dumped``: ``codec.dump_state(state)`` if already made)."""
        size = len(codec.dump_state(state) if dumped is None else dumped)
        if size > self.max_state_bytes:
            raise StateTooLargeError(
                f"pipeline {self.pipeline_name!r}: the state is {size} bytes, over the limit of "
                f"{self.max_state_bytes} (max_state_bytes). Biggest paths: {biggest_paths(state)}. "
                "Keep high-water marks instead of lists of ids, or raise the limit. Nothing was committed.",
                pipeline_name=self.pipeline_name,
            )
        if size > self.warn_state_bytes:
            log.warning(
                "pipeline %r: the state is %d bytes (warning threshold %d). Biggest paths: %s",
                self.pipeline_name,
                size,
                self.warn_state_bytes,
                biggest_paths(state),
            )
        return size

    def insert_load(self, conn: sa.Connection, load_id: str, schema_name: str | None = None) -> None:
        conn.execute(
            sa.insert(self.loads_table).values(
                load_id=load_id,
                schema_name=schema_name or self.pipeline_name,
                status=0,
                inserted_at=datetime.now(UTC),
                schema_version_hash=None,
            )
        )

    def insert_state(
        self, conn: sa.Connection, state: dict, load_id: str, dumped: bytes | None = None
    ) -> None:
        """Insert ``state`` as the row of ``load_id`` (``dumped``: ``codec.dump_state(state)`` if already
        made) and its audit record."""
        conn.execute(
            sa.insert(self.state_table).values(
                version=int(state["_state_version"]),
                engine_version=int(state["_state_engine_version"]),
                pipeline_name=self.pipeline_name,
                state=codec.compress_state(codec.dump_state(state) if dumped is None else dumped),
                created_at=datetime.now(UTC),
                version_hash=state["_version_hash"],
                _dlt_load_id=load_id,
                _dlt_id=new_dlt_id(),
            )
        )
        self.audit.record(conn, self.pipeline_name, int(state["_state_version"]), load_id)

    def prune(self, conn: sa.Connection) -> int:
        """Delete all but the newest ``max_versions`` committed state rows of the pipeline, and the
        uncommitted rows older than those. Returns rows deleted.

        The cut is counted on committed rows only: a newer row whose load never completed (a failed
        dlt load leaves one) neither counts as a version nor pushes the newest committed one out.
        """
        if not self.max_versions:
            return 0
        s = self.state_table
        cutoff = conn.execute(
            self._committed_rows()
            .with_only_columns(s.c._dlt_load_id)
            .order_by(s.c._dlt_load_id.desc())
            .offset(self.max_versions - 1)
            .limit(1)
        ).scalar()
        if cutoff is None:
            return 0
        result = conn.execute(
            sa.delete(s).where(s.c.pipeline_name == self.pipeline_name, s.c._dlt_load_id < cutoff)
        )
        return result.rowcount or 0


def _without_local(state: dict) -> dict:
    return {k: v for k, v in state.items() if k != "_local"}


def biggest_paths(state: dict, top: int = 5) -> str:
    """The largest sub-trees of a state document, for size warnings."""
    sizes: list[tuple[int, str]] = []

    def walk(value: object, path: str, depth: int) -> None:
        if path:
            sizes.append((len(codec.typed_dumps(value)), path))
        if isinstance(value, dict) and depth < 6:
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k), depth + 1)

    walk(_without_local(state), "", 0)
    # report leaves-most paths first among the biggest: a parent always outweighs its child
    biggest = heapq.nlargest(top * 3, sizes)
    chosen = [p for _, p in biggest if not any(o.startswith(p + ".") for _, o in biggest)][:top]
    return ", ".join(f"{p} ({size} B)" for size, p in biggest if p in chosen)
