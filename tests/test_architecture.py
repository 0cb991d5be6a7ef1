"""The house: which part of the package may import which, no import cycles, and every
third-party package the code imports declared in pyproject.toml."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "src" / "mtgan"

LAYERS = [
    {"mtgan", "errors", "choices", "files", "distributed", "checkpoint", "config"},
    {"data", "nn", "losses", "augment", "metrics", "report"},
    {"phases"},
    {"methods"},
    {"runs"},
    {"serve"},
    {"cli", "__main__"},
]
"""The parts of the package from the base up: a part imports only parts on its own layer or
below it ("mtgan" is the package's ``__init__``)."""

NEVER = {
    ("data", "nn"): "data knows no networks",
    ("data", "losses"): "data knows no networks",
    ("metrics", "nn"): "scores are functions of tensors",
    ("config", "augment"): "the base knows no networks",
    ("checkpoint", "nn"): "the base knows no networks: a checkpoint is tensors + metadata",
}
"""Imports that the layers allow but the design forbids, with the reason."""


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (also in functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mtgan"


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}


def test_every_part_is_on_a_layer():
    parts = {_part(m) for m in _modules()}
    assert parts == set().union(*LAYERS), "add new parts of the package to LAYERS"


def test_no_part_imports_one_above_it_or_a_forbidden_one():
    layer = {part: i for i, parts in enumerate(LAYERS) for part in parts}
    wrong = []
    for module, imported in _graph().items():
        for other in imported:
            a, b = _part(module), _part(other)
            if layer[b] > layer[a]:
                wrong.append(f"{module} imports {other}, a layer above it")
            if (a, b) in NEVER:
                wrong.append(f"{module} imports {other}: {NEVER[a, b]}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*path, module, other]))
            if other not in state:
                visit(other, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [
        s for x in project["optional-dependencies"].values() for s in x
    ]
    return {_normal(re.split(r"[\s<>=!~\[;]", spec, maxsplit=1)[0]) for spec in specs}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("folder", ["src", "benchmarks", "tests"])
def test_every_third_party_import_is_declared(folder):
    distributions = importlib.metadata.packages_distributions()
    declared = _declared()
    missing = set()
    for path in (ROOT / folder).rglob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in ("mtgan", "tests", "__future__"):
                continue
            owners = {_normal(d) for d in distributions.get(top, [top])}
            if not owners & declared:
                missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
