"""The house rules a reader relies on, checked from the source text (ast only: nothing is imported).

* no import cycle among ``autoprune_edge`` modules, counting the imports that run when a module is
  imported (module level, including top-level ``if``/``try`` blocks and class bodies; not function
  bodies, not ``if TYPE_CHECKING:`` blocks, which never run);
* no module imports a private (``_underscore``) name of another ``autoprune_edge`` module;
* no module is longer than 450 lines.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "autoprune_edge"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
MAX_LINES = 450


@dataclass(frozen=True)
class ImportEdge:
    """One import statement's resolved target inside the package."""

    target: str  # dotted module name
    names: tuple[str, ...]  # names taken from it (``from target import a, b``); empty for ``import target``
    lineno: int
    at_import_time: bool  # runs when the importing module is imported (not inside a function)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, flagged with whether it runs at module import time."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, at_import_time: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, at_import_time))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                visit(child, False)
            else:
                visit(child, at_import_time)

    visit(tree, True)
    return found


def _ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _resolve(module: str, node: ast.Import | ast.ImportFrom) -> list[tuple[str, tuple[str, ...]]]:
    """(package module, names) pairs an import statement reaches; modules outside the package dropped."""
    if isinstance(node, ast.Import):
        return [(a.name, ()) for a in node.names if a.name.split(".")[0] == PACKAGE]
    if node.level:
        is_package = MODULES.get(module, Path()).name == "__init__.py"
        base = module.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source.split(".")[0] != PACKAGE:
        return []
    return [(source, tuple(a.name for a in node.names))]


def _edges(module: str) -> list[ImportEdge]:
    """Package modules whose code an import runs: the module named, each submodule imported by name,
    and parent packages that are not already being imported around ``module`` (its own ancestors)."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    own_ancestors = _ancestors(module)
    edges: list[ImportEdge] = []
    for node, at_import_time in _import_nodes(tree):
        for source, names in _resolve(module, node):
            targets = [source] if source in MODULES else []
            targets += [p for p in sorted(_ancestors(source)) if p in MODULES]
            targets += [f"{source}.{n}" for n in names if f"{source}.{n}" in MODULES]
            for t in dict.fromkeys(targets):
                if t != module and t not in own_ancestors:
                    edges.append(ImportEdge(t, names if t == source else (), node.lineno, at_import_time))
    return edges


EDGES = {m: _edges(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_in(graph, set(comp), comp[0]) for comp in components]


def _cycle_in(graph: dict[str, set[str]], comp: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside one component (breadth first)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1] + [start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start]


def test_modules_are_found():
    assert f"{PACKAGE}.errors" in MODULES and f"{PACKAGE}.profiles.layers" in MODULES
    assert any(e.target == f"{PACKAGE}.errors" for e in EDGES[f"{PACKAGE}.gates"])


def test_cycle_finder_names_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e", "a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = {m: {e.target for e in EDGES[m] if e.at_import_time} for m in MODULES}
    cycles = _cycles(graph)
    assert not cycles, "import cycles (module-level imports):\n" + "\n".join(" -> ".join(c) for c in cycles)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_private_names_across_modules():
    found = []
    for module, path in MODULES.items():
        for node, _ in _import_nodes(ast.parse(path.read_text())):
            for source, names in _resolve(module, node):
                private = [n for n in names if _is_private(n) and f"{source}.{n}" not in MODULES]
                if private and source != module:
                    found.append(f"{module}:{node.lineno} imports {', '.join(private)} from {source}")
        found += _private_attributes(module)
    assert not found, "private names used across modules:\n" + "\n".join(found)


def _private_attributes(module: str) -> list[str]:
    """``mod._name`` where ``mod`` is a package module bound by an import in ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    bound: dict[str, str] = {}
    for node, _ in _import_nodes(tree):
        for source, names in _resolve(module, node):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname and a.name in MODULES:
                        bound[a.asname] = a.name
            for a in node.names if isinstance(node, ast.ImportFrom) else ():
                if f"{source}.{a.name}" in MODULES:
                    bound[a.asname or a.name] = f"{source}.{a.name}"
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and _is_private(node.attr)
                and bound[node.value.id] != module):
            found.append(f"{module}:{node.lineno} uses {node.value.id}.{node.attr} of {bound[node.value.id]}")
    return found


def test_no_module_over_450_lines():
    long = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    over = [f"{MODULES[m].relative_to(ROOT.parent)}: {n} lines" for m, n in sorted(long.items()) if n > MAX_LINES]
    assert not over, f"modules over {MAX_LINES} lines:\n" + "\n".join(over)
