"""State paths (``state/paths.py``): the shapes users type, for get, set and delete (issue 16 item 1)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_state_provider.exceptions import StateOperationError, StatePathError
from airflow_state_provider.state import paths

DOC = {
    "ids": [1, 2, 3, 4],
    "objs": [{"x": 1}, {"x": 2}],
    "a": {"x.y": 1, "b": {"c": 2}},
    "incremental": {"meta.updated": {"last_value": 3}},
    "resources": {"r": {"n": 1}},
}


def doc() -> dict:
    return copy.deepcopy(DOC)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("", DOC),
        ("ids[1]", 2),
        ("ids.1", 2),  # digits index lists in the dotted spelling
        ("ids[-1]", 4),
        ("$.a.b.c", 2),
        ('a["x.y"]', 1),
        ("a.'x.y'", 1),
        ("a.x.y", 1),  # a key containing dots: the longest key that fits wins
        ("incremental.meta.updated.last_value", 3),
        ('incremental."meta.updated".last_value', 3),
        ("objs[1].x", 2),
    ],
)
def test_get_one_value(path, value):
    assert paths.get(doc(), path) == value


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("a.*", "a wildcard"),
        ("ids[*]", "a wildcard"),
        ("ids[0:2]", "a slice"),
        ("ids[?(@ > 2)]", "a filter"),
        ("a..c", "descendants"),
        ("ids[1,2]", "several indexes"),
    ],
)
def test_get_and_set_refuse_paths_to_several_values_naming_the_path(path, shape):
    d = doc()
    for call in (lambda: paths.get(d, path), lambda: paths.set(d, path, 0, create=True)):
        with pytest.raises(StatePathError) as err:
            call()
        assert err.value.state_path == path
        assert f"state path {path!r} selects any number of values ({shape})" in str(err.value)
    assert d == DOC  # nothing written


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("ids[7]", "ids is a list of 4 item(s), '7' is not an index in it"),
        ("nope.x", "the document has no key 'nope' (keys: a, ids, incremental, objs, resources)"),
        ("a.b.c.d", "a.b.c is a int, not a dict or list"),
        ("a..", "'a..' is not a valid JSONPath"),
        ("a.b.", "has an empty key"),
        ("[[[", "'[[[' is not a valid JSONPath"),
    ],
)
def test_bad_paths_name_what_is_wrong(path, message):
    with pytest.raises(StatePathError) as err:
        paths.get(doc(), path)
    assert message in str(err.value) and err.value.state_path == path
    assert isinstance(err.value, StateOperationError | ValueError)


def test_set_keeps_the_document_unchanged_on_error_and_creates_only_with_create():
    d = doc()
    with pytest.raises(StatePathError, match="has no key 'new'"):
        paths.set(d, "a.new.deep", 5)
    with pytest.raises(StatePathError, match="'9' is not an index"):
        paths.set(d, "ids[9]", 5, create=True)
    assert d == DOC
    paths.set(d, "a.new.deep", 5, create=True)
    paths.set(d, 'a["q.r"]', 6, create=True)
    paths.set(d, "ids[0]", 9)
    paths.set(d, 'incremental."meta.updated".last_value', 7)
    paths.set(d, "incremental.meta.updated.last_value", 8)
    assert d["a"]["new"] == {"deep": 5} and d["a"]["q.r"] == 6 and d["ids"][0] == 9
    assert d["incremental"] == {"meta.updated": {"last_value": 8}}


@pytest.mark.parametrize(
    ("path", "deleted", "check"),
    [
        ("ids[1]", ["ids.1"], lambda d: d["ids"] == [1, 3, 4]),  # the crash of issue 16
        ("ids[-1]", ["ids.-1"], lambda d: d["ids"] == [1, 2, 3]),
        ("ids[0:2]", ["ids.0", "ids.1"], lambda d: d["ids"] == [3, 4]),
        ("ids[?(@ > 2)]", ["ids.2", "ids.3"], lambda d: d["ids"] == [1, 2]),
        ("ids[*]", ["ids.0", "ids.1", "ids.2", "ids.3"], lambda d: d["ids"] == []),
        ("objs[?(@.x == 1)]", ["objs.0"], lambda d: d["objs"] == [{"x": 2}]),
        ('a["x.y"]', ["a.x.y"], lambda d: d["a"] == {"b": {"c": 2}}),
        ("a.*", ["a.x.y", "a.b"], lambda d: d["a"] == {}),
        ("a..c", ["a.b.c"], lambda d: d["a"]["b"] == {}),
        ("incremental.meta.updated", ["incremental.meta.updated"], lambda d: d["incremental"] == {}),
        ("ids.1", ["ids.1"], lambda d: d["ids"] == [1, 3, 4]),
        # `resources` itself is kept; what is inside it can go
        ("*", ["ids", "objs", "a", "incremental"], lambda d: d == {"resources": {"r": {"n": 1}}}),
        ("resources", [], lambda d: d == DOC),
        ("resources.r.n", ["resources.r.n"], lambda d: d["resources"] == {"r": {}}),
        ("nokey", [], lambda d: d == DOC),
        ("$", [], lambda d: d == DOC),
    ],
)
def test_delete_every_shape_with_the_library_filter(path, deleted, check):
    d = doc()
    assert paths.delete(d, path, keep=("resources", "")) == deleted
    assert check(d), d


def test_find_lists_locations_and_values():
    assert paths.find(doc(), "ids[?(@ > 2)]") == [("ids.2", 3), ("ids.3", 4)]
    assert paths.find(doc(), "incremental.meta.updated.last_value") == [
        ("incremental.meta.updated.last_value", 3)
    ]
    assert paths.find(doc(), "nope") == []


keys = st.text(alphabet="abcxyz._", min_size=1, max_size=6).filter(
    lambda k: not k.startswith(".") and not k.endswith(".") and ".." not in k
)
trees = st.recursive(
    st.integers(0, 9),
    lambda children: st.dictionaries(keys, children, min_size=1, max_size=3),
    max_leaves=8,
)


def leaves(tree, prefix=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from leaves(v, (*prefix, k))
    else:
        yield prefix, tree


@given(trees.filter(lambda t: isinstance(t, dict)))
def test_every_leaf_is_reachable_by_its_quoted_jsonpath_and_set_round_trips(tree):
    for steps, value in leaves(tree):
        quoted = "$" + "".join(f'["{k}"]' for k in steps)
        assert paths.get(tree, quoted) == value
        copy_ = copy.deepcopy(tree)
        paths.set(copy_, quoted, value + 100)
        assert paths.get(copy_, quoted) == value + 100
        assert paths.delete(copy_, quoted) == [".".join(steps)]
