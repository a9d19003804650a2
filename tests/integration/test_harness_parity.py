"""Harness parity: the same workflow, driven by the same calls, gives the same results on every
harness (in memory, on moto, over SQS, over Step Functions).

The workflow is not the research agent: a step, a map, an event wait, a 20-minute sleep, a step.
One scenario exercises every shared method: ``crash_at``, ``duplicate_delivery``, ``start``,
``run`` (and its result), ``send_event``, ``advance``, ``cancel``, ``redrive``, ``status``,
``output``, ``view``, ``runs``, ``executions`` and ``invocations``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from stepchain import TerminalError, Workflow
from stepchain.testing import Harness, SfnHarness, SqsHarness


def parity_workflow(box: dict[str, bool]) -> Workflow:
    wf = Workflow("parity")

    @wf.step()
    def split(ctx: Any, n: int) -> list[int]:
        return list(range(n))

    @wf.map()
    def square(ctx: Any, i: int) -> int:
        return i * i

    wf.wait_for_event("go", timeout_s=600)
    wf.sleep(1200)

    @wf.step()
    def total(ctx: Any, go: Any) -> dict[str, Any]:
        if box["fail"]:
            raise TerminalError("the total is refused")
        return {"go": go, "sum": sum(ctx.output_of("square"))}

    return wf


def scenario(h: Harness, box: dict[str, bool]) -> dict[str, Any]:
    """The same calls on every harness; returns what they answered."""
    seen: dict[str, Any] = {}
    # 1. a crash after an item's checkpoint, every message delivered twice, an event, a sleep
    h.crash_at("after_checkpoint", node="square#00001")  # one item: map items run concurrently on sfn
    ok = h.start("parity", 3)
    seen["ok.waiting"] = h.run(ok)
    seen["ok.event"] = h.send_event(ok, "go", {"by": "qa"})
    seen["ok.done"] = h.run(ok)
    seen["ok.output"] = h.output(ok)
    seen["ok.executions"] = dict(h.executions)
    view = h.view(ok)
    seen["ok.nodes"] = [(n.key, n.status, [(i.key, i.status) for i in n.items]) for n in view.nodes]
    # the dead worker's item was redelivered, found done, and its handoff re-issued (on SQS the
    # whole batch comes back with it, so its other items may report the same: not compared)
    seen["ok.crash_recorded"] = ("square#00001", "lost_handoff") in {(e["node"], e["kind"]) for e in view.crash_events}
    # 2. the event never comes: advancing past the wait's deadline fails the run
    late = h.start("parity", 1)
    seen["late.waiting"] = h.run(late)
    h.advance(599)
    seen["late.before_deadline"] = h.run(late)
    h.advance(2)
    seen["late.after_deadline"] = h.run(late)
    seen["late.error"] = (h.view(late).error or {}).get("type")
    # 3. cancelled while it waits
    cancelled = h.start("parity", 1)
    h.run(cancelled)
    h.cancel(cancelled)
    seen["cancelled"] = h.run(cancelled)
    # 4. fails for good, then is redriven once the cause is gone; run() without a run id
    box["fail"] = True
    redriven = h.start("parity", 2)
    h.run()
    h.send_event(redriven, "go", 1)
    seen["redriven.failed"] = h.run()
    box["fail"] = False
    h.redrive(redriven)
    seen["redriven.done"] = h.run()
    seen["redriven.output"] = h.output(redriven)
    seen["redriven.redrives"] = h.view(redriven).redrives
    seen["runs"] = h.runs() == sorted([ok, late, cancelled, redriven])
    seen["statuses"] = [h.status(r) for r in (ok, late, cancelled, redriven)]
    seen["invocations_logged"] = len(h.invocations) > 0
    return seen


EXPECTED: dict[str, Any] = {
    "ok.waiting": "WAITING",
    "ok.event": "delivered",
    "ok.done": "SUCCEEDED",
    "ok.output": {"go": {"by": "qa"}, "sum": 0 + 1 + 4},
    "ok.executions": {"split": 1, "square#00000": 1, "square#00001": 1, "square#00002": 1, "total": 1},
    "ok.nodes": [
        ("split", "SUCCEEDED", []),
        ("square", "SUCCEEDED", [(f"square#0000{i}", "SUCCEEDED") for i in range(3)]),
        ("go", "SUCCEEDED", []),
        ("sleep_3", "SUCCEEDED", []),
        ("total", "SUCCEEDED", []),
    ],
    "ok.crash_recorded": True,
    "late.waiting": "WAITING",
    "late.before_deadline": "WAITING",
    "late.after_deadline": "FAILED",
    "late.error": "EventTimeout",
    "cancelled": "CANCELLED",
    "redriven.failed": "FAILED",
    "redriven.done": "SUCCEEDED",
    "redriven.output": {"go": 1, "sum": 0 + 1},
    "redriven.redrives": 1,
    "runs": True,
    "statuses": ["SUCCEEDED", "FAILED", "CANCELLED", "SUCCEEDED"],
    "invocations_logged": True,
}

HARNESSES: dict[str, Callable[[Workflow], Harness]] = {
    "memory": lambda wf: Harness(wf, backend="memory", duplicate_delivery=True),
    "moto": lambda wf: Harness(wf, backend="moto", duplicate_delivery=True),
    "sqs": lambda wf: SqsHarness(wf, duplicate_delivery=True),
    "sfn": lambda wf: SfnHarness(wf, duplicate_delivery=True),
}


@pytest.mark.parametrize("kind", list(HARNESSES))
def test_same_calls_same_results_on_every_harness(kind: str) -> None:
    box = {"fail": False}
    with HARNESSES[kind](parity_workflow(box)) as h:
        seen = scenario(h, box)
    # compare key by key first, for a readable failure
    assert {k: seen[k] for k in EXPECTED} == EXPECTED
    assert Counter(seen["ok.executions"]) == Counter(EXPECTED["ok.executions"])
