"""Node kinds combined (issue 15), on every harness: a routing step's goto lands on a node of each kind
(call, parallel, wait, sleep, map), forward (skipping a node) and backward (the next loop iteration).
The routed-to node must read its input from the routing step, not from its chain predecessor (which
never ran): on Step Functions a call/parallel task once got no ``src``/``input``, found no input,
reported DROPPED and the run stranded RUNNING."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from stepchain import END, StepContext, Workflow, goto
from stepchain.testing import Harness, SfnHarness, SqsHarness

KINDS = ("call", "parallel", "wait", "sleep", "map")
HARNESSES = ("memory", "sqs", "sfn")


def workflows(kind: str) -> tuple[Workflow, Workflow]:
    """``grade`` routes past ``appeal`` straight to ``review`` (a node of ``kind``); ``settle`` sends
    the run back to ``grade`` once (iteration 1), then ends it."""
    halve = Workflow("halve")

    @halve.step()
    def split(ctx: StepContext, marks: list[int]) -> list[int]:
        return [m // 2 for m in marks]

    wf = Workflow("grading", max_iterations=5)

    @wf.step(routes=("appeal", "review"))
    def grade(ctx: StepContext, state: dict[str, Any]) -> Any:
        return goto("review", [m + 10 * state["round"] for m in state["marks"]])

    @wf.step()
    def appeal(ctx: StepContext, marks: list[int]) -> list[int]:
        raise AssertionError("never routed here")

    if kind == "call":
        wf.call(halve, name="review")
    elif kind == "parallel":
        wf.parallel({"left": halve, "right": halve}, name="review")
    elif kind == "wait":
        wf.wait_for_event("verdict", name="review", timeout_s=3600)
    elif kind == "sleep":
        wf.sleep(30, name="review")
    else:

        @wf.map(name="review")
        def review(ctx: StepContext, mark: int) -> int:
            return mark + 1

    @wf.step(routes=("grade", END))
    def settle(ctx: StepContext, reviewed: Any) -> Any:
        if isinstance(reviewed, dict) and "left" in reviewed:
            reviewed = reviewed["left"] + reviewed["right"]
        if ctx.key == "settle":  # iteration 0: go round once more
            return goto("grade", {"round": 1, "marks": list(reviewed)})
        return goto(END, {"final": list(reviewed)})

    return wf, halve


#: a wait node's output is the event's payload: the event echoes the marks it was given
def expected(kind: str) -> list[int]:
    marks = [4, 8]
    for rnd in (0, 1):
        marks = [m + 10 * rnd for m in marks]
        if kind == "call":
            marks = [m // 2 for m in marks]
        elif kind == "parallel":
            marks = [m // 2 for m in marks] * 2
        elif kind == "map":
            marks = [m + 1 for m in marks]
    return marks


@contextmanager
def harness(where: str, kind: str) -> Iterator[Harness]:
    wf, halve = workflows(kind)
    if where == "memory":
        h: Harness = Harness(wf, halve)
    elif where == "moto":
        h = Harness(wf, halve, backend="moto")
    elif where == "sqs":
        h = SqsHarness(wf, halve)
    else:
        h = SfnHarness(wf, halve, poll_timeout_s=6.0)
    with h:
        yield h


def drive(h: Harness, run_id: str) -> str:
    """Run to the end, answering each wait with the marks its node got, skipping the sleeps."""
    status = h.run(run_id)
    for _ in range(6):
        waiting = h.waiting_for(run_id)
        if waiting is not None:
            it = waiting["iteration"]  # the marks ``grade`` handed on in that iteration
            h.send_event(run_id, "verdict", [4 + 10 * it, 8 + 10 * it] if it else [4, 8], iteration=it)
        elif status not in ("RUNNING", "WAITING"):
            break
        else:
            h.advance(31_000)
        status = h.run(run_id)
    return status


@pytest.mark.parametrize("where", HARNESSES)
@pytest.mark.parametrize("kind", KINDS)
def test_goto_lands_on_every_node_kind(where: str, kind: str) -> None:
    with harness(where, kind) as h:
        run_id = h.start("grading", {"round": 0, "marks": [4, 8]})
        status = drive(h, run_id)
        run = h.engine.get_run(run_id)
        assert status == "SUCCEEDED", (run.current, run.error)
        assert h.output(run_id) == {"final": expected(kind)}
        keys = {n.key for n in h.view(run_id).nodes}
        assert "appeal" not in keys and {"review", "review~00001", "settle~00001"} <= keys


@pytest.mark.parametrize("kind", ["call", "map"])
def test_goto_lands_on_a_node_kind_on_moto(kind: str) -> None:
    with harness("moto", kind) as h:
        run_id = h.start("grading", {"round": 0, "marks": [4, 8]})
        assert drive(h, run_id) == "SUCCEEDED"
        assert h.output(run_id) == {"final": expected(kind)}


def late_call() -> tuple[Workflow, Workflow]:
    """``pick`` skips the call node in iteration 0 and takes it in iteration 1; then the run waits
    for a ``stamp`` event (long: the sweeper passes many times)."""
    double = Workflow("double-it")

    @double.step()
    def twice(ctx: StepContext, n: int) -> int:
        return 2 * n

    wf = Workflow("latecall", max_iterations=4)

    @wf.step(routes=("kid", "hold"))
    def pick(ctx: StepContext, n: int) -> Any:
        return goto("kid" if ctx.key != "pick" else "hold", n)

    wf.call(double, name="kid")

    @wf.step()
    def after(ctx: StepContext, n: int) -> int:
        return n + 1

    wf.wait_for_event("stamp", name="hold", timeout_s=86_400)

    @wf.step(routes=("pick", END))
    def again(ctx: StepContext, stamp: Any) -> Any:
        return goto("pick", 5) if ctx.key == "again" else goto(END, stamp)

    return wf, double


@pytest.mark.parametrize("where", HARNESSES)
def test_a_call_node_first_taken_in_a_later_iteration_is_left_alone_by_the_sweeper(where: str) -> None:
    """The sweeper looked for a joined call node's successor in iteration 0: never created there, so it
    re-joined the node at every sweep and, after ``max_reissues``, failed a healthy waiting run."""
    wf, double = late_call()
    h: Harness = {"memory": Harness, "sqs": SqsHarness, "sfn": SfnHarness}[where](wf, double)
    with h:
        run_id = h.start("latecall", 1)
        h.run(run_id)
        h.send_event(run_id, "stamp", "first", iteration=0)
        assert h.run(run_id) == "WAITING"  # hold~00001, after kid~00001 and after~00001
        for _ in range(12):
            h.advance(361)
            h.sweep()
            assert h.run(run_id) == "WAITING", h.engine.get_run(run_id).error
        assert not [c for c in h.store.list_crash_events(run_id) if c.kind == "swept"]
        h.send_event(run_id, "stamp", "second", iteration=1)
        assert h.run(run_id) == "SUCCEEDED"
        assert h.output(run_id) == "second"
