"""The benchmark rows: the same deterministic Python dicts for every contender.

Six columns of the common kinds: ``id`` (int), ``updated_at`` (UTC datetime, the incremental cursor:
one second per id), ``name`` (str), ``amount`` (float), ``active`` (bool) and ``quantity`` (int).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

COLUMNS = ("id", "updated_at", "name", "amount", "active", "quantity")
#: the cursor value of row 0; every row is one second after the previous one
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
#: an initial_value below every row's cursor
INITIAL_VALUE = EPOCH - dt.timedelta(seconds=1)
PAGE_SIZE = 1_000


def make_row(i: int) -> dict:
    return {
        "id": i,
        "updated_at": EPOCH + dt.timedelta(seconds=i),
        "name": f"customer-{i:09d}",
        "amount": i * 0.25 + 0.5,
        "active": i % 3 != 0,
        "quantity": i % 1000,
    }


def make_rows(start: int, count: int) -> list[dict]:
    """Rows ``start .. start + count - 1`` as a list (materialized before timing starts)."""
    return [make_row(i) for i in range(start, start + count)]


def pages(rows: list[dict], size: int = PAGE_SIZE) -> Iterator[list[dict]]:
    """``rows`` in pages, as a paginated API resource yields them."""
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def stream_rows(count: int, size: int = PAGE_SIZE) -> Iterator[list[dict]]:
    """``count`` rows generated page by page (constant memory: for the peak-RSS measure)."""
    for start in range(0, count, size):
        yield [make_row(i) for i in range(start, min(start + size, count))]
