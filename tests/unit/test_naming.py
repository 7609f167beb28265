"""Our snake_case normalization gives exactly dlt's names (dlt is the oracle)."""

from __future__ import annotations

import re

import pytest
from dlt.common.normalizers.naming.snake_case import NamingConvention
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_state_provider.destination import naming

NAMES = [
    "CamelCase",
    "camelCase",
    "getHTTPResponse",
    "ABCDef",
    "with space",
    "  padded  ",
    "ÄÖ",
    "Ünïcödé",
    "ß",
    "İstanbul",
    "٣abc",  # a non-ASCII digit: still a digit to dlt
    "1leading",
    "123",
    "_",
    "___",
    "a_",
    "trailing__",
    "a__b",
    "a____b",
    "a__ __b",
    "a+b-c*d@e|f",
    "foo.bar",
    "émoji 🚀 name",
    'a"; DROP TABLE x; --',
    "Robert'); DROP TABLE students;--",
    "x" * 100,
    "a__" + "y" * 80,
    "Nested__CamelCase__key",
]


@pytest.mark.parametrize("max_length", [None, 63, 10])
@pytest.mark.parametrize("name", NAMES)
def test_normalize_path_matches_dlt(name: str, max_length: int | None) -> None:
    assert naming.normalize_path(name, max_length) == NamingConvention(max_length).normalize_path(name)


@pytest.mark.parametrize("max_length", [None, 63, 10])
@pytest.mark.parametrize("name", NAMES)
def test_normalize_identifier_matches_dlt(name: str, max_length: int | None) -> None:
    assert naming.normalize_identifier(name, max_length) == NamingConvention(max_length).normalize_identifier(
        name
    )


def test_examples() -> None:
    assert naming.normalize_path("CamelCase") == "camel_case"
    assert naming.normalize_path("with space") == "with_space"
    assert naming.normalize_path("ÄÖ") == "x"
    assert naming.normalize_path("1leading") == "_1leading"
    assert naming.normalize_path('a"; DROP TABLE x; --') == "a_drop_table_xxxx"
    assert naming.normalize_path("Parent__ChildKey") == "parent__child_key"


@pytest.mark.parametrize("max_length", [None, 63, 10])
@pytest.mark.parametrize("parts", [("a", "b"), ("parent", "child", "grand_child"), ("x" * 40, "y" * 40)])
def test_make_path_matches_dlt_shorten_fragments(parts: tuple[str, ...], max_length: int | None) -> None:
    assert naming.make_path(*parts, max_length=max_length) == NamingConvention(max_length).shorten_fragments(
        *parts
    )


def test_long_names_are_shortened_to_the_limit_and_stay_distinct() -> None:
    a = naming.normalize_path("a" * 70 + "_one", 63)
    b = naming.normalize_path("a" * 70 + "_two", 63)
    assert len(a) == len(b) == 63
    assert a != b


@pytest.mark.parametrize("name", ["", "   ", "__", "____", " __ "])
def test_names_that_normalize_to_nothing_are_rejected(name: str) -> None:
    with pytest.raises(naming.InvalidIdentifierError, match="not a valid identifier"):
        naming.normalize_path(name)


@settings(max_examples=500, deadline=None)
@given(st.text(min_size=1, max_size=80), st.sampled_from([None, 63, 12]))
def test_any_text_matches_dlt(name: str, max_length: int | None) -> None:
    try:
        expected = NamingConvention(max_length).normalize_path(name)
    except ValueError:
        expected = ""
    if not expected:  # dlt returns or raises on empty; we always raise
        with pytest.raises(naming.InvalidIdentifierError):
            naming.normalize_path(name, max_length)
        return
    got = naming.normalize_path(name, max_length)
    assert got == expected
    assert naming.normalize_path(got, max_length) == got  # normalized names are stable
    assert not re.search(r"[^a-z\d_]", got)  # nothing left that needs quoting
