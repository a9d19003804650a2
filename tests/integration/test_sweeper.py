"""The recovery sweeper: an API call (start, event, cancel, redrive) that dies after its durable
write and before its handoff, or a worker whose handoff is lost, leaves a run that nothing would
move on; ``sweep()`` moves it on (or fails it with a recorded reason), on every harness, and never
runs a completed step twice. A healthy run is never touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from stepchain import RetryPolicy, StepContext, TerminalError, Workflow
from stepchain.engine.sweeper import SweepPolicy
from stepchain.store.records import NodeStatus
from stepchain.testing import API_BOUNDARIES, Harness, InjectedCrash, SfnHarness, SqsHarness

GRACE_S = SweepPolicy().grace_s
BOX: dict[str, bool] = {"broken": False}


def make_workflow() -> Workflow:
    wf = Workflow("sweepy")

    @wf.step()
    def plan(ctx: StepContext, n: int) -> list[int]:
        return list(range(n))

    @wf.map(max_concurrency=2)
    def work(ctx: StepContext, x: int) -> int:
        return x * 10

    wf.wait_for_event("approval", timeout_s=86_400)

    @wf.step(retry=RetryPolicy(max_attempts=1))
    def publish(ctx: StepContext, approval: dict[str, Any]) -> dict[str, Any]:
        if BOX["broken"]:
            raise TerminalError("publisher down")
        return {"by": approval["by"], "total": sum(ctx.output_of("work"))}

    return wf


WF = make_workflow()
EXPECTED = {"by": "qa", "total": 150}
KINDS = ["memory", "moto", "sqs", "sfn"]


@contextmanager
def harness(kind: str) -> Iterator[Any]:
    BOX["broken"] = False
    if kind == "sfn":
        with SfnHarness(WF) as s:
            yield s
    elif kind == "sqs":
        with SqsHarness(WF, backend="memory", duplicate_delivery=True) as q:
            yield q
    else:
        with Harness(WF, backend=kind, duplicate_delivery=True) as h:
            yield h


def drive(h: Any, run_id: str) -> str:
    """Run until the run waits or ends; the run's status."""
    if isinstance(h, SfnHarness):
        h.run(run_id)
    else:
        h.run()
    return str(h.status(run_id))


def sweep_later(h: Any) -> int:
    """Let the grace period pass (delivering nothing new), then sweep once."""
    h.advance(GRACE_S + 1)
    return int(h.sweep())


def assert_once(h: Any) -> None:
    assert h.executions, "steps ran"
    assert all(n == 1 for n in h.executions.values()), h.executions


def to_waiting(h: Any) -> str:
    run_id = str(h.start("sweepy", 6))
    assert drive(h, run_id) == "WAITING"
    return run_id


def finish(h: Any, run_id: str) -> None:
    if h.status(run_id) == "WAITING":
        assert h.send_event(run_id, "approval", {"by": "qa"}) == "delivered"
    assert drive(h, run_id) == "SUCCEEDED", h.engine.get_run(run_id).error
    assert h.output(run_id) == EXPECTED
    assert_once(h)


def test_api_boundaries_are_named() -> None:
    assert API_BOUNDARIES == ("api_start", "api_event", "api_cancel", "api_redrive")


# -- start -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_start_that_died_before_its_handoff_is_finished_by_the_sweeper(kind: str) -> None:
    with harness(kind) as h:
        h.crash_at("api_start", node="plan")
        with pytest.raises(InjectedCrash):
            h.start("sweepy", 6)  # no idempotency key: the client cannot find this run again
        (run_id,) = h.runs()
        assert drive_nothing(h, run_id) == "RUNNING"  # nothing would ever move it
        assert h.sweep() == 0  # too early: a healthy start is never touched
        assert sweep_later(h) == 1
        assert drive(h, run_id) == "WAITING"
        finish(h, run_id)
        assert [c.kind for c in h.engine.store.list_crash_events(run_id)].count("swept") == 1


def drive_nothing(h: Any, run_id: str) -> str:
    if not isinstance(h, SfnHarness):
        before = len(h.invocations)
        h.run()
        assert len(h.invocations) == before  # nothing was delivered
    return str(h.status(run_id))


