"""The state codec against its contract and against dlt itself (a test dependency)."""

from __future__ import annotations

import base64
import collections
import dataclasses
import enum
import math
import time as clock
import tracemalloc
import uuid
import zlib
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pendulum
import pytest
from dlt.common import versioned_state as dlt_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_state_provider.exceptions import StateCorruptError, StateNotSerializableError, printable
from airflow_state_provider.state import codec
from airflow_state_provider.state.codec import (
    DEFAULT_MAX_DECODED_BYTES,
    decode_state,
    encode_state,
    state_version_hash,
    typed_dumps,
    typed_loads,
)

MARKERS = tuple(chr(c) for c in range(0xF026, 0xF02E))
UTC = UTC


# ------------------------------------------------------------------------------------------ helpers


def dlt_blob(state: dict) -> str:
    """dlt's blob for ``state``, prepared the way dlt's ``state_doc`` does (``_local`` popped)."""
    doc = dict(state)
    doc.pop("_local", None)
    return dlt_state.compress_state(doc)


def dlt_hash(state: dict) -> str:
    return dlt_state.generate_state_version_hash(state, exclude_attrs=["_local"])


def expected_after_round_trip(value: Any) -> Any:
    """What a value becomes after encode/decode: tuples are lists, pendulum types are stdlib types."""
    if isinstance(value, dict):
        return {k: expected_after_round_trip(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [expected_after_round_trip(v) for v in value]
    if isinstance(value, datetime):
        return datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            tzinfo=None if value.utcoffset() is None else timezone(value.utcoffset()),
        )
    if isinstance(value, date):
        return date(value.year, value.month, value.day)
    if isinstance(value, time):
        offset = value.utcoffset()
        return time(
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            tzinfo=None if offset is None else timezone(offset),
        )
    return value


def assert_same(actual: Any, expected: Any, path: str = "") -> None:
    """Equal value AND same type everywhere (``1 == 1.0 == True == Decimal(1)`` would hide bugs)."""
    assert type(actual) is type(expected), f"{path}: {type(actual)} is not {type(expected)}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), path
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{i}]")
    elif isinstance(expected, (datetime, time)):
        assert actual == expected, path
        assert actual.utcoffset() == expected.utcoffset(), path
    elif isinstance(expected, Decimal) and expected.is_nan():
        assert actual.is_nan() and str(actual) == str(expected), path
    else:
        assert actual == expected, path


# --------------------------------------------------------------------------------------- strategies

# whole seconds: CPython 3.11's fromisoformat drops sub-second UTC offsets, which no real zone has
offsets = st.integers(min_value=-(24 * 3600 - 60), max_value=24 * 3600 - 60).map(
    lambda seconds: timezone(timedelta(seconds=seconds))
)
plain_text = st.text().filter(lambda s: not s.startswith(MARKERS))
keys = st.text(max_size=12).filter(lambda s: not s.startswith("_local"))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    plain_text,
)
datetimes = st.one_of(
    st.datetimes(),
    st.datetimes(timezones=offsets),
    st.builds(
        lambda dt, zone: pendulum.instance(dt, tz=zone),
        st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
        st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    ),
)
typed_without_uuid = st.one_of(
    st.decimals(allow_nan=False),
    datetimes,
    st.dates(),
    st.times(),
    st.times(timezones=offsets),
    st.binary(min_size=1),
)
typed = st.one_of(typed_without_uuid, st.uuids(), st.binary(max_size=0))


def documents(leaves: st.SearchStrategy) -> st.SearchStrategy:
    tree = st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.tuples(children, children),
            st.dictionaries(keys, children, max_size=5),
        ),
        max_leaves=25,
    )
    return st.dictionaries(keys, tree, max_size=6)


all_documents = documents(st.one_of(scalars, typed))
dlt_documents = documents(st.one_of(scalars, typed_without_uuid))


# ------------------------------------------------------------------------------------ round trips


@given(all_documents)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_every_value_round_trips_with_its_type(doc: dict) -> None:
    assert_same(decode_state(encode_state(doc)), expected_after_round_trip(doc))
    assert_same(typed_loads(typed_dumps(doc)), expected_after_round_trip(doc))


