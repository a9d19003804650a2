"""No statement in the library follows a ``return``, ``raise``, ``continue`` or ``break`` in the
same block: such code never runs, and reads as if it did (issue 7: the engine had one)."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "stepchain"
ENDS_BLOCK = (ast.Return, ast.Raise, ast.Continue, ast.Break)


def unreachable(tree: ast.AST) -> list[int]:
    """Line numbers of statements that follow a block-ending statement in the same block."""
    lines = []
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            for stmt, after in itertools.pairwise(block):
                if isinstance(stmt, ENDS_BLOCK) and isinstance(after, ast.stmt):
                    lines.append(after.lineno)
    return sorted(lines)


def test_the_checker_finds_code_after_a_return() -> None:
    code = "def f(x):\n    if x:\n        return 1\n        x += 1\n    return 2\n    print(x)\n"
    assert unreachable(ast.parse(code)) == [4, 6]


def test_no_unreachable_statements_in_the_library() -> None:
    found = {
        f"{path.relative_to(SRC)}:{line}"
        for path in sorted(SRC.rglob("*.py"))
        for line in unreachable(ast.parse(path.read_text(), str(path)))
    }
    assert not found, f"unreachable statements at {sorted(found)}"
