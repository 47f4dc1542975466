"""The package's layering as tests, read from the source (every import statement, function-level ones
included; only ``if TYPE_CHECKING:`` blocks are left out, as they never run).

Pipeline: data -> sampling -> model -> train -> decode -> serve -> bench; only the thin cli sees everything.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastaed"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.AST, this: str, is_package: bool) -> list[str]:
    """Every absolute module name an import statement of ``tree`` asks for (relative ones resolved)."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = this.split(".")
                parent = parent if is_package else parent[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            # `from fastaed.x import y` asks for the submodule fastaed.x.y if there is one, else fastaed.x
            known = modules()
            subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            names.extend(subs)
            if len(subs) < len(node.names):
                names.append(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


@cache
def graph() -> dict[str, set[str]]:
    """fastaed module -> the fastaed modules it imports."""
    mods = modules()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = _imported_names(tree, name, path.name == "__init__.py")
        edges[name] = {t for t in targets if t in mods and t != name}
    return edges


@cache
def third_party(name: str) -> set[str]:
    path = modules()[name]
    targets = _imported_names(ast.parse(path.read_text()), name, path.name == "__init__.py")
    roots = {t.split(".")[0] for t in targets if t}
    return {r for r in roots if r not in sys.stdlib_module_names and r not in ("fastaed", "__future__")}


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(source: str, target: str, allowed_sources: tuple[str, ...] = ()) -> list[str]:
    return sorted(
        f"{m} imports {t}"
        for m, targets in graph().items()
        if in_package(m, source) and not any(in_package(m, a) for a in allowed_sources)
        for t in targets
        if in_package(t, target)
    )


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (each one is an import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            connect(v)
    return out


def test_the_graph_sees_function_level_imports():
    # cli/main.py imports its subcommand modules by name, but every subcommand imports inside functions
    assert any(in_package(t, "fastaed.decode") for t in graph()["fastaed.cli.decode"])
    assert len(graph()) > 50


def test_no_import_cycles():
    cycles = strongly_connected(graph())
    assert cycles == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_detection_can_fail():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_model_imports_only_torch_and_itself():
    outside = [v for v in violations("fastaed.model", "fastaed") if " imports fastaed.model" not in v]
    assert outside == []
    extra = {m: third_party(m) - {"torch"} for m in graph() if in_package(m, "fastaed.model")}
    assert {m: e for m, e in extra.items() if e} == {}


@pytest.mark.parametrize(
    "source, target",
    [
        ("fastaed.sampling", "fastaed.model"),  # the sampler works on plain arrays
        ("fastaed.sampling", "fastaed.train"),
        ("fastaed.data", "fastaed.sampling"),
        ("fastaed.data", "fastaed.train"),
        ("fastaed.decode", "fastaed.train"),  # the trainer uses decode's search, never the reverse
        ("fastaed.decode", "fastaed.serve"),  # the server uses decode's chunked decoding, never the reverse
        ("fastaed.serve", "fastaed.train"),
        ("fastaed.serve", "fastaed.bench"),
        ("fastaed.util", "fastaed.data"),
        ("fastaed.util", "fastaed.model"),
    ],
)
def test_layers_point_one_way(source, target):
    assert violations(source, target) == []


def test_only_cli_imports_cli():
    assert violations("fastaed", "fastaed.cli", allowed_sources=("fastaed.cli", "fastaed.__main__")) == []


def test_library_never_imports_the_test_helpers():
    assert violations("fastaed", "fastaed.testing", allowed_sources=("fastaed.testing",)) == []
