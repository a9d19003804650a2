"""The SQS heartbeat (issue 10.1): a killed worker's node resumes within V seconds, whatever the
function timeout. Real queues (moto), the real SQS worker, virtual time (no sleeps): the harness
notes where ChangeMessageVisibility(Batch) put each message (``SqsHarness.visibility``) and makes
a message that was not deleted visible there, as SQS would.

V = 20 s, H = 5 s, a 900 s function timeout: without the heartbeat a dead worker's message comes
back only after the queue's visibility timeout (>= 902 s here).
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import pytest

from stepchain import Workflow
from stepchain.engine.heartbeat import HeartbeatPolicy, queue_url_for_arn
from stepchain.exceptions import ValidationError
from stepchain.store.records import NodeStatus
from stepchain.testing import WORKER_BOUNDARIES
from stepchain.testing.sqs_driver import SqsHarness

POLICY = HeartbeatPolicy(visibility_s=20, interval_s=5)
Ref = dict[str, Any]


def long_step_workflow(ref: Ref, *, items: int = 10, item_ms: int = 3000) -> Workflow:
    """``slow``: a 900 s step whose ctx.each items take ``item_ms`` each (virtual time)."""
    wf = Workflow("hb")

    @wf.step(timeout_s=900)
    def slow(ctx: Any, x: Any) -> Any:
        def one(i: int) -> int:
            ref["h"].clock.advance(item_ms)
            return i

        return ctx.each(list(range(items)), one)

    @wf.step()
    def after(ctx: Any, xs: Any) -> Any:
        return sum(xs)

    return wf


def claims(h: SqsHarness, key: str) -> list[int]:
    return [t for t, what, k in h.timeline if what == "after_claim" and k == key]


def test_a_killed_workers_message_and_node_come_back_after_v_not_after_the_queue_timeout() -> None:
    ref: Ref = {}
    with SqsHarness(long_step_workflow(ref), heartbeat=POLICY) as h:
        ref["h"] = h
        h.crash_at("mid_item", node="slow", skip=5)  # killed before item 5 (15 s into the step)
        run_id = h.start("hb", {})
        h.run()
        assert h.status(run_id) == "SUCCEEDED" and h.output(run_id) == sum(range(10))
        first, second = claims(h, "slow")
        killed_at = first + 5 * 3000
        # the last heartbeat before the kill was at first + 15 s (beats at 5, 10, 15 s): the message
        # came back at that beat + V, and the node's lease had ended `margin` before, so the
        # redelivery took it over (not BUSY, not dropped)
        assert second - killed_at <= POLICY.visibility_s * 1000
        assert second == first + 15_000 + POLICY.visibility_s * 1000
        node = h.store.get_node(run_id, "slow")
        assert node is not None and node.crashes == 1 and node.status is NodeStatus.SUCCEEDED
        assert h.executions["slow"] == 1  # items 0-4 were checkpointed: the resume ran only 5-9


def test_without_the_heartbeat_the_same_kill_waits_out_the_function_timeout() -> None:
    ref: Ref = {}
    with SqsHarness(long_step_workflow(ref)) as h:  # the behaviour before: no per-message visibility
        ref["h"] = h
        h.crash_at("mid_item", node="slow", skip=5)
        run_id = h.start("hb", {})
        h.run()
        assert h.status(run_id) == "SUCCEEDED"
        first, second = claims(h, "slow")
        assert second - first >= 900_000


def test_a_heartbeat_keeps_a_long_steps_message_invisible_and_its_lease_alive() -> None:
    ref: Ref = {}
    leases: list[tuple[int, int]] = []
    with SqsHarness(long_step_workflow(ref, items=20, item_ms=5000), heartbeat=POLICY) as h:
        ref["h"] = h

        run_id = h.start("hb", {})
        orig_advance = h.clock.advance

        def advance(ms: float) -> None:  # note the lease after each item (100 s of step time in all)
            orig_advance(ms)
            rec = h.store.get_node(run_id, "slow")
            if rec is not None and rec.status is NodeStatus.RUNNING:
                leases.append((h.clock.now_ms(), rec.lease_until_ms))

        h.clock.advance = advance  # type: ignore[method-assign]
        h.run()
        assert h.status(run_id) == "SUCCEEDED"
        assert len(claims(h, "slow")) == 1  # 100 s > V: never redelivered, never taken over
        assert [b.result for b in h.batches].count("ok") == len(h.batches)
        # the lease always ran ahead of the clock, by at most V - margin (not the 900 s timeout)
        assert leases and all(0 < until - now <= POLICY.lease_ms for now, until in leases)
        slow_receipt = h.visibility.changes[0][1]
        beats = [t for t, receipt, v in h.visibility.changes if receipt == slow_receipt]
        # one change when the batch arrived, one per 5 s beat of the 100 s step, all to V
        assert len(beats) == 1 + 100_000 // 5000
        assert {v for _, r, v in h.visibility.changes} == {POLICY.visibility_s}
        assert [b - a for a, b in itertools.pairwise(beats)] == [5000] * 20
        # the next step's batch: one change on arrival, no beat (it takes no time)
        assert h.api_calls["sqs.ChangeMessageVisibilityBatch"] == 21 + 1


def test_a_step_shorter_than_h_makes_no_heartbeat_write() -> None:
    wf = Workflow("short")

    @wf.step(timeout_s=900)
    def quick(ctx: Any, x: Any) -> Any:
        ref["h"].clock.advance(2000)  # 2 s < H = 5 s
        return x

    ref: Ref = {}
    with SqsHarness(wf, heartbeat=POLICY) as h:
        ref["h"] = h
        updates: list[str] = []
        h.store.extend_lease = lambda *a, **k: updates.append("extend") or True  # type: ignore[method-assign]
        run_id = h.start("short", {"a": 1})
        h.run()
        assert h.status(run_id) == "SUCCEEDED"
        assert updates == []
        # the only visibility change is the one made when the batch arrived
        assert h.api_calls["sqs.ChangeMessageVisibilityBatch"] == 1


def test_a_lost_lease_fences_the_step_it_cannot_checkpoint_after_a_takeover() -> None:
    """The heartbeat that finds another owner stops extending; the old worker's commit fails on
    the owner condition, so it never overwrites the new owner's node."""
    ref: Ref = {}
    wf = Workflow("fence")

    @wf.step(timeout_s=900)
    def slow(ctx: Any, x: Any) -> Any:
        h: SqsHarness = ref["h"]
        if "stolen" not in ref:  # a worker that was paused past its lease: another took the node over
            rec = h.store.get_node(ctx.run_id, "slow")
            assert rec is not None
            h.clock.advance(6000)  # one heartbeat, still ours
            rec = h.store.get_node(ctx.run_id, "slow")
            assert rec is not None
            now = rec.lease_until_ms + 1
            took = h.store.takeover(ctx.run_id, "slow", stale=rec, owner="thief", now_ms=now, lease_until_ms=now + 1)
            ref["stolen"] = took.record
            h.clock.advance(10_000)  # two more beats: both find the lease lost
            return "old owner's output"
        return "new owner's output"

    extends: list[tuple[str, bool]] = []
    with SqsHarness(wf, heartbeat=POLICY) as h:
        ref["h"] = h
        real_extend = h.store.extend_lease

        def extend(run_id: str, key: str, *, owner: str, lease_until_ms: int) -> bool:
            ok = real_extend(run_id, key, owner=owner, lease_until_ms=lease_until_ms)
            extends.append((owner, ok))
            return ok

        h.store.extend_lease = extend  # type: ignore[method-assign]
        run_id = h.start("fence", {})
        h.run(max_activations=1)
        rec = h.store.get_node(run_id, "slow")
        assert rec is not None and rec.owner == "thief" and rec.status is NodeStatus.RUNNING
        assert rec.output_ref is None  # the fenced worker could not checkpoint
        assert h.invocations[0].outcome == "DROPPED"  # its commit found "lease lost"
        assert [ok for _, ok in extends] == [True, False]  # the first beat after the theft stopped it
        assert "thief" not in {o for o, _ in extends}


