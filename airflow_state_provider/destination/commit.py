"""The one commit path of a pipeline's state (DESIGN §5.3).

Every writer of ``_dlt_pipeline_state`` -- a run, each of its checkpoints, ``refresh``, and every
operation (set, drop, rollback) -- commits through :func:`commit`, inside the caller's open
transaction on ``conn`` that already holds its data changes:

1. take the pipeline's commit lock (the dialect's; none for state kept in the local file);
2. read the newest committed version;
3. either merge the caller's document with it per slot (``base`` given: runs) or check that it is
   still the version the edit was planned on (``expect`` given: operations);
4. bump ``_state_version`` and ``_version_hash`` if the content changed, and check the size;
5. choose a load id that sorts after the newest state's (``store.load_id_after``) and let the caller
   move its rows to it (``on_load_id``);
6. write the ``_dlt_loads`` row and the state row, prune old versions, and commit;
7. write the local state file copy, and return what was committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from airflow_state_provider.destination.store import StateStore, StoredState, load_id_after
from airflow_state_provider.exceptions import ConcurrentEditError, StateNotSerializableError
from airflow_state_provider.state import codec, model

log = logging.getLogger("airflow_state_provider.commit")

_UNCHECKED: Any = object()


@dataclass
class Committed:
    """What :func:`commit` wrote.

    ``state`` is the document that is now the newest committed one: the merged document when this
    commit wrote a state row, else the newest version as read under the lock. ``newest`` is that
    version as read under the lock (None: no state yet); ``merged`` tells whether it came from another
    writer and was merged in. ``changed_paths`` lists the paths this commit changed against it.
    """

    load_id: str
    state: dict
    version: int
    state_changed: bool
    newest: StoredState | None
    merged: bool
    changed_paths: list[str] = field(default_factory=list)

    @property
    def state_load_id(self) -> str | None:
        """The load id of the newest state version after this commit."""
        if self.state_changed:
            return self.load_id
        return self.newest.load_id if self.newest is not None else None


def commit(
    conn: sa.Connection | None,
    store: StateStore,
    ours: dict,
    *,
    base: dict | None = None,
    known_load_id: str | None = None,
    expect: StoredState | None = _UNCHECKED,
    action: str = "load",
    load_id: str | None = None,
    wrote_data: bool = False,
    new_version: bool = False,
    local: Any = None,
    local_only: bool = False,
    on_load_id: Callable[[str], None] | None = None,
    adjust: Callable[[dict], Any] | None = None,
) -> Committed | None:
    """Commit ``ours`` as the pipeline's next state version; returns None if there was nothing to commit.

    Args:
        conn: A connection with an open transaction holding the caller's data changes; committed here
            (rolled back when nothing is committed). None only with ``local_only`` and no data.
        store: The pipeline's state and loads tables.
        ours: The document the caller wants committed (not modified).
        base: For runs: the document ``ours`` started from. When the newest version is not the one
            ``known_load_id`` names, the three are merged per slot (``model.merge``; raises
            :class:`StateConflictError` when both sides changed a slot).
        known_load_id: The load id of the newest version the caller knows (None: none).
        expect: For operations: the version the edit was planned on (None: no state). Raises
            :class:`ConcurrentEditError` when the newest version is another one. ``action`` names the
            edit in that message.
        load_id: The load id the caller's rows were written under (a new one is chosen if it does not
            sort after the newest state's; ``on_load_id`` is then called with it before anything else is
            written, to restamp the rows).
        wrote_data: The transaction holds data changes: commit a ``_dlt_loads`` row even if the state
            did not change.
        new_version: Write a new version even if the content did not change (an audited edit, a first
            commit).
        local: The pipeline's :class:`~airflow_state_provider.local_state.LocalStateFile`, written after
            the commit when the state changed (None: no local copy).
        local_only: The state lives only in ``local`` (``restore_from_destination=False``): no lock, no
            state row; the ``_dlt_loads`` row is still written when there is a connection.
        adjust: Called with the document about to be committed (merged with the newest version, under
            the lock) to change it in place, e.g. to record the data interval a run loaded.
    """
    name = store.pipeline_name
    if not local_only:
        if conn is None:
            raise ValueError(f"pipeline {name!r}: committing state to the destination needs a connection")
        store.lock(conn)
    newest = _read_newest(conn, store, expect, action, local, local_only)
    theirs = newest.state if newest is not None else (base if base is not None else ours)
    # the hash of a version just read and checked (not of a caller's ``expect``, which it may have edited)
    theirs_hash = newest.content_hash if newest is not None and expect is _UNCHECKED else None
    merged_in = base is not None and newest is not None and newest.load_id != known_load_id
    doc = _document(name, ours, base if merged_in else None, theirs, newest, adjust)
    # the state is encoded at most twice here: key-sorted for the version hash, as stored for the row
    doc_hash = _content_hash(name, doc)
    changed = new_version or doc_hash != (theirs_hash or _content_hash(name, theirs))
    if not changed and not wrote_data:
        if conn is not None:
            conn.rollback()
        return None
    dumped = None
    if changed:
        _bump(doc, theirs, doc_hash)
        dumped = codec.dump_state(doc)
        store.check_size(doc, dumped)
    final_id = _final_load_id(conn if not local_only else None, store, newest, load_id)
    if on_load_id is not None:
        on_load_id(final_id)
    if conn is not None:
        store.insert_load(conn, final_id)
        if changed and not local_only:
            store.insert_state(conn, doc, final_id, dumped)
            store.prune(conn)
        committed = False
        try:
            conn.commit()
            committed = True
        finally:
            store.dialect.after_commit(conn, committed)
    if changed and local is not None:
        local.write(doc, final_id)
    committed_doc = doc if changed else model.copy_tree(theirs)
    return Committed(
        load_id=final_id,
        state=committed_doc,
        version=int(committed_doc.get("_state_version", 0)),
        state_changed=changed,
        newest=newest,
        merged=merged_in,
        changed_paths=model.changed_paths(theirs, doc) if changed else [],
    )


def _read_newest(
    conn: sa.Connection | None,
    store: StateStore,
    expect: StoredState | None,
    action: str,
    local: Any,
    local_only: bool,
) -> StoredState | None:
    """Steps 2 and 3 of an operation (under the lock): read the newest version, check ``expect``."""
    name = store.pipeline_name
    if local_only:
        newest = local.read() if local is not None else None
        if expect is not _UNCHECKED:
            _check_expected(name, action, expect, _version_of(newest))
        return newest
    assert conn is not None
    if expect is _UNCHECKED:
        return store.newest(conn)
    # compared undecoded: a rollback replaces a newest version that does not decode
    rows = store.history_rows(conn, limit=1)
    current = (int(rows[0].version), rows[0]._dlt_load_id) if rows else None
    _check_expected(name, action, expect, current)
    return expect


def _document(
    name: str,
    ours: dict,
    base: dict | None,
    theirs: dict,
    newest: StoredState | None,
    adjust: Callable[[dict], Any] | None,
) -> dict:
    """The document to commit: ``ours`` merged per slot with ``theirs`` when ``base`` is given (another
    writer committed since), else ``ours`` with the version keys of ``theirs``; then ``adjust``-ed."""
    if base is not None:
        assert newest is not None
        doc = model.merge(base, ours, theirs, pipeline_name=name)
        log.info(
            "pipeline %r: merged with concurrent state version %d (load %s)",
            name,
            newest.version,
            newest.load_id,
        )
    else:
        doc = model.copy_tree(ours)
        for key in model.VERSION_KEYS:
            if key in theirs:
                doc[key] = theirs[key]
            else:
                doc.pop(key, None)
    doc.pop(model.LOCAL_KEY, None)
    model.drop_untouched_empty_slots(doc, theirs)
    if adjust is not None:
        adjust(doc)
    return doc


def _content_hash(name: str, doc: dict) -> str:
    """The version hash of ``doc``'s content (two documents with the same one differ at most in version
    bookkeeping and ``_local``)."""
    try:
        return codec.state_version_hash(doc)
    except StateNotSerializableError as e:  # the codec knows the path, not the pipeline
        raise StateNotSerializableError(f"pipeline {name!r}: {e} Nothing was committed.") from e


def _bump(doc: dict, theirs: dict, doc_hash: str) -> None:
    """Step 4: the next ``_state_version`` and ``_version_hash`` (``doc_hash``) after those of ``theirs``."""
    doc.setdefault("_state_engine_version", model.STATE_ENGINE_VERSION)
    doc["_state_version"] = int(theirs.get("_state_version", 0))
    doc["_version_hash"] = theirs.get("_version_hash")
    if not model.bump_version(doc, doc_hash):
        doc["_state_version"] += 1  # unchanged content that still gets its own, audited version


def _final_load_id(
    conn: sa.Connection | None, store: StateStore, newest: StoredState | None, load_id: str | None
) -> str:
    """Step 5: ``load_id`` if it sorts after the newest state's, else a new one that does."""
    if conn is not None:
        # greater than every state row's id (numerically and as text), whatever this worker's clock says
        return store.next_load_id(conn, load_id)
    return load_id_after(newest.load_id if newest is not None and newest.load_id else None, load_id)


def _version_of(stored: StoredState | None) -> tuple[int, str] | None:
    return None if stored is None else (stored.version, stored.load_id)


def _check_expected(
    name: str, action: str, expect: StoredState | None, current: tuple[int, str] | None
) -> None:
    if current == _version_of(expect):
        return
    now = "no state" if current is None else f"state version {current[0]} (load {current[1] or 'local'})"
    against = "no state" if expect is None else f"version {expect.version} (load {expect.load_id or 'local'})"
    raise ConcurrentEditError(
        f"pipeline {name!r}: {now} was committed after this {action} was planned against {against}. "
        "Nothing was written. Run the command again: it plans against the newest version."
    )