@given(st.one_of(scalars, typed))
def test_top_level_values_round_trip(value: Any) -> None:
    assert_same(typed_loads(typed_dumps(value)), expected_after_round_trip(value))
    assert_same(typed_loads(typed_dumps(value).decode("utf-8")), expected_after_round_trip(value))


def test_pendulum_datetime_returns_as_stdlib_datetime_with_same_instant_and_offset() -> None:
    stored = pendulum.datetime(2024, 3, 1, 12, 30, tz="Europe/Berlin")
    restored = decode_state(encode_state({"at": stored}))["at"]
    assert type(restored) is datetime
    assert restored == stored
    assert restored.utcoffset() == timedelta(hours=1)
    assert restored.isoformat() == "2024-03-01T12:30:00+01:00"


def test_decimal_keeps_precision_exponent_and_special_values() -> None:
    values = [Decimal("1.500"), Decimal("-0"), Decimal("1E+30"), Decimal("Infinity"), Decimal("NaN")]
    restored = typed_loads(typed_dumps(values))
    assert [str(v) for v in restored] == ["1.500", "-0", "1E+30", "Infinity", "NaN"]
    assert all(type(v) is Decimal for v in restored)


def test_uuid_round_trips_as_uuid_and_input_is_not_mutated() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    state = {"ids": [u, (u,)], "nested": {"u": u}, "plain": "x"}
    assert decode_state(encode_state(state)) == {"ids": [u, [u]], "nested": {"u": u}, "plain": "x"}
    assert typed_dumps({"u": u}) == '{"u":"\uf02912345678-1234-5678-1234-567812345678"}'.encode()
    assert state["ids"][0] is u and state["nested"]["u"] is u  # the caller's dict still holds UUIDs


def test_uuid_dict_keys_become_plain_strings() -> None:
    u = uuid.uuid4()
    assert typed_loads(typed_dumps({u: 1})) == {str(u): 1}


def test_typed_json_is_compact_raw_utf8_with_markers() -> None:
    doc = {"b": [1, 2.5, None, True], "a": "é€😀", "d": date(2024, 1, 2), "t": time(1, 2, 3)}
    assert (
        typed_dumps(doc)
        == '{"b":[1,2.5,null,true],"a":"é€😀","d":"\uf0282024-01-02","t":"\uf02d01:02:03"}'.encode()
    )
    assert typed_dumps(doc, sort_keys=True).startswith(b'{"a":')
    assert (
        typed_dumps({"x": b"\x00\xff", "m": Decimal("1.10")})
        == '{"x":"\uf02bAP8=","m":"\uf0261.10"}'.encode()
    )
    naive, aware = datetime(2024, 1, 1, 5), datetime(2024, 1, 1, 5, tzinfo=UTC)
    assert (
        typed_dumps([naive, aware])
        == '["\uf0272024-01-01T05:00:00","\uf0272024-01-01T05:00:00+00:00"]'.encode()
    )


def test_documented_lossy_conversions() -> None:
    class Color(enum.Enum):
        RED = "red"

    doc = {
        1: "int key",
        None: "none key",
        "enum": Color.RED,
        "tup": (1, 2),
    }
    assert typed_loads(typed_dumps(doc)) == {
        "1": "int key",
        "null": "none key",
        "enum": "red",
        "tup": [1, 2],
    }
    assert typed_loads(typed_dumps(collections.OrderedDict(a=1))) == {"a": 1}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_nan_and_infinity_are_refused_naming_the_path(value: float) -> None:
    """orjson (and dlt) would write them as null: the value would come back as None (issue 14 item 14)."""
    doc = {"a": None, "sources": {"s": {"resources": {"r": {"ok": 1.5, "xs": [None, {"v": value}]}}}}}
    with pytest.raises(StateNotSerializableError) as failure:
        typed_dumps(doc)
    assert "'sources.s.resources.r.xs[1].v'" in str(failure.value)
    assert repr(value) in str(failure.value)
    with pytest.raises(StateNotSerializableError):
        encode_state(doc)


def test_datetime_with_z_suffix_decodes_as_utc() -> None:
    assert typed_loads('"\uf0272024-01-01T05:06:07Z"') == datetime(2024, 1, 1, 5, 6, 7, tzinfo=UTC)
    assert typed_loads('"\uf0272024-01-01T05:06:07.123456Z"').microsecond == 123456
    assert typed_loads('"\uf0272024-01-01T05:06:07"').tzinfo is None