# -- events ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hit", [0, 1], ids=["event-stored", "wait-completed"])
def test_event_delivery_that_died_is_finished_by_the_sweeper(kind: str, hit: int) -> None:
    with harness(kind) as h:
        run_id = to_waiting(h)
        h.crash_at("api_event", node="approval", skip=hit)
        with pytest.raises(InjectedCrash):
            h.send_event(run_id, "approval", {"by": "qa"})
        assert h.status(run_id) == ("WAITING" if hit == 0 else "RUNNING")
        assert sweep_later(h) >= 1
        assert drive(h, run_id) == "SUCCEEDED", h.engine.get_run(run_id).error
        finish(h, run_id)
        assert h.sweep() == 0  # a finished run is not in the active index any more


# -- cancel ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hit", [0, 1], ids=["run-cancelled", "nodes-cancelled"])
def test_cancel_that_died_is_finished_by_the_sweeper(kind: str, hit: int) -> None:
    with harness(kind) as h:
        run_id = to_waiting(h)
        h.crash_at("api_cancel", skip=hit)
        with pytest.raises(InjectedCrash):
            h.engine.cancel(run_id)
        assert h.status(run_id) == "CANCELLED"
        assert h.engine.store.list_active_runs().runs, "a half-done cancel stays listed for the sweeper"
        assert sweep_later(h) == 1
        nodes = {r.key: r.status for r in h.engine.store.list_nodes(run_id)}
        assert nodes["approval"] is NodeStatus.CANCELLED and nodes["publish"] is NodeStatus.CANCELLED
        assert not h.engine.store.list_active_runs().runs
        if isinstance(h, SfnHarness):
            assert h.run(run_id) == "CANCELLED" and h.execution_status(run_id) == "ABORTED"  # execution stopped
        assert h.sweep() == 0
        assert_once(h)


# -- redrive ---------------------------------------------------------------------------------------
def failed_run(h: Any) -> str:
    run_id = to_waiting(h)
    BOX["broken"] = True
    h.send_event(run_id, "approval", {"by": "qa"})
    assert drive(h, run_id) == "FAILED"
    BOX["broken"] = False
    return run_id


@pytest.mark.parametrize("kind", KINDS)
def test_redrive_that_died_before_its_handoff_is_finished_by_the_sweeper(kind: str) -> None:
    with harness(kind) as h:
        run_id = failed_run(h)
        h.crash_at("api_redrive", skip=1)  # the run RUNNING and its failed node PENDING
        with pytest.raises(InjectedCrash):
            h.engine.redrive(run_id)
        assert h.status(run_id) == "RUNNING"
        assert sweep_later(h) == 1
        assert drive(h, run_id) == "SUCCEEDED", h.engine.get_run(run_id).error
        assert h.output(run_id) == EXPECTED
        assert h.executions["publish"] == 1 and all(n == 1 for k, n in h.executions.items() if k != "publish")


@pytest.mark.parametrize("kind", ["memory", "sqs", "sfn"])
def test_redrive_that_died_at_its_commit_point_fails_again_and_can_be_retried(kind: str) -> None:
    with harness(kind) as h:
        run_id = failed_run(h)
        h.crash_at("api_redrive")  # the run RUNNING, its failed node still FAILED
        with pytest.raises(InjectedCrash):
            h.engine.redrive(run_id)
        assert sweep_later(h) == 1
        run = h.engine.get_run(run_id)
        assert run.status.value == "FAILED" and run.error["message"] == "publisher down"  # recorded, redrivable
        h.engine.redrive(run_id)
        assert drive(h, run_id) == "SUCCEEDED"
        assert h.output(run_id) == EXPECTED


# -- lost worker handoffs (in-process: the queued message is dropped) ---------------------------------
def lose_messages(h: Harness) -> None:
    while h.handoff.pop() is not None:
        pass


@pytest.mark.parametrize(
    ("boundary", "node"),
    [("before_handoff", "work"), ("after_checkpoint", "work"), ("after_checkpoint", "plan"), ("after_claim", "plan")],
)
def test_a_worker_handoff_that_is_lost_is_reissued(boundary: str, node: str) -> None:
    with harness("memory") as h:
        h.crash_at(boundary, node=node)
        run_id = h.start("sweepy", 6)
        h.run(max_activations=2 if node == "plan" else 4)
        lose_messages(h)  # the queue lost the dead worker's message too (e.g. it went to the DLQ)
        before = len(h.invocations)
        assert h.run() == "RUNNING" and len(h.invocations) == before
        if boundary == "after_claim":
            h.advance(WF.node(node).timeout_s + 2)  # the dead worker's lease runs out
            assert h.sweep() == 0  # ... but not by the grace period yet
        assert sweep_later(h) >= 1
        assert drive(h, run_id) == "WAITING"
        finish(h, run_id)


