"""The ``stepchain ui`` and ``stepchain watch`` subcommands (added to :mod:`stepchain.cli`).

    stepchain ui    [--api URL [--sigv4 REGION] [--api-key-env VAR] | --local URL --workflow MOD:ATTR] [--port N]
    stepchain watch RUN_ID [same source options] [--interval S]

``--api``: a deployed runs API (its invoke URL with the stage, e.g. LocalStack's
``http://127.0.0.1:4566/_aws/execute-api/<api id>/v1``). ``--local``: the embedded runtime's emulator
(``stepchain.runtimes.local``), served by the API handler in this process (``--workflow`` registers the workflows
it needs to deliver events and redrive).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

from stepchain.exceptions import StepchainError
from stepchain.ui.backends import Backend, EngineBackend, HttpBackend, embedded_engine

__all__ = ["add_parsers", "backend_from_args"]


def _source_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--api", metavar="URL", help="base URL of a deployed runs API (stage included)")
    src.add_argument(
        "--local", metavar="URL", help="endpoint of the embedded runtime's emulator (stepchain.runtimes.local)"
    )
    p.add_argument("--workflow", action="append", default=[], metavar="MODULE:ATTR", help="with --local (repeatable)")
    p.add_argument("--sigv4", metavar="REGION", help="with --api: sign requests with the local AWS credentials")
    p.add_argument("--api-key-env", metavar="VAR", help="with --api: send the API key held in this env variable")


def backend_from_args(args: argparse.Namespace, load_workflow: Callable[[str], Any]) -> Backend:
    if args.api:
        key = os.environ.get(args.api_key_env) if args.api_key_env else None
        if args.api_key_env and not key:
            raise SystemExit(f"error: environment variable {args.api_key_env} is empty")
        return HttpBackend(args.api, api_key=key, sigv4_region=args.sigv4)
    workflows = [load_workflow(s) for s in args.workflow]
    try:
        return EngineBackend(embedded_engine(args.local, workflows), label=f"embedded runtime at {args.local}")
    except StepchainError as exc:
        raise SystemExit(f"error: {exc}") from None


def _ui(args: argparse.Namespace, load_workflow: Callable[[str], Any]) -> int:
    from stepchain.ui.server import UiServer

    server = UiServer(backend_from_args(args, load_workflow), port=args.port, poll_ms=int(args.interval * 1000))
    print(f"stepchain ui: {server.url} (reading {server.backend.label}); Ctrl-C stops it", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def _watch(args: argparse.Namespace, load_workflow: Callable[[str], Any]) -> int:
    from stepchain.ui.watch import watch

    try:
        return watch(backend_from_args(args, load_workflow), args.run_id, interval_s=args.interval)
    except StepchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def add_parsers(sub: argparse._SubParsersAction[Any], load_workflow: Callable[[str], Any]) -> None:
    """``load_workflow``: :func:`stepchain.cli.load_workflow` (passed in: no import back into the CLI)."""
    p = sub.add_parser("ui", help="a live web view of runs on 127.0.0.1 (timeline, details, steering)")
    _source_args(p)
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0: any free one)")
    p.add_argument("--interval", type=float, default=1.0, help="the page's poll interval in seconds")
    p.set_defaults(func=lambda a: _ui(a, load_workflow))
    w = sub.add_parser("watch", help="follow a run in the terminal until it finishes")
    w.add_argument("run_id")
    _source_args(w)
    w.add_argument("--interval", type=float, default=1.0, help="seconds between redraws")
    w.set_defaults(func=lambda a: _watch(a, load_workflow))
