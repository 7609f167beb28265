"""Property-based tests of the three-way state merge and of the stored blob (issue 9 §6).

``tests/unit/test_model.py`` checks one merge against its per-slot definition and
``tests/unit/test_codec.py`` the codec's round trips and hostile inputs. Here: what the merge
promises across *several* concurrent commits (order independence, symmetry, serializability with
retries) and that a damaged blob is never read as a different state.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from airflow_state_provider.destination.dialects.base import Dialect
from airflow_state_provider.destination.store import StateStore
from airflow_state_provider.exceptions import StateConflictError, StateCorruptError
from airflow_state_provider.state import codec, model

DELETE: Any = object()
Slot = tuple[str, ...]

source_keys = st.tuples(st.just("sources"), st.sampled_from(["s1", "s2"]), st.sampled_from(["k1", "k2"]))
resource_slots = st.tuples(
    st.just("sources"), st.sampled_from(["s1", "s2"]), st.just("resources"), st.sampled_from(["a", "b", "c"])
)
scalars = st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=2))
resource_values = st.dictionaries(st.sampled_from(["x", "y", "incremental"]), scalars, max_size=3)


def slot_values(slot: Slot) -> st.SearchStrategy:
    return resource_values if len(slot) == 4 else scalars


slots = st.one_of(source_keys, resource_slots)
slot_maps = st.lists(slots, max_size=6, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({k: slot_values(k) for k in keys})
)


@st.composite
def changes(draw: st.DrawFn, base: dict[Slot, Any]) -> dict[Slot, Any]:
    """A run's changes to ``base``: new values, new slots, deleted slots."""
    touched = draw(st.lists(slots, max_size=4, unique=True))
    return {
        slot: draw(st.one_of(st.just(DELETE), slot_values(slot)) if slot in base else new_slot_values(slot))
        for slot in touched
    }


def new_slot_values(slot: Slot) -> st.SearchStrategy:
    # a new, empty resource slot is what reading current.resource_state() leaves behind: no change
    # (model.merge and the commit drop it), so a run that creates a slot gives it content
    return slot_values(slot).filter(lambda value: value != {})


def document(slot_map: dict[Slot, Any]) -> dict:
    """A state document (dlt layout) holding ``slot_map``."""
    doc = model.default_state("p", "ds", "dlt.destinations.duckdb")
    for slot, value in slot_map.items():
        source = doc.setdefault("sources", {}).setdefault(slot[1], {"resources": {}})
        if len(slot) == 3:
            source[slot[2]] = copy.deepcopy(value)
        else:
            source["resources"][slot[3]] = copy.deepcopy(value)
    return doc


def apply(slot_map: dict[Slot, Any], change: dict[Slot, Any]) -> dict[Slot, Any]:
    out = dict(slot_map)
    for slot, value in change.items():
        if value is DELETE:
            out.pop(slot, None)
        else:
            out[slot] = value
    return out


def sources_of(doc: dict) -> dict[Slot, Any]:
    return {s: v for s, v in model.slot_map(doc).items() if s[0] == "sources"}


def commit_concurrently(base: dict[Slot, Any], runs: list[dict[Slot, Any]]) -> dict:
    """Every run restored ``base``; they commit in list order, each merging with the newest commit,
    exactly as ``Pipeline._commit`` does. Raises StateConflictError like the pipeline."""
    restored = document(base)
    newest: dict | None = None
    for change in runs:
        ours = document(apply(base, change))
        newest = ours if newest is None else model.merge(restored, ours, newest, pipeline_name="p")
    assert newest is not None
    return newest


def effective(base: dict[Slot, Any], change: dict[Slot, Any]) -> set[Slot]:
    """The slots a change really changes (writing the value a slot already has is no change)."""
    after = apply(base, change)
    return {s for s in change if after.get(s, DELETE) != base.get(s, DELETE)}


# -- order independence ------------------------------------------------------------------------------


@st.composite
def disjoint_runs(draw: st.DrawFn) -> tuple[dict[Slot, Any], list[dict[Slot, Any]]]:
    base = draw(slot_maps)
    runs: list[dict[Slot, Any]] = []
    claimed: set[Slot] = set()
    for _ in range(draw(st.integers(2, 4))):
        change = {s: v for s, v in draw(changes(base)).items() if s not in claimed}
        claimed |= set(change)
        runs.append(change)
    return base, runs


@given(disjoint_runs())
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
def test_disjoint_concurrent_changes_give_the_same_document_in_every_commit_order(case):
    base, runs = case
    expected = apply(base, {s: v for run in runs for s, v in run.items()})
    results = [sources_of(commit_concurrently(base, list(order))) for order in itertools.permutations(runs)]
    for result in results:
        assert result == expected


@given(st.data())
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
def test_merge_is_symmetric(data):
    """Committing A then B or B then A: both conflict, or both give the same document."""
    base = data.draw(slot_maps)
    a, b = data.draw(changes(base)), data.draw(changes(base))
    outcomes = []
    for first, second in ((a, b), (b, a)):
        try:
            outcomes.append(sources_of(commit_concurrently(base, [first, second])))
        except StateConflictError as e:
            outcomes.append(("conflict", sorted(str(e).split("slot(s) ")[1].split(" were")[0].split(", "))))
    assert outcomes[0] == outcomes[1]
    conflicting = effective(base, a) & effective(base, b)
    assert isinstance(outcomes[0], tuple) == bool(conflicting)


