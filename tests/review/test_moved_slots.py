"""Review: a resource whose state slot gains a suffix (a task mapped after it ran unmapped, a new
state_key) while the slot without it holds state is refused, naming both slots: nothing is loaded twice."""

from __future__ import annotations

import pytest

from airflow_state_provider import incremental, resource
from airflow_state_provider.exceptions import ConfigurationError
from airflow_state_provider.state.context import slot_suffix
from tests.edges.support import DATASET, new_pipeline, query


def orders_resource(region: str):
    @resource(name="orders")
    def orders(seq=incremental("seq", initial_value=0)):
        yield [{"id": f"{region}-{n}", "seq": n} for n in range(seq.start_value + 1, 4)]

    return orders


def test_a_new_suffixed_slot_beside_a_held_unsuffixed_one_is_refused(dest_url, tmp_path):
    new_pipeline(dest_url, tmp_path).run(orders_resource("eu"))
    with slot_suffix("__region_eu"), pytest.raises(ConfigurationError) as failure:
        new_pipeline(dest_url, tmp_path).run(orders_resource("eu"))
    message = str(failure.value)
    assert "resources.orders__region_eu" in message and "resources.orders " in message, message
    assert "airflow-state drop" in message and "Nothing was written" in message, message
    ids = [r[0] for r in query(dest_url, f'SELECT id FROM "{DATASET}".orders')]
    assert sorted(ids) == ["eu-1", "eu-2", "eu-3"]


def test_a_suffixed_slot_that_already_holds_state_or_a_fresh_pipeline_runs(dest_url, tmp_path):
    with slot_suffix("__region_us"):
        new_pipeline(dest_url, tmp_path).run(orders_resource("us"))  # no unsuffixed slot: runs
        new_pipeline(dest_url, tmp_path).run(orders_resource("us"))  # its own slot: runs, loads nothing
    ids = [r[0] for r in query(dest_url, f'SELECT id FROM "{DATASET}".orders')]
    assert sorted(ids) == ["us-1", "us-2", "us-3"]
