"""``stepchain watch RUN_ID``: the live view in a terminal, redrawn in place as the run changes.

One line per node, map item and child run (the same rows as the web page), with ``each`` progress,
duration and cost, and the last events of the run's progress stream; it exits when the run finishes
(0 if it succeeded, 1 otherwise). On a stream that is not a terminal it prints a line only when that
line changed.

Like the web page it tails ``GET /runs/{id}/stream?after=`` (a long-poll where the backend allows
it, :attr:`~stepchain.ui.backends.HttpBackend.stream_wait_s`; the API answers at once for a run that
waits for an event or a timer: then it pauses ``interval_s``), keeping its cursor across failed reads;
it reads the run view again when lifecycle events arrive, and every ``interval_s`` while the stream has
shown none (a workflow without lifecycle events), every 4 x ``interval_s`` with them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from stepchain.ui.backends import Backend, UiError, get_json

__all__ = ["render", "watch"]

FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")
#: the stream events shown under the rows
TAIL = 5


def _progress(node: dict[str, Any], children: list[dict[str, Any]], each: dict[str, Any] | None = None) -> str:
    parts = []
    items = node.get("items") or []
    if items:
        parts.append(f"{sum(1 for i in items if i['status'] == 'SUCCEEDED')}/{len(items)} items")
    if children:
        parts.append(f"{sum(1 for c in children if c['status'] == 'SUCCEEDED')}/{len(children)} child runs")
    live = (each or {}).get(node["key"])
    if live:
        parts.append(f"each: {live['done']}/{live['total']}")
    elif node.get("items_checkpointed"):
        parts.append(f"each: {node['items_checkpointed']} checkpointed")
    return ", ".join(parts)


def _line(key: str, node: dict[str, Any], depth: int, extra: str) -> str:
    dur = node.get("duration_ms") or 0
    cost = (node.get("cost_usd") or 0.0) + (node.get("compute_usd") or 0.0)
    name = ("  " * depth + key)[:28]
    return f"  {name:<28} {node.get('kind', ''):<9} {node['status']:<10} {extra:<30} {dur / 1000:7.1f}s ${cost:.6f}"


def render(run: dict[str, Any], events: list[dict[str, Any]] | None = None) -> list[str]:
    """The lines of one picture of ``run`` (a ``GET /runs/{id}`` document) and the last of ``events``
    (its stream, oldest first)."""
    events = events or []
    each = {e["node"]: e["data"] for e in events if e["kind"] == "node.each" and e.get("node")}
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
        latest_kids = [c for c in mine if c.get("generation", 0) == latest]
        extra = "copied" if n.get("copied_from") else _progress(n, latest_kids, each)
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
    if events:
        lines.append(f"  stream: {events[-1]['seq']} events, the last {min(TAIL, len(events))}:")
        for e in events[-TAIL:]:
            data = "" if e.get("data") is None else json.dumps(e["data"], separators=(",", ":"))[:60]
            lines.append(f"    #{e['seq']:<5} {e['kind']:<18} {e.get('node') or 'run':<16} {data}")
    return lines


def _lifecycle(kind: str) -> bool:
    return kind.startswith(("node.", "run."))


def watch(
    backend: Backend,
    run_id: str,
    *,
    interval_s: float = 1.0,
    out: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_polls: int | None = None,
) -> int:
    """Redraw ``run_id`` as its stream and view change until it finishes: 0 if it succeeded, 1 otherwise."""
    out = out or sys.stdout
    tty = out.isatty()
    drawn, polls, after, lifecycle, since_view = 0, 0, 0, False, 0
    printed: set[str] = set()
    events: list[dict[str, Any]] = []
    wait_s = float(getattr(backend, "stream_wait_s", 0) or 0)
    run = get_json(backend, f"/runs/{run_id}")
    while True:
        asked = time.monotonic()
        try:
            page = get_json(backend, f"/runs/{run_id}/stream?after={after}&limit=200&wait_s={wait_s:g}")
        except UiError:  # a reconnect: the next read goes on from the same cursor
            page = {"events": [], "next": after, "finished": False}
        fresh = page["events"]
        events = (events + fresh)[-200:]
        after = page["next"]
        lifecycle = lifecycle or any(_lifecycle(e["kind"]) for e in fresh)
        since_view += 1
        due = any(_lifecycle(e["kind"]) for e in fresh) or not lifecycle or since_view >= 4 or page["finished"]
        if due and run["status"] not in FINISHED:
            run, since_view = get_json(backend, f"/runs/{run_id}"), 0
        lines = render(run, events)
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
        if run["status"] in FINISHED and page["finished"] and not fresh:
            return 0 if run["status"] == "SUCCEEDED" else 1
        if max_polls is not None and polls >= max_polls:
            return 1
        if run["status"] in FINISHED:
            continue  # one more read of the stream: the run's end event follows its transition
        held = wait_s and time.monotonic() - asked >= wait_s / 2  # a long-poll that waited (a RUNNING run)
        if not fresh and not held:
            sleep(interval_s)
