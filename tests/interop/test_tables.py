"""Data tables: each tool loads (and merges) into the tables the other one created.

Scalar columns line up exactly (same names, same database types, same values read back). The
deliberate differences are asserted here so that the README's account of them stays true: lists are a
JSON column for us and a child table for dlt, and ISO-8601 strings stay text for us while dlt detects
timestamps.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import dlt

from tests.interop.support import Warehouse, at, run_dlt, run_ours

TABLE = "items"
CHILD = "items__tags"


def item(row_id: int, amount: str) -> dict[str, Any]:
    """A row with a value of every type both tools map to a column."""
    return {
        "id": row_id,
        "updated_at": at(row_id),
        "amount": Decimal(amount),
        "price": 1.5 * row_id,
        "active": row_id % 2 == 0,
        "day": date(2024, 1, row_id),
        "at_time": time(10, row_id),
        "payload": bytes([0, row_id]),
        "uid": uuid.UUID(int=row_id),
        "name": f"item {row_id}",
        "meta": {"rank": row_id, "origin": {"country": "DE"}},
        "naive": datetime(2024, 1, row_id, 12),
        "big": 2**40 + row_id,
        "seen_at": f"2024-01-0{row_id}T00:00:00Z",
        "tags": [f"t{row_id}", "x"],
    }


def read_back(row: dict[str, Any]) -> dict[str, Any]:
    """The scalar columns ``row`` becomes in either tool's table, as read back."""
    return {
        "id": row["id"],
        "updated_at": row["updated_at"],
        "amount": row["amount"],
        "price": row["price"],
        "active": row["active"],
        "day": row["day"],
        "at_time": row["at_time"],
        "payload": row["payload"],
        "uid": str(row["uid"]),  # text in both tools
        "name": row["name"],
        "meta__rank": row["meta"]["rank"],  # nested dicts flattened the same way
        "meta__origin__country": row["meta"]["origin"]["country"],
        "naive": row["naive"].replace(tzinfo=UTC),  # naive is UTC for both
        "big": row["big"],
    }


def load_ours(wh: Warehouse, rows: list[dict]) -> None:
    run_ours(wh, rows, table_name=TABLE, write_disposition="merge", primary_key="id")


def load_dlt(wh: Warehouse, rows: list[dict]) -> None:
    run_dlt(wh, dlt.resource(rows, name=TABLE, write_disposition="merge", primary_key="id"))


def assert_scalars(wh: Warehouse, rows: list[dict]) -> dict[int, dict[str, Any]]:
    stored = wh.rows(TABLE)
    assert sorted(stored) == sorted(r["id"] for r in rows)
    for row in rows:
        expected = read_back(row)
        got = {k: stored[row["id"]][k] for k in expected}
        if isinstance(got["payload"], memoryview):
            got["payload"] = bytes(got["payload"])
        assert got == expected, f"row {row['id']}"
    return stored


def scalar_types(wh: Warehouse) -> dict[str, str]:
    return {c: t for c, t in wh.columns(TABLE).items() if c not in ("tags", "seen_at")}


def test_dlt_merges_into_the_table_we_created(warehouse: Warehouse) -> None:
    load_ours(warehouse, [item(1, "1.25"), item(2, "2.50")])
    ours = warehouse.columns(TABLE)

    load_dlt(warehouse, [item(2, "20.75"), item(3, "3.00")])

    # dlt added no column to ours and changed no type; it put the lists into its own child table
    assert warehouse.columns(TABLE) == ours
    assert ours["tags"] == "jsonb" if warehouse.kind == "postgresql" else ours["tags"] == "json"
    assert CHILD in warehouse.tables()
    stored = assert_scalars(warehouse, [item(1, "1.25"), item(2, "20.75"), item(3, "3.00")])  # 2 upserted
    assert stored[1]["tags"] == ["t1", "x"]
    assert stored[2]["tags"] is None and stored[3]["tags"] is None  # dlt's lists went to the child table
    child = warehouse.query(f"SELECT value FROM {{ds}}.{CHILD} ORDER BY value")
    assert [v for (v,) in child] == ["t2", "t3", "x", "x"]
    # our text column keeps our ISO text; dlt writes its parsed timestamp into it as text
    assert stored[1]["seen_at"] == "2024-01-01T00:00:00Z"
    assert datetime.fromisoformat(stored[3]["seen_at"]) == datetime(2024, 1, 3, tzinfo=UTC)
    assert len({r["_dlt_id"] for r in stored.values()}) == 3


def test_we_merge_into_the_table_dlt_created(warehouse: Warehouse) -> None:
    load_dlt(warehouse, [item(1, "1.25"), item(2, "2.50")])
    theirs = warehouse.columns(TABLE)

    load_ours(warehouse, [item(2, "20.75"), item(3, "3.00")])

    after = warehouse.columns(TABLE)
    # every column dlt made is used as it is; we only add our JSON column for the list
    assert {c: t for c, t in after.items() if c != "tags"} == theirs
    assert theirs["seen_at"].startswith("timestamp")  # dlt detected the ISO strings
    assert list(after)[-1] == "tags"
    stored = assert_scalars(warehouse, [item(1, "1.25"), item(2, "20.75"), item(3, "3.00")])
    assert stored[3]["seen_at"] == datetime(2024, 1, 3, tzinfo=UTC)  # our string parsed into dlt's column
    assert stored[1]["tags"] is None and stored[3]["tags"] == ["t3", "x"]
    # dlt's child rows are dlt's: our merge replaced row 2 in the root table but not its child rows
    parents = {r["_dlt_id"] for r in stored.values()}
    child = warehouse.query(f"SELECT value, _dlt_parent_id FROM {{ds}}.{CHILD} ORDER BY value")
    assert sorted(v for v, _ in child) == ["t1", "t2", "x", "x"]
    orphans = sorted(v for v, parent in child if parent not in parents)
    assert orphans == ["t2", "x"]