def test_an_overdue_event_deadline_fails_the_run_even_if_its_message_is_lost() -> None:
    with harness("memory") as h:
        run_id = to_waiting(h)
        lose_messages(h)
        h.advance(86_400)
        assert h.sweep() == 0  # the deadline passed, but not by the grace period yet
        assert sweep_later(h) == 1
        h.run()
        run = h.engine.get_run(run_id)
        assert run.status.value == "FAILED" and run.error["type"] == "EventTimeout"


def test_a_node_reissued_without_progress_fails_the_run_with_the_reason() -> None:
    with harness("memory") as h:
        h.crash_at("api_start", node="plan")
        with pytest.raises(InjectedCrash):
            h.start("sweepy", 6)
        (run_id,) = h.runs()
        policy = SweepPolicy(max_reissues=2)
        for _ in range(2):
            h.advance(GRACE_S + 1)
            assert h.sweep(policy) == 1
            lose_messages(h)  # the re-issued activations never arrive
        h.advance(GRACE_S + 1)
        assert h.sweep(policy) == 1
        run = h.engine.get_run(run_id)
        assert run.status.value == "FAILED" and run.error["type"] == "SweeperGaveUp"


# -- a healthy run is never touched ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["memory", "moto"])
def test_sweeping_a_healthy_run_at_every_step_changes_nothing(kind: str) -> None:
    with harness(kind) as h:
        run_id = h.start("sweepy", 6)
        while True:  # one activation at a time, a sweep after each
            before = len(h.invocations)
            h.run(max_activations=1)
            if len(h.invocations) == before:
                break
            assert h.sweep() == 0
        assert h.status(run_id) == "WAITING"
        h.advance(3600)  # a long wait for a human is healthy too
        assert h.sweep() == 0
        finish(h, run_id)
        assert not h.engine.store.list_crash_events(run_id)


def test_sweep_reads_only_the_active_index_and_young_runs_nodes_not() -> None:
    calls: list[str] = []
    with harness("memory") as h:
        done = h.start("sweepy", 2)
        h.run()
        h.send_event(done, "approval", {"by": "qa"})
        h.run()
        waiting = to_waiting(h)
        store: Any = h.engine.store
        wrap: Callable[..., Any] = store.list_nodes
        store.list_nodes = lambda run_id, prefix="": calls.append(run_id) or wrap(run_id, prefix)
        assert h.sweep() == 0
        assert calls == []  # both runs are younger than the grace period: no node is read
        h.advance(GRACE_S + 1)
        assert h.sweep() == 0
        assert calls == [waiting]  # the finished run is not even listed


def test_a_step_functions_execution_that_ended_under_an_active_run_is_replaced() -> None:
    with harness("sfn") as h:
        run_id = to_waiting(h)
        h.sfn.stop_execution(executionArn=h.execution_arn(run_id), cause="stopped by hand")
        for token in h._wait_tokens(run_id):  # moto leaves the callback wait running (see SfnHarness.cancel)
            h.sfn_handoff.send_task_success(token, {"status": "DROPPED"})
        for _ in range(2000):  # the callback's thread ends the execution
            if h.execution_status(run_id) != "RUNNING":
                break
            time.sleep(0.005)
        assert h.execution_status(run_id) == "ABORTED" and h.status(run_id) == "WAITING"
        assert h.send_event(run_id, "approval", {"by": "qa"}) == "delivered"  # its callback goes nowhere
        assert sweep_later(h) >= 1
        assert h.engine.get_run(run_id).redrives == 1  # a new execution, <run>-r1, resumed at the wait
        assert h.run(run_id) == "SUCCEEDED", h.engine.get_run(run_id).error
        assert h.output(run_id) == EXPECTED
        assert_once(h)


def make_slow_workflow(box: dict[str, Any]) -> Workflow:
    wf = Workflow("sweepy-slow")

    @wf.step(retry=RetryPolicy(max_attempts=3, backoff_s=30.0))
    def flaky(ctx: StepContext, n: int) -> list[int]:
        box["flaky"] = box.get("flaky", 0) + 1
        if box["flaky"] == 1:
            raise RuntimeError("transient")  # RETRYING, wakes 30 s later
        return list(range(n))

    wf.sleep(3600)

    @wf.step(timeout_s=5)
    def slow(ctx: StepContext, xs: list[int]) -> int:
        def one(x: int) -> int:
            box["h"].clock.advance(3000)  # 3 s per item in a 5 s budget: CONTINUING after each
            return x * x

        return sum(ctx.each(xs, one))

    return wf


