"""Issue 14 items 9, 10, 14, 15: numbers, colliding keys and invalid values, on every database.

Each bad input fails with a clear error naming where, and the destination is left exactly as it was.
"""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from airflow_state_provider import current, resource
from airflow_state_provider.exceptions import StateNotSerializableError
from tests.edges.support import DATASET, NAME, new_pipeline
from tests.reliability import snapshot


@resource(name="events", primary_key="id")
def seed():
    yield [{"id": i, "note": f"n{i}"} for i in range(5)]


@pytest.fixture
def seeded(dest_url, tmp_path):
    new_pipeline(dest_url, tmp_path).run(seed)
    return dest_url, snapshot.take(dest_url, DATASET)


def unchanged(url: str, before: snapshot.Snapshot) -> None:
    assert snapshot.take(url, DATASET) == before, "the failed run changed the destination"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_nan_and_infinity_in_state_raise_naming_the_path(seeded, tmp_path, value):
    url, before = seeded

    @resource(name="events", primary_key="id")
    def events():
        current.resource_state()["ratio"] = value
        yield {"id": 100}

    with pytest.raises(StateNotSerializableError) as failure:
        new_pipeline(url, tmp_path).run(events)
    message = str(failure.value)
    assert f"pipeline {NAME!r}" in message and f"sources.{NAME}.resources.events.ratio" in message
    unchanged(url, before)
