"""What both demos (embedded and LocalStack) show at the end of a run: the same words, the same files."""

from __future__ import annotations

import json
from pathlib import Path

from stepchain.observe.ledger import RunView
from stepchain.observe.timeline import render_html, render_text


def save_run(view: RunView, out: Path) -> None:
    """Print the timeline; write timeline.html and run.json (re-readable with `stepchain show --json`)."""
    print("\n" + render_text(view, items=False) + "\n")
    (out / "timeline.html").write_text(render_html(view))
    (out / "run.json").write_text(json.dumps(view.to_dict(), indent=1))


def print_ledger(view: RunView) -> None:
    leaves = [i for n in view.nodes for i in (n.items or [n])]
    t, tax = view.totals, view.restart_tax_avoided
    print(f"invocations: {t['invocations']} across {len(leaves)} units of work; crashes recovered: {t['crashes']}")
    print(
        f"restart tax avoided: {tax.seconds:.1f} s of compute and ${tax.usd:.6f} "
        f"(what restarting from scratch at each crash would have re-spent)"
    )
    print(f"cost of the run: ${t['cost_usd']:.6f} recorded (LLM) + ${t['compute_usd']:.6f} Lambda compute")


def print_files(out: Path) -> None:
    print(
        f"report: {out / 'report.md'}\ntimeline: {out / 'timeline.html'} "
        f"(again in the terminal: .venv/bin/stepchain show --json {out / 'run.json'})"
    )


def verdict(ok: bool, worker: str = "worker") -> int:
    print(
        f"\ndemo OK: the run survived a killed {worker}, and no completed step was re-run."
        if ok
        else "\ndemo FAILED: see above"
    )
    return 0 if ok else 1
