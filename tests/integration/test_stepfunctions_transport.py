"""Acceptance of the Step Functions transport: generated ASL executed by moto's Step Functions,
tasks served in-process by the real worker (``handle_sfn_task``), virtual time.

Workflows stay small: moto's interpreter costs ~2 s for a run of a dozen tasks.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

from stepchain import RetryPolicy, TerminalError, ValidationError, Workflow
from stepchain.deploy.asl import ROUTE_FIELDS
from stepchain.runtimes.aws.sfn_worker import STATE_FIELDS, handle_sfn_task, parse_event
from stepchain.testing import WORKER_BOUNDARIES, Harness
from stepchain.testing.sfn_driver import SfnHarness, seams

STATE_LIMIT = 2048


def demo_workflow(box: dict[str, Any]) -> Workflow:
    """Step, ctx.each with continuation, map (max_concurrency) with once, event, sleep, step."""
    wf = Workflow("sfn-demo")

    @wf.step()
    def plan(ctx: Any, q: Any) -> Any:
        return {"urls": [f"u{i}" for i in range(5)]}

    @wf.step(timeout_s=5)
    def fetch(ctx: Any, p: Any) -> Any:
        def one(u: str) -> dict[str, Any]:
            box["h"].clock.advance(1500)  # 5 s budget: two items per invocation, then CONTINUE
            return {"url": u}

        return ctx.each(p["urls"], one)

    @wf.map(max_concurrency=2)
    def summarize(ctx: Any, page: Any) -> Any:
        return ctx.once("llm", lambda: {"sum": page["url"].upper()})

    wf.wait_for_event("approval", timeout_s=3600)
    wf.sleep(3600)

    @wf.step()
    def draft(ctx: Any, approved: Any) -> Any:
        return {"approved": approved, "sums": [s["sum"] for s in ctx.output_of("summarize")]}

    return wf


def assert_small_states(h: SfnHarness, run_id: str) -> None:
    assert h.state_sizes and max(h.state_sizes) < STATE_LIMIT
    assert 0 < h.max_state_bytes(run_id) < STATE_LIMIT


def test_moto_seams_exist() -> None:
    """Canary: the moto internals the driver patches are still there (moto is pinned to 5.2.5)."""
    found = seams()
    missing = [name for name, obj in found.items() if obj is None]
    assert not missing, f"moto changed; the Step Functions driver needs {missing}"


def test_happy_path_runs_every_node_once() -> None:
    box: dict[str, Any] = {}
    with SfnHarness(demo_workflow(box)) as h:
        box["h"] = h
        run_id = h.start("sfn-demo", {"q": 1})
        assert h.run(run_id) == "WAITING"
        assert h.execution_status(run_id) == "RUNNING"
        assert h.send_event(run_id, "approval", {"ok": True}) == "delivered"
        assert h.run(run_id) == "SUCCEEDED"
        assert h.status(run_id) == "SUCCEEDED"
        assert h.output(run_id) == {"approved": {"ok": True}, "sums": ["U0", "U1", "U2", "U3", "U4"]}
        assert set(h.executions) == {"plan", "fetch", *(f"summarize#{i:05d}" for i in range(5)), "draft"}
        assert all(c == 1 for c in h.executions.values())
        outcomes = [i.outcome for i in h.invocations if i.key == "fetch"]
        assert outcomes == ["CONTINUE", "CONTINUE", "DONE"]  # ctx.each continued in fresh invocations
        assert [i.outcome for i in h.invocations if i.key == "sleep_4"] == ["WAIT", "DONE"]
        assert h.clock.now_ms() - h.engine.get_run(run_id).created_ms >= 3600_000  # the sleep passed
        assert_small_states(h, run_id)


@pytest.mark.parametrize("boundary", WORKER_BOUNDARIES)
def test_crash_at_every_boundary_with_duplicate_delivery(boundary: str) -> None:
    box: dict[str, Any] = {}
    with SfnHarness(demo_workflow(box), duplicate_delivery=True) as h:
        box["h"] = h
        h.crash_at(boundary, node="fetch")
        h.crash_at(boundary, node="summarize", times=2)
        run_id = h.start("sfn-demo", {"q": 1})
        assert h.run(run_id) == "WAITING"
        h.send_event(run_id, "approval", {"ok": True})
        assert h.run(run_id) == "SUCCEEDED", h.engine.get_run(run_id).error
        assert h.status(run_id) == "SUCCEEDED"
        crashed_at = "summarize" if boundary == "effect_window" else "fetch"  # fetch calls no ctx.once
        assert any(key.startswith(crashed_at) for _, key in h.probe.crashes), h.probe.crashes
        assert any(i.outcome == "crashed" for i in h.invocations)
        assert all(c == 1 for c in h.executions.values()), h.executions
        assert len(h.executions) == 8
        # a crash in an effect's (an item's) window runs that one again: at-least-once there, by design
        for counter, window in ((h.effects, "effect_window"), (h.probe.items, "item_window")):
            extra = len(h.probe.crashes) if boundary == window else 0
            assert len(counter) == 5 and sum(counter.values()) == 5 + extra, counter
        assert h.output(run_id)["sums"] == ["U0", "U1", "U2", "U3", "U4"]
        assert_small_states(h, run_id)


def test_lambda_timeout_is_taken_over_after_the_lease() -> None:
    """A Lambda timeout is retried at once: the node is BUSY (lease) until the dead invocation's
    lease is over, the execution waits in a Wait state, then the retry takes the node over."""
    box: dict[str, Any] = {"slow": 1}
    wf = Workflow("sfn-timeout")

    @wf.step(timeout_s=10)
    def slow(ctx: Any, x: Any) -> Any:
        if box["slow"]:
            box["slow"] -= 1
            box["h"].clock.advance(11_000)  # past the 10 s budget: Lambda kills it
        return x + 1

    with SfnHarness(wf) as h:
        box["h"] = h
        run_id = h.start("sfn-timeout", 1)
        assert h.run(run_id) == "SUCCEEDED"
        assert h.output(run_id) == 2
        assert [i.outcome for i in h.invocations] == ["timed_out", "BUSY", "DONE"]
        assert h.executions["slow"] == 1
        assert h.view(run_id).totals["crashes"] >= 1


def test_ten_megabyte_output_stays_out_of_the_state_machine() -> None:
    wf = Workflow("sfn-big")

    @wf.step()
    def big(ctx: Any, x: Any) -> Any:
        return "x" * (10 * 1024 * 1024)

    @wf.step()
    def measure(ctx: Any, text: Any) -> Any:
        return len(text)

    with SfnHarness(wf) as h:
        run_id = h.start("sfn-big", None)
        assert h.run(run_id) == "SUCCEEDED"
        assert h.output(run_id) == 10 * 1024 * 1024
        assert_small_states(h, run_id)


def test_event_timeout_fails_the_run() -> None:
    wf = Workflow("sfn-wait")

    @wf.step()
    def ask(ctx: Any, x: Any) -> Any:
        return x

    wf.wait_for_event("approval", timeout_s=60)

    @wf.step()
    def after(ctx: Any, x: Any) -> Any:
        return x

    with SfnHarness(wf) as h:
        run_id = h.start("sfn-wait", 1)
        assert h.run(run_id) == "WAITING"
        h.advance(30)  # not due yet
        assert h.run(run_id) == "WAITING"
        h.advance(31)
        assert h.run(run_id) == "FAILED"
        run = h.engine.get_run(run_id)
        assert run.status.value == "FAILED"
        assert run.error is not None and run.error["type"] == "EventTimeout"
        assert "after" not in h.executions


def test_cancel_stops_the_execution() -> None:
    wf = Workflow("sfn-cancel")

    @wf.step()
    def first(ctx: Any, x: Any) -> Any:
        return x

    wf.wait_for_event("go", timeout_s=3600)

    @wf.step()
    def second(ctx: Any, x: Any) -> Any:
        return x

    with SfnHarness(wf) as h:
        run_id = h.start("sfn-cancel", 1)
        assert h.run(run_id) == "WAITING"
        h.cancel(run_id)
        assert h.run(run_id) == "CANCELLED"
        assert h.execution_status(run_id) == "ABORTED"
        assert "second" not in h.executions


def test_redrive_after_a_terminal_failure_skips_completed_steps() -> None:
    box = {"fail": True}
    wf = Workflow("sfn-redrive")

    @wf.step()
    def prepare(ctx: Any, x: Any) -> Any:
        return x * 2

    @wf.step()
    def risky(ctx: Any, x: Any) -> Any:
        if box["fail"]:
            raise TerminalError("bad input")
        return x + 1

    @wf.step()
    def finish(ctx: Any, x: Any) -> Any:
        return {"result": x}

    with SfnHarness(wf) as h:
        run_id = h.start("sfn-redrive", 5)
        assert h.run(run_id) == "FAILED"
        assert h.status(run_id) == "FAILED"
        box["fail"] = False
        h.redrive(run_id)
        assert h.sfn_handoff.started == [run_id, f"{run_id}-r1"]
        assert h.run(run_id) == "SUCCEEDED"
        assert h.output(run_id) == {"result": 11}
        assert h.executions == {"prepare": 1, "risky": 1, "finish": 1}
        redriven = [e for e in h.history(run_id) if e["type"] == "TaskScheduled"]
        assert "prepare" not in str(redriven)  # the redrive started at the failed node


def test_state_machine_giving_up_marks_the_run_failed_and_redrive_recovers() -> None:
    """Invocations that fail outside the engine exhaust the task's Retry; the Catch path marks
    the node and the run FAILED (ControlFunction, action "fail"), so the run can be redriven."""
    wf = Workflow("sfn-giveup")

    @wf.step()
    def one(ctx: Any, x: Any) -> Any:
        return x

    @wf.step(retry=RetryPolicy(max_attempts=2))
    def two(ctx: Any, x: Any) -> Any:
        return x + 1

    with SfnHarness(wf) as h:
        store = h.engine.store
        real_claim = store.claim

        def broken_claim(run_id: str, key: str, **kw: Any) -> Any:
            if key == "two":
                raise RuntimeError("store unavailable")
            return real_claim(run_id, key, **kw)

        run_id = h.start("sfn-giveup", 1)
        with mock.patch.object(store, "claim", side_effect=broken_claim):
            assert h.run(run_id) == "FAILED"
        tries = [i.outcome for i in h.invocations if i.key == "two" and i.action == "run"]
        assert tries == ["error"] * 3  # the first invocation + MaxAttempts (2) retries
        assert [i.outcome for i in h.invocations if i.action == "fail"] == ["FAILED"]
        run = h.engine.get_run(run_id)
        assert run.status.value == "FAILED" and run.error is not None
        assert run.error["type"] == "RuntimeError"
        node = store.get_node(run_id, "two")
        assert node is not None and node.status.value == "FAILED"
        h.redrive(run_id)
        assert h.run(run_id) == "SUCCEEDED"
        assert h.output(run_id) == 2
        assert h.executions == {"one": 1, "two": 1}


def test_event_sent_before_the_wait_is_buffered_and_completes_it() -> None:
    wf = Workflow("sfn-early")

    @wf.step()
    def first(ctx: Any, x: Any) -> Any:
        return x

    wf.wait_for_event("go", timeout_s=3600)

    @wf.step()
    def second(ctx: Any, x: Any) -> Any:
        return {"got": x}

    with SfnHarness(wf) as h:
        run_id = h.start("sfn-early", 1)
        assert h.send_event(run_id, "go", "early") == "buffered"
        assert h.run(run_id) == "SUCCEEDED"
        assert h.output(run_id) == {"got": "early"}


def test_worker_rejects_a_malformed_payload_and_returns_only_reference_fields() -> None:
    with pytest.raises(ValidationError, match="missing run_id"):
        parse_event({"workflow": "w", "version": "v", "node": "n"})
    with pytest.raises(ValidationError, match="JSON object"):
        parse_event(["not", "a", "dict"])
    wf = Workflow("sfn-shape")

    @wf.step()
    def only(ctx: Any, x: Any) -> Any:
        return {"secret": "x" * 5000}

    with SfnHarness(wf) as h:
        run_id = h.start("sfn-shape", 1)
        assert h.run(run_id) == "SUCCEEDED"
        run = h.engine.get_run(run_id)
        event = {"run_id": run_id, "workflow": run.workflow, "version": run.version, "node": "only"}
        from stepchain.testing import VirtualLambdaContext

        state = handle_sfn_task(h.engine, event, VirtualLambdaContext(h.clock, 10_000, "direct"))
        assert tuple(state) == STATE_FIELDS + ROUTE_FIELDS  # + the successor's iteration, src, input, route
        assert state["status"] == "DONE" and "secret" not in str(state)


def states_entered(h: SfnHarness, run_id: str) -> list[str]:
    """The names of the states the run's executions entered, in order (each one = one state transition)."""
    run = h.engine.get_run(run_id)
    names = []
    for n in range(run.redrives + 1):
        for event in h.history(run_id, n):
            if event["type"].endswith("StateEntered"):
                names.append(event["stateEnteredEventDetails"]["name"])
    return names


