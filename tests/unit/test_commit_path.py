"""One commit path (issue 12): exactly one function of the package writes a state row."""

from __future__ import annotations

import ast
from pathlib import Path

import airflow_state_provider

PACKAGE = Path(airflow_state_provider.__file__).parent


def calls_to(attribute: str) -> list[str]:
    """``module:function`` of every call of ``<anything>.<attribute>(...)`` in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef):
                continue
            for node in ast.walk(func):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == attribute
                ):
                    found.append(f"{path.relative_to(PACKAGE)}:{func.name}")
    return found


def test_only_the_commit_function_writes_state_rows():
    assert calls_to("insert_state") == ["destination/commit.py:commit"]
    # and insert_state holds the one INSERT into the state table
    store = (PACKAGE / "destination" / "store.py").read_text(encoding="utf-8")
    assert store.count("sa.insert(self.state_table)") == 1


def test_load_rows_and_locks_go_through_the_commit_function_too():
    assert calls_to("insert_load") == ["destination/commit.py:commit"]
    assert calls_to("prune") == ["destination/commit.py:commit"]
    assert calls_to("lock") == ["destination/commit.py:commit"]
