"""A 500-iteration agent loop on the in-process harness (issue 8.2): each iteration is its own
checkpointed activation, so iteration 500 costs what iteration 1 cost (nothing replayed, no history
to grow). Reports the per-iteration time of the first 50 vs the last 50 iterations of ONE run (target
<= 1.2x) and the size of a node item at several iterations (constant).

``python bench/loop_bench.py`` prints the section; ``make bench`` (bench/run_bench.py) adds it to
bench/RESULTS.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from stepchain import END, Workflow, goto
from stepchain.store.dynamodb import DynamoDBStore, from_item
from stepchain.store.memory import MemoryStore
from stepchain.store.records import node_key, node_sk, run_pk
from stepchain.testing import Harness

ITERATIONS = 500
WINDOW = 50


def loop_workflow(iterations: int) -> Workflow:
    """think -> act -> think ... : the shape of a tool-using agent (the model, then the tool it chose)."""
    wf = Workflow(f"loop-{iterations}", max_iterations=iterations + 1)

    @wf.step(routes=("act", END))
    def think(ctx: Any, s: dict[str, int]) -> Any:
        return goto(END, s) if s["i"] >= iterations - 1 else goto("act", s)

    @wf.step(routes=("think",))
    def act(ctx: Any, s: dict[str, int]) -> Any:
        return goto("think", {"i": s["i"] + 1})

    return wf


class _Stamps:
    """Wraps the harness probe: a timestamp when each iteration's first step completes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.stamps: list[float] = []

    def reached(self, boundary: str, run_id: str, key: str, detail: str = "") -> None:
        if boundary == "step_executed" and key.startswith("think"):
            self.stamps.append(time.perf_counter())
        self.inner.reached(boundary, run_id, key, detail)


def item_bytes(h: Harness, run_id: str, key: str) -> int:
    store = h.store
    pk, sk = run_pk(run_id), node_sk(key)
    if isinstance(store, MemoryStore):
        item: dict[str, Any] = store._items[(pk, sk)]
    else:
        assert isinstance(store, DynamoDBStore)
        resp = store.client.get_item(TableName=store.table, Key={"pk": {"S": pk}, "sk": {"S": sk}})
        item = from_item(resp["Item"])
    return len(json.dumps(item, sort_keys=True, separators=(",", ":")))


def run_loop(iterations: int, backend: str, sample: tuple[int, ...] = (1, 10, 100)) -> dict[str, Any]:
    """One run of the loop; per-iteration times and node item sizes at the ``sample`` iterations (and the last)."""
    wf = loop_workflow(iterations)
    with Harness(wf, backend=backend) as h:
        probe = _Stamps(h.probe)
        h.engine.probe = h.handoff.probe = probe
        t0 = time.perf_counter()
        rid = h.start(wf.name, {"i": 0})
        status = h.run(rid, max_activations=4 * iterations + 100)
        elapsed = time.perf_counter() - t0
        calls = sum(v for k, v in h.api_calls.items() if k.startswith("dynamodb."))  # before our reads below
        assert status == "SUCCEEDED" and h.output(rid)["i"] == iterations - 1
        its = sorted({*(i for i in sample if i < iterations), iterations - 1})
        sizes = {f"think~{i}": item_bytes(h, rid, node_key("think", None, i)) for i in its}
        sizes |= {f"act~{i}": item_bytes(h, rid, node_key("act", None, i)) for i in its if i < iterations - 1}
    s = probe.stamps
    w = min(WINDOW, max(1, (len(s) - 1) // 2))
    first = 1000 * (s[w] - s[0]) / w
    last = 1000 * (s[-1] - s[-1 - w]) / w
    return {
        "iterations": iterations,
        "backend": backend,
        "seconds": elapsed,
        "first_ms": first,
        "last_ms": last,
        "ratio": last / first,
        "sizes": sizes,
        "steps": 2 * iterations - 1,
        "dynamodb_calls": calls if backend == "moto" else None,
        "dynamodb_calls_per_step": calls / (2 * iterations - 1) if backend == "moto" else None,
    }


def loop_section(iterations: int = ITERATIONS, backends: tuple[str, ...] = ("memory", "moto")) -> list[str]:
    """The RESULTS.md section (markdown lines)."""
    rows = [
        f"| backend | ms/iteration, first {WINDOW} | last {WINDOW} | last / first | node item bytes by iteration "
        "| DynamoDB calls/step | run s |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in backends:
        r = run_loop(iterations, b)
        calls = "-" if r["dynamodb_calls_per_step"] is None else f"{r['dynamodb_calls_per_step']:.3f}"
        sizes = ", ".join(f"{k}: {v}" for k, v in r["sizes"].items())
        rows.append(
            f"| {b} | {r['first_ms']:.3f} | {r['last_ms']:.3f} | {r['ratio']:.2f}x | {sizes} | {calls} "
            f"| {r['seconds']:.1f} |"
        )
    return [
        f"## A {iterations}-iteration loop (think -> act -> think ...), in-process harness",
        "",
        *rows,
        "",
        "Each iteration is its own checkpointed activation (keys `think~00042`): target last/first <= 1.2x and "
        "node items of the same size at every iteration (the calls per step include the run's start and end).",
    ]


if __name__ == "__main__":
    print("\n".join(loop_section(int(sys.argv[1]) if len(sys.argv) > 1 else ITERATIONS)))
    sys.exit(0)


__all__ = ["Path", "loop_section", "run_loop"]
