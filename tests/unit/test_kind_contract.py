"""The node-kind contract (issue 15), checked on the source: nothing outside the kinds' package
(``stepchain.engine.nodes``) branches on a node kind, and neither the worker and the kinds nor the
run service and the call/parallel kinds import each other in a cycle, counting the imports under
``if TYPE_CHECKING:`` and those inside functions (every ``import`` statement is an edge)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "src" / "stepchain"
KINDS = "stepchain.engine.nodes"
#: where NodeKind is defined (its own helpers may read it), and the kinds' registry (kind -> handler)
ALLOWED = {"stepchain.define.nodes", "stepchain.define.workflow", KINDS}
#: names that stand for a set of kinds
KIND_SETS = {"CHILD_KINDS"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def outside_kinds() -> dict[str, Path]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    return {m: p for m, p in files.items() if m not in ALLOWED and not m.startswith(f"{KINDS}.")}


def names_a_kind(expr: ast.AST) -> bool:
    """Does ``expr`` name a node kind (``NodeKind.X``, ``NodeKind.X.value``) or a set of kinds?"""
    for sub in ast.walk(expr):
        if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "NodeKind":
            return True
        if isinstance(sub, ast.Name) and sub.id in KIND_SETS:
            return True
    return False


def kind_branches(tree: ast.AST) -> list[str]:
    """Comparisons with a kind, dicts keyed by kind, isinstance against a kind's handler, match on kinds."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(names_a_kind(e) for e in (node.left, *node.comparators)):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Dict) and any(k is not None and names_a_kind(k) for k in node.keys):
            found.append(f"{node.lineno}: dict keyed by kind")
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "isinstance" and len(node.args) == 2:
            if "Handler" in ast.unparse(node.args[1]) or names_a_kind(node.args[1]):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.match_case) and names_a_kind(node.pattern):
            found.append(f"{node.pattern.lineno}: case {ast.unparse(node.pattern)}")
    return found


def all_imports(path: Path, modules: set[str]) -> set[str]:
    """Every package module ``path`` imports anywhere (top level, TYPE_CHECKING, inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in modules else node.module)
    return {m for m in found if m in modules}


def full_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    return {name: all_imports(path, set(files)) - {name} for name, path in files.items()}


def reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), set()) - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def cycle_between(graph: dict[str, set[str]], a: set[str], b: set[str]) -> list[tuple[str, str]]:
    """Pairs (x in a, y in b) that import each other, directly or through other modules."""
    return [(x, y) for x in a for y in b if y in reaches(graph, x) and x in reaches(graph, y)]


def test_the_checks_see_what_they_look_for() -> None:
    code = (
        "if node.kind is NodeKind.WAIT: pass\n"
        "x = {NodeKind.MAP: 1}\n"
        "y = node.kind in CHILD_KINDS\n"
        "z = isinstance(h, ChildrenHandler)\n"
        "w = Node('a', NodeKind.STEP)\n"  # building a node is not branching on one
    )
    assert [f.split(":")[0] for f in kind_branches(ast.parse(code))] == ["1", "2", "3", "4"]
    assert cycle_between({"a": {"b"}, "b": {"c"}, "c": {"a"}}, {"a"}, {"c"}) == [("a", "c")]
    assert cycle_between({"a": {"b"}, "b": set()}, {"a"}, {"b"}) == []


def test_nothing_outside_the_kinds_package_branches_on_a_kind() -> None:
    found = {m: b for m, p in sorted(outside_kinds().items()) if (b := kind_branches(ast.parse(p.read_text())))}
    assert not found, f"branches on a node kind outside {KINDS}: {found}"


def test_the_worker_and_the_kinds_import_no_cycle() -> None:
    graph = full_graph()
    kinds = {m for m in graph if m == KINDS or m.startswith(f"{KINDS}.")}
    assert kinds and "stepchain.engine.worker" in graph
    assert not cycle_between(graph, {"stepchain.engine.worker"}, kinds)
    assert not any(m in graph[k] for k in kinds for m in ("stepchain.engine.worker", "stepchain.engine.runs"))
    assert not [k for k in kinds if k in reaches(graph, k)], "an import cycle through the kinds' package"


def test_the_run_service_and_the_children_import_no_cycle() -> None:
    graph = full_graph()
    assert not cycle_between(graph, {"stepchain.engine.runs"}, {f"{KINDS}.children"})


def test_every_kind_has_its_handler() -> None:
    from stepchain.define.workflow import NodeKind
    from stepchain.engine.nodes import HANDLERS

    assert set(HANDLERS) == set(NodeKind)
