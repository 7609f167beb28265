"""Identifier normalization identical to dlt's default ``snake_case`` naming convention.

Table and column names produced here are the names dlt would give the same data, so tables loaded by
dlt and by this provider line up. Rules (dlt ``snake_case``): trim spaces; ``+ * @ | -`` become
``x x a l _``; every other run of characters outside ``[A-Za-z0-9_]`` becomes ``_``; CamelCase is split
with ``_`` and lower-cased; a leading digit gets a ``_`` prefix; each trailing ``_`` becomes ``x``;
runs of ``_`` collapse to one. ``__`` separates the parts of a path (nested fields), and a name longer
than the destination's identifier limit is shortened around a hash tag of the original name.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from functools import lru_cache

from airflow_state_provider.exceptions import InvalidIdentifierError

PATH_SEPARATOR = "__"

# ``\d`` is deliberately the Unicode class, as in dlt: non-ASCII digits survive normalization.
_NON_ALPHANUMERIC = re.compile(r"[^a-zA-Z\d_]+")
_LEADING_DIGITS = re.compile(r"^\d+")
_UNDERSCORES = re.compile("__+")
_CAMEL_WORD = re.compile("([^_])([A-Z][a-z]+)")
_CAMEL_LOWER_UPPER = re.compile("([a-z0-9])([A-Z])")
_REDUCED_ALPHABET = str.maketrans("+-*@|", "x_xal")
_TAG_ALPHABET = bytes.maketrans(b"/+", b"ab")
_TAG_COLLISION_PROBABILITY = 0.001


@lru_cache(maxsize=4096)
def normalize_identifier(name: str, max_length: int | None = None) -> str:
    """One identifier (no path splitting), e.g. ``"CamelCase"`` -> ``"camel_case"``."""
    stripped = name.strip()
    if not stripped:
        raise InvalidIdentifierError(f"{name!r} is not a valid identifier: it is empty or only spaces")
    ident = _NON_ALPHANUMERIC.sub("_", stripped.translate(_REDUCED_ALPHABET))
    ident = _CAMEL_WORD.sub(r"\1_\2", ident)
    ident = _CAMEL_LOWER_UPPER.sub(r"\1_\2", ident).lower()
    if _LEADING_DIGITS.match(ident):
        ident = "_" + ident
    without_trailing = ident.rstrip("_")
    ident = without_trailing + "x" * (len(ident) - len(without_trailing))
    return shorten(_UNDERSCORES.sub("_", ident), stripped, max_length)


@lru_cache(maxsize=4096)
def normalize_path(name: str, max_length: int | None = None) -> str:
    """A table or column name that may contain ``__``-separated parts, each normalized.

    This is what dlt applies to table names and to the keys of a row.
    Raises :class:`InvalidIdentifierError` if nothing is left (e.g. ``""`` or ``"__"``).
    """
    parts = [normalize_identifier(part, max_length) for part in name.split(PATH_SEPARATOR) if part.strip()]
    path = make_path(*parts)
    if not path:
        raise InvalidIdentifierError(f"{name!r} is not a valid identifier: it normalizes to an empty name")
    return shorten(path, name, max_length)


def make_path(*normalized: str, max_length: int | None = None) -> str:
    """Join already normalized names with ``__`` (nested column names), shortened to ``max_length``."""
    path = PATH_SEPARATOR.join(part for part in normalized if part.strip())
    return shorten(path, path, max_length)


def shorten(normalized: str, original: str, max_length: int | None) -> str:
    """Cut ``normalized`` to ``max_length`` bytes of UTF-8, keeping both ends around a tag hashed from
    ``original``.

    dlt's scheme (``NamingConvention.shorten_identifier``: half the room before the tag, half after,
    the tag a hash of the original name) counted in bytes instead of characters, because that is
    what databases limit: PostgreSQL cuts identifiers at 63 bytes, so a name of 25 fullwidth digits
    (75 bytes) would otherwise be cut by the database, differently from what the loader looks up.
    ASCII names, one byte per character, come out exactly as dlt shortens them.
    """
    if not max_length or (len(normalized) <= max_length and normalized.isascii()):
        return normalized
    if len(normalized.encode("utf-8")) <= max_length:
        return normalized
    tag = _tag(original)
    keep = max_length - len(tag)
    return _head(normalized, keep // 2 + keep % 2) + tag + _tail(normalized, keep // 2)


def _head(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` within ``max_bytes`` bytes of UTF-8 (whole characters)."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def _tail(text: str, max_bytes: int) -> str:
    """The longest suffix of ``text`` within ``max_bytes`` bytes of UTF-8 (whole characters)."""
    if max_bytes <= 0:
        return ""
    return text.encode("utf-8")[-max_bytes:].decode("utf-8", "ignore")


def _tag(original: str) -> str:
    # ~1.5x the bits a case-sensitive alphabet would need, since the tag is lower-cased (dlt's sizing)
    n_bytes = int(3 * math.log2(1 / _TAG_COLLISION_PROBABILITY) // 8 + 1)
    digest = hashlib.shake_128(original.encode("utf-8")).digest(n_bytes)
    return base64.b64encode(digest).rstrip(b"=").translate(_TAG_ALPHABET).lower().decode("ascii")


def normalize_dataset_name(name: str, max_length: int | None = None) -> str:
    """The physical dataset (schema) name dlt derives from a configured ``dataset_name``.

    dlt normalizes it like a table name with the destination's naming convention (``MyData`` ->
    ``my_data``, ``crm-data`` -> ``crm_data``) and keeps the configured spelling in the state document.
    Raises :class:`InvalidIdentifierError` when nothing usable is left.
    """
    return normalize_path(name, max_length)
