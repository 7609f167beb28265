"""Operating a pipeline's committed state (DESIGN §9): read and set values by path, drop resources and
state paths, list the history, roll back, and restore a local working dir.

An edit is *planned* against the newest committed version (:func:`plan_set`, :func:`plan_drop`,
:func:`plan_rollback`), which gives the new document and its diff without writing anything, and then
*applied* (:func:`apply`) as a new version with its own ``_dlt_loads`` row, under the same lock as a
load (DESIGN §5.3). Applying fails with :class:`ConcurrentEditError` and writes nothing when another
version was committed after the plan was made, so an edit reviewed as a dry run is exactly what lands.
Loads that run concurrently with an edit merge with it per slot, as with any other commit.

Pipelines with ``restore_from_destination=False`` keep their state in the local pipelines dir: the same
operations read and write that file (no history there, so no rollback).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import logging
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from airflow_state_provider.destination.commit import Committed, commit
from airflow_state_provider.destination.engine import mask_url
from airflow_state_provider.destination.store import (
    LOADS_TABLE,
    STATE_TABLE,
    RecordedTable,
    StoredState,
    recorded_resource_tables,
)
from airflow_state_provider.destination.tables import (
    drop_tables,
    existing_tables,
    table_name_of,
)
from airflow_state_provider.exceptions import (
    ConcurrentEditError,
    InvalidIdentifierError,
    PipelineNotFoundError,
    PipelineStateError,
    StateCorruptError,
    StateOperationError,
    StatePathError,
)
from airflow_state_provider.extract.resource import Resource
from airflow_state_provider.state import codec, model, paths
from airflow_state_provider.state.model import Change, diff

if TYPE_CHECKING:
    from airflow_state_provider.pipeline import Pipeline

log = logging.getLogger("airflow_state_provider.operations")

#: Keys that every commit writes; editing them would break versioning or dlt's restore.
PROTECTED_KEYS = (*model.VERSION_KEYS, model.LOCAL_KEY, "pipeline_name")
#: Top-level keys the product (and dlt) owns, each with why an edit is refused: ``set`` accepts only
#: paths under ``sources``.
OWNED_KEYS = {
    **dict.fromkeys(PROTECTED_KEYS, "is written by every commit"),
    "dataset_name": "is replaced by the pipeline's configured dataset at every restore (give the dataset "
    "with --dataset or the connection's extra dataset_name)",
    "default_schema_name": "names the source under which resources run without a source keep their "
    "state; a new name would make them start over from an empty state (it follows the pipeline name, "
    "as dlt's default schema does)",
    "schema_names": "lists the schemas dlt restores with the state; only the pipeline writes it",
    "destination_type": "records the destination the state belongs to; only the pipeline writes it",
    "destination_name": "records the destination the state belongs to; only the pipeline writes it",
}

__all__ = [
    "OWNED_KEYS",
    "PROTECTED_KEYS",
    "Change",
    "ConcurrentEditError",
    "EditPlan",
    "EditResult",
    "PipelineNotFoundError",
    "PipelineSummary",
    "StateOperationError",
    "Target",
    "VersionInfo",
    "apply",
    "check_not_shared",
    "check_structure",
    "diff",
    "get_value",
    "history",
    "list_pipelines",
    "newest",
    "newest_row",
    "plan_drop",
    "plan_rollback",
    "plan_set",
    "resource_tables",
    "sync_local",
    "table_name_of",
    "to_plain",
    "where",
]

# -- results ---------------------------------------------------------------------------------------


@dataclass
class EditPlan:
    """A planned edit: the new document, its diff against ``base`` and the tables it drops."""

    pipeline: Pipeline
    action: str
    base: StoredState
    state: dict
    changes: list[Change]
    drop_tables: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when applying would change nothing."""
        return not self.changes and not self.drop_tables


@dataclass
class EditResult:
    """What :func:`apply` did: ``committed`` is False for an empty plan (nothing written)."""

    plan: EditPlan
    committed: bool
    version: int
    load_id: str | None

    @property
    def changed_paths(self) -> list[str]:
        return [c.path for c in self.plan.changes] if self.committed else []

    @property
    def dropped_tables(self) -> list[str]:
        return list(self.plan.drop_tables) if self.committed else []


