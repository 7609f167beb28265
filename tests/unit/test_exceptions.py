"""``exceptions.py`` holds every public error class, draws the tree, and carries context (issue 16 item 5)."""

from __future__ import annotations

import ast
import inspect
import pickle
from pathlib import Path

import pytest

import airflow_state_provider
from airflow_state_provider import exceptions

PACKAGE = Path(airflow_state_provider.__file__).parent


def public_error_classes() -> list[type[Exception]]:
    return [
        obj
        for name, obj in vars(exceptions).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and not name.startswith("_")
    ]


def test_no_public_exception_class_is_defined_outside_exceptions_py():
    outside = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "exceptions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if any(b.endswith(("Error", "Exception")) or b in {"KeyError", "ValueError"} for b in bases):
                    outside.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert outside == []


def test_the_docstring_draws_every_class_under_its_base():
    doc = exceptions.__doc__ or ""
    for cls in public_error_classes():
        assert cls.__name__ in doc, cls
        if cls is not exceptions.PipelineStateError:
            assert issubclass(cls, exceptions.PipelineStateError), cls


@pytest.mark.parametrize("cls", public_error_classes(), ids=lambda c: c.__name__)
def test_context_attributes_survive_str_and_pickling(cls):
    err = cls("pipeline 'p': bad thing", pipeline_name="p", state_path="a.b", table="t", column="c")
    assert str(err) == "pipeline 'p': bad thing"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.pipeline_name, copy.state_path, copy.resource, copy.table, copy.column) == (
        "p",
        "a.b",
        None,
        "t",
        "c",
    )
    assert str(copy) == str(err)


def test_old_import_paths_still_work():
    from airflow_state_provider.destination.naming import InvalidIdentifierError
    from airflow_state_provider.extract.incremental import (
        IncrementalNoIntervalError,
        IncrementalPrimaryKeyMissing,
    )
    from airflow_state_provider.operations import StateOperationError
    from airflow_state_provider.operators._mapping import MappedSlotConflictError

    assert InvalidIdentifierError is exceptions.InvalidIdentifierError
    assert IncrementalNoIntervalError is exceptions.IncrementalNoIntervalError
    assert IncrementalPrimaryKeyMissing is exceptions.IncrementalPrimaryKeyMissing
    assert StateOperationError is exceptions.StateOperationError
    assert MappedSlotConflictError is exceptions.MappedSlotConflictError
    # a bad path is a StateOperationError (exit code 2 in the CLI) and a ValueError
    assert issubclass(exceptions.StatePathError, exceptions.StateOperationError | ValueError)