def test_dlt_only_markers_and_unparseable_marked_strings() -> None:
    assert typed_loads('["\uf02a00ff", "\uf02c123"]') == [b"\x00\xff", Decimal("123")]  # HexBytes, Wei
    # a marked string that does not parse stays text (as in dlt), and so it may be stored
    assert typed_loads('"\uf027not a date"') == "\uf027not a date"
    assert typed_loads(typed_dumps({"s": "\uf02bnot base64!"})) == {"s": "\uf02bnot base64!"}
    # characters just outside the marker range are ordinary text
    assert typed_loads('["\uf025x", "\uf02e1"]') == ["\uf025x", "\uf02e1"]
    # dict keys are never decoded
    assert typed_loads('{"\uf0261": 1}') == {"\uf0261": 1}


def test_deeply_nested_document_decodes_without_recursion_error() -> None:
    text = "[" * 1000 + '"\uf0261"' + "]" * 1000
    value = typed_loads(text)
    for _ in range(1000):
        (value,) = value
    assert value == Decimal(1)


# ------------------------------------------------------------------------------- dlt compatibility

REALISTIC_STATE: dict = {
    "_state_version": 7,
    "_state_engine_version": 4,
    "_version_hash": "stale-hash-is-ignored",
    "pipeline_name": "github_pipeline",
    "dataset_name": "github_data",
    "default_schema_name": "github",
    "schema_names": ["github"],
    "destination_type": "dlt.destinations.postgres",
    "destination_name": None,
    "_local": {"first_run": False, "_last_extracted_at": datetime(2024, 5, 1, tzinfo=UTC)},
    "sources": {
        "github": {
            "resources": {
                "issues": {
                    "incremental": {
                        "updated_at": {
                            "initial_value": "2024-01-01T00:00:00Z",
                            "last_value": pendulum.datetime(2024, 5, 1, 10, 20, 30, 123456, tz="UTC"),
                            "unique_hashes": ["kTAJDm+qMgfhbLUSJmiB", "RZ0kQ2LhdXvAlfIhm1GP"],
                        }
                    }
                },
                "commits": {"cursor": date(2024, 4, 30), "seen_shas": [bytes(range(20))]},
            },
            "totals": {"amount": Decimal("12345.6789"), "window_start": time(8, 30)},
            "label": "naïve café ✓ 日本語 😀",
        }
    },
}

DLT_DOCUMENTS = [
    {},
    {"a": 1},
    REALISTIC_STATE,
    {
        "when": datetime(2024, 1, 1, 0, 0, 0, 1),
        "aware": datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=-5))),
    },
    {"day": date(1999, 12, 31), "at": time(23, 59, 59, 999999), "tz_time": time(1, tzinfo=UTC)},
    {"d": [Decimal("0.1"), Decimal("-1E-10"), Decimal("NaN")], "b": [b"", b"\x00", bytes(255)]},
    {"u": "\u00e9\u0000\u2028\ufeff", "nested": [[[{"deep": [1, 2.5e-300, -0.0, True, None]}]]], 3: "x"},
    {"_local": {"only": "local"}, "z": 1, "a": 2},  # key order matters for the blob, not for the hash
]


@pytest.mark.parametrize("doc", DLT_DOCUMENTS)
def test_blob_and_hash_are_byte_identical_to_dlt(doc: dict) -> None:
    assert encode_state(doc) == dlt_blob(doc)
    assert state_version_hash(doc) == dlt_hash(doc)


@given(dlt_documents)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_blob_and_hash_match_dlt_on_generated_documents(doc: dict) -> None:
    assert encode_state(doc) == dlt_blob(doc)
    assert state_version_hash(doc) == dlt_hash(doc)


