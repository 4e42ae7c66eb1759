"""No import cycles among the project's own modules.

Every module under llmkit/, components/, playbooks/ and policies/ is parsed with
`ast`; each import (module level or inside a function: a local import that only
hides a cycle still counts) adds an edge to the imported project module.
`from pkg import name` points at `pkg.name` when that is a module, else at `pkg`.
A module loaded by name counts too: loading by name hides an import, it does not remove it.
`importlib.import_module("pkg.mod")` points at `pkg.mod`; `import_module(f"pkg.{name}")` at
every module of `pkg`.
Imports under `if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("llmkit", "components", "playbooks", "policies")

# Cycles that are known and accepted, each with the reason. Keyed by the sorted
# tuple of the modules in the cycle.
KNOWN_CYCLES: dict[tuple[str, ...], str] = {}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            modules[_module_name(path, root)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    if isinstance(test, ast.Attribute):
        return test.attr == "TYPE_CHECKING"
    return False


def _loaded_by_name(node: ast.Call) -> str | None:
    """The module an `importlib.import_module(...)` or `__import__(...)` call names, if fixed."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values:
        head = arg.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str) and "." in head.value:
            return head.value.rsplit(".", 1)[0] + ".*"  # f"pkg.{name}": any module of pkg
    return None


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom | str]:
    """Every import statement and module loaded by name, except under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom | str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.Call):
            loaded = _loaded_by_name(node)
            if loaded:
                found.append(loaded)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    if node.level == 0:
        return node.module
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    if node.module:
        base = base + node.module.split(".")
    return ".".join(base)


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest project module that `name` is, or lives in."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = project_modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in _imports(tree):
            targets: list[str] = []
            if isinstance(node, str) and node.endswith(".*"):
                package = node[:-2]
                targets = [m for m in modules if m.rsplit(".", 1)[0] == package and "." in m]
            elif isinstance(node, str):
                targets = [node]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve_from(module, is_package, node)
                if base is None:
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                owner = _owner(target, modules)
                if owner is not None and owner != module:
                    graph[module].add(owner)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle path per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        # Shortest path back to start inside the component, by breadth-first search.
        parents: dict[str, str] = {}
        frontier = [start]
        seen = {start}
        path: list[str] | None = None
        while frontier and path is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        path = [v]
                        while path[-1] != start:
                            path.append(parents[path[-1]])
                        path.reverse()
                        path.append(start)
                        break
                    if w not in seen:
                        seen.add(w)
                        parents[w] = v
                        nxt.append(w)
                if path is not None:
                    break
            frontier = nxt
        assert path is not None
        cycles.append(path)
    return cycles


def _key(cycle: list[str]) -> tuple[str, ...]:
    return tuple(sorted(set(cycle)))


def test_the_graph_sees_local_and_relative_imports() -> None:
    graph = import_graph()
    assert "llmkit.config" in graph
    assert any(graph.values())


def test_no_import_cycles() -> None:
    cycles = [c for c in find_cycles(import_graph()) if _key(c) not in KNOWN_CYCLES]
    assert not cycles, "import cycles among the project's modules:\n" + "\n".join(
        " -> ".join(c) for c in cycles
    )


def test_known_cycles_are_still_cycles() -> None:
    found = {_key(c) for c in find_cycles(import_graph())}
    stale = [k for k in KNOWN_CYCLES if k not in found]
    assert not stale, f"known cycles no longer present, drop them: {stale}"
