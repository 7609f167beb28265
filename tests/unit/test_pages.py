"""Plain rows reach the loader in pages: a list is paged by slicing, any other iterable row by row,
with the same pages either way."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from airflow_state_provider.pipeline import _Pages

items = st.lists(st.one_of(st.builds(dict, i=st.integers(0, 9)), st.integers(), st.just("s")), max_size=40)


@given(items, st.one_of(st.none(), st.integers(1, 12)))
def test_a_list_gives_the_pages_its_iterator_gives(data, checkpoint_every):
    from_list = list(_Pages(data, checkpoint_every))
    from_iterator = list(_Pages(iter(data), checkpoint_every))
    assert from_list == from_iterator
    # consecutive dicts are grouped, each page at most the page size, everything else passes through
    size = _Pages(data, checkpoint_every).size
    assert all(
        len(p) <= size and all(type(r) is dict for r in p)
        for p in from_list
        if isinstance(p, list) and p and type(p[0]) is dict
    )
    flat = [x for p in from_list for x in (p if isinstance(p, list) and p and type(p[0]) is dict else [p])]
    assert flat == data


def test_pages_of_a_list_are_copies():
    rows = [{"i": i} for i in range(2500)]
    pages = list(_Pages(rows, None))
    assert [len(p) for p in pages] == [1000, 1000, 500]
    pages[0].clear()
    assert len(rows) == 2500