def test_a_step_is_one_state_transition_and_other_outcomes_leave_through_catch() -> None:
    """Issue 10.2: DONE goes Task -> next Task (it used to pass a Choice after every Task: 2 per step).
    A retry (WAIT) and a continuation (CONTINUE) leave the Task as ``stepchain.<Status>`` errors."""
    wf = Workflow("sfn-chain")
    calls: list[int] = []
    for i in range(5):
        wf.step(name=f"s{i}")(lambda ctx, x: x + 1)

    @wf.step(retry=RetryPolicy(max_attempts=3, backoff_s=2))
    def flaky(ctx: Any, x: Any) -> Any:
        calls.append(x)
        if len(calls) == 1:
            raise RuntimeError("once")
        return x

    with SfnHarness(wf) as h:
        run_id = h.start("sfn-chain", 0)
        assert h.run(run_id) == "SUCCEEDED" and h.output(run_id) == 5
        names = states_entered(h, run_id)
    # Route, s0..s4 (one state each), flaky, its retry (flaky.wake, flaky.wait, flaky), Succeeded
    assert names == ["Route", "s0", "s1", "s2", "s3", "s4", "flaky", "flaky.wake", "flaky.wait", "flaky", "Succeeded"]
    assert [i.outcome for i in h.invocations if i.key == "flaky"] == ["WAIT", "DONE"]


