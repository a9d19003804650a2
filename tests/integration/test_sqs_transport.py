"""Acceptance of the SQS transport: real queues (moto), the real SQS worker, virtual time.

Every activation travels through SQS and is served by ``handle_sqs_batch`` under a virtual Lambda
context; ``SqsHarness`` plays the event source mapping (batches as deployed, deletes what succeeded,
redelivers the rest after the emulated visibility timeout, dead-letter queue after the deployed
maxReceiveCount).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import boto3
import pytest

from stepchain import RetryPolicy, Workflow
from stepchain.exceptions import ValidationError
from stepchain.handoff.messages import Activation
from stepchain.handoff.sqs import MAX_DELAY_S, NOT_BEFORE, SqsHandoff, delay_seconds
from stepchain.store.records import NodeStatus
from stepchain.testing import WORKER_BOUNDARIES, moto_aws
from stepchain.testing.harness import BUCKET
from stepchain.testing.sqs_driver import SqsHarness

Ref = dict[str, SqsHarness]


def agent_workflow(ref: Ref, *, urls: int = 6, max_concurrency: int = 3) -> Workflow:
    """The smoke workflow: step, ctx.each with continuations, a bounded map with ctx.once, an event
    wait, a one-hour sleep, a final step."""
    wf = Workflow("demo")

    @wf.step()
    def plan(ctx: Any, q: Any) -> Any:
        return {"urls": [f"u{i}" for i in range(urls)]}

    @wf.step(timeout_s=5)
    def fetch(ctx: Any, p: Any) -> Any:
        def one(u: str) -> dict[str, Any]:
            ref["h"].clock.advance(1500)  # 3 items fit in a 5 s budget: the loop continues elsewhere
            return {"url": u, "len": len(u)}

        return ctx.each(p["urls"], one)

    @wf.map(max_concurrency=max_concurrency)
    def summarize(ctx: Any, page: Any) -> Any:
        h = ref["h"]
        running = [n for n in h.store.list_nodes(ctx.run_id, "summarize#") if n.status is NodeStatus.RUNNING]
        ref.setdefault("running", []).append(len(running))  # type: ignore[arg-type]
        h.clock.advance(200)
        return ctx.once("llm", lambda: {"sum": page["url"].upper()})

    wf.wait_for_event("approval", timeout_s=3600)
    wf.sleep(3600, name="cool_down")

    @wf.step()
    def draft(ctx: Any, approved: Any) -> Any:
        return {"approved": approved, "n": len(ctx.output_of("summarize"))}

    return wf


def run_agent(h: SqsHarness) -> str:
    run_id = h.start("demo", {"q": 1})
    h.run()
    assert h.status(run_id) == "WAITING"
    assert h.send_event(run_id, "approval", {"ok": True}) == "delivered"
    h.run()
    return run_id


def assert_exactly_once(h: SqsHarness, run_id: str, urls: int, *, reruns: int = 0, window: str = "") -> None:
    assert h.status(run_id) == "SUCCEEDED", h.engine.get_run(run_id)
    assert h.output(run_id) == {"approved": {"ok": True}, "n": urls}
    expected = {"plan", "fetch", "draft", *(f"summarize#{i:05d}" for i in range(urls))}
    assert set(h.executions) == expected
    assert all(c == 1 for c in h.executions.values()), h.executions
    # a crash in an effect's (an item's) window runs that one again: at-least-once there, by design
    for counter, boundary in ((h.effects, "effect_window"), (h.probe.items, "item_window")):
        extra = reruns if window == boundary else 0
        assert len(counter) == urls and sum(counter.values()) == urls + extra, counter


# -- (a) a crash at every boundary, with every message delivered twice --------------------------------
@pytest.mark.parametrize("boundary", WORKER_BOUNDARIES)
def test_crash_at_each_boundary_with_duplicates_runs_everything_exactly_once(boundary: str) -> None:
    ref: Ref = {}
    with SqsHarness(agent_workflow(ref), backend="memory", duplicate_delivery=True) as h:
        ref["h"] = h
        h.crash_at(boundary, node="fetch")
        h.crash_at(boundary, node="summarize", times=2)
        run_id = run_agent(h)
        # only fetch runs a ctx.each loop; only summarize calls ctx.once
        crashes = {"mid_item": 1, "item_window": 1, "effect_window": 2}.get(boundary, 3)
        assert_exactly_once(h, run_id, urls=6, reruns=crashes, window=boundary)
        assert len(h.probe.crashes) == crashes, h.probe.crashes
        assert [b.result for b in h.batches].count("crashed") == crashes  # each crash killed a whole batch
        # every message went out twice: the queues really delivered duplicates
        bodies = [s.body for s in h.sent if s.delay_s == 0]
        assert all(bodies.count(b) >= 2 for b in bodies)
        # ... yet they do not multiply: a batch sends each successor once (about 110 without that)
        assert len(h.sent) <= 60, len(h.sent)


def test_duplicate_meeting_a_dead_workers_lease_is_dropped_and_the_owner_message_takes_over() -> None:
    ref: Ref = {}
    with SqsHarness(agent_workflow(ref, urls=3), backend="memory", duplicate_delivery=True, batch_size=1) as h:
        ref["h"] = h
        h.crash_at("after_claim", node="plan")
        run_id = run_agent(h)
        assert_exactly_once(h, run_id, urls=3)
        plan = [i.outcome for i in h.invocations if i.key == "plan"]
        assert plan[:2] == ["crashed", "BUSY"]  # the duplicate met the live lease and was acknowledged
        assert "DONE" in plan[2:]  # the dead worker's own message came back and took over


def test_full_stack_on_moto_dynamodb_and_s3() -> None:
    ref: Ref = {}
    with SqsHarness(agent_workflow(ref), duplicate_delivery=True) as h:
        ref["h"] = h
        h.crash_at("before_handoff", node="fetch")
        run_id = run_agent(h)
        assert_exactly_once(h, run_id, urls=6)
        assert h.api_calls["dynamodb.UpdateItem"] > 0 and h.api_calls["sqs.SendMessage"] > 0


# -- (b) a poison message goes to the dead-letter queue; the rest of its batch succeeds --------------
def test_poison_message_ends_in_dlq_while_its_batch_succeeds() -> None:
    ref: Ref = {}
    # batches of 10 on a step's queue (deployed: 1; 10 on the control function's): a partial batch failure
    with SqsHarness(agent_workflow(ref), backend="memory", max_receive_count=3, batch_size=10) as h:
        ref["h"] = h
        run_id = h.start("demo", {"q": 1})
        h.sqs.send_message(QueueUrl=h.queues["plan"], MessageBody="{not an activation")
        h.run()
        assert h.status(run_id) == "WAITING"  # the run went on past the poison message
        first = h.batches[0]
        assert (first.size, first.failed, first.result) == (2, 1, "ok")  # partial batch failure
        assert h.dlq_bodies() == ["{not an activation"]
        poison_receives = [b for b in h.batches if b.queue_url == h.queues["plan"] and b.failed]
        assert len(poison_receives) == 3  # maxReceiveCount, then moved to the DLQ
        assert h.executions["plan"] == 1


# -- (c) a step that always fails: retried with delays, then the run fails ----------------------------
def test_step_that_always_raises_fails_the_run_after_delayed_retries() -> None:
    ref: Ref = {}
    attempts: list[int] = []
    wf = Workflow("flaky")

    @wf.step(retry=RetryPolicy(max_attempts=3, backoff_s=2, backoff_rate=2))
    def call_llm(ctx: Any, _: Any) -> Any:
        attempts.append(ref["h"].clock.now_ms())
        raise ValueError("model overloaded")

    with SqsHarness(wf, backend="memory") as h:
        ref["h"] = h
        run_id = h.start("flaky", None)
        h.run()
        run = h.engine.get_run(run_id)
        assert run.status.value == "FAILED"
        assert run.error is not None and run.error["type"] == "ValueError"
        assert "gave up after 3 attempts" in run.error["message"]
        assert len(attempts) == 3
        assert [b - a for a, b in pairwise(attempts)] == [2000, 4000]
        sends = h.sends_for("call_llm")
        assert [s.delay_s for s in sends] == [0, 2, 4]
        for s in sends[1:]:  # a delayed message also carries its due time
            assert int(s.attributes[NOT_BEFORE]["StringValue"]) == s.at_ms + s.delay_s * 1000


# -- failures of the worker itself ------------------------------------------------------------------
def test_store_outage_fails_only_that_record_which_sqs_retries() -> None:
    ref: Ref = {}
    with SqsHarness(agent_workflow(ref, urls=3), backend="memory", batch_size=10) as h:  # a partial batch failure
        ref["h"] = h
        real_claim = h.store.claim
        outages: list[str] = []

        def flaky_claim(run_id: str, key: str, **kw: Any) -> Any:
            if key == "summarize#00001" and not outages:
                outages.append(key)
                raise ConnectionError("DynamoDB unavailable")
            return real_claim(run_id, key, **kw)

        h.store.claim = flaky_claim  # type: ignore[method-assign]
        run_id = run_agent(h)
        assert outages == ["summarize#00001"]
        assert_exactly_once(h, run_id, urls=3)
        partial = [b for b in h.batches if b.failed]
        assert len(partial) == 1 and partial[0].size == 3 and partial[0].result == "ok"
        assert [i.outcome for i in h.invocations if i.key == "summarize#00001"] == ["error", "DONE"]


def test_invocation_killed_at_its_timeout_is_redelivered_after_the_lease() -> None:
    ref: Ref = {}
    wf = Workflow("slow")

    @wf.step(timeout_s=60)
    def think(ctx: Any, _: Any) -> Any:
        if ctx.attempt == 1:
            ref["h"].clock.advance(70_000)  # Lambda kills the invocation at 60 s
        return "thought"

    with SqsHarness(wf, backend="memory", duplicate_delivery=True) as h:
        ref["h"] = h
        run_id = h.start("slow", None)
        h.run()
        assert h.output(run_id) == "thought"
        assert h.executions["think"] == 1
        outcomes = [i.outcome for i in h.invocations if i.key == "think"]
        assert outcomes[0] == "timed_out" and outcomes[-1] == "DONE"
        assert h.view(run_id).totals["crashes"] >= 1


# -- (d) a 10 MB output passes through S3; every message stays small --------------------------------
def test_ten_megabyte_output_goes_through_s3_and_messages_stay_small() -> None:
    wf = Workflow("big")

    @wf.step()
    def produce(ctx: Any, _: Any) -> Any:
        return "x" * 10_000_000

    @wf.step()
    def consume(ctx: Any, text: Any) -> Any:
        return len(text)

    with SqsHarness(wf, duplicate_delivery=True) as h:
        run_id = h.start("big", None)
        h.run()
        assert h.output(run_id) == 10_000_000
        assert len(h.sent) >= 4
        assert max(len(s.body.encode()) for s in h.sent) < 2048
        objects = boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket=BUCKET)["Contents"]
        assert max(o["Size"] for o in objects) >= 10_000_000


# -- (e) delays longer than 15 minutes are chains of SQS delays ---------------------------------------
def test_one_hour_sleep_is_carried_by_chained_delays() -> None:
    ref: Ref = {}
    with SqsHarness(agent_workflow(ref), backend="memory") as h:
        ref["h"] = h
        run_id = run_agent(h)
        assert h.status(run_id) == "SUCCEEDED"
        sends = h.sends_for("cool_down")
        delayed = [s for s in sends if s.delay_s > 0]
        assert len(sends) >= 5 and len(delayed) >= 4
        assert all(s.delay_s <= MAX_DELAY_S for s in h.sent)
        wake = {int(s.attributes[NOT_BEFORE]["StringValue"]) for s in delayed}
        assert len(wake) == 1  # every hop carries the same due time
        # early hops are forwarded by the worker: the engine sees the sleep twice (start, wake-up)
        assert [i.outcome for i in h.invocations if i.key == "cool_down"] == ["WAIT", "DONE"]
        slept = [t for t, what, key in h.timeline if what == "after_checkpoint" and key == "cool_down"]
        assert slept and slept[0] >= wake.pop() >= sends[0].at_ms + 3_600_000


def test_event_wait_deadline_beyond_15_minutes_times_out() -> None:
    ref: Ref = {}
    with SqsHarness(agent_workflow(ref), backend="memory") as h:
        ref["h"] = h
        run_id = h.start("demo", {"q": 1})
        h.run()
        assert h.status(run_id) == "WAITING"
        h.advance(3_000)  # 50 minutes: still waiting
        assert h.status(run_id) == "WAITING"
        h.advance(700)
        run = h.engine.get_run(run_id)
        assert run.status.value == "FAILED" and run.error is not None and run.error["type"] == "EventTimeout"
        assert [i.action for i in h.invocations if i.key == "approval"] == ["run", "timeout"]
        hops = [s for s in h.sends_for("approval") if s.delay_s > 0]
        assert len(hops) >= 4 and all(s.delay_s <= MAX_DELAY_S for s in hops)


# -- (f) a map never has more than max_concurrency items in flight -----------------------------------
def test_map_max_concurrency_holds_under_crashes_and_duplicates() -> None:
    ref: Ref = {}
    with SqsHarness(agent_workflow(ref, urls=9), backend="memory", duplicate_delivery=True) as h:
        ref["h"] = h
        h.crash_at("after_claim", node="summarize", times=2)
        h.crash_at("mid_item", node="fetch")
        run_id = run_agent(h)
        assert_exactly_once(h, run_id, urls=9)
        released: set[str] = set()
        done: set[str] = set()
        in_flight = []
        for _, what, key in h.timeline:
            if not key.startswith("summarize#"):
                continue
            if what == "sent":
                released.add(key)
            elif what == "after_checkpoint":
                done.add(key)
            in_flight.append(len(released - done))
        assert max(in_flight) == 3  # the window is used, never exceeded
        running: list[int] = ref["running"]  # type: ignore[assignment]
        assert 1 <= max(running) <= 3


# -- the handoff itself ------------------------------------------------------------------------------
def test_delay_seconds_rounds_up_and_caps_at_900() -> None:
    assert delay_seconds(None, 1_000) == 0
    assert delay_seconds(1_000, 1_000) == 0
    assert delay_seconds(1_001, 1_000) == 1
    assert delay_seconds(1_000 + 3_600_000, 1_000) == MAX_DELAY_S


def test_handoff_batches_by_ten_and_routes_to_node_or_default_queue() -> None:
    with moto_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        a = sqs.create_queue(QueueName="a")["QueueUrl"]
        default = sqs.create_queue(QueueName="default")["QueueUrl"]
        calls: list[str] = []
        sqs.meta.events.register("before-call.sqs.*", lambda event_name, **_: calls.append(event_name))
        handoff = SqsHandoff({"a": a, "*": default}, sqs)
        msgs = [Activation("r1", "wf", "v1", "a", i) for i in range(23)] + [Activation("r1", "wf", "v1", "b")]
        handoff.dispatch(msgs)
        assert calls.count("before-call.sqs.SendMessageBatch") == 3 and calls.count("before-call.sqs.SendMessage") == 1

        def drain(url: str) -> list[Activation]:
            out: list[Activation] = []
            while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
                out += [Activation.from_json(m["Body"]) for m in got]
                sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)],
                )
            return out

        assert sorted(m.index or 0 for m in drain(a)) == list(range(23))
        assert [m.node for m in drain(default)] == ["b"]
        with pytest.raises(ValidationError):
            SqsHandoff({"a": a}, sqs).dispatch([Activation("r1", "wf", "v1", "zzz")])


def test_handoff_creates_no_client_until_it_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real: Callable[..., Any] = boto3.client
    monkeypatch.setattr(boto3, "client", lambda *a, **k: made.append(a[0]) or real(*a, **k))
    with moto_aws():
        url = real("sqs", region_name="us-east-1").create_queue(QueueName="q")["QueueUrl"]
        handoff = SqsHandoff({"*": url})
        assert made == []
        handoff.dispatch([Activation("r1", "wf", "v1", "n")])
        assert made == ["sqs"]
        body = real("sqs", region_name="us-east-1").receive_message(QueueUrl=url)["Messages"][0]["Body"]
        assert json.loads(body)["node"] == "n"


def test_the_harness_dead_letters_after_the_deployed_max_receive_count() -> None:
    """SqsHarness's redrive policy is the template's (one constant), not a count of its own."""
    from stepchain.deploy.samgen import build

    tpl = build([agent_workflow({})], code_uri="src")
    policies = {
        r["Properties"]["RedrivePolicy"]["maxReceiveCount"]
        for r in tpl["Resources"].values()
        if r["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in r.get("Properties", {})
    }
    with SqsHarness(agent_workflow({}), backend="memory") as h:
        attrs = h.sqs.get_queue_attributes(QueueUrl=h.queues["plan"], AttributeNames=["RedrivePolicy"])
        assert policies == {json.loads(attrs["Attributes"]["RedrivePolicy"])["maxReceiveCount"]}