@dataclass
class VersionInfo:
    """One retained state version; ``changed_paths`` is None when its predecessor is not retained."""

    version: int
    load_id: str
    created_at: datetime | None
    size: int
    changed_paths: list[str] | None
    error: str | None = None


# -- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineSummary:
    """A pipeline with committed state in a dataset: its newest version and that version's load."""

    pipeline_name: str
    version: int
    load_id: str
    created_at: datetime | None
    versions_retained: int


def list_pipelines(pipeline: Pipeline) -> list[PipelineSummary]:
    """Every pipeline with committed state in ``pipeline``'s dataset, by name (empty: none).

    Reads only the key columns of ``_dlt_pipeline_state`` and ``_dlt_loads``, never the state blobs.
    """
    store = pipeline.store
    with pipeline.engine.connect() as conn:
        if not store.tables_exist(conn):
            return []
        rows = store.newest_per_pipeline(conn)
    return [
        PipelineSummary(r.pipeline_name, int(r.version), r.load_id, r.created_at, int(r.versions))
        for r in rows
    ]


def where(pipeline: Pipeline) -> str:
    """Where the pipeline's state lives, for messages (the URL never shows a password)."""
    if not pipeline.restore_from_destination:
        return f"local state dir {pipeline.working_dir}"
    url = mask_url(pipeline.engine.url)
    return f"dataset {pipeline.dataset_name!r} of {url}"


def newest(pipeline: Pipeline) -> StoredState:
    """The newest committed state; :class:`StateOperationError` naming what is missing if there is none."""
    name = pipeline.pipeline_name
    if not pipeline.restore_from_destination:
        stored = pipeline.local_state.read()
        if stored is None:
            raise PipelineNotFoundError(
                f"pipeline {name!r} has no state in {where(pipeline)} (no {pipeline.local_state.path.name}); "
                "check the pipeline name and the pipelines dir",
                pipeline_name=name,
            )
        return stored
    with pipeline.engine.connect() as conn:
        # an edit may be what repairs a document of the wrong shape: check the result, not the base
        return pipeline.store.decode_row(newest_row(pipeline, conn), check_structure=False)


def newest_row(pipeline: Pipeline, conn: sa.Connection) -> sa.Row:
    """The newest committed state row, undecoded (a corrupt one can still be rolled back)."""
    name = pipeline.pipeline_name
    if not pipeline.store.tables_exist(conn):
        raise PipelineNotFoundError(
            f"{where(pipeline)} has no {STATE_TABLE} table: check the dataset name (--dataset); "
            f"pipeline {name!r} has never committed state there",
            pipeline_name=name,
        )
    rows = pipeline.store.history_rows(conn, limit=1)
    if not rows:
        pipeline.store.refuse_without_loads(conn, f"no load of theirs is in {LOADS_TABLE} with status 0")
        others = pipeline.store.pipeline_names(conn)
        raise PipelineNotFoundError(
            f"pipeline {name!r} has no committed state in {where(pipeline)}; pipelines with state "
            f"there: {', '.join(others) or 'none'}",
            pipeline_name=name,
        )
    return rows[0]


def get_value(state: dict, path: str, *, pipeline_name: str) -> Any:
    """The value at state ``path`` (the whole document for ``""``), in either spelling of
    :mod:`~airflow_state_provider.state.paths`: dotted keys (a key may contain dots, digits index lists)
    or a JSONPath to one value (``ids[1]``, ``a["x.y"]``). Raises :class:`StatePathError` naming the
    pipeline and the path when it is absent, malformed or selects several values."""
    with _naming_pipeline(pipeline_name):
        return paths.get(state, path)


@contextlib.contextmanager
def _naming_pipeline(pipeline_name: str) -> Iterator[None]:
    """Re-raise a :class:`StatePathError` with the pipeline named in its message and attributes."""
    try:
        yield
    except StatePathError as exc:
        if exc.pipeline_name is not None:
            raise
        raise StatePathError(
            f"pipeline {pipeline_name!r}: {exc}", pipeline_name=pipeline_name, state_path=exc.state_path
        ) from None


