"""Issue 17: every command README.md and the scaffold's README.md write works as written. Running them all
is too slow for this tier (e2e runs the scaffold's five: tests/e2e/test_e2e_scaffold.py), so each
``stepchain ...`` command is parsed by the CLI's own argparse parser and each ``make TARGET`` is checked
against the Makefile that would run it (the repository's with mk/*.mk, or the project template's)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from stepchain.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "src" / "stepchain" / "deploy" / "project_template"
READMES = {"README.md": ROOT / "README.md", "project README.md": TEMPLATE / "README.md"}


def commands(readme: Path) -> list[str]:
    """Shell lines of its bash blocks plus inline `make ...` / `stepchain ...` spans, placeholders filled."""
    text = readme.read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        found += [line.split("  #")[0].strip() for line in block.splitlines()]
    found += re.findall(r"`((?:make|stepchain) [^`]+)`", text)
    out = []
    for cmd in found:
        cmd = re.sub(r"<[a-z_]+>", "X", cmd).replace("...", "").replace("\n", " ")
        cmd = re.sub(r"\bRUN_ID\b(?!=)", "r1", cmd)  # `stepchain show RUN_ID`, not `RUN_ID=...`
        cmd = re.sub(r"\b([\w-]+)\|[\w|-]+", r"\1", cmd.replace("[", "").replace("]", ""))  # a synopsis: [--x a|b]
        for part in re.split(r"&&|;|\$\(|\)", cmd):
            part = part.strip()
            words = part.split()
            if words and (words[0] in ("make", "stepchain") or words[0].endswith("/stepchain")):
                out.append(part)
    return sorted(set(out))


def targets(makefiles: list[Path]) -> set[str]:
    names: set[str] = set()
    for mk in makefiles:
        names |= set(re.findall(r"^([a-zA-Z][\w.-]*(?: [a-zA-Z][\w.-]*)*):(?!=)", mk.read_text(), flags=re.MULTILINE))
    return {t for group in names for t in group.split()}


REPO_TARGETS = targets([ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))])
PROJECT_TARGETS = targets([TEMPLATE / "Makefile"])


def cases() -> list[tuple[str, str]]:
    return [(name, cmd) for name, path in READMES.items() for cmd in commands(path)]


@pytest.mark.parametrize(("readme", "command"), cases())
def test_readme_command_is_accepted(readme: str, command: str) -> None:
    words = shlex.split(command)
    if words[0] == "make":
        known = PROJECT_TARGETS if readme.startswith("project") else REPO_TARGETS
        if readme == "README.md" and any(w in ("test", "deploy-local", "api-url") for w in words):
            known = known | PROJECT_TARGETS  # "Deploy your own workflow" runs these in the new project
        wanted = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        assert set(wanted) <= known, f"{command!r}: no target {sorted(set(wanted) - known)}"
        return
    if len(words) == 2:  # a mention of the subcommand in prose
        subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
        assert subcommands is not None and words[1] in subcommands, command
        return
    try:
        build_parser().parse_args(words[1:])
    except SystemExit as exc:  # argparse rejected it
        pytest.fail(f"{command!r} is not accepted by the stepchain CLI (exit {exc.code})")


def test_the_readmes_have_commands_to_check() -> None:
    assert len(commands(ROOT / "README.md")) > 10 and len(commands(TEMPLATE / "README.md")) >= 5
