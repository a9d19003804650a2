"""Short-timeout steps on SQS: no heartbeat, the queue's own visibility bounds the resume (issue 10.1/10.6).

A function whose timeout T gives a queue visibility Q = T + 5 s <= V (``stepchain.engine.heartbeat.queue_visibility_s``)
gets ``STEPCHAIN_SQS_QUEUE_VISIBILITY_S`` = Q from the template generator; its worker then makes no
``ChangeMessageVisibilityBatch`` at receipt and runs no heartbeat (one SQS request less per step), and a
killed invocation's message comes back by itself, after the lease (deadline + 2 s) has ended. Real queues
(moto), the real SQS worker reading its environment, virtual time.
"""

from __future__ import annotations

import pytest

from stepchain import Workflow
from stepchain.engine.heartbeat import ENV_INTERVAL, ENV_VISIBILITY
from stepchain.engine.short_queues import ENV_QUEUE_VISIBILITY, queue_visibility_s
from stepchain.store.records import NodeStatus
from stepchain.testing.sqs_driver import SqsHarness

CMVB = "sqs.ChangeMessageVisibilityBatch"


def short_chain(n: int = 3, timeout_s: int = 10) -> Workflow:
    wf = Workflow("short")
    for i in range(n):
        wf.step(name=f"s{i}", timeout_s=timeout_s)(lambda ctx, x: {"i": x["i"] + 1})
    return wf


def deployed_env(monkeypatch: pytest.MonkeyPatch, queue_visibility: int | None) -> None:
    monkeypatch.setenv(ENV_VISIBILITY, "20")
    monkeypatch.setenv(ENV_INTERVAL, "5")
    if queue_visibility is None:
        monkeypatch.delenv(ENV_QUEUE_VISIBILITY, raising=False)
    else:
        monkeypatch.setenv(ENV_QUEUE_VISIBILITY, str(queue_visibility))


def run_chain(n: int) -> tuple[int, int, int]:
    """(ChangeMessageVisibilityBatch calls, SQS calls, DynamoDB calls) the framework made in one run."""
    with SqsHarness(short_chain(n), heartbeat="env", batch_size=1) as h:
        run_id = h.start("short", {"i": 0})
        h.run()
        assert h.status(run_id) == "SUCCEEDED" and h.output(run_id) == {"i": n}
        sqs = sum(v for k, v in h.api_calls.items() if k.startswith("sqs."))
        ddb = sum(v for k, v in h.api_calls.items() if k.startswith("dynamodb."))
        return h.api_calls[CMVB], sqs, ddb


def test_the_worker_skips_the_visibility_change_when_its_queue_returns_messages_within_v(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployed_env(monkeypatch, queue_visibility_s(10))  # 15 s <= V = 20 s: as the generator sets it
    skipped, sqs_skipped, ddb_skipped = run_chain(3)
    deployed_env(monkeypatch, None)  # a 6 x timeout queue: the heartbeat as before
    changed, sqs_changed, ddb_changed = run_chain(3)
    assert skipped == 0
    assert changed == 3  # one per received batch (batch size 1: one per step), no beat (steps < H)
    assert sqs_changed - sqs_skipped == 3
    assert ddb_skipped == ddb_changed  # the lease write is the claim's either way: no extra DynamoDB call


def test_a_queue_visibility_above_v_keeps_the_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    deployed_env(monkeypatch, 25)  # e.g. MessageVisibilitySeconds lowered below the queue's Q at deploy time
    changed, _, _ = run_chain(2)
    assert changed == 2


def test_a_killed_short_step_resumes_within_the_queue_visibility_without_a_heartbeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kill right after the claim (the worst moment: the whole visibility is still ahead). The harness
    emulates the queue's visibility as the invocation's deadline + 3 s = receipt + T + 3 s, inside
    Q = T + 5 s; the redelivery finds the lease (deadline + 2 s) over and takes the node over."""
    deployed_env(monkeypatch, queue_visibility_s(10))
    with SqsHarness(short_chain(2), heartbeat="env", batch_size=1) as h:
        h.crash_at("after_claim", node="s1")
        run_id = h.start("short", {"i": 0})
        h.run()
        assert h.status(run_id) == "SUCCEEDED" and h.output(run_id) == {"i": 2}
        assert h.api_calls[CMVB] == 0
        first, second = [t for t, what, k in h.timeline if what == "after_claim" and k == "s1"]
        assert second - first <= queue_visibility_s(10) * 1000
        assert second - first + 2_000 <= 30_000  # + a poll (~1 s) and a cold start (~1 s): <= 30 s
        node = h.store.get_node(run_id, "s1")
        assert node is not None and node.crashes == 1 and node.status is NodeStatus.SUCCEEDED


def test_queue_visibility_rule() -> None:
    assert [queue_visibility_s(t) for t in (1, 10, 15, 16, 20, 60, 300)] == [6, 15, 20, 96, 120, 360, 1800]
    for t in range(1, 901):
        q = queue_visibility_s(t)
        assert q >= t  # AWS refuses an event source mapping otherwise
        if q <= 20:  # no heartbeat: the lease (deadline + 2 s) ends before the message comes back
            assert q >= t + 2 + 3 and q + 2 <= 30
        else:
            assert q == 6 * t


def test_the_heartbeats_requests_are_in_the_runs_ledger() -> None:
    """The heartbeat's ChangeMessageVisibilityBatch (at receipt and per beat) and its lease writes run
    outside the activation's thread; the claiming activation's node writes carry them to the ledger
    (before: the ledger missed them, so it showed $2.65 per million steps where SQS billed $3.05)."""
    from stepchain.engine.heartbeat import HeartbeatPolicy

    ref: dict[str, SqsHarness] = {}
    wf = Workflow("beats")

    @wf.step(timeout_s=60)
    def slow(ctx: object, x: dict[str, int]) -> dict[str, int]:
        ref["h"].clock.advance(12_000)  # beats at 5 s and 10 s
        return x

    @wf.step(timeout_s=60)
    def quick(ctx: object, x: dict[str, int]) -> dict[str, int]:
        return x

    with SqsHarness(wf, heartbeat=HeartbeatPolicy(20, 5), batch_size=1) as h:
        ref["h"] = h
        run_id = h.start("beats", {"i": 0})
        h.run()
        assert h.status(run_id) == "SUCCEEDED"
        served = h.api_calls
        assert served[CMVB] == 2 + 2  # one per received batch (2 steps) + one per beat (2)
        totals = h.view(run_id).totals["requests"]
        assert totals["sqs_other"] == served[CMVB]
        writes = sum(v for k, v in served.items() if k.split(".")[1] in ("UpdateItem", "PutItem", "TransactWriteItems"))
        assert served["dynamodb.UpdateItem"] >= 2 + 2 + 1  # claim, checkpoint x 2, 2 lease writes, run done
        assert totals["ddb_write"] == writes
