"""The store's pure functions: load ids in commit order, dlt's row keys, the size guard's report."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_state_provider.destination.dialects import dialect_for
from airflow_state_provider.destination.engine import create_engine
from airflow_state_provider.destination.store import (
    StateStore,
    biggest_paths,
    later_load_id,
    load_id_after,
    load_id_key,
    new_dlt_id,
    new_load_id,
)
from airflow_state_provider.exceptions import StateTooLargeError

unix_times = st.floats(min_value=0, max_value=9_999_999_998, allow_nan=False)


# dlt's ids (unix times) and foreign ids: text, and ids that parse as huge or infinite floats
# ("1E100", "inf": foreign too since #14's review, so a new id sorts after them)
load_ids = st.one_of(
    unix_times.map(lambda t: f"{t:.7f}"),
    st.text(min_size=1, max_size=12),
    st.sampled_from(["1E100", "inf", "-inf", "nan", "99999999999.5", "-5", "1e9"]),
)


@given(load_ids)
def test_a_new_load_id_sorts_after_any_other_as_number_and_as_text(after: str):
    new = new_load_id(after=after)
    assert re.fullmatch(r"\d{10}\.\d{7}", new)
    assert load_id_key(new) > load_id_key(after)
    if load_id_key(after)[0] == 1 and re.fullmatch(r"\d{10}\.\d{7}", after):
        assert new > after  # dlt restores the greatest id as text


@given(load_ids, st.one_of(st.none(), load_ids))
def test_later_load_id_keeps_a_candidate_only_when_it_sorts_after_the_newest(candidate, newest):
    chosen = later_load_id(candidate, newest)
    if newest is None or load_id_key(candidate) > load_id_key(newest):
        assert chosen == candidate
    else:
        assert load_id_key(chosen) > load_id_key(newest)


@given(st.one_of(st.none(), unix_times.map(lambda t: f"{t:010.7f}".zfill(18))))
def test_load_id_after_sorts_after_the_newest(newest):
    chosen = load_id_after(newest)
    if newest is not None:
        assert load_id_key(chosen) > load_id_key(newest)


def test_dlt_ids_are_14_base64_characters_and_unique():
    ids = {new_dlt_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9+/]{14}", i) for i in ids)


def test_biggest_paths_names_the_deepest_big_subtrees_first():
    state = {"sources": {"s": {"resources": {"big": {"ids": list(range(500))}, "small": {"x": 1}}}}}
    report = biggest_paths(state)
    # parents always outweigh their children: only the leaf-most paths are named, biggest first
    assert re.fullmatch(
        r"sources\.s\.resources\.big\.ids \(\d+ B\), sources\.s\.resources\.small\.x \(1 B\)", report
    )


@pytest.fixture
def store() -> StateStore:
    engine = create_engine("sqlite://")
    return StateStore(dialect_for(engine), "main", "pipe", max_state_bytes=1_000, warn_state_bytes=500)


def test_check_size_refuses_over_the_limit_naming_the_biggest_path(store: StateStore):
    assert store.check_size({"sources": {}}) < 500
    with pytest.raises(StateTooLargeError, match=r"pipeline 'pipe'.*over the limit of 1000.*ids"):
        store.check_size({"sources": {"s": {"resources": {"r": {"ids": list(range(400))}}}}})


@pytest.mark.parametrize("n", [0, 1, 63, 4095, 4096, 4097, 10_000, 20_001])
def test_loader_dlt_ids_of_a_batch_are_unique_ordered_and_share_a_prefix(n):
    from airflow_state_provider.destination.loader import new_dlt_ids

    ids = new_dlt_ids(n)
    assert len(ids) == n == len(set(ids))
    assert ids == sorted(ids)  # one ordered run into the UNIQUE index
    assert all(re.fullmatch(r"[A-Za-z0-9+/]{14}", i) for i in ids)
    assert len({i[:9] for i in ids}) == min(n, 1)
    # the counter starts at zero and counts on without gaps
    assert [i[9:] for i in ids[:2]] == ["+++++", "++++/"][:n]
    if n > 4096:
        assert ids[4095][9:] == "+++zz" and ids[4096][9:] == "++/++"