def test_policy_validation_and_env() -> None:
    assert HeartbeatPolicy.from_env({}) is None
    assert HeartbeatPolicy.from_env({"STEPCHAIN_SQS_VISIBILITY_S": "0"}) is None
    p = HeartbeatPolicy.from_env({"STEPCHAIN_SQS_VISIBILITY_S": "20", "STEPCHAIN_HEARTBEAT_S": "5"})
    assert p == POLICY and (p.margin_ms, p.lease_ms, p.writes_per_minute()) == (1000, 19_000, 24.0)
    assert HeartbeatPolicy.from_env({"STEPCHAIN_SQS_VISIBILITY_S": "1"}) == HeartbeatPolicy(1, 0.25)
    with pytest.raises(ValidationError):
        HeartbeatPolicy(20, 19.5)  # a beat must come before the lease (V - margin) ends
    with pytest.raises(ValidationError):
        HeartbeatPolicy(0, 1)
    known = ["http://127.0.0.1:4566/queue/us-east-1/000000000000/steps", "https://x/123/other"]
    assert queue_url_for_arn("arn:aws:sqs:us-east-1:000000000000:steps", known) == known[0]
    assert queue_url_for_arn("arn:aws:sqs:eu-west-1:123:q", known) == "https://sqs.eu-west-1.amazonaws.com/123/q"