def to_plain(value: Any) -> Any:
    """A JSON-ready copy: typed values in their ISO / str form, bytes as base64."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return value


# -- set -------------------------------------------------------------------------------------------


def plan_set(
    pipeline: Pipeline,
    path: str,
    value: Any,
    *,
    create: bool = False,
    expect_version: int | None = None,
    base: StoredState | None = None,
) -> EditPlan:
    """Plan setting the value at state ``path`` (dotted keys or a JSONPath to one value, see
    :func:`get_value`) to ``value``. The path must exist unless ``create`` (missing dict keys are then
    added). The top-level keys the pipeline owns (:data:`OWNED_KEYS`: version bookkeeping, ``_local``,
    ``pipeline_name``, ``dataset_name``, ``default_schema_name``...) cannot be set. Raises
    :class:`StatePathError` (a bad path) or :class:`StateOperationError` (a value that cannot be stored,
    or a result without dlt's layout) naming the pipeline; nothing is written by planning."""
    name = pipeline.pipeline_name
    if not path:
        raise StatePathError(
            f"pipeline {name!r}: set needs a state path", pipeline_name=name, state_path=path
        )
    base = _base(pipeline, base, expect_version)
    state = copy.deepcopy(base.state)
    with _naming_pipeline(name):
        steps = paths.locate(state, path, create=True)  # the owned-key check comes before "not found"
        if steps and steps[0] in OWNED_KEYS:
            raise StatePathError(
                f"state path {path!r} cannot be set: {steps[0]!r} {OWNED_KEYS[str(steps[0])]}. "
                "Nothing was written.",
                state_path=path,
            )
        paths.set(state, path, value, create=create)
    codec.typed_dumps(state)  # a value outside the supported types fails here, naming its path
    check_structure(state, pipeline_name=name, action=f"set {path}")
    return EditPlan(pipeline, "set", base, state, diff(base.state, state))


def check_structure(state: dict, *, pipeline_name: str, action: str) -> None:
    """Raise :class:`StateOperationError` if ``state`` (an edit's result) does not have dlt's layout
    (see :func:`codec.structure_problem`): every later run and ``info`` would fail on it."""
    problem = codec.structure_problem(state)
    if problem is not None:
        path, what = problem
        raise StateOperationError(
            f"pipeline {pipeline_name!r}: {action} would leave state path {path or '(the document)'!r} "
            f"that {what}; every later run reads it. Nothing was written."
        )


# -- drop ------------------------------------------------------------------------------------------


#: a resource of a source (None: of any source) whose tables an operation drops or empties
Target = tuple[str | None, str]


def _matches(row: RecordedTable, pipeline_name: str, target: Target, rows: list[RecordedTable]) -> bool:
    source, name = target
    if row.pipeline_name != pipeline_name or row.resource_name != name:
        return False
    if source is None or row.source_name == source:
        return True
    # a row written before the map recorded sources stands for the resource in any source, unless a
    # later row names the source that loads that table
    return row.source_name is None and not any(
        o.pipeline_name == pipeline_name
        and o.resource_name == name
        and o.table_name == row.table_name
        and o.source_name is not None
        for o in rows
    )


def resource_tables(
    pipeline: Pipeline,
    conn: sa.Connection,
    targets: Iterable[Target],
    *,
    hints: dict[str, str] | None = None,
    recorded: list[RecordedTable] | None = None,
) -> dict[Target, list[str]]:
    """The tables each ``(source, resource)`` of ``targets`` loaded, from the resource-to-table map
    (:data:`~airflow_state_provider.destination.store.RESOURCE_TABLES`), keyed by source: a resource
    of another source with the same name keeps its tables.

    A ``hints`` entry (a :class:`Resource`'s ``table_name``) that differs from the resource name
    wins. A resource the map does not know (loaded before the map existed, or by dlt) is taken to
    load the table named like it, unless the map records that table as another resource's.
    """
    if recorded is None:
        recorded = recorded_resource_tables(conn, pipeline.dataset_name)
    mine = [r for r in recorded if r.pipeline_name == pipeline.pipeline_name]
    out: dict[Target, list[str]] = {}
    for target in dict.fromkeys(targets):
        name = target[1]
        hint = (hints or {}).get(name, name)
        if hint != name:
            out[target] = [_table_name_of(hint, pipeline)]
            continue
        tables = [r.table_name for r in mine if _matches(r, pipeline.pipeline_name, target, mine)]
        if tables:
            out[target] = list(dict.fromkeys(tables))
        else:
            guess = _table_name_of(name, pipeline)
            claimed = any(r.table_name == guess and r.resource_name != name for r in mine)
            out[target] = [] if claimed else [guess]
    return out


def check_not_shared(
    pipeline: Pipeline,
    conn: sa.Connection,
    tables: Sequence[str],
    targets: Iterable[Target],
    *,
    action: str,
    whole_sources: Iterable[str] = (),
    advice: str,
    error: type[PipelineStateError] | None = None,
    recorded: list[RecordedTable] | None = None,
) -> None:
    """Refuse (``error``, default :class:`StateOperationError`) to drop or empty ``tables`` when the
    resource-to-table map records one of them as loaded by a resource outside ``targets`` (another
    source, another pipeline in the dataset): its rows would vanish while its state says they were
    loaded. ``whole_sources`` covers every resource of those sources of this pipeline."""
    if recorded is None:
        recorded = recorded_resource_tables(conn, pipeline.dataset_name)
    targets = list(targets)
    names = {n for _, n in targets}
    sources = set(whole_sources)
    me = pipeline.pipeline_name

    def covered(row: RecordedTable) -> bool:
        if row.pipeline_name != me:
            return False
        if row.source_name in sources or any(_matches(row, me, t, recorded) for t in targets):
            return True
        return row.source_name is None and row.resource_name in names

    for table in tables:
        others = [r for r in recorded if r.table_name == table and not covered(r)]
        if others:
            mine = sorted({f"{n!r}" + (f" of source {s!r}" if s else "") for s, n in targets})
            raise (error or StateOperationError)(
                f"pipeline {me!r}: {action} would drop or empty table {pipeline.dataset_name}.{table} of "
                f"resource {', '.join(mine) or '(none)'}, but {'; '.join(o.describe() for o in others)} "
                "also loads it: its rows would vanish while its state says they were loaded. "
                f"{advice} Nothing was written."
            )


def _table_name_of(name: str, pipeline: Pipeline) -> str:
    try:
        return table_name_of(name, pipeline.engine)
    except InvalidIdentifierError as exc:
        raise StateOperationError(str(exc), pipeline_name=pipeline.pipeline_name, resource=name) from None


def plan_drop(
    pipeline: Pipeline,
    resources: Sequence[str | Resource] = (),
    state_paths: Sequence[str] = (),
    *,
    drop_all: bool = False,
    state_only: bool = False,
    sources: Sequence[str] | None = None,
    expect_version: int | None = None,
    base: StoredState | None = None,
) -> EditPlan:
    """Plan dropping resources and state paths, with dlt's semantics (``dlt pipeline drop``).

    ``resources`` are names, ``re:<regex>`` patterns matched against resource names, or
    :class:`Resource` objects (their ``table_name`` is the table dropped). A matched resource loses its
    state slot and, unless ``state_only``, its tables: those the resource-to-table map records for it in
    its source, else the table named like the resource (normalized as the loader does), if it exists.
    ``drop_all`` matches every resource. ``state_paths`` are paths relative to each source's state,
    JSONPath (``ids[1]``, ``ids[0:2]``, ``ids[?(@ > 2)]``, ``*``, ``a["x.y"]``) or dotted keys;
    ``resources`` itself is never deleted. ``sources`` limits all of it to those source keys (default:
    every source in the state). Nothing else in the document changes.

    Raises :class:`StateOperationError` naming the pipeline and the resource, source, table or state
    path when one is unknown, selects nothing, or is a table another resource loads too; nothing is
    written by planning.
    """
    name = pipeline.pipeline_name
    if not (resources or state_paths or drop_all):
        raise StateOperationError(
            f"pipeline {name!r}: nothing to drop; name resources, state paths, or use drop_all",
            pipeline_name=name,
        )
    base = _base(pipeline, base, expect_version)
    state = copy.deepcopy(base.state)
    all_sources: dict = state.get("sources") or {}
    selected = _select_sources(all_sources, sources, name)
    names, patterns = _resource_selectors(resources, name)
    matched, pattern_hits = _drop_slots(all_sources, selected, names, patterns, drop_all=drop_all)
    # a named resource, in each selected source (any source when the state has none): the map knows
    # which source loaded which table
    in_sources: list[str | None] = [*selected] or [None]
    targets: list[Target] = [*matched, *((s, n) for n in names for s in in_sources)]
    tables: list[str] = []
    table_of: dict[Target, list[str]] = {}
    if not state_only and targets:
        tables, table_of = _tables_to_drop(pipeline, targets, names, selected if drop_all else ())
    _check_found(pipeline, names, matched, selected, all_sources, table_of, tables, state_only=state_only)
    warnings = [f"resource pattern {p!r} matched no resource" for p, _ in patterns if p not in pattern_hits]
    for state_path in state_paths:
        _drop_state_path(all_sources, selected, state_path, name)
    check_structure(state, pipeline_name=name, action="drop")
    return EditPlan(pipeline, "drop", base, state, diff(base.state, state), tables, warnings)


def _resource_selectors(
    resources: Sequence[str | Resource], pipeline_name: str
) -> tuple[dict[str, str], list[tuple[str, re.Pattern]]]:
    """Resource name -> table name hint, and the compiled ``re:`` patterns."""
    names: dict[str, str] = {}
    patterns: list[tuple[str, re.Pattern]] = []
    for item in resources:
        if isinstance(item, Resource):
            names[item.name] = item.table_name
        elif item.startswith("re:"):
            try:
                patterns.append((item, re.compile(item[3:])))
            except re.error as exc:
                raise StateOperationError(
                    f"pipeline {pipeline_name!r}: bad resource pattern {item!r}: {exc}",
                    pipeline_name=pipeline_name,
                    resource=item,
                ) from None
        else:
            names[item] = item
    return names, patterns


def _drop_slots(
    all_sources: dict,
    selected: list[str],
    names: dict[str, str],
    patterns: list[tuple[str, re.Pattern]],
    *,
    drop_all: bool,
) -> tuple[dict[Target, None], set[str]]:
    """Delete the matched resource slots in place; the ``(source, resource)`` matched and the patterns
    that hit."""
    matched: dict[Target, None] = {}
    pattern_hits: set[str] = set()
    for source_key in selected:
        slots = all_sources[source_key].get("resources") or {}
        for resource_name in list(slots):
            hits = [p for p, rx in patterns if rx.match(resource_name)]
            pattern_hits.update(hits)
            if drop_all or resource_name in names or hits:
                del slots[resource_name]
                matched[(source_key, resource_name)] = None
    return matched, pattern_hits


def _tables_to_drop(
    pipeline: Pipeline, targets: list[Target], names: dict[str, str], whole_sources: Sequence[str]
) -> tuple[list[str], dict[Target, list[str]]]:
    """The existing tables of ``targets``, and each target's tables; refuses a table another resource
    loads too (:func:`check_not_shared`)."""
    with pipeline.engine.connect() as conn:
        recorded = recorded_resource_tables(conn, pipeline.dataset_name)
        table_of = resource_tables(pipeline, conn, targets, hints=names, recorded=recorded)
        tables = existing_tables(conn, pipeline.dataset_name, [t for ts in table_of.values() for t in ts])
        check_not_shared(
            pipeline,
            conn,
            tables,
            table_of,
            action="drop",
            whole_sources=whole_sources,
            advice="Drop the resources that load it together (name each, with --source for each of "
            "their sources), or drop only the state (--state-only).",
            recorded=recorded,
        )
    return tables, table_of


def _check_found(
    pipeline: Pipeline,
    names: dict[str, str],
    matched: dict[Target, None],
    selected: list[str],
    all_sources: dict,
    table_of: dict[Target, list[str]],
    tables: list[str],
    *,
    state_only: bool,
) -> None:
    """Raise for a named resource with neither a state slot nor (unless ``state_only``) a table."""
    name = pipeline.pipeline_name
    for resource_name in names:
        guesses = {t: None for (_, n), ts in table_of.items() if n == resource_name for t in ts}
        if any(n == resource_name for _, n in matched) or set(guesses) & set(tables):
            continue
        known = sorted({r for s in selected for r in (all_sources[s].get("resources") or {})})
        guessed = ", ".join(map(repr, guesses)) or "recorded"
        table_note = "" if state_only else f" and no table {guessed}"
        raise StateOperationError(
            f"pipeline {name!r}: resource {resource_name!r} not found: no state slot in source(s) "
            f"{', '.join(selected) or '(none)'}{table_note} in {where(pipeline)}; resources with "
            f"state: {', '.join(known) or 'none'}",
            pipeline_name=name,
            resource=resource_name,
        )


def _select_sources(all_sources: dict, wanted: Sequence[str] | None, pipeline_name: str) -> list[str]:
    if not wanted:
        return list(all_sources)
    unknown = [s for s in wanted if s not in all_sources]
    if unknown:
        raise StateOperationError(
            f"pipeline {pipeline_name!r}: no source(s) {', '.join(map(repr, unknown))} in the state; "
            f"sources: {', '.join(all_sources) or 'none'}",
            pipeline_name=pipeline_name,
        )
    return list(dict.fromkeys(wanted))


def _drop_state_path(all_sources: dict, selected: list[str], state_path: str, pipeline_name: str) -> None:
    """Delete what ``state_path`` selects in each selected source's state (never ``resources`` itself);
    raise if it selects nothing in any of them."""
    with _naming_pipeline(pipeline_name):
        if paths.is_jsonpath(state_path):
            paths.parse(state_path)  # bad syntax is an error even where no source is selected
        hit = False
        for source_key in selected:
            hit = bool(paths.delete(all_sources[source_key], state_path, keep=("resources",))) or hit
    if not hit:
        raise StatePathError(
            f"pipeline {pipeline_name!r}: state path {state_path!r} selected nothing in source(s) "
            f"{', '.join(selected) or '(none)'} (paths are relative to a source's state, "
            "e.g. 'last_sync' or 'resources.events.incremental')",
            pipeline_name=pipeline_name,
            state_path=state_path,
        )


# -- rollback and history --------------------------------------------------------------------------


def plan_rollback(
    pipeline: Pipeline, version: int, *, expect_version: int | None = None, base: StoredState | None = None
) -> EditPlan:
    """Plan a new version whose content equals retained version ``version``."""
    name = pipeline.pipeline_name
    if not pipeline.restore_from_destination:
        raise StateOperationError(
            f"pipeline {name!r} keeps its state in {where(pipeline)}, which has no history to roll back to"
        )
    warnings: list[str] = []
    with pipeline.engine.connect() as conn:
        if base is None:
            row = newest_row(pipeline, conn)
            try:
                base = pipeline.store.decode_row(row)
            except StateCorruptError as exc:
                # rolling back is how a corrupt newest version is repaired
                base = _undecodable(row)
                warnings.append(f"the newest version is corrupt and is replaced: {exc}")
        base = _base(pipeline, base, expect_version)
        target = pipeline.store.version(conn, version)
        if target is None:
            retained = sorted(r.version for r in pipeline.store.history_rows(conn))
            span = f"{retained[0]}..{retained[-1]}" if retained else "none"
            raise StateOperationError(
                f"pipeline {name!r}: state version {version} is not retained in {where(pipeline)} "
                f"(retained versions: {span}; max_state_versions={pipeline.store.max_versions})"
            )
    state = copy.deepcopy(target.state)
    for key in model.VERSION_KEYS:
        state[key] = base.state.get(key)
    check_structure(state, pipeline_name=name, action=f"rollback to version {version}")
    changes = diff(base.state, state)
    return EditPlan(pipeline, f"rollback to version {version}", base, state, changes, warnings=warnings)


def _undecodable(row: sa.Row) -> StoredState:
    """A stand-in for a corrupt row: its bookkeeping, no content."""
    state = {"_state_version": int(row.version), "_version_hash": row.version_hash}
    return StoredState(int(row.version), row._dlt_load_id, row.created_at, state, len(row.state))


def history(pipeline: Pipeline, limit: int | None = None) -> list[VersionInfo]:
    """Retained versions, newest first, each with the paths changed since the version before it."""
    if not pipeline.restore_from_destination:
        stored = newest(pipeline)
        return [VersionInfo(stored.version, stored.load_id, stored.created_at, stored.size, None)]
    with pipeline.engine.connect() as conn:
        newest_row(pipeline, conn)  # a clear error for an unknown pipeline or dataset
        rows = pipeline.store.history_rows(conn, limit + 1 if limit else None)
    decoded: list[StoredState | str] = []
    for row in rows:
        try:
            decoded.append(pipeline.store.decode_row(row))
        except StateCorruptError as exc:
            decoded.append(str(exc))
    out: list[VersionInfo] = []
    for i, row in enumerate(rows[:limit] if limit else rows):
        this, older = decoded[i], decoded[i + 1] if i + 1 < len(decoded) else None
        paths = None
        if isinstance(this, StoredState) and isinstance(older, StoredState):
            paths = [c.path for c in diff(older.state, this.state)]
        error = this if isinstance(this, str) else None
        out.append(
            VersionInfo(int(row.version), row._dlt_load_id, row.created_at, len(row.state), paths, error)
        )
    return out


# -- applying --------------------------------------------------------------------------------------


def apply(plan: EditPlan, *, write_local: bool = False) -> EditResult:
    """Commit ``plan`` as a new state version (and drop its tables) in one transaction, through the one
    commit path (:func:`~airflow_state_provider.destination.commit.commit`, under the pipeline's commit
    lock). Raises :class:`ConcurrentEditError` (nothing written) if a version was committed after the
    plan was made. ``write_local`` also writes the pipelines dir's state file (always done for pipelines
    that keep their state locally)."""
    pipeline, base = plan.pipeline, plan.base
    if plan.empty:
        return EditResult(plan, False, base.version, None)
    dataset = pipeline.dataset_name
    local_only = not pipeline.restore_from_destination
    local = pipeline.local_state if write_local or local_only else None

    def edit(conn: sa.Connection | None) -> Committed | None:
        return commit(
            conn,
            pipeline.store,
            plan.state,
            expect=base,
            action=plan.action,
            new_version=True,
            wrote_data=bool(plan.drop_tables),
            local=local,
            local_only=local_only,
            on_load_id=(lambda _: drop_tables(conn, dataset, plan.drop_tables)) if conn is not None else None,
        )

    if local_only and not plan.drop_tables:
        committed = edit(None)
    else:
        if local_only:
            pipeline.store.ensure_loads_table(pipeline.engine)
        with pipeline.engine.connect() as conn:
            conn.begin()
            try:
                # tables first, then the commit lock: the order a load takes them in (no deadlock)
                pipeline.dialect.lock_tables(conn, dataset, plan.drop_tables, pipeline.pipeline_name)
                committed = edit(conn)
            except BaseException:
                conn.rollback()
                raise
    assert committed is not None  # new_version: an edit always commits
    pipeline.adopt(committed.state)
    log.info(
        "pipeline %r: %s committed as state version %d with load %s; changed paths: %s; dropped tables: %s",
        pipeline.pipeline_name,
        plan.action,
        committed.version,
        committed.load_id,
        ", ".join(c.path for c in plan.changes) or "(none)",
        ", ".join(plan.drop_tables) or "(none)",
    )
    return EditResult(plan, True, committed.version, committed.load_id)


def _base(pipeline: Pipeline, base: StoredState | None, expect_version: int | None) -> StoredState:
    base = base if base is not None else newest(pipeline)
    if expect_version is not None and base.version != expect_version:
        raise ConcurrentEditError(
            f"pipeline {pipeline.pipeline_name!r}: expected state version {expect_version}, but the newest "
            f"committed version is {base.version} (load {base.load_id or 'local'}). Nothing was written. "
            "Review the change (airflow-state history) and run the command again."
        )
    return base


# -- local working dir -----------------------------------------------------------------------------


def sync_local(pipeline: Pipeline) -> tuple[StoredState, Path]:
    """Write the destination's newest state into the pipeline's local working dir (what
    ``restore_from_destination=False`` reads). Returns the state and the file written."""
    if not pipeline.restore_from_destination:
        raise StateOperationError(
            f"pipeline {pipeline.pipeline_name!r}: sync restores from the destination; this pipeline "
            "object reads its state locally (restore_from_destination=False)"
        )
    stored = newest(pipeline)
    pipeline.local_state.write(stored.state, stored.load_id)
    return stored, pipeline.local_state.path