@pytest.mark.parametrize("kind", ["memory", "moto"])
def test_a_run_whose_every_handoff_is_lost_completes_on_the_sweeper_alone(kind: str) -> None:
    """Every message a worker or the API sends is dropped (only the hop a sweep re-issues gets
    through): RETRYING, SLEEPING, CONTINUING, map lanes, the join, the wait and the end of the run
    are each moved on by a sweep."""
    box: dict[str, Any] = {}
    slow_wf = make_slow_workflow(box)
    with Harness(WF, slow_wf, backend=kind) as h:
        box["h"] = h
        runs = [h.start("sweepy", 6), h.start("sweepy-slow", 4)]
        sweeps, swept = 0, False
        for _ in range(300):
            if all(h.engine.get_run(r).status.finished for r in runs):
                break
            batch = []
            while (head := h.handoff.pop()) is not None:
                batch.append(head)
            for due, msg in batch:
                h.clock.set_to(due)
                h.deliver(msg)
                if not swept:  # what a worker or the API hands on is lost; the sweeper's re-issues are not
                    lose_messages(h)
            if h.status(runs[0]) == "WAITING":
                h.send_event(runs[0], "approval", {"by": "qa"})
                lose_messages(h)
            swept = False
            if not batch:
                h.advance(GRACE_S + 1)
                sweeps += h.sweep()
                swept = True
        assert [h.status(r) for r in runs] == ["SUCCEEDED", "SUCCEEDED"], [h.engine.get_run(r).error for r in runs]
        assert h.output(runs[0]) == EXPECTED and h.output(runs[1]) == 0 + 1 + 4 + 9
        assert all(n == 1 for n in h.executions.values()), h.executions
        assert box["flaky"] == 2 and sum(h.probe.items.values()) == 4  # no item ran twice
        assert sweeps >= 8
        swept_nodes = {c.node for c in h.engine.store.list_crash_events(runs[1]) if c.kind == "swept"}
        assert {"flaky", "slow"} <= swept_nodes and any(k.startswith("sleep") for k in swept_nodes), swept_nodes
        node_states = {r.key: r.status for r in h.engine.store.list_nodes(runs[1])}
        assert set(node_states.values()) == {NodeStatus.SUCCEEDED}


def test_a_redrive_that_died_right_after_resetting_its_failed_node_is_finished() -> None:
    """Redrive writes the run first: dying after the node reset leaves an active run the sweeper
    moves on. (Written the other way round, it left a FAILED run without a FAILED node: neither
    redrivable nor swept.)"""
    with harness("memory") as h:
        run_id = failed_run(h)
        store: Any = h.engine.store
        real = store.finish

        def finish_then_die(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            if args[2].status is NodeStatus.PENDING:
                raise InjectedCrash("the API died right after resetting the node")
            return result

        store.finish = finish_then_die
        with pytest.raises(InjectedCrash):
            h.engine.redrive(run_id)
        store.finish = real
        assert sweep_later(h) == 1
        assert drive(h, run_id) == "SUCCEEDED", h.engine.get_run(run_id).error
        assert h.output(run_id) == EXPECTED


def test_an_event_delivery_that_died_before_the_run_left_waiting_is_finished() -> None:
    with harness("memory") as h:
        run_id = to_waiting(h)
        store: Any = h.engine.store
        real = store.update_run

        def die_leaving_waiting(*args: Any, **kwargs: Any) -> Any:
            if args[1].status is not None and args[1].status.value == "RUNNING":
                raise InjectedCrash("the API died after completing the wait, before the run left WAITING")
            return real(*args, **kwargs)

        store.update_run = die_leaving_waiting
        with pytest.raises(InjectedCrash):
            h.send_event(run_id, "approval", {"by": "qa"})
        store.update_run = real
        assert h.engine.store.get_node(run_id, "approval").status is NodeStatus.SUCCEEDED
        assert sweep_later(h) >= 1
        assert h.status(run_id) == "RUNNING"  # not left WAITING while its successor runs
        finish(h, run_id)
