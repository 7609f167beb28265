"""The ``state`` blob and ``version_hash`` of real runs, byte for byte, with our codec and with dlt's.

``tests/unit/test_codec.py`` compares the codecs on generated documents; here the documents are the ones
both tools actually commit, read back from the destination.
"""

from __future__ import annotations

import base64
import uuid

import pytest
from dlt.common import versioned_state as dlt_codec

from airflow_state_provider.state.codec import decode_state, encode_state, state_version_hash, typed_dumps
from tests.interop.support import (
    DEFAULT_SCHEMA,
    SOURCE,
    Feed,
    Seen,
    Shape,
    StateRow,
    Warehouse,
    assert_same,
    dlt_events,
    dlt_pipeline,
    our_events,
    run_dlt,
    run_ours,
    slot,
    sorted_hashes,
    without_local,
)


def dlt_hash(doc: dict) -> str:
    return dlt_codec.generate_state_version_hash(doc, exclude_attrs=["_local"])


def newest(wh: Warehouse) -> StateRow:
    return wh.state_rows()[-1]


def test_every_committed_row_reencodes_byte_for_byte_with_both_codecs(warehouse: Warehouse) -> None:
    feed, seen = Feed(), list[Seen]()
    writers: dict[str, str] = {}
    for n, batch in enumerate((((1, 0), (2, 1)), ((3, 1), (4, 2)), ((5, 3),), ((6, 3), (7, 4)))):
        feed.add(*batch)
        for shape in Shape:  # a standalone resource and a @source: two source keys in one document
            if n % 2 == 0:
                _, dlt_info = run_dlt(warehouse, dlt_events(feed, seen, shape))
                writers[dlt_info.loads_ids[-1]] = "dlt"
            else:
                _, info = run_ours(warehouse, our_events(feed, seen, shape))
                assert info.load_id is not None
                writers[info.load_id] = "ours"

    rows = warehouse.state_rows()
    assert [writers[r.load_id] for r in rows] == ["dlt", "dlt", "ours", "ours"] * 2
    for row in rows:
        where = f"{writers[row.load_id]} row v{row.version}"
        ours, theirs = decode_state(row.state), dlt_codec.decompress_state(row.state)
        assert_same(ours, theirs)
        assert encode_state(ours) == row.state, where
        assert dlt_codec.compress_state(theirs) == row.state, where
        assert state_version_hash(ours) == row.version_hash == dlt_hash(theirs), where
        assert ours["_version_hash"] == row.version_hash, where
        assert (row.version, row.engine_version) == (ours["_state_version"], 4), where
        assert row.committed and "_local" not in ours, where
        assert base64.b64decode(row.state)[:2] == b"\x78\xda", where  # zlib, level 9
    assert [r.version for r in rows] == list(range(1, 9))


@pytest.mark.parametrize("shape", list(Shape), ids=lambda s: s.value)
def test_same_rows_through_either_tool_commit_the_same_state(warehouse: Warehouse, shape: Shape) -> None:
    """dlt in one database, us in another, same feed: the same document, version and version_hash.

    Except, for a pipeline that first ran a ``@source``, the default schema: dlt names it after that
    source, we after the pipeline (documented; both tools key standalone resources by what the state says).
    """
    other = warehouse.sibling()
    dlt_feed, our_feed, seen = Feed(), Feed(), list[Seen]()

    for feed in (dlt_feed, our_feed):
        feed.add((1, 0), (2, 1), (3, 2))  # one row on the boundary: unique_hashes has one entry
    run_dlt(warehouse, dlt_events(dlt_feed, seen, shape))
    run_ours(other, our_events(our_feed, seen, shape))
    theirs_row, ours_row = newest(warehouse), newest(other)
    theirs, ours = decode_state(theirs_row.state), decode_state(ours_row.state)
    assert ours_row.version == theirs_row.version == 1
    if shape is Shape.SOURCE:
        assert (theirs["default_schema_name"], theirs["schema_names"]) == (SOURCE, [SOURCE])
        assert (ours["default_schema_name"], ours["schema_names"]) == (DEFAULT_SCHEMA, [DEFAULT_SCHEMA])
        for doc in (ours, theirs):
            del doc["default_schema_name"], doc["schema_names"], doc["_version_hash"]
    else:
        assert ours_row.version_hash == theirs_row.version_hash
    assert_same(ours, theirs)
    # the typed JSON is identical byte for byte up to key order (dlt orders top-level keys by a set)
    assert typed_dumps(ours, sort_keys=True) == typed_dumps(theirs, sort_keys=True)

    for feed in (dlt_feed, our_feed):
        feed.add((4, 2), (5, 3), (6, 3))  # two rows on the new boundary
    run_dlt(warehouse, dlt_events(dlt_feed, seen, shape))
    run_ours(other, our_events(our_feed, seen, shape))
    theirs, ours = decode_state(newest(warehouse).state), decode_state(newest(other).state)
    assert len(slot(ours, shape.source_key)["incremental"]["updated_at"]["unique_hashes"]) == 2
    # dlt lists unique_hashes in set order, so compare them as sets
    assert_same(sorted_hashes(ours)["sources"], sorted_hashes(theirs)["sources"])
    assert ours["_state_version"] == theirs["_state_version"] == 2
    assert warehouse.ids() == other.ids() == [1, 2, 3, 4, 5, 6]


def test_uuid_in_state_is_the_one_value_dlt_does_not_keep(warehouse: Warehouse) -> None:
    """We write a UUID with dlt's UUID marker; dlt decodes it, but its own JSON turns it into a string."""
    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    feed, seen = Feed(), list[Seen]()
    feed.add((1, 0))
    ours, _ = run_ours(warehouse, our_events(feed, seen, extra_state={"key": key}))
    row = newest(warehouse)

    # the blob: both codecs read a UUID; dlt re-encodes it without the marker (orjson writes UUIDs itself)
    assert type(slot(decode_state(row.state))["key"]) is uuid.UUID
    dlt_doc = dlt_codec.decompress_state(row.state)
    assert type(slot(dlt_doc)["key"]) is uuid.UUID
    assert dlt_codec.compress_state(dlt_doc) != row.state
    assert dlt_hash(dlt_doc) != row.version_hash == state_version_hash(decode_state(row.state))
    assert slot(ours.state)["key"] == key  # our own next run gets the UUID back

    # a dlt pipeline restores it as a str and re-versions the state once for that
    pipeline = dlt_pipeline(warehouse)
    pipeline.sync_destination()
    restored = without_local(pipeline.state)
    assert slot(restored)["key"] == str(key)
    assert restored["_state_version"] == row.version + 1
    feed.add((2, 1))
    pipeline.run(dlt_events(feed, seen)).raise_on_failed_jobs()
    assert seen[1].resource_state["key"] == str(key)
    assert slot(decode_state(newest(warehouse).state))["key"] == str(key)  # from now on a plain string
