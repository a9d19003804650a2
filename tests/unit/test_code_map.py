"""The docs name the code that exists: ARCHITECTURE.md's code map has a row for every module under
src/stepchain and none for a module that is gone, and every ``stepchain.<dotted>`` name and
``(src/)stepchain/...`` path in README.md and ARCHITECTURE.md resolves (after the package re-layout the
docs still named ``serve.py``, ``aws/``, ``samgen*.py`` ... at the package root)."""

from __future__ import annotations

import ast
import itertools
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "src" / "stepchain"
DOCS = ("README.md", "ARCHITECTURE.md")

_CODE = re.compile(r"`([^`]+)`")
_BRACES = re.compile(r"\{([^{}]*)\}")
_DOTTED = re.compile(r"(?<![\w./-])stepchain(?:\.[A-Za-z_]\w*)+")
_SRC_PATH = re.compile(r"(?<![\w./-])(?:src/)?stepchain/[\w.*{},/-]*|src/stepchain\b")


def expand(pattern: str) -> list[str]:
    """``handoff/{sqs,inprocess}.py`` -> ``handoff/sqs.py``, ``handoff/inprocess.py``."""
    parts = _BRACES.split(pattern)  # literal, alternatives, literal, ...
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def code_map_rows(text: str) -> list[str]:
    """The first cell of each row of the table under ``## Code map``."""
    section = text.split("\n## Code map\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [row.split("|")[1].strip() for row in rows[2:]]  # skip the header and its rule


def named_modules(cells: list[str]) -> list[str]:
    """The module paths (relative to src/stepchain) the code map's first column names; layer headings
    (``**store/**``) name none."""
    names: list[str] = []
    for cell in cells:
        for code in _CODE.findall(cell):
            names.extend(expand(code))
    return names


def module_paths() -> set[str]:
    return {p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py")}


@cache
def top_level_names(path: Path) -> frozenset[str]:
    """What ``module.<name>`` can resolve to: the module's top-level definitions, imports and ``__all__``."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            names.update(
                c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
    return frozenset(names)


def module_file(dotted: str) -> Path | None:
    """The file of the package module ``dotted`` (``stepchain.x.y``), or None."""
    rel = Path(*dotted.split(".")[1:])
    candidates = [PKG / rel / "__init__.py", *([(PKG / rel).with_suffix(".py")] if rel.parts else [])]
    return next((c for c in candidates if c.is_file()), None)


def resolves(dotted: str) -> bool:
    """``stepchain.a.b.C.m``: the longest prefix that is a module, then one name defined in it (the rest is
    that object's attribute, not checked)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        path = module_file(".".join(parts[:n]))
        if path is not None:
            return n == len(parts) or parts[n] in top_level_names(path)
    return False


def test_expand() -> None:
    assert expand("handoff/{sqs,stepfunctions}.py") == ["handoff/sqs.py", "handoff/stepfunctions.py"]
    assert expand("cli.py") == ["cli.py"]


def test_named_modules_reads_the_first_column() -> None:
    text = (
        "x\n## Code map\n\n| module | what |\n|---|---|\n| **store/** | |\n"
        "| `a.py`, `b/{c,d}.py` | `e.py` |\n\n## Next\n| `f.py` | |\n"
    )
    assert named_modules(code_map_rows(text)) == ["a.py", "b/c.py", "b/d.py"]


def test_resolves() -> None:
    assert resolves("stepchain.engine.sweeper")
    assert resolves("stepchain.engine.sweeper.Sweeper.sweep")
    assert resolves("stepchain.testing.Harness")
    assert resolves("stepchain.api.handle_api_event")  # in __all__, imported lazily
    assert not resolves("stepchain.serve")  # moved to stepchain.runtimes.serve
    assert not resolves("stepchain.engine.no_such_thing")


def test_every_module_has_a_code_map_row_and_every_row_a_module() -> None:
    named = named_modules(code_map_rows((ROOT / "ARCHITECTURE.md").read_text()))
    existing = module_paths()
    assert sorted(set(existing) - set(named)) == [], "modules missing from ARCHITECTURE.md's code map"
    assert sorted(set(named) - existing) == [], "code map rows naming modules that do not exist"
    assert sorted(n for n in set(named) if named.count(n) > 1) == [], "modules named in more than one row"


def test_every_dotted_module_name_in_the_docs_exists() -> None:
    wrong = {doc: sorted({m for m in _DOTTED.findall((ROOT / doc).read_text()) if not resolves(m)}) for doc in DOCS}
    assert wrong == {doc: [] for doc in DOCS}


def test_every_src_path_in_the_docs_exists() -> None:
    wrong: dict[str, list[str]] = {doc: [] for doc in DOCS}
    for doc in DOCS:
        for found in _SRC_PATH.findall((ROOT / doc).read_text()):
            path = found.rstrip(".,")
            if not all(list((ROOT / "src").glob(p.removeprefix("src/"))) for p in expand(path)):
                wrong[doc].append(path)
    assert wrong == {doc: [] for doc in DOCS}
