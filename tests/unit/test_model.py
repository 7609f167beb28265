"""The state document model: versions, slots and the three-way slot merge (DESIGN §5.3)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_state_provider.exceptions import StateConflictError
from airflow_state_provider.state import model
from airflow_state_provider.state.codec import state_version_hash


def doc(**sources) -> dict:
    state = model.default_state("p", "ds", "dlt.destinations.duckdb")
    state["sources"] = copy.deepcopy(sources)
    state["_version_hash"] = state_version_hash(state)  # a fresh document has no "sources" key (dlt)
    return state


def test_bump_version_only_on_content_change():
    state = doc()
    v0 = state["_state_version"]
    assert model.bump_version(state) is False
    assert state["_state_version"] == v0
    model.resource_slot(state, "s", "r")["k"] = 1
    assert model.bump_version(state) is True
    assert state["_state_version"] == v0 + 1
    assert model.bump_version(state) is False


def test_slots_cover_pipeline_keys_source_keys_and_resources():
    state = doc(s={"shared": 1, "resources": {"a": {"x": 1}, "b": {}}})
    slots = model.slot_map(state)
    assert slots[("sources", "s", "shared")] == 1
    assert slots[("sources", "s", "resources", "a")] == {"x": 1}
    assert slots[("sources", "s", "resources", "b")] == {}
    assert slots[("pipeline_name",)] == "p"
    assert not any(s[0] in model.VERSION_KEYS for s in slots)


def test_merge_takes_each_side_for_slots_only_it_changed():
    base = doc(s={"resources": {"a": {"n": 0}, "b": {"n": 0}}})
    ours = doc(s={"resources": {"a": {"n": 1}, "b": {"n": 0}}})
    theirs = doc(s={"k": "new", "resources": {"a": {"n": 0}, "b": {"n": 5}}})
    merged = model.merge(base, ours, theirs, pipeline_name="p")
    assert merged["sources"]["s"] == {"k": "new", "resources": {"a": {"n": 1}, "b": {"n": 5}}}


def test_merge_conflict_names_every_slot_changed_by_both():
    base = doc(s={"cursor": 1, "resources": {"a": {"n": 0}}})
    ours = doc(s={"cursor": 2, "resources": {"a": {"n": 1}}})
    theirs = doc(s={"cursor": 3, "resources": {"a": {"n": 2}}})
    with pytest.raises(StateConflictError) as err:
        model.merge(base, ours, theirs, pipeline_name="p")
    assert "sources.s.cursor" in str(err.value)
    assert "sources.s.resources.a" in str(err.value)
    assert "'p'" in str(err.value)


def test_merge_same_change_on_both_sides_is_a_conflict():
    """Two overlapping runs that advanced the same cursor loaded the same rows: the later one must fail
    (and roll its rows back) even though its state equals the committed one."""
    base = doc(s={"resources": {"a": {"n": 0}}})
    same = doc(s={"resources": {"a": {"n": 1}}})
    with pytest.raises(StateConflictError, match=r"sources\.s\.resources\.a"):
        model.merge(base, same, copy.deepcopy(same), pipeline_name="p")


def test_merge_keeps_deletions_by_one_side():
    base = doc(s={"resources": {"a": {"n": 0}, "b": {"n": 0}}})
    ours = doc(s={"resources": {"b": {"n": 0}}})  # we reset a
    theirs = doc(s={"resources": {"a": {"n": 0}, "b": {"n": 9}}})
    merged = model.merge(base, ours, theirs, pipeline_name="p")
    assert merged["sources"]["s"]["resources"] == {"b": {"n": 9}}


def test_changed_paths_points_at_leaves():
    old = doc(s={"resources": {"a": {"incremental": {"ts": {"last_value": 1, "unique_hashes": []}}}}})
    new = copy.deepcopy(old)
    new["sources"]["s"]["resources"]["a"]["incremental"]["ts"]["last_value"] = 2
    new["sources"]["s"]["added"] = True
    assert model.changed_paths(old, new) == [
        "sources.s.added",
        "sources.s.resources.a.incremental.ts.last_value",
    ]


# -- property: the merge is the per-slot union of non-conflicting changes -------------------------

values = st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=2))
resource_dicts = st.dictionaries(st.sampled_from("xyz"), values, max_size=3)
sources_strategy = st.dictionaries(
    st.sampled_from(["s1", "s2"]),
    st.fixed_dictionaries(
        {"resources": st.dictionaries(st.sampled_from(["a", "b", "c"]), resource_dicts, max_size=3)},
        optional={"k": values},
    ),
    max_size=2,
)


@given(base=sources_strategy, ours=sources_strategy, theirs=sources_strategy)
def test_merge_property(base, ours, theirs):
    b, o, t = doc(**base), doc(**ours), doc(**theirs)
    sb, so, stt = model.slot_map(b), model.slot_map(o), model.slot_map(t)
    missing = object()
    # an empty slot of ours that the base lacks was created by reading it: no change
    so_all, so = so, {s: v for s, v in so.items() if not (v == {} and s not in sb)}
    both_changed = [
        s
        for s in sb.keys() | so.keys() | stt.keys()
        if so.get(s, missing) != sb.get(s, missing) and stt.get(s, missing) != sb.get(s, missing)
    ]
    if both_changed:
        with pytest.raises(StateConflictError):
            model.merge(b, o, t, pipeline_name="p")
        return
    merged = model.slot_map(model.merge(b, o, t, pipeline_name="p"))
    for slot in sb.keys() | so.keys() | stt.keys():
        expected = (
            so.get(slot, missing)
            if so.get(slot, missing) != sb.get(slot, missing)
            else stt.get(slot, missing)
        )
        assert merged.get(slot, missing) == expected, slot
    # merging with nothing changed on our side yields theirs
    assert model.slot_map(model.merge(t, copy.deepcopy(t), o, pipeline_name="p")) == so_all


def test_empty_slots_created_by_reading_are_not_persisted():
    committed = doc(s={"resources": {"kept_empty": {}}})
    state = copy.deepcopy(committed)
    model.resource_slot(state, "s", "looked_at")
    model.resource_slot(state, "other", "looked_at")
    model.drop_untouched_empty_slots(state, committed)
    assert state["sources"] == {"s": {"resources": {"kept_empty": {}}}}
    assert model.content_equal(state, committed)


def test_changed_paths_name_the_slots_inside_a_new_or_removed_container():
    # a fresh document has no "sources" (dlt's layout): the first commit names its source, not "sources"
    new = {"sources": {"s": {"resources": {"r": {"x": 1}}}}}
    assert model.changed_paths({}, new) == ["sources.s"]
    assert model.changed_paths(new, {}) == ["sources.s"]
    with_source_key = {"sources": {"s": {"last": 1}}}
    grown = {"sources": {"s": {"last": 1, "resources": {"r": {"x": 1}}}}}
    assert model.changed_paths(with_source_key, grown) == ["sources.s.resources.r"]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"x": 1}, {"x": True}, False),
        ([1], [1.0], False),
        ({"a": {"b": [1, {"c": 1}]}}, {"a": {"b": [1, {"c": 1.0}]}}, False),
        ({"a": 1, "b": True}, {"b": 1, "a": True}, False),  # same types overall, swapped by key
        ((1,), [1], False),
        ({"a": {"b": [1, {"c": 1}]}, "z": 2}, {"z": 2, "a": {"b": [1, {"c": 1}]}}, True),  # key order
        ({"k": ["x", "y"]}, {"k": ["x", "y"]}, True),
        (None, None, True),
    ],
)
def test_same_value_compares_types_at_every_level(a, b, same):
    # the state hash tells these apart, so a merge comparing slots must too
    assert model.same_value(a, b) is same
