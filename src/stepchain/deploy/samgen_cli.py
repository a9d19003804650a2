"""``stepchain template``: write (or ``--check``) the SAM template generated from workflow definitions."""

from __future__ import annotations

import argparse
import difflib
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from stepchain.define.workflow import Workflow

DIFF_LINES = 40  # how much of a stale template's diff --check prints


def _template(args: argparse.Namespace, load: Callable[[str], Workflow]) -> int:
    try:
        from stepchain.deploy import samgen
    except ImportError as exc:  # PyYAML is not a runtime dependency of the Lambda code
        raise SystemExit(f"error: stepchain template needs PyYAML (pip install 'stepchain[template]'): {exc}") from exc

    for directory in reversed(args.pythonpath or []):
        sys.path.insert(0, str(directory))
    workflows = [load(spec) for spec in args.workflows]
    command = " ".join(["stepchain template", *map(shlex.quote, args.workflows)])
    if args.pythonpath:
        command += "".join(f" --pythonpath {shlex.quote(str(d))}" for d in args.pythonpath)
    command += f" --code-uri {shlex.quote(args.code_uri)} --asl-dir {shlex.quote(args.asl_dir)}"
    command += f" --out {shlex.quote(str(args.out))}"
    source = "stepchain template " + " ".join(args.workflows)  # no paths: the header is the same everywhere
    text = samgen.render(workflows, code_uri=args.code_uri, asl_dir=args.asl_dir, out=args.out, command=source)
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current == text:
            print(f"{args.out} is up to date")
            return 0
        diff = list(
            difflib.unified_diff(current.splitlines(), text.splitlines(), str(args.out), "generated", lineterm="")
        )
        changed = sum(1 for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---"))
        print(f"{args.out} is stale ({changed} lines differ): run `{command}`", file=sys.stderr)
        for line in _summary(current, text):
            print(line, file=sys.stderr)
        for line in diff[:DIFF_LINES]:
            print(line, file=sys.stderr)
        if len(diff) > DIFF_LINES:
            print(f"... ({len(diff) - DIFF_LINES} more diff lines)", file=sys.stderr)
        return 1
    args.out.write_text(text)
    print(args.out)
    return 0


def _summary(current: str, generated: str) -> list[str]:
    """What differs, by template section and logical id: ``added: Resources.X`` / ``removed:`` / ``changed:``."""
    import yaml

    from stepchain.deploy.samgen_base import load_cfn

    try:
        old, new = load_cfn(current) or {}, load_cfn(generated)
    except yaml.YAMLError:  # a broken file on disk: the line diff says enough
        return ["(the template on disk does not parse as YAML)"]
    out: list[str] = []
    for section in dict.fromkeys([*new, *old]):
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            keys = dict.fromkeys([*b, *a])
            out += [f"added: {section}.{k}" for k in keys if k not in a]
            out += [f"removed: {section}.{k}" for k in keys if k not in b]
            out += [f"changed: {section}.{k}" for k in keys if k in a and k in b and a[k] != b[k]]
        elif a != b:
            out.append(f"{'added' if a is None else 'removed' if b is None else 'changed'}: {section}")
    return out


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], load: Callable[[str], Workflow]) -> None:
    p = sub.add_parser(
        "template",
        help="generate the SAM template of an app from its workflows",
        description="Write the SAM template (functions, queues, state machines, API, IAM) of the app made of "
        "the given workflows. <out stem>.overrides.yaml next to --out, if present, is merged in: put hand-made "
        "resources, parameters and changes there.",
    )
    p.add_argument("workflows", nargs="+", metavar="MODULE:ATTR", help="e.g. research_agent.workflow:wf")
    p.add_argument("--out", type=Path, default=Path("template.yaml"), help="the template (default: template.yaml)")
    p.add_argument("--check", action="store_true", help="exit 1 (with a diff) if --out differs; write nothing")
    p.add_argument("--code-uri", default="./", help="CodeUri of the functions: the dir holding app.py (default ./)")
    p.add_argument("--asl-dir", default="statemachine", help="where `stepchain asl` writes (default statemachine)")
    p.add_argument(
        "--pythonpath", action="append", type=Path, metavar="DIR", help="put DIR on sys.path first (repeatable)"
    )
    p.set_defaults(func=lambda args: _template(args, load))
