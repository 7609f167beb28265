"""How often a commit encodes the state (issue 19): the state is encoded the fewest times the protocol
needs, on SQLite, DuckDB and PostgreSQL, while what is committed stays the same.

A commit that writes a new version encodes the document three times: the newest stored version's
content, to check it against its ``version_hash`` as every read does; the new document, key-sorted, for
its version hash (which also tells whether anything changed); and the new document as stored (its length
is the size checked against ``max_state_bytes``). Counted, not timed.
"""

from __future__ import annotations

import uuid

import pytest

from airflow_state_provider import Pipeline, current, resource
from airflow_state_provider.destination.commit import commit
from airflow_state_provider.destination.store import new_load_id
from airflow_state_provider.exceptions import StateConflictError
from airflow_state_provider.state import codec

#: a resource state of ~200 KB: its encodings are told apart from those of small documents by size
PAYLOAD = {f"k{i:05d}": f"{i:0100d}" for i in range(2_000)}
BIG = 100_000


def new_pipeline(url: str, pipelines_dir) -> Pipeline:
    return Pipeline("p", destination=url, dataset_name="ds", pipelines_dir=pipelines_dir / uuid.uuid4().hex)


@resource(name="r")
def big_state():
    current.resource_state()["payload"] = PAYLOAD
    current.resource_state()["n"] = 0
    yield from ()


@resource(name="other")
def other_writer():
    current.resource_state()["seen"] = True
    yield from ()


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the typed JSON encodings of the big document made from now on."""
    sizes: list[int] = []
    encode = codec.typed_dumps

    def counted(obj, **kw):
        out = encode(obj, **kw)
        if len(out) > BIG:
            sizes.append(len(out))
        return out

    monkeypatch.setattr(codec, "typed_dumps", counted)
    return sizes


def slot(doc: dict) -> dict:
    return doc["sources"]["p"]["resources"]["r"]


def test_a_commit_encodes_the_state_three_times(dest_url, pipelines_dir, encodes):
    p = new_pipeline(dest_url, pipelines_dir)
    p.run(big_state())
    doc = p.state
    version = doc["_state_version"]
    slot(doc)["n"] = 1
    encodes.clear()
    with p.engine.connect() as conn:
        conn.begin()
        done = commit(conn, p.store, doc, load_id=new_load_id())
    assert len(encodes) == 3
    assert done is not None and done.state_changed and done.version == version + 1
    assert done.changed_paths == ["sources.p.resources.r.n"]
    assert slot(doc)["n"] == 1 and "_version_hash" in doc  # the caller's document is not modified
    restored = new_pipeline(dest_url, pipelines_dir)
    assert restored.state == done.state
    assert restored.state["_version_hash"] == codec.state_version_hash(done.state)


def test_an_unchanged_state_is_compared_by_hash_and_not_written(dest_url, pipelines_dir, encodes):
    p = new_pipeline(dest_url, pipelines_dir)
    p.run(big_state())
    doc = p.state
    encodes.clear()
    with p.engine.connect() as conn:
        conn.begin()
        assert commit(conn, p.store, doc, load_id=new_load_id()) is None
    assert len(encodes) == 2  # the stored version's check, and the document's hash
    assert new_pipeline(dest_url, pipelines_dir).state["_state_version"] == doc["_state_version"]


def test_a_run_merging_a_concurrent_commit_still_encodes_three_times(dest_url, pipelines_dir, encodes):
    """A run that restored version N commits after another writer committed N+1: disjoint slots merge
    (as many encodings as a plain commit), the same slot still raises StateConflictError."""
    p = new_pipeline(dest_url, pipelines_dir)
    p.run(big_state())
    base = p.state
    known = new_pipeline(dest_url, pipelines_dir).sync_destination()
    new_pipeline(dest_url, pipelines_dir).run(other_writer())
    ours = p.state
    slot(ours)["n"] = 2
    encodes.clear()
    with p.engine.connect() as conn:
        conn.begin()
        done = commit(conn, p.store, ours, base=base, known_load_id=known.load_id, load_id=new_load_id())
    assert len(encodes) == 3
    assert done is not None and done.merged
    restored = new_pipeline(dest_url, pipelines_dir).state
    assert slot(restored)["n"] == 2 and restored["sources"]["p"]["resources"]["other"] == {"seen": True}
    assert restored["_state_version"] == base["_state_version"] + 2

    stale = dict(ours, sources={"p": {"resources": {"r": {**slot(ours), "n": 3}}}})
    with p.engine.connect() as conn:
        conn.begin()
        with pytest.raises(StateConflictError, match=r"sources\.p\.resources\.r"):
            commit(conn, p.store, stale, base=base, known_load_id=known.load_id, load_id=new_load_id())
    assert slot(new_pipeline(dest_url, pipelines_dir).state)["n"] == 2
