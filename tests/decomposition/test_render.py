"""What ``decompose_source`` renders at DAG parse time: task ids, dependencies, the state writer."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from airflow.sdk import DAG, TaskGroup

from airflow_state_provider import current, resource, source, transformer
from airflow_state_provider.decomposition import decompose_source, resource_groups, task_id_for
from airflow_state_provider.operators.stateful_load import StatefulLoadOperator
from tests.airflow.conftest import load_example_dag

pytestmark = pytest.mark.airflow

START = datetime(2024, 1, 1, tzinfo=UTC)


@resource(primary_key="id")
def orders():
    yield {"id": 1}


@transformer(data_from=orders)
def order_lines(order):
    yield {"order_id": order["id"], "line": 1}


@resource
def customers():
    yield {"id": 1}


@resource
def refunds():
    yield {"id": 1}


@source(name="shop")
def shop(order: tuple[str, ...] = ("orders", "order_lines", "customers", "refunds")):
    made = {"orders": orders, "order_lines": order_lines, "customers": customers, "refunds": refunds}
    return [made[name] for name in order]


def render(src, **kwargs) -> tuple[DAG, TaskGroup]:
    with DAG("decomposed", schedule=None, start_date=START) as dag:
        group = decompose_source(src, group_id="shop", pipeline_name="shop", **kwargs)
    return dag, group


def edges(dag: DAG) -> set[tuple[str, str]]:
    return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}


def test_parallel_one_task_per_group_no_dependencies_one_writer():
    dag, group = render(shop(), mode="parallel", state_writer="customers", retries=2)
    assert isinstance(group, TaskGroup) and group.group_id == "shop"
    assert sorted(dag.task_ids) == ["shop.customers", "shop.orders", "shop.refunds"]
    assert edges(dag) == set()
    tasks = {t.task_id: t for t in dag.tasks}
    assert all(isinstance(t, StatefulLoadOperator) for t in tasks.values())
    assert {t.task_group.group_id for t in tasks.values()} == {"shop"}
    # transformers run in their parent's task
    assert tasks["shop.orders"].data.selected == ("orders", "order_lines")
    assert tasks["shop.customers"].data.selected == ("customers",)

    writer = tasks["shop.customers"]
    assert writer.read_only_sources is None
    assert "**State writer** of source `shop`" in writer.doc_md
    for task_id in ("shop.orders", "shop.refunds"):
        task = tasks[task_id]
        reason = task.read_only_sources["shop"]
        assert f"read-only in task {task_id!r}" in reason
        assert "the state writer of source 'shop' is task 'shop.customers'" in reason
        assert "State writer" not in task.doc_md
        assert "the state writer of source `shop` is task `shop.customers`" in task.doc_md
    for task in tasks.values():
        assert (task.pipeline_name, task.destination_conn_id, task.retries) == (
            "shop",
            "pipeline_state_default",
            2,
        )


def test_parallel_default_writer_is_the_first_group():
    dag, _ = render(shop(), mode="parallel")
    writers = [t.task_id for t in dag.tasks if t.read_only_sources is None]
    assert writers == ["shop.orders"]


def test_serialize_chains_groups_in_source_order_and_every_task_may_write():
    dag, _ = render(shop(), mode="serialize", state_writer="refunds")
    assert edges(dag) == {("shop.orders", "shop.customers"), ("shop.customers", "shop.refunds")}
    for task in dag.tasks:
        assert task.read_only_sources is None
        assert "may write the source state `sources.shop`" in task.doc_md


def test_none_loads_the_whole_selection_in_one_task():
    dag, _ = render(shop().with_resources("orders", "refunds"), mode="none")
    (task,) = dag.tasks
    assert task.task_id == "shop.shop"
    assert task.data.selected == ("orders", "refunds")
    assert task.read_only_sources is None
    assert "Loads `orders`, `refunds`" in task.doc_md


def test_task_ids_do_not_depend_on_order_or_count():
    reordered, _ = render(shop(("refunds", "customers", "order_lines", "orders")), mode="parallel")
    fewer, _ = render(shop(("customers", "orders")), mode="parallel")
    assert sorted(reordered.task_ids) == ["shop.customers", "shop.orders", "shop.refunds"]
    assert sorted(fewer.task_ids) == ["shop.customers", "shop.orders"]
    # the writer follows the named resource, wherever it sits
    named, _ = render(shop(("refunds", "customers", "orders")), mode="parallel", state_writer="orders")
    assert [t.task_id for t in named.tasks if t.read_only_sources is None] == ["shop.orders"]


def test_only_selected_resources_decompose_and_a_selected_transformer_brings_its_parent_task():
    dag, _ = render(shop().with_resources("order_lines", "refunds"), mode="parallel")
    tasks = {t.task_id: t for t in dag.tasks}
    assert sorted(tasks) == ["shop.orders", "shop.refunds"]
    # the parent is extracted to feed the transformer, but only the transformer is loaded
    assert tasks["shop.orders"].data.selected == ("order_lines",)
    assert tasks["shop.orders"].read_only_sources is None
    assert "Loads `order_lines`" in tasks["shop.orders"].doc_md


def test_state_writer_errors_at_parse_time():
    with pytest.raises(ValueError, match=r"state_writer 'nope' is not a resource of source 'shop'"):
        render(shop(), mode="parallel", state_writer="nope")
    with pytest.raises(ValueError, match=r"'order_lines' is a transformer.*pass state_writer='orders'"):
        render(shop(), mode="parallel", state_writer="order_lines")
    with pytest.raises(ValueError, match=r"'customers' is not selected .* groups are \['refunds'\]"):
        render(shop().with_resources("refunds"), mode="parallel", state_writer="customers")


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode must be one of"):
        render(shop(), mode="parallel-isolated")
    with pytest.raises(TypeError, match=r"sets \['doc_md', 'task_id'\] itself"):
        render(shop(), task_id="x", doc_md="y")
    with pytest.raises(TypeError, match="takes a @source object"):
        render(orders)


def test_task_ids_are_normalized_and_collisions_rejected():
    @source(name="odd names")
    def odd(names=("orders.v2", "päckchen", "a b")):
        return [resource(lambda: [{"x": 1}], name=n) for n in names]

    assert task_id_for("orders.v2") == "orders_v2"
    dag, _ = render(odd(), mode="none")
    assert dag.task_ids == ["shop.odd_names"]
    dag, _ = render(odd(), mode="parallel", state_writer="päckchen")
    assert sorted(dag.task_ids) == ["shop.a_b", "shop.orders_v2", "shop.p_ckchen"]
    assert [t.task_id for t in dag.tasks if t.read_only_sources is None] == ["shop.p_ckchen"]
    with pytest.raises(ValueError, match=r"'a b' and 'a\.b' .* both map to task id 'a_b'"):
        render(odd(("a b", "a.b")), mode="parallel")


def test_resource_groups_in_source_order():
    groups = resource_groups(shop(("customers", "order_lines", "refunds", "orders")), "shop")
    assert [(g.root, g.resources, g.task_id) for g in groups] == [
        ("customers", ("customers",), "customers"),
        ("orders", ("order_lines", "orders"), "orders"),
        ("refunds", ("refunds",), "refunds"),
    ]


def test_a_source_body_reading_state_is_evaluated_against_empty_read_only_state():
    seen = []

    @source(name="shop")
    def reading():
        seen.append(dict(current.source_state()))
        return orders, refunds

    dag, _ = render(reading(), mode="parallel")
    assert sorted(dag.task_ids) == ["shop.orders", "shop.refunds"]
    assert seen and all(s == {} for s in seen)


def test_example_dag_renders_as_documented():
    dag = load_example_dag("decomposed_source")
    tasks = {t.task_id: t for t in dag.tasks}
    assert sorted(tasks) == ["helpdesk.agents", "helpdesk.ratings", "helpdesk.tickets"]
    assert edges(dag) == set()
    assert tasks["helpdesk.tickets"].data.selected == ("tickets", "ticket_events")
    assert [t for t, task in tasks.items() if task.read_only_sources is None] == ["helpdesk.agents"]
    assert "**State writer**" in tasks["helpdesk.agents"].doc_md
    for task_id in ("helpdesk.tickets", "helpdesk.ratings"):
        assert "task `helpdesk.agents`" in tasks[task_id].doc_md
