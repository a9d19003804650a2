"""``stepchain`` command line.

    stepchain asl MODULE:ATTR [--out statemachine/] [--check] [--pythonpath DIR]
    stepchain template MODULE:ATTR [MODULE:ATTR ...] [--out template.yaml] [--check] [--code-uri DIR]
    stepchain new PATH [--name NAME] [--transport sqs|stepfunctions] [--wheel stepchain-<v>.whl]
    stepchain deploy-local --stack NAME [--endpoint URL] [--params 'K=V ...'] [--build-dir DIR] [--delete]
    stepchain invoke FUNCTION EVENT.json [--stack NAME --endpoint URL] [--run-id ID]
    stepchain ui|watch ...  (a live view of runs: stepchain.ui.cli)

``asl`` writes the workflow's state machine to ``<out>/<workflow name>.asl.json``; with
``--check`` it writes nothing and exits 1 when the file on disk differs (for CI).
Subcommands are argparse subparsers: add one with a ``_add_<name>(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from stepchain.define.load import load_workflow
from stepchain.deploy import deploy_local, local_invoke, samgen_cli, scaffold
from stepchain.deploy.asl import asl_path, dumps, to_asl, write_asl
from stepchain.deploy.samgen_children import with_children
from stepchain.observe import show
from stepchain.ui import cli as ui_cli


def _asl(args: argparse.Namespace) -> int:
    for directory in reversed(args.pythonpath or []):
        sys.path.insert(0, str(directory))
    for wf in with_children([load_workflow(args.workflow)]):  # child workflows are state machines too
        if args.check:
            path = asl_path(wf, args.out)
            current = path.read_text() if path.exists() else None
            if current != dumps(to_asl(wf)):
                print(f"{path} is stale: run `stepchain asl {args.workflow} --out {args.out}`", file=sys.stderr)
                return 1
            print(f"{path} is up to date")
            continue
        print(write_asl(wf, args.out))
    return 0


def _add_asl(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("asl", help="generate a workflow's Step Functions state machine (ASL)")
    p.add_argument("workflow", metavar="MODULE:ATTR", help="e.g. research_agent.workflow:wf")
    p.add_argument("--out", type=Path, default=Path("statemachine"), help="directory (default: statemachine/)")
    p.add_argument("--check", action="store_true", help="exit 1 if the file on disk differs; write nothing")
    p.add_argument(
        "--pythonpath", action="append", type=Path, metavar="DIR", help="put DIR on sys.path first (repeatable)"
    )
    p.set_defaults(func=_asl)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stepchain", description="durable agent workflows on AWS Lambda")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_asl(sub)
    samgen_cli.add_parser(sub, load_workflow)
    show.add_parser(sub)
    scaffold.add_parser(sub)
    deploy_local.add_parser(sub)
    local_invoke.add_parser(sub)
    ui_cli.add_parsers(sub, load_workflow)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
