"""``stepchain watch RUN_ID``: the live view in a terminal, redrawn in place as the run changes.

One line per node, map item and child run (the same rows as the web page), with ``each`` progress,
duration and cost; it exits when the run finishes (0 if it succeeded, 1 otherwise). On a stream that
is not a terminal it prints a line only when that line changed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from stepchain.ui.backends import Backend, get_json

__all__ = ["render", "watch"]

FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")


def _progress(node: dict[str, Any], children: list[dict[str, Any]]) -> str:
    parts = []
    items = node.get("items") or []
    if items:
        parts.append(f"{sum(1 for i in items if i['status'] == 'SUCCEEDED')}/{len(items)} items")
    if children:
        parts.append(f"{sum(1 for c in children if c['status'] == 'SUCCEEDED')}/{len(children)} child runs")
    if node.get("items_checkpointed"):
        parts.append(f"each: {node['items_checkpointed']} checkpointed")
    return ", ".join(parts)


def _line(key: str, node: dict[str, Any], depth: int, extra: str) -> str:
    dur = node.get("duration_ms") or 0
    cost = (node.get("cost_usd") or 0.0) + (node.get("compute_usd") or 0.0)
    name = ("  " * depth + key)[:28]
    return f"  {name:<28} {node.get('kind', ''):<9} {node['status']:<10} {extra:<30} {dur / 1000:7.1f}s ${cost:.6f}"


def render(run: dict[str, Any]) -> list[str]:
    """The lines of one picture of ``run`` (a ``GET /runs/{id}`` document)."""
    t = run.get("totals") or {}
    head = f"{run['workflow']} {run['run_id']}  {run['status']}"
    if run.get("current") and run["status"] not in FINISHED:
        head += f"  at {run['current']}"
    if run.get("forked_from"):
        f = run["forked_from"]
        head += f"  (forked from {f['run_id']} at {f['node']}, iteration {f['iteration']})"
    lines = [head, f"  {'node':<28} {'kind':<9} {'status':<10} {'progress':<30} {'time':>8} cost"]
    kids = run.get("children") or []  # direct children; a redriven node has one generation per redrive
    for n in run.get("nodes") or []:
        mine = [c for c in kids if c.get("node") == n["key"]]
        latest = max((c.get("generation", 0) for c in mine), default=0)
        extra = (
            "copied" if n.get("copied_from") else _progress(n, [c for c in mine if c.get("generation", 0) == latest])
        )
        lines.append(_line(n["key"], n, 0, extra))
        for i in n.get("items") or []:
            lines.append(_line(f"item {i['index']}", i, 1, ""))
        for c in mine:
            branch = f" ({c['branch']})" if c.get("branch") is not None else ""
            branch += f" gen {c['generation']}" if c.get("generation") else ""
            lines.append(f"    child run {c['run_id']}{branch} {c.get('workflow', '')} {c['status']}")
    if run.get("waiting_for"):
        w = run["waiting_for"]
        lines.append(f"  waiting for event {w['event']!r}: POST /runs/{run['run_id']}/events/{w['event']}")
    if run.get("error"):
        lines.append(f"  error: {run['error']}")
    cost = (t.get("cost_usd") or 0) + (t.get("compute_usd") or 0) + (t.get("orchestration_usd") or 0)
    lines.append(
        f"  {t.get('succeeded', 0)}/{t.get('nodes', 0)} nodes done, {t.get('invocations', 0)} invocations, "
        f"{t.get('crashes', 0)} crashes, ${cost:.6f}"
    )
    return lines


def watch(
    backend: Backend,
    run_id: str,
    *,
    interval_s: float = 1.0,
    out: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_polls: int | None = None,
) -> int:
    """Redraw ``run_id`` every ``interval_s`` until it finishes: 0 if it succeeded, 1 otherwise."""
    out = out or sys.stdout
    tty = out.isatty()
    drawn = 0
    printed: set[str] = set()
    polls = 0
    while True:
        run = get_json(backend, f"/runs/{run_id}")
        lines = render(run)
        if tty:
            out.write(f"\x1b[{drawn}F" if drawn else "")
            out.write("".join(f"\x1b[2K{line}\n" for line in lines))
            drawn = len(lines)
        else:
            for line in lines:
                if line not in printed:
                    out.write(line + "\n")
                    printed.add(line)
        out.flush()
        polls += 1
        if run["status"] in FINISHED:
            return 0 if run["status"] == "SUCCEEDED" else 1
        if max_polls is not None and polls >= max_polls:
            return 1
        sleep(interval_s)
