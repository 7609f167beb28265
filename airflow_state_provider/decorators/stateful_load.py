"""``@task.stateful_load``: the decorated generator function is the resource a stateful load runs."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_state_provider._airflow_compat import (
    SET_DURING_EXECUTION,
    DecoratedOperator,
    TaskDecorator,
    context_merge,
    determine_kwargs,
    task_decorator_factory,
)
from airflow_state_provider.extract.resource import resource
from airflow_state_provider.operators.stateful_load import StatefulLoadOperator

if TYPE_CHECKING:
    from airflow_state_provider._airflow_compat import Context


class _StatefulLoadDecoratedOperator(DecoratedOperator, StatefulLoadOperator):
    """Wraps the decorated function as a resource and loads it with :class:`StatefulLoadOperator`.

    The function's incremental default arguments are bound like a resource's, and ``current.*`` works
    inside it. Arguments given when the task is called are templated; parameters named like context
    keys (``data_interval_end``, ``ti``, ...) are filled when the task runs.

    :param resource_name: the resource (and state slot) name; default the function name.
    """

    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *StatefulLoadOperator.template_fields,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {**DecoratedOperator.template_fields_renderers}
    custom_operator_name: str = "@task.stateful_load"
    _maps_function_arguments = True

    def __init__(
        self,
        *,
        python_callable: Callable,
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        resource_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            data=SET_DURING_EXECUTION,
            **kwargs,
        )
        self.resource_name = resource_name or python_callable.__name__

    def execute(self, context: Context) -> Any:
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        # table_name, write_disposition and primary_key reach the resource as run hints
        self.data = resource(name=self.resource_name)(self.python_callable)(*self.op_args, **kwargs)
        return super().execute(context)


def stateful_load_task(python_callable: Callable | None = None, **kwargs: Any) -> TaskDecorator:
    """Turn a generator function into a stateful load task (``@task.stateful_load``).

    Takes the :class:`StatefulLoadOperator` arguments except ``data``, plus ``resource_name``::

        @task.stateful_load(pipeline_name="events", table_name="events", primary_key="id")
        def events(updated_at=incremental("updated_at", initial_value="2024-01-01T00:00:00Z")):
            yield from fetch_events(since=updated_at.start_value)
    """
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_StatefulLoadDecoratedOperator,
        **kwargs,
    )
