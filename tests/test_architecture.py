"""The shape of the code, held by tests: no import circle among the project's modules (imports
inside functions included), no file over 450 lines, no function over 60, and a registry that
imports nothing of the project. ``ruff check`` holds the complexity (C901, pyproject.toml).

Each rule is a function of a source tree, so it is also tested on a small tree whose answer is
known: a rule that cannot fail would prove nothing.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

from experiments.sources import SOURCE_ROOT, import_graph

PACKAGES = ("common", "experiments", "pytorch_impl", "keras_impl", "benchmarks")
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 60  # from the def line to the last line, docstring included


def import_circle(packages, root: Path = SOURCE_ROOT) -> list[str] | None:
    """One circle of imports among the modules of ``packages`` (a list that starts and ends with
    the same module), or None."""
    graph = import_graph(packages, root)
    inside = {module: {m for m in imported if m in graph} for module, imported in graph.items()}
    try:
        graphlib.TopologicalSorter(inside).prepare()
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))
    return None


def oversized(packages, root: Path = SOURCE_ROOT) -> list[str]:
    """Every file over MAX_FILE_LINES lines and function over MAX_FUNCTION_LINES, as "path: what"."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            rel = path.relative_to(root).as_posix()
            if len(source.splitlines()) > MAX_FILE_LINES:
                found.append(f"{rel}: {len(source.splitlines())} lines")
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        found.append(f"{rel}:{node.lineno}: {node.name} has {length} lines")
    return found


def test_no_import_circle_among_the_projects_modules():
    circle = import_circle(PACKAGES)
    assert circle is None, " -> ".join(circle)


def test_no_file_or_function_is_too_long():
    assert oversized(PACKAGES) == []


def test_the_registry_imports_nothing_of_the_project():
    assert import_graph(["common"])["common.registry"] == set()


def test_the_rules_find_a_circle_a_long_file_and_a_long_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text('"""A package."""\n')
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    import pkg.c\n")  # inside a function: still an arrow
    (package / "c.py").write_text("from pkg.a import x\n")
    (package / "long.py").write_text("x = 1\n" * (MAX_FILE_LINES + 1))
    body = "".join("    y = 1\n" for _ in range(MAX_FUNCTION_LINES - 1))
    (package / "fn.py").write_text(f"def ok():\n{body}\n\ndef too_long():\n{body}    y = 2\n")
    circle = import_circle(["pkg"], tmp_path)
    assert circle is not None and set(circle) == {"pkg.a", "pkg.b", "pkg.c"} and circle[0] == circle[-1]
    assert oversized(["pkg"], tmp_path) == [
        f"pkg/fn.py:{MAX_FUNCTION_LINES + 3}: too_long has {MAX_FUNCTION_LINES + 1} lines",
        f"pkg/long.py: {MAX_FILE_LINES + 1} lines",
    ]
    (package / "c.py").write_text("import numpy\n")
    assert import_circle(["pkg"], tmp_path) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_says_what_it_holds(package):
    for init in sorted((SOURCE_ROOT / package).rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, f"{init.relative_to(SOURCE_ROOT)} has no docstring"
