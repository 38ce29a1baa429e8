"""The house's layering, checked: every module of ``rootfs_core`` has a
place in ``LAYERS`` (top first), and each import it makes at run time, at
the top or inside a function, goes strictly down. Imports under ``if
TYPE_CHECKING:`` are for annotations only and may name anything. Nothing
but the testing package imports the testing package.

A new module fails this test until it is given a layer: that is the moment
to decide what it may depend on.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import rootfs_core

LAYERS: list[set[str]] = [
    {"__main__"},
    {"cli"},
    {"cli_layers", "demo"},
    {"cli_common"},
    {"core"},
    {"commit", "sweep"},
    {"registry", "layerstore"},
    {"selection", "basedir", "context", "sample"},
    {"hookspecs", "teardown"},
    {"namespaces", "store", "progress", "mounttable"},
    {"syscalls", "errors", "paths", "usage", "log", "checksum", "files"},
]
# The package's __init__ imports lazily by name (importlib), on first use.
UNRANKED = {"__init__"}

PACKAGE = os.path.dirname(rootfs_core.__file__)


def _modules() -> list[str]:
    return sorted(name[:-3] for name in os.listdir(PACKAGE) if name.endswith(".py"))


def _runtime_imports(path: str) -> set[str]:
    """The ``rootfs_core`` modules (and ``testing``) a module imports outside
    ``if TYPE_CHECKING:`` blocks."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if (
                isinstance(child, ast.If)
                and isinstance(child.test, ast.Name)
                and child.test.id == "TYPE_CHECKING"
            ):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.ImportFrom) and child.module:
                if child.module == "rootfs_core":
                    found.update(alias.name for alias in child.names)
                elif child.module.startswith("rootfs_core."):
                    found.add(child.module.split(".")[1])
            elif isinstance(child, ast.Import):
                found.update(a.name.split(".")[1] for a in child.names if a.name.startswith("rootfs_core."))
            visit(child)

    visit(tree)
    return found


def _rank() -> dict[str, int]:
    return {module: number for number, layer in enumerate(LAYERS) for module in layer}


def test_every_module_has_a_layer_and_no_layer_lists_a_ghost() -> None:
    rank = _rank()
    modules = set(_modules())
    assert modules - UNRANKED - set(rank) == set(), "give each new module a layer in LAYERS"
    assert set(rank) - modules == set(), "LAYERS names modules that do not exist"
    assert sum(map(len, LAYERS)) == len(rank), "a module is in two layers"


def test_imports_go_strictly_down() -> None:
    rank = _rank()
    upward = []
    for module in _modules():
        if module in UNRANKED:
            continue
        for imported in sorted(_runtime_imports(os.path.join(PACKAGE, f"{module}.py")) - {module}):
            if imported == "testing":
                upward.append(f"{module} imports the testing package")
            elif imported in rank and rank[imported] <= rank[module]:
                upward.append(f"{module} (layer {rank[module]}) imports {imported} (layer {rank[imported]})")
    assert upward == []


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The control: a function-level import of a higher module is found,
    and one under TYPE_CHECKING is not."""
    path = str(tmp_path / "probe.py")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from rootfs_core.cli import main\n"
            "def f():\n    from rootfs_core import core\n"
        )
    assert _runtime_imports(path) == {"core"}