def test_blob_shape_and_hash_exclusions() -> None:
    blob = encode_state(REALISTIC_STATE)
    assert base64.b64decode(blob)[:2] == b"\x78\xda"  # zlib header of level 9
    assert "_local" not in decode_state(blob)
    assert decode_state(blob)["_version_hash"] == "stale-hash-is-ignored"  # the blob keeps it
    digest = base64.b64decode(state_version_hash(REALISTIC_STATE), validate=True)
    assert len(digest) == 32 and len(state_version_hash(REALISTIC_STATE)) == 44
    bumped = {
        **REALISTIC_STATE,
        "_state_version": 8,
        "_version_hash": "x",
        "_state_engine_version": 9,
        "_local": {},
    }
    assert state_version_hash(bumped) == state_version_hash(REALISTIC_STATE)
    assert state_version_hash({**REALISTIC_STATE, "dataset_name": "other"}) != state_version_hash(
        REALISTIC_STATE
    )
    reordered = dict(reversed(list(REALISTIC_STATE.items())))
    assert state_version_hash(reordered) == state_version_hash(REALISTIC_STATE)
    assert encode_state(reordered) != encode_state(REALISTIC_STATE)


@given(all_documents.filter(lambda d: b'\xef\x80\xab"' not in typed_dumps(d)))  # no empty bytes
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_dlt_decodes_our_blobs_to_the_same_values(doc: dict) -> None:
    assert_same(dlt_state.decompress_state(encode_state(doc)), decode_state(encode_state(doc)))


@given(dlt_documents)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_we_decode_dlt_blobs(doc: dict) -> None:
    assert_same(decode_state(dlt_blob(doc)), expected_after_round_trip(doc))


def test_uuid_is_the_one_value_where_our_blob_differs_from_dlts() -> None:
    u = uuid.UUID("00000000-0000-4000-8000-000000000001")
    # dlt's orjson backend writes a UUID as a plain string, so dlt itself loses the type ...
    assert dlt_state.decompress_state(dlt_blob({"u": u})) == {"u": str(u)}
    # ... we write it with its marker, and dlt 1.31 decodes that marker back to a UUID.
    ours = encode_state({"u": u})
    assert ours != dlt_blob({"u": u})
    assert dlt_state.decompress_state(ours) == {"u": u}
    assert type(dlt_state.decompress_state(ours)["u"]) is uuid.UUID
    # reading dlt's blob gives the plain string it holds
    assert decode_state(dlt_blob({"u": u})) == {"u": str(u)}


def test_empty_bytes_round_trip_here_but_dlt_reads_them_as_the_marker_string() -> None:
    blob = encode_state({"b": b""})
    assert blob == dlt_blob({"b": b""})  # same bytes written
    assert decode_state(blob) == {"b": b""}
    assert dlt_state.decompress_state(blob) == {"b": "\uf02b"}  # dlt skips one-character strings


# ------------------------------------------------------------------------------- plain JSON fallback


def test_plain_json_text_is_accepted_like_dlt() -> None:
    # the marker is written as a JSON escape: dlt's fallback only takes ASCII text
    text = r'{"sources": {"s": {"n": 1, "at": "\uf0272024-01-01T00:00:00Z", "ids": [1, 2]}}}'
    assert text.isascii()
    expected = {"sources": {"s": {"n": 1, "at": datetime(2024, 1, 1, tzinfo=UTC), "ids": [1, 2]}}}
    assert decode_state(text) == expected
    assert dlt_state.decompress_state(text) == expected


def test_plain_json_with_non_ascii_text_is_accepted_where_dlt_crashes() -> None:
    text = '{"label": "café"}'
    assert decode_state(text) == {"label": "café"}
    with pytest.raises(ValueError, match="ASCII"):
        dlt_state.decompress_state(text)


def test_plain_json_over_the_limit_is_rejected() -> None:
    text = '{"a": "' + "x" * 100 + '"}'
    assert decode_state(text, max_bytes=len(text)) == {"a": "x" * 100}
    with pytest.raises(StateCorruptError, match="limit"):
        decode_state(text, max_bytes=len(text) - 1)


# ---------------------------------------------------------------------------- corrupt and hostile blobs


