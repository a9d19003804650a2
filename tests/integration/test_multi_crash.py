"""Five worker crashes in one run (issue 15: no run strands): a step, a ``ctx.each`` loop and a
``ctx.once`` in a map, each boundary crashed once, are all recovered by redelivery alone on every
harness. On ``SqsHarness`` the map's items once stranded: the harness served a step's queue in
batches of 10, so one crashed process failed the batch of all three items and each crash burned a
receive of its innocent siblings; after three, SQS moved ``work#00002`` (item 2, never finished)
to the dead-letter queue, RUNNING with an expired lease until the sweeper's grace ran out. The
deployed event source mapping has BatchSize 1 on a step's queue (10 only on the control
function's); the harness now does the same. The crashes are fixed, not random: the run is the
same every time."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.stream_flow import wf

from stepchain.testing import Harness, SfnHarness, SqsHarness

N = 3
CRASHES = [
    ("after_claim", "plan"),
    ("mid_item", "work#00001"),
    ("item_window", "work#00000"),
    ("effect_window", "work#00002"),
    ("after_checkpoint", "plan"),
]
LEASE_AND_GRACE_S = 60 + 2 + 300 + 60  # the item's timeout, the lease grace, the sweeper's grace, a minute


def make(kind: str, **kw: Any) -> Harness:
    if kind == "sqs":
        return SqsHarness(wf, **kw)
    if kind == "sfn":
        return SfnHarness(wf, **kw)
    return Harness(wf, backend=kind, **kw)


@pytest.mark.parametrize("duplicate", [False, True])
@pytest.mark.parametrize("kind", ["memory", "moto", "sqs", "sfn"])
def test_five_crashes_in_one_run_are_recovered_by_redelivery_alone(kind: str, duplicate: bool) -> None:
    with make(kind, duplicate_delivery=duplicate) as h:
        for boundary, node in CRASHES:
            h.crash_at(boundary, node=node)
        rid = h.start(wf.name, N)
        assert h.run(rid) == "SUCCEEDED", {r.key: r.status.value for r in h.store.list_nodes(rid)}
        assert h.output(rid) == sum(range(N))
        assert sorted(h.probe.crashes) == sorted(CRASHES)


def test_the_sqs_harness_batches_as_the_deployed_event_source_mappings() -> None:
    """BatchSize 1 on a step's (or map's) queue, up to 10 on the control function's."""
    with SqsHarness(wf) as h:
        rid = h.start(wf.name, N)
        assert h.run(rid) == "SUCCEEDED"
        assert {b.size for b in h.batches} == {1}
        assert h.batch_size_of(h.queues["work"]) == 1 and h.batch_size_of(h.queues["*"]) == 10
    with SqsHarness(wf, batch_size=10) as h:  # an explicit size applies to every queue
        assert h.batch_size_of(h.queues["work"]) == 10


def test_batched_crashes_that_dead_letter_an_item_are_recovered_by_the_sweeper() -> None:
    """A batch of 10 on the items' queue (not what is deployed): every crash fails the whole batch,
    the three items' messages reach the dead-letter queue after 3 receives and item 2 is left
    RUNNING. No run strands: once its lease and the sweeper's grace are past, one sweep re-issues
    it and the run succeeds."""
    with SqsHarness(wf, batch_size=10, max_receive_count=3) as h:  # fewer than deployed: the DLQ sooner
        for boundary, node in CRASHES:
            h.crash_at(boundary, node=node)
        rid = h.start(wf.name, N)
        assert h.run(rid) == "RUNNING"
        assert len(h.dlq_bodies()) == N
        assert {r.key: r.status.value for r in h.store.list_nodes(rid)}["work#00002"] == "RUNNING"
        assert h.sweep() == 0  # the lease just ended: within the grace, nothing is overdue
        h.advance(LEASE_AND_GRACE_S)
        assert h.sweep() == 1
        assert h.run(rid) == "SUCCEEDED" and h.output(rid) == sum(range(N))
