"""A control-queue batch (BatchSize 10, as deployed) with one poison message whose handling kills
the process every time. A process that dies reports nothing (a partial batch response cannot
help): every message of its batch comes back and is received again, so each crash costs the
innocent siblings one receive. What bounds it is the engine: the poison's node is taken over at
most ``max_attempts`` times (3 for a control node) and then fails (``WorkerLost``), so its siblings
are received at most ``max_attempts + 1`` = 4 times, below the deployed ``maxReceiveCount`` (5,
:data:`stepchain.handoff.sqs.MAX_RECEIVE_COUNT`). With the 3 receives ``SqsHarness`` once used
(not what the template deploys), the siblings went to the dead-letter queue with the poison.
"""

from __future__ import annotations

from typing import Any

import pytest

from stepchain import Workflow
from stepchain.handoff.sqs import MAX_RECEIVE_COUNT
from stepchain.testing import InjectedCrash, SqsHarness

wf = Workflow("nappers")
wf.sleep(60, name="nap")  # the first node: every run's first activation is on the control queue


@wf.step()
def wake(ctx: Any, x: int) -> int:
    return x + 1


def poisoned(h: SqsHarness, poison: str) -> None:
    """The poison's handling kills the process every time (after its node's claim)."""
    inner = h.probe.reached

    def reached(boundary: str, run_id: str, key: str, detail: str = "") -> None:
        if boundary == "after_claim" and run_id == poison and key == "nap":
            raise InjectedCrash("the poison kills its process, every time")
        inner(boundary, run_id, key, detail)

    h.probe.reached = reached  # type: ignore[method-assign]


@pytest.mark.parametrize("receives", [MAX_RECEIVE_COUNT, 3])
def test_a_poison_message_crashing_its_batch_does_not_dead_letter_its_siblings(receives: int) -> None:
    with SqsHarness(wf, max_receive_count=receives) as h:
        runs = [h.start("nappers", i) for i in range(6)]
        poison = runs[2]
        poisoned(h, poison)
        h.run()
        batches = [b for b in h.batches if b.queue_url == h.queues["nap"]]
        assert batches[0].size == 6 and batches[0].result == "crashed"  # the poison and its five siblings
        crashed = [b for b in batches if b.result == "crashed"]
        assert len(crashed) == 3 and all(b.failed == b.size for b in crashed)  # each crash returned its batch
        innocents = [r for r in runs if r != poison]
        if receives == 3:  # what a count below the engine's bound did: the siblings dead-lettered too
            assert len(h.dlq_bodies()) == 6
            return
        assert [h.status(r) for r in innocents] == ["SUCCEEDED"] * 5
        assert [h.output(r) for r in innocents] == [1, 2, 4, 5, 6]
        assert h.status(poison) == "FAILED"
        err = h.engine.get_run(poison).error
        assert err is not None and err["type"] == "WorkerLost", err
        assert h.dlq_bodies() == []  # nothing dead-lettered: the poison's node failed first


def test_a_control_nodes_attempts_stay_below_the_deployed_max_receive_count() -> None:
    """The bound above: a control node (no user retry policy) is taken over at most max_attempts
    times, so a sibling batched with a poison is received at most max_attempts + 1 times."""
    from stepchain import RetryPolicy

    assert RetryPolicy().max_attempts + 1 < MAX_RECEIVE_COUNT
    assert all(n.retry == RetryPolicy() for n in wf.nodes if not n.runs_user_code)
