"""The package's shape: no import cycles, no module over 400 lines (issue 8: small modules with
one responsibility each; see the code map in ARCHITECTURE.md).

The cycle check is on the import graph at run time: an import under ``if TYPE_CHECKING:`` (for an
annotation only) or inside a function is not an edge."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "src" / "stepchain"
MAX_LINES = 400
#: modules still over the limit, each with why it is not split yet (remove an entry once it is)
OVER_LIMIT: dict[str, str] = {
    "stepchain.api.app": (
        "the routes, the error mapping and the entry point share the resolver object `app`; "
        "splitting them means moving the resolver to its own module (500 lines now, was 619)"
    ),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports when it is imported (not those under TYPE_CHECKING,
    nor those imported inside functions, which run later)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for part in getattr(node, block, []):
                        visit(part.body if isinstance(part, ast.ExceptHandler) else [part])

    visit(tree.body)
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    modules = set(files)
    return {name: runtime_imports(path, modules) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that starts and ends at the same module), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state and (cycle := dfs(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := dfs(m)):
            return cycle
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_imports() -> None:
    graph = import_graph()
    assert "stepchain.engine.worker" in graph["stepchain.engine"]
    assert "stepchain.engine.nodes" in graph["stepchain.engine.worker"]


def test_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


def test_no_module_over_400_lines() -> None:
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in PKG.rglob("*.py")}
    over = {m: n for m, n in sizes.items() if n > MAX_LINES and m not in OVER_LIMIT}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
    stale = [m for m in OVER_LIMIT if sizes.get(m, 0) <= MAX_LINES]
    assert not stale, f"no longer over the limit, drop them from OVER_LIMIT: {stale}"
