"""``stepchain show RUN_ID``: a run's timeline in the terminal, or as an HTML page."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stepchain.observe.ledger import RunView, describe
from stepchain.observe.timeline import render_html, render_text


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "show",
        help="print a run's timeline (or write it as HTML)",
        description="Reads the run from the checkpoint table in STEPCHAIN_TABLE (boto3 configuration, "
        "AWS_ENDPOINT_URL for LocalStack), or from a saved run view (--json, e.g. GET /runs/{id}).",
    )
    p.add_argument("run_id", nargs="?", help="the run to show")
    p.add_argument("--workflow", action="append", default=[], help="module:attribute of the run's Workflow")
    p.add_argument("--json", dest="json_path", help="read the run view from this JSON file instead")
    p.add_argument("--html", help="write a self-contained HTML timeline to this file")
    p.add_argument("--items", action="store_true", help="one row per map item too")
    p.set_defaults(func=run)


def load_view(args: argparse.Namespace) -> RunView:
    if args.json_path:
        try:
            return RunView.from_dict(json.loads(Path(args.json_path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"stepchain show: cannot read a run view from {args.json_path}: {exc}") from exc
    if not args.run_id or not args.workflow:
        raise SystemExit("stepchain show: give RUN_ID and --workflow MODULE:ATTR, or --json FILE")
    import boto3

    from stepchain.define.load import load_workflow
    from stepchain.define.workflow import Registry
    from stepchain.settings import Settings
    from stepchain.store.dynamodb import DynamoDBStore

    settings = Settings.from_env()
    store = DynamoDBStore(settings.table, boto3.client("dynamodb"))
    run = store.get_run(args.run_id)
    if run is None:
        raise SystemExit(f"stepchain show: no run {args.run_id!r} in table {settings.table!r}")
    from stepchain.engine.nodes.children import roll_up  # child runs and their costs

    registry = Registry([load_workflow(w) for w in args.workflow])
    return roll_up(store, registry, describe(store, registry, run))


def run(args: argparse.Namespace) -> int:
    view = load_view(args)
    print(render_text(view, items=args.items))
    if args.html:
        Path(args.html).write_text(render_html(view))
        print(f"timeline written to {args.html}", file=sys.stderr)
    return 0
