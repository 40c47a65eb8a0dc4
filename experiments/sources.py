"""The project's own modules, found by reading their imports: what a stage's code digest hashes.

A stage's key holds a digest of the source of every project module its work can run. Which
modules those are is read from the code itself: starting from the modules that do a stage's
work, every ``import`` and ``from ... import`` of a project module is followed (``ast``:
imports inside functions included, none of them executed), and the packages around each
module come too, since importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py``.
So moving, renaming or newly importing a module changes the keys of exactly the stages that
can run it, and a module that is imported but has no file is an error, never a silent gap.

A project module is one under a top-level package of the source root (a folder of Python
files: ``common``, ``experiments``, the arms, ``tests`` for its fake arm); every other import
(the standard library, NumPy, the frameworks) is left out.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding the project's packages


class SourceError(RuntimeError):
    """A project module that a stage's code names has no source file."""


def module_file(name: str, root: Path = SOURCE_ROOT) -> Path | None:
    """The source file of module ``name`` under ``root`` (``a/b.py`` or ``a/b/__init__.py``), or None."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def is_project_module(name: str, root: Path = SOURCE_ROOT) -> bool:
    """Whether ``name`` lies in one of the project's top-level packages under ``root`` (a folder
    of Python files, with an ``__init__.py`` or, like ``tests``, a namespace package)."""
    top = root / name.split(".")[0]
    return top.is_dir() and any(top.glob("*.py"))


def _absolute(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """The absolute module name of ``from <level dots><module> import ...`` written in ``importer``."""
    if level == 0:
        return module or ""
    parts = importer.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imported_modules(name: str, root: Path = SOURCE_ROOT) -> set[str]:
    """The project modules that module ``name`` imports anywhere in its source.

    ``from a.b import c`` names ``a.b.c`` when that is a module, else ``a.b``.

    Raises:
        SourceError: ``name`` or a project module it imports has no source file.
    """
    path = module_file(name, root)
    if path is None:
        raise SourceError(f"module {name} has no source file under {root}")
    stat = path.stat()
    return set(_imports_of(path, name, root, (stat.st_mtime_ns, stat.st_size)))


@functools.cache
def _imports_of(path: Path, name: str, root: Path, stamp: tuple[int, int]) -> tuple[str, ...]:
    """The project modules imported in ``path`` (cached while its ``stamp``, modification time
    and size, is unchanged)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, name, path.name == "__init__.py")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if module_file(sub, root) is not None else base)
    project = sorted(m for m in found if m and is_project_module(m, root))
    missing = [m for m in project if module_file(m, root) is None]
    if missing:
        raise SourceError(f"{path} imports {', '.join(missing)}, which has no source file under {root}")
    return tuple(project)


def _packages_around(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``: the packages Python runs before the module (a namespace
    package, without an ``__init__.py``, runs nothing)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def dependencies(modules: Iterable[str], root: Path = SOURCE_ROOT) -> list[str]:
    """Every project module that importing ``modules`` can run: them, what they import, what
    that imports, and so on, with the packages around each; sorted.

    Raises:
        SourceError: one of them has no source file.
    """
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += imported_modules(name, root)
        todo += [package for package in _packages_around(name) if module_file(package, root) is not None]
    return sorted(seen)


def source_digest(modules: Iterable[str], files: Iterable[str] = (), root: Path = SOURCE_ROOT) -> str:
    """A digest of the source of ``modules`` and every project module they can run
    (:func:`dependencies`), and of ``files`` (paths relative to ``root``: files, or folders
    whose every file counts, e.g. templates).

    Raises:
        SourceError: a module has no source file, or one of ``files`` does not exist.
    """
    paths = [module_file(name, root) for name in dependencies(modules, root)]
    for rel in files:
        path = root / rel
        if path.is_dir():
            paths += [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        elif path.is_file():
            paths.append(path)
        else:
            raise SourceError(f"{rel} is part of a stage's code but does not exist under {root}")
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def import_graph(packages: Iterable[str], root: Path = SOURCE_ROOT) -> dict[str, set[str]]:
    """Module -> the project modules it imports, for every module of ``packages``
    (the packages around a module are not edges: they are not what its code names)."""
    graph: dict[str, set[str]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            graph[name] = imported_modules(name, root)
    return graph
