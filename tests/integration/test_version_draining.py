"""Version draining on the in-process harness: a deployment that no longer registers the workflow
version a run is pinned to can still read, list and cancel that run; anything that would advance
it (a worker activation, an event, a redrive) fails the run with an error naming the version,
and registering the version again lets a redrive finish it on its own code."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from stepchain import Registry, RunStatus, StepContext, VersionNotRegistered, Workflow
from stepchain.runtimes.aws.sqs_worker import handle_sqs_batch
from stepchain.testing import Harness, VirtualLambdaContext


def build(version: str) -> Workflow:
    wf = Workflow("orders", version=version)

    @wf.step()
    def receive(ctx: StepContext, order: dict[str, Any]) -> list[int]:
        time.sleep(1)  # virtual time: without its workflow, a run's nodes are listed in creation order
        return list(range(order["n"]))

    @wf.map()
    def price(ctx: StepContext, i: int) -> int:
        time.sleep(1)
        return i * 10 + int(version)

    wf.wait_for_event("approved", timeout_s=3600)
    wf.sleep(60, name="settle")

    @wf.step()
    def ship(ctx: StepContext, decision: Any) -> dict[str, Any]:
        return {"shipped": decision, "version": version}

    return wf


V1, V2 = build("1"), build("2")


@pytest.fixture(params=["memory", "moto"])
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    with Harness(V1, backend=request.param) as harness:
        yield harness


def waiting_run(h: Harness) -> str:
    """A v1 run parked at its event wait, then a deploy that only has v2."""
    rid = h.start("orders", {"n": 3})
    h.run()
    assert h.status(rid) == "WAITING"
    redeploy(h)
    return rid


def redeploy(h: Harness) -> None:
    """What the next deployment's code registers: only version 2."""
    h.registry = h.engine.registry = Registry([V2])


def test_a_retired_version_stays_readable_and_listable(h: Harness) -> None:
    rid = waiting_run(h)
    view = h.view(rid)  # the ledger from the records alone
    assert view.version == "1" and view.status == "WAITING"
    assert [(n.key, n.kind, n.status) for n in view.nodes] == [
        ("receive", "step", "SUCCEEDED"),
        ("price", "map", "SUCCEEDED"),
        ("approved", "wait", "WAITING"),
    ]
    assert [i.key for i in view.nodes[1].items] == ["price#00000", "price#00001", "price#00002"]
    assert view.totals["succeeded"] == 2
    page = h.store.list_runs("orders")
    assert [r.run_id for r in page.runs] == [rid]


def test_a_retired_version_can_be_cancelled(h: Harness) -> None:
    rid = waiting_run(h)
    run = h.engine.cancel(rid)
    assert run.status is RunStatus.CANCELLED and h.status(rid) == "CANCELLED"
    assert h.view(rid).nodes[-1].status == "CANCELLED"
    before = len(h.invocations)
    h.run()
    assert len(h.invocations) == before  # nothing left in flight


def test_an_activation_for_a_retired_version_fails_the_run_once(h: Harness) -> None:
    rid = h.start("orders", {"n": 2})
    redeploy(h)  # the first activation is in flight
    before = len(h.invocations)
    h.run()
    assert len(h.invocations) - before == 1  # one delivery: no retry loop, nothing for a dead-letter queue
    run = h.engine.get_run(rid)
    assert run.status is RunStatus.FAILED and run.error is not None
    assert run.error["type"] == "VersionNotRegistered"
    assert "'orders' version '1'" in run.error["message"] and "redrive" in run.error["message"]
    assert run.error["node"] == "receive"
    assert h.view(rid).nodes[0].status == "FAILED"


def test_an_event_for_a_retired_version_fails_the_run_and_raises(h: Harness) -> None:
    rid = waiting_run(h)
    with pytest.raises(VersionNotRegistered, match="'1'") as info:
        h.send_event(rid, "approved", {"ok": True})
    assert info.value.http_status == 409 and info.value.code == "version_not_registered"
    run = h.engine.get_run(rid)
    assert run.status is RunStatus.FAILED and run.error is not None and run.error["node"] == "approved"
    with pytest.raises(VersionNotRegistered):  # a redrive cannot advance it either
        h.engine.redrive(rid)
    assert h.status(rid) == "FAILED"


def test_registering_the_version_again_lets_a_redrive_finish_on_its_own_code(h: Harness) -> None:
    rid = waiting_run(h)
    with pytest.raises(VersionNotRegistered):
        h.send_event(rid, "approved", "yes")
    h.registry.register(V1)  # rolled back: both versions deployed
    h.engine.redrive(rid)
    h.run()
    h.send_event(rid, "approved", "yes")
    h.advance(61)
    assert h.status(rid) == "SUCCEEDED"
    assert h.output(rid) == {"shipped": "yes", "version": "1"}
    assert h.engine.output_of(rid, "price") == [1, 11, 21]


def test_the_sqs_worker_acknowledges_a_retired_versions_message_after_failing_the_run() -> None:
    """Through the SQS worker's batch handler: no batch item failure, so SQS deletes the message
    instead of redelivering it until it lands in the dead-letter queue."""
    with Harness(V1, backend="memory") as h:
        rid = h.start("orders", {"n": 1})
        popped = h.handoff.pop()
        assert popped is not None
        redeploy(h)
        record = {
            "messageId": "m-1",
            "receiptHandle": "r-1",
            "body": popped[1].to_json(),
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:stepchain-receive",
            "awsRegion": "us-east-1",
        }
        response = handle_sqs_batch(h.engine, {"Records": [record]}, VirtualLambdaContext(h.clock, 30_000, "w-1"))
        assert response == {"batchItemFailures": []}
        run = h.engine.get_run(rid)
        assert run.status is RunStatus.FAILED and run.error is not None
        assert run.error["type"] == "VersionNotRegistered" and "'1'" in run.error["message"]
        assert h.handoff.pop() is None  # and nothing was sent on