def _bomb(uncompressed_size: int) -> str:
    packer = zlib.compressobj(9)
    chunk = bytes(1024 * 1024)
    parts = [packer.compress(chunk) for _ in range(uncompressed_size // len(chunk))]
    parts.append(packer.flush())
    return base64.b64encode(b"".join(parts)).decode("ascii")


@pytest.fixture(scope="module")
def bomb_200mb() -> str:
    return _bomb(200 * 1024 * 1024)


@pytest.mark.parametrize("max_bytes", [DEFAULT_MAX_DECODED_BYTES, 4096])
def test_decompression_bomb_is_rejected_without_inflating_it(bomb_200mb: str, max_bytes: int) -> None:
    assert len(bomb_200mb) < 1024 * 1024
    tracemalloc.start()
    started = clock.perf_counter()
    try:
        with pytest.raises(StateCorruptError) as info:
            decode_state(bomb_200mb, max_bytes=max_bytes, where="pipeline 'p' version 7")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert clock.perf_counter() - started < 5
    # bounded by the limit (plus the output buffer's growth slack), never the 200 MB
    assert peak < max_bytes * 1.2 + 2 * 1024 * 1024
    assert "pipeline 'p' version 7" in str(info.value)
    assert f"{max_bytes}-byte limit" in str(info.value)


def test_default_limit_is_64_mib() -> None:
    assert DEFAULT_MAX_DECODED_BYTES == 64 * 1024 * 1024


def test_limit_applies_to_the_decompressed_size_exactly() -> None:
    raw_size = len(typed_dumps({"a": "x" * 1000}))
    blob = encode_state({"a": "x" * 1000})
    assert decode_state(blob, max_bytes=raw_size) == {"a": "x" * 1000}
    with pytest.raises(StateCorruptError, match="decompression bomb"):
        decode_state(blob, max_bytes=raw_size - 1)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


GOOD = zlib.compress(b'{"a": 1}', 9)

CORRUPT_BLOBS = {
    "empty": ("", "truncated"),
    "garbage text": ("this is not a state!", "neither base64 nor valid JSON"),
    "base64 of random bytes": (_b64(b"\x01\x02\x03garbage"), "not a zlib stream"),
    "truncated zlib": (_b64(GOOD[:-5]), "truncated"),
    "truncated base64": (_b64(GOOD)[:-3], "neither base64 nor valid JSON"),
    "trailing bytes": (_b64(GOOD + b"junk"), "4 unexpected bytes follow"),
    "zlib of non-JSON": (_b64(zlib.compress(b"{not json", 9)), "decompresses to invalid JSON"),
    "zlib of invalid UTF-8": (_b64(zlib.compress(b'{"a": "\xff"}', 9)), "decompresses to invalid JSON"),
    "JSON list": (_b64(zlib.compress(b"[1, 2]", 9)), "is a list, not a JSON object"),
    "JSON string": (_b64(zlib.compress(b'"x"', 9)), "is a str, not a JSON object"),
    "plain JSON list": ('["a"]', "is a list, not a JSON object"),
    # four base64 letters are read as base64, exactly as dlt does
    "plain JSON null": ("null", "not a zlib stream"),
    "base64 with newline": (_b64(GOOD) + "\n", "neither base64 nor valid JSON"),
}


@pytest.mark.parametrize(("blob", "reason"), CORRUPT_BLOBS.values(), ids=CORRUPT_BLOBS.keys())
def test_corrupt_blobs_raise_state_corrupt_error_naming_where_and_what(blob: str, reason: str) -> None:
    with pytest.raises(StateCorruptError) as info:
        decode_state(blob, where="pipeline 'p' version 7")
    message = str(info.value)
    assert message.startswith("Stored state of pipeline 'p' version 7 cannot be decoded")
    assert reason in message


def test_non_text_blob_is_corrupt() -> None:
    with pytest.raises(StateCorruptError, match="expected text, got a value of type bytes"):
        decode_state(GOOD)  # type: ignore[arg-type]
    with pytest.raises(StateCorruptError, match=r"^Stored state cannot be decoded"):
        decode_state(None)  # type: ignore[arg-type]


def test_negative_limit_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        decode_state(encode_state({}), max_bytes=-1)


@given(st.one_of(st.text(), st.binary().map(_b64), st.binary().map(lambda b: _b64(zlib.compress(b)))))
def test_arbitrary_input_decodes_to_a_dict_or_raises_state_corrupt_error(blob: str) -> None:
    try:
        decoded = decode_state(blob, max_bytes=1 << 20)
    except StateCorruptError as exc:
        assert "cannot be decoded" in str(exc)
    else:
        assert isinstance(decoded, dict)


# ---------------------------------------------------------------------------------- not serializable


@dataclasses.dataclass
class Point:
    x: int


class Opaque:
    pass


Pair = collections.namedtuple("Pair", "a b")
cycle: list = []
cycle.append(cycle)
too_deep: list = []
for _ in range(300):
    too_deep = [too_deep]

NOT_SERIALIZABLE = {
    "set": ({1, 2}, "sources.github.resources.issues.seen", "a value of type set", "sorted list"),
    "frozenset": (frozenset(), "sources.github.resources.issues.seen", "frozenset", "sorted list"),
    "custom object": (Opaque(), "sources.github.resources.issues.seen", "Opaque", "dict of its fields"),
    "dataclass": (Point(1), "sources.github.resources.issues.seen", "Point", "dict of its fields"),
    "namedtuple": (Pair(1, 2), "sources.github.resources.issues.seen", "Pair", "dict of its fields"),
    "bytearray": (bytearray(b"x"), "sources.github.resources.issues.seen", "bytearray", "convert"),
    "int too big": (2**64, "sources.github.resources.issues.seen", "64-bit", "str or Decimal"),
    "int too small": (-(2**63) - 1, "sources.github.resources.issues.seen", "64-bit", "str or Decimal"),
    "in a list": ([1, "a", {2}], "sources.github.resources.issues.seen[2]", "set", "sorted list"),
    "in a tuple": ((1, object()), "sources.github.resources.issues.seen[1]", "object", "convert"),
    "tuple key": (
        {(1, 2): "x"},
        "sources.github.resources.issues.seen.(1, 2)",
        "key of type tuple",
        "str keys",
    ),
    "huge int key": ({2**70: "x"}, f"sources.github.resources.issues.seen.{2**70}", "64-bit", "str keys"),
    "surrogate": ("a\ud800", "sources.github.resources.issues.seen", "unpaired surrogate", "fix the text"),
    "surrogate key": ({"\udfff": 1}, "sources.github.resources.issues.seen.\udfff", "surrogate", "fix"),
    "marker string": ("\uf0261.5", "sources.github.resources.issues.seen", "read back as Decimal", "remove"),
    "bytes marker": ("\uf02bAA==", "sources.github.resources.issues.seen", "read back as bytes", "remove"),
    "cycle": (cycle, "sources.github.resources.issues.seen[0]", "cycle", "copy"),
    "too deep": (
        too_deep,
        "sources.github.resources.issues.seen" + "[0]" * (254 - 5),
        "254 containers",
        "flatten",
    ),
}


@pytest.mark.parametrize(
    ("value", "path", "what", "hint"), NOT_SERIALIZABLE.values(), ids=NOT_SERIALIZABLE.keys()
)
def test_non_serializable_value_names_its_path_type_and_remedy(
    value: Any, path: str, what: str, hint: str
) -> None:
    state = {
        "_state_version": 1,
        "sources": {"github": {"resources": {"issues": {"ok": [1, 2], "seen": value}}}},
    }
    for encode in (encode_state, state_version_hash, typed_dumps):
        with pytest.raises(StateNotSerializableError) as info:
            encode(state)
        message = str(info.value)
        # a lone surrogate in the path is shown escaped, so the message prints anywhere
        assert f"State value at '{printable(path)}' cannot be stored" in message
        assert what in message
        assert hint in message
    assert isinstance(info.value, TypeError)


def test_non_serializable_top_level_value_is_reported_at_the_root() -> None:
    with pytest.raises(StateNotSerializableError, match=r"at '<root>'.*type set"):
        typed_dumps({1})


def test_integer_and_marker_boundaries_are_accepted() -> None:
    edge = {"max": 2**64 - 1, "min": -(2**63), "marker_in_key": {"\uf0261": 1}, "marker_inside": "a\uf026"}
    assert typed_loads(typed_dumps(edge)) == edge


def test_escaped_quote_before_a_marker_is_not_mistaken_for_a_typed_value() -> None:
    doc = {"s": 'say "\uf0261"', "n": Decimal(1)}
    assert typed_loads(typed_dumps(doc)) == doc


def test_happy_path_never_walks_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    def walked(*_: Any, **__: Any) -> None:
        raise AssertionError("the slow path ran for a serializable document")

    monkeypatch.setattr(codec, "_find_problem", walked)
    encode_state(REALISTIC_STATE)
    state_version_hash({**REALISTIC_STATE, "ids": [uuid.uuid4(), uuid.uuid4()]})
