"""The workflow of test_lifecycle_stream.py (module level, so the embedded runtime's worker processes
can import it: ``tests.integration.lifecycle_flow:wf``): a loop (``decide`` sends the run back to
``plan`` once), a ``ctx.each``, a map, a wait, a call and a parallel, all with lifecycle events.
No step emits, so each invocation's lifecycle events are written at its end only."""

from __future__ import annotations

from typing import Any

from stepchain import END, Workflow, goto
from stepchain.store.records import node_key

N = 3
ITERATIONS = 2
WAIT_TIMEOUT_S = 3600  # the in-process harnesses skip time to a crashed message's redelivery


def build(lifecycle: bool, suffix: str = "") -> tuple[Workflow, Workflow]:
    """The tour and its child workflow (``lifecycle=False``: the same without lifecycle events)."""
    child = Workflow("tour-child" + suffix, stream_lifecycle=lifecycle)

    @child.step()
    def double(ctx: Any, x: Any) -> Any:
        return x

    wf = Workflow("tour" + suffix, stream_lifecycle=lifecycle, max_iterations=ITERATIONS + 1)

    @wf.step()
    def plan(ctx: Any, n: Any) -> list[int]:
        return ctx.each(list(range(N)), lambda i: i, name="items")  # type: ignore[no-any-return]

    @wf.map()
    def work(ctx: Any, i: int) -> int:
        return i + 1

    wf.wait_for_event("go", timeout_s=WAIT_TIMEOUT_S)
    wf.call(child, name="delegate")
    wf.parallel({"a": child, "b": child}, name="both")

    @wf.step(routes=("plan", END))
    def decide(ctx: Any, x: Any) -> Any:
        if ctx.iteration + 1 < ITERATIONS:
            return goto("plan", N)
        return goto(END, x)

    return wf, child


wf, child = build(True)
quiet, quiet_child = build(False, "-quiet")

#: each node's lifecycle events in order (``ctx.each`` progress: ``node.each``, checked apart)
KINDS = {
    "plan": ["node.started", "node.each", "node.succeeded"],
    "work": ["node.started", "node.fanned_out", "node.succeeded"],
    "go": ["node.started", "node.waiting_for", "node.succeeded"],
    "delegate": ["node.started", "node.child_started", "node.child_ended", "node.succeeded"],
    "both": ["node.started", "node.child_started", "node.child_ended", "node.succeeded"],
    "decide": ["node.started", "node.succeeded"],
}
ITEM = ["node.started", "node.succeeded"]


def expected() -> list[tuple[str | None, list[str]]]:
    """(node key, its events) in the run's order; the map's items come between its fan-out and join."""
    out: list[tuple[str | None, list[str]]] = [(None, ["run.started"])]
    for it in range(ITERATIONS):
        for node in ("plan", "work", "go", "delegate", "both", "decide"):
            out.append((node_key(node, None, it), KINDS[node]))
            if node == "work":
                out += [(node_key(node, i, it), ITEM) for i in range(N)]
    return [*out, (None, ["run.succeeded"])]