def test_with_a_short_v_a_redelivery_after_a_lost_handoff_still_reissues_the_successor() -> None:
    """V = 1 s (the embedded runtime's): the dead worker's message comes back < 2 s (LEASE_GRACE_MS)
    after its checkpoint, which the time alone would take for an immediate duplicate and drop; its
    ApproximateReceiveCount (2) says it is a redelivery, so the lost handoff is re-issued."""
    ref: Ref = {}
    with SqsHarness(long_step_workflow(ref, items=2, item_ms=100), heartbeat=HeartbeatPolicy(1, 0.25)) as h:
        ref["h"] = h
        h.crash_at("after_checkpoint", node="slow")
        run_id = h.start("hb", {})
        assert h.run() == "SUCCEEDED"
        assert h.output(run_id) == 1
        ended = next(t for t, what, k in h.timeline if what == "after_checkpoint" and k == "slow")
        after = claims(h, "after")[0]
        assert after - ended <= 1000  # the successor started within V of the lost handoff
        assert [e.kind for e in h.store.list_crash_events(run_id)] == ["lost_handoff"]


def test_a_misconfigured_interval_falls_back_to_a_quarter_of_v() -> None:
    env = {"STEPCHAIN_SQS_VISIBILITY_S": "8", "STEPCHAIN_HEARTBEAT_S": "30"}  # H >= V: would never beat in time
    assert HeartbeatPolicy.from_env(env) == HeartbeatPolicy(8, 2)


@pytest.mark.parametrize("policy", [POLICY, None], ids=["heartbeat", "no-heartbeat"])
def test_step_functions_lease_heartbeat_bounds_the_takeover_by_v(policy: HeartbeatPolicy | None) -> None:
    """Step Functions sees a killed invocation at once (the Lambda task fails) and retries it; the
    retry is BUSY until the dead worker's lease ends, then takes over. With the lease heartbeat the
    lease ends V - margin after the last beat; without it, after the whole function timeout + 2 s."""
    from stepchain.runtimes.aws.sfn_worker import TaskSignal, handle_sfn_task
    from stepchain.testing import Harness
    from stepchain.testing.clock import VirtualLambdaContext
    from stepchain.testing.probe import InjectedCrash

    ref: Ref = {}
    with Harness(long_step_workflow(ref), backend="memory") as h:
        ref["h"] = h
        run_id = h.start("hb", {})
        event = {"run_id": run_id, "workflow": "hb", "version": h.registry.get("hb").version, "node": "slow"}
        h.crash_at("mid_item", node="slow", skip=5)
        t0 = h.clock.now_ms()
        with pytest.raises(InjectedCrash):
            handle_sfn_task(h.engine, event, VirtualLambdaContext(h.clock, 900_000, "sfn-1"), heartbeat=policy)
        killed_at = h.clock.now_ms()
        assert killed_at == t0 + 15_000
        h.clock.set_to(killed_at + 1000)  # the task's Retry (IntervalSeconds = 1)
        with pytest.raises(TaskSignal) as busy:  # BUSY leaves the task through its Catch (one transition per step)
            handle_sfn_task(h.engine, event, VirtualLambdaContext(h.clock, 900_000, "sfn-2"), heartbeat=policy)
        retry = busy.value.state
        assert retry["status"] == "BUSY"
        wake = int(datetime.fromisoformat(retry["wake_at"]).timestamp() * 1000)  # the Wait state's, whole s
        lease = h.store.get_node(run_id, "slow")
        assert lease is not None
        if policy is None:
            assert wake - killed_at > 880_000  # the lease ran to the function timeout + 2 s
            return
        assert lease.lease_until_ms == t0 + 15_000 + policy.lease_ms  # the last beat (15 s) + V - margin
        assert wake - killed_at <= policy.visibility_s * 1000
        h.clock.set_to(wake)  # the Wait state ends at wake_at: the task runs again and takes over
        done = handle_sfn_task(h.engine, event, VirtualLambdaContext(h.clock, 900_000, "sfn-3"), heartbeat=policy)
        assert done["status"] == "DONE"
        rec = h.store.get_node(run_id, "slow")
        assert rec is not None and rec.crashes == 1 and rec.status is NodeStatus.SUCCEEDED