def test_worker_raises_the_outcome_as_a_named_error() -> None:
    """What Step Functions' Catch matches: the exception class's name (Lambda's errorType)."""
    from stepchain.runtimes.aws.sfn_worker import SIGNALS, TaskSignal

    assert SIGNALS["CONTINUE"].__name__ == "stepchain.Continue" and issubclass(SIGNALS["WAIT"], TaskSignal)
    wf = Workflow("sfn-signal")

    @wf.step(retry=RetryPolicy(max_attempts=2, backoff_s=5))
    def boom(ctx: Any, x: Any) -> Any:
        raise RuntimeError("no")

    h2 = Harness(wf, backend="memory")  # the task is served directly, as Lambda would
    rid = h2.start("sfn-signal", 1)
    run = h2.engine.get_run(rid)
    event = {"run_id": rid, "workflow": run.workflow, "version": run.version, "node": "boom"}
    from stepchain.testing import VirtualLambdaContext

    with pytest.raises(TaskSignal) as raised:
        handle_sfn_task(h2.engine, event, VirtualLambdaContext(h2.clock, 10_000, "direct"))
    assert type(raised.value).__name__ == "stepchain.Wait" and raised.value.status == "WAIT"
    assert str(raised.value) == raised.value.state["wake_at"] and str(raised.value).endswith("Z")
