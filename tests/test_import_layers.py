"""The library's modules import each other without a cycle: each one stands on the ones below
it (the model below the methods, the methods below the phase job), so any of them can be read,
tested and changed from the bottom up.

Every import counts, wherever it stands (top level, inside a function, under ``TYPE_CHECKING``):
a lazy import hides a cycle from Python, not from a reader. Importing ``a.b.c`` runs the package
``a.b`` first, so it counts as an import of that package too, and a package whose ``__init__``
imports all its modules by name (``cilaudio.methods``, through ``pkgutil``) imports each of them.
The cycle search is :mod:`graphlib`'s.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_names(root: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` of a package folder (``__init__.py`` stands for the package)."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """``{module: the package's modules it imports}`` (see the module docstring)."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}

    def add(importer: str, target: str) -> None:
        while target and target not in modules:  # `from a import f`: a is the module
            target = target.rpartition(".")[0]
        parts = target.split(".")
        for i in range(len(parts), 1, -1):  # the module and the packages above it
            name = ".".join(parts[:i])
            if name != importer and not importer.startswith(name + "."):  # not its own packages
                graph[importer].add(name)

    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == package:
                        add(name, alias.name)
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(node, name, is_package)
                if source.split(".")[0] != package:
                    continue
                for alias in node.names:  # `from . import methods`: a module, if there is one
                    full = f"{source}.{alias.name}"
                    add(name, full if full in modules else source)
        if is_package and "iter_modules" in path.read_text():
            graph[name] |= {m for m in modules if m.rpartition(".")[0] == name}
    return graph


def cycle_of(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return exc.args[1]
    return None


def test_the_library_has_no_import_cycle():
    graph = import_graph(SRC, "cilaudio")
    assert len(graph) > 40 and "cilaudio.methods.registry" in graph
    cycle = cycle_of(graph)
    assert cycle is None, "import cycle: " + " -> ".join(reversed(cycle))


def test_the_model_and_the_methods_stand_below_the_phase_job():
    graph = import_graph(SRC, "cilaudio")
    below = graphlib.TopologicalSorter(graph)
    order = list(below.static_order())  # dependencies first
    assert order.index("cilaudio.model") < order.index("cilaudio.methods.distillation")
    assert order.index("cilaudio.methods") < order.index("cilaudio.train")
    assert "cilaudio.train" not in graph["cilaudio.methods.registry"]
    assert not any(m.startswith("cilaudio.methods") for m in graph["cilaudio.model"])


@pytest.mark.parametrize("case", ["lazy import", "package init", "type only"])
def test_a_cycle_is_found(tmp_path, case):
    """The walk sees the three ways a cycle hides from a first look."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("X = 1\n")
    if case == "lazy import":
        (pkg / "sub" / "__init__.py").write_text("")
        (pkg / "sub" / "a.py").write_text("def f():\n    from ..high import Y\n    return Y\n")
        (pkg / "high.py").write_text("from .sub.a import f\nY = 2\n")
    elif case == "package init":  # high imports sub.a, which runs sub/__init__, which imports every module
        (pkg / "sub" / "__init__.py").write_text("import pkgutil\nfor m in pkgutil.iter_modules(__path__):\n    pass\n")
        (pkg / "sub" / "a.py").write_text("X = 1\n")
        (pkg / "sub" / "b.py").write_text("from ..high import Y\n")
        (pkg / "high.py").write_text("from .sub.a import X\nY = 2\n")
    else:
        (pkg / "sub" / "__init__.py").write_text("")
        (pkg / "sub" / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                          "    from pkg.high import Y\n")
        (pkg / "high.py").write_text("from pkg.sub import a\nY = 2\n")
    cycle = cycle_of(import_graph(tmp_path, "pkg"))
    assert cycle is not None and "pkg.high" in cycle
    (pkg / "high.py").write_text("from .low import X\nY = 2\n")  # the cycle broken: none is found
    assert cycle_of(import_graph(tmp_path, "pkg")) is None