def test_in_a_batch_every_unfinished_record_stays_invisible_and_a_kill_returns_them_all_within_v() -> None:
    """Two records in one batch (batch_size 10, as the control function's mapping): while the first
    runs a 30 s step, the beats also keep the second (waiting its turn) invisible; the invocation is
    killed in the first: both come back V after the last beat, and both runs finish."""
    ref: Ref = {}
    with SqsHarness(long_step_workflow(ref, items=10, item_ms=3000), heartbeat=POLICY, batch_size=10) as h:
        ref["h"] = h
        h.crash_at("mid_item", node="slow", skip=5)  # the first record's step, 15 s in
        first_run, second_run = h.start("hb", {}), h.start("hb", {})
        h.run()
        assert h.status(first_run) == "SUCCEEDED" and h.status(second_run) == "SUCCEEDED"
        assert h.batches[0].size == 2 and h.batches[0].result == "crashed"
        receipts = list(dict.fromkeys(r for _, r, _ in h.visibility.changes))[:2]
        for receipt in receipts:  # both records: set at arrival, then at every beat until the kill
            times = [t for t, r, _ in h.visibility.changes if r == receipt]
            assert [b - a for a, b in itertools.pairwise(times)] == [5000] * 3
        start = claims(h, "slow")[0]
        # the kill at 15 s; both messages were back at 15 s + V, in one batch again
        assert sorted(claims(h, "slow"))[1] == start + 15_000 + POLICY.visibility_s * 1000
        assert h.batches[1].size == 2


# -- the transport's acceptance scenario with the heartbeat on: every boundary, every message twice ----
@pytest.mark.parametrize("policy", [POLICY, HeartbeatPolicy(1, 0.25)], ids=["V20", "V1"])
@pytest.mark.parametrize("boundary", WORKER_BOUNDARIES)
def test_crash_at_each_boundary_with_duplicates_and_the_heartbeat_runs_everything_exactly_once(
    boundary: str, policy: HeartbeatPolicy
) -> None:
    """test_sqs_transport's crash matrix (ctx.each continuations, a bounded map with ctx.once, an event
    wait, a sleep), with short per-message visibilities: redeliveries now come within V, duplicates
    meet leases that follow the heartbeat, and still every step runs exactly once."""
    from tests.integration.test_sqs_transport import agent_workflow, assert_exactly_once, run_agent

    ref: dict[str, SqsHarness] = {}
    with SqsHarness(agent_workflow(ref), backend="memory", duplicate_delivery=True, heartbeat=policy) as h:
        ref["h"] = h
        h.crash_at(boundary, node="fetch")
        h.crash_at(boundary, node="summarize", times=2)
        run_id = run_agent(h)
        crashes = {"mid_item": 1, "item_window": 1, "effect_window": 2}.get(boundary, 3)
        assert_exactly_once(h, run_id, urls=6, reruns=crashes, window=boundary)
        assert [b.result for b in h.batches].count("crashed") == crashes
        assert h.visibility.changes  # the heartbeat really ran