@given(st.data())
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
def test_merge_with_an_unchanged_side_is_the_other_side(data):
    base = data.draw(slot_maps)
    change = data.draw(changes(base))
    b, o = document(base), document(apply(base, change))
    assert sources_of(model.merge(b, copy.deepcopy(b), o, pipeline_name="p")) == sources_of(o)
    assert sources_of(model.merge(b, o, copy.deepcopy(b), pipeline_name="p")) == sources_of(o)


@st.composite
def overlapping_runs(draw: st.DrawFn) -> tuple[dict[Slot, Any], list[dict[Slot, Any]]]:
    base = draw(slot_maps)
    return base, [draw(changes(base)) for _ in range(draw(st.integers(2, 4)))]


@given(overlapping_runs())
@example(  # a retry replays "a stays {}" on a base where another run deleted a
    (
        {("sources", "s1", "k1"): None, ("sources", "s1", "resources", "a"): {}},
        [
            {("sources", "s1", "resources", "a"): DELETE, ("sources", "s1", "resources", "b"): {"x": None}},
            {("sources", "s1", "resources", "b"): {"x": None}, ("sources", "s1", "resources", "a"): {}},
            {},
        ],
    )
)
@example(  # a retry on a base without s2's "a" leaves it {} (read, not written): run 1's {"x": None} stays
    (
        {
            ("sources", "s1", "k1"): None,
            ("sources", "s1", "k2"): None,
            ("sources", "s2", "k1"): None,
            ("sources", "s2", "resources", "a"): {},
        },
        [
            {
                ("sources", "s1", "k1"): DELETE,
                ("sources", "s1", "resources", "a"): {"x": None},
                ("sources", "s2", "resources", "a"): DELETE,
            },
            {
                ("sources", "s1", "k1"): DELETE,
                ("sources", "s1", "k2"): DELETE,
                ("sources", "s2", "k1"): DELETE,
                ("sources", "s2", "resources", "a"): {"x": None},
            },
            {("sources", "s1", "k1"): DELETE, ("sources", "s2", "resources", "a"): {}},
        ],
    )
)
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
def test_with_retries_the_result_is_the_commits_applied_one_after_another(case):
    """Serializability: runs start together, losers retry on the newest state. The final document is
    what each run changed (relative to the version it restored) applied in the order the runs finally
    committed -- no update is lost."""
    base, runs = case
    newest_slots, newest_doc = base, None
    restored = {i: base for i in range(len(runs))}
    pending = list(range(len(runs)))
    committed: list[dict[Slot, Any]] = []
    while pending:
        i = pending.pop(0)
        ours = document(apply(restored[i], runs[i]))
        try:
            if newest_doc is None or restored[i] is newest_slots:
                result = ours
            else:
                result = model.merge(document(restored[i]), ours, newest_doc, pipeline_name="p")
        except StateConflictError:
            restored[i] = newest_slots  # the retry restores the newest version and runs again
            pending.append(i)
            continue
        newest_doc, newest_slots = result, sources_of(result)
        # a resource slot the run's version lacked and the run leaves {} was read, not written: no change
        # (model.merge's rule), so a concurrent writer's value of it stays
        committed.append(
            {
                s: runs[i][s]
                for s in effective(restored[i], runs[i])
                if not (len(s) == 4 and runs[i][s] == {} and s not in restored[i])
            }
        )
    expected = base
    for change in committed:
        expected = apply(expected, change)
    # a retried run replays its change on a newer base, where a slot it leaves empty ({}: what reading
    # resource_state() leaves) may be new; a commit keeps it, a merge drops it, and readers cannot tell
    # an empty resource slot from none: compare without them
    assert without_empty_slots(newest_slots) == without_empty_slots(expected)
    assert len(committed) == len(runs)


def without_empty_slots(slots: dict[Slot, Any]) -> dict[Slot, Any]:
    return {s: v for s, v in slots.items() if not (len(s) == 4 and v == {})}


# -- the stored blob ---------------------------------------------------------------------------------

blob_documents = slot_maps.map(document)


@given(blob_documents, st.randoms(use_true_random=False))
def test_the_version_hash_ignores_key_order(doc, rnd):
    def shuffled(value: Any) -> Any:
        if isinstance(value, dict):
            items = list(value.items())
            rnd.shuffle(items)
            return {k: shuffled(v) for k, v in items}
        return value

    assert codec.state_version_hash(shuffled(doc)) == codec.state_version_hash(doc)


@dataclass(frozen=True)
class _Row:
    """A state row as the store reads it."""

    version: int
    state: str
    created_at: None
    version_hash: str
    _dlt_load_id: str


_STORE = StateStore(Dialect(sa.create_engine("sqlite://")), "ds", "p")


@pytest.mark.parametrize("plain", [False, True], ids=["zlib_blob", "plain_json"])
@given(doc=blob_documents, where=st.integers(0, 10**6), char=st.characters(codec="ascii"))
@settings(max_examples=300)
def test_a_damaged_blob_is_refused_or_reads_as_the_same_state(plain, doc, where, char):
    """One changed character anywhere in a stored ``state`` value: the store raises
    StateCorruptError or returns exactly the committed content -- never a different state."""
    doc["_version_hash"] = codec.state_version_hash(doc)
    blob = codec.typed_dumps(doc).decode() if plain else codec.encode_state(doc)
    i = where % len(blob)
    assume(blob[i] != char)
    damaged = blob[:i] + char + blob[i + 1 :]
    row = _Row(5, damaged, None, doc["_version_hash"], "1700000000.0000000")
    try:
        stored = _STORE._decode(row)
    except StateCorruptError as e:
        assert "pipeline 'p' state version 5" in str(e)
        return
    assert codec.state_version_hash(stored.state) == doc["_version_hash"]
    assert sources_of(stored.state) == sources_of(doc)
