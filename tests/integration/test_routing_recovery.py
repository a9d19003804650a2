"""Routed runs recover from lost handoffs through the chosen route stored on the checkpoint:
the sweeper alone moves a loop on when every message a worker or the API sends is lost, and a
late redelivery of a routing step re-issues the successor it chose (with the right iteration)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.routing_flows import RAN, SECRET, guess, review

from stepchain.engine.sweeper import SweepPolicy
from stepchain.testing import Harness

GRACE_S = SweepPolicy().grace_s


def lose_messages(h: Harness) -> None:
    while h.handoff.pop() is not None:
        pass


def counts(run_id: str) -> dict[str, int]:
    return {k: n for (r, k), n in RAN.items() if r == run_id}


@pytest.mark.parametrize("kind", ["memory", "moto"])
def test_a_loop_whose_every_handoff_is_lost_completes_on_the_sweeper_alone(kind: str) -> None:
    with Harness(review, guess, backend=kind) as h:
        runs = [h.start("review-loop", "essay"), h.start("guess-loop", "cy")]
        lose_messages(h)
        guesses = iter([1, 2, SECRET])
        sweeps, swept = 0, True
        for _ in range(400):
            if all(h.engine.get_run(r).status.finished for r in runs):
                break
            batch = []
            while (head := h.handoff.pop()) is not None:
                batch.append(head)
            for due, msg in batch:
                h.clock.set_to(due)
                h.deliver(msg)
                if not swept:  # what a worker hands on is lost; the sweeper's re-issues are not
                    lose_messages(h)
            if h.status(runs[1]) == "WAITING":
                it = h.waiting_for(runs[1])["iteration"]  # the iteration the run waits in
                h.send_event(runs[1], "guess", {"n": next(guesses)}, iteration=it)
                lose_messages(h)
            swept = False
            if not batch:
                h.advance(GRACE_S + 1)
                sweeps += h.sweep()
                swept = True
        assert [h.status(r) for r in runs] == ["SUCCEEDED", "SUCCEEDED"], [h.engine.get_run(r).error for r in runs]
        assert h.output(runs[0]) == {"published": "essay-r2-p1+essay-r2-p2", "rounds": 2}
        assert h.output(runs[1]) == {"sum": 2 * sum(range(SECRET))}
        for r in runs:
            assert all(n == 1 for n in counts(r).values()), counts(r)
        assert counts(runs[0])["publish~00002"] == 1 and counts(runs[1])["score~00002"] == 1
        assert sweeps >= 10
        swept = {c.node for c in h.engine.store.list_crash_events(runs[0]) if c.kind == "swept"}
        assert {"judge~00001", "write~00002"} <= swept, swept


def test_a_late_redelivery_of_a_routing_step_reissues_the_route_it_chose() -> None:
    with Harness(review, backend="memory") as h:
        h.crash_at("after_checkpoint", node="judge~00001")  # the route is checkpointed, the handoff lost
        rid = h.start("review-loop", "essay")
        assert h.run(rid) == "SUCCEEDED"
        assert counts(rid)["judge~00001"] == 1 and counts(rid)["write~00002"] == 1
        kinds = [(c.node, c.kind) for c in h.engine.store.list_crash_events(rid)]
        assert ("judge~00001", "lost_handoff") in kinds


def test_a_failed_node_inside_a_loop_is_redriven_with_its_iteration() -> None:
    from stepchain import END, TerminalError, Workflow, goto

    box: dict[str, Any] = {"broken": True}
    wf = Workflow("redrive-loop")

    @wf.step(routes=("b", END))
    def a(ctx: Any, n: int) -> Any:
        return goto(END, n) if n >= 3 else goto("b", n)

    @wf.step(routes=("a",))
    def b(ctx: Any, n: int) -> Any:
        if n == 2 and box["broken"]:
            raise TerminalError("b is broken")
        return goto("a", n + 1)

    with Harness(wf, backend="memory") as h:
        rid = h.start("redrive-loop", 0)
        assert h.run(rid) == "FAILED"
        assert (h.view(rid).error or {})["node"] == "b~00002"
        box["broken"] = False
        h.redrive(rid)
        assert h.run(rid) == "SUCCEEDED" and h.output(rid) == 3
        assert h.executions["b~00002"] == 1 and h.executions["a~00003"] == 1
