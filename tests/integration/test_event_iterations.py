"""Events inside a loop name the iteration they are for (``send_event(..., iteration=N)``): a client
that retries a delivery after the wait completed (its first 202 was lost) never approves the NEXT
iteration's wait; an event for an iteration not reached yet is buffered for it; an iteration the run
is past without the event is refused; a crash at the ``api_event`` boundary is finished by a retry
or by the sweeper. On every harness (in-process, SQS, Step Functions)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from tests.integration.expense_flows import counts, expense, single

from stepchain import InvalidRunState
from stepchain.testing import Harness, InjectedCrash, SfnHarness, SqsHarness

KINDS = ["memory", "sqs", "sfn"]
REJECT = {"approved": False, "by": "ann", "cap": 300}
APPROVE = {"approved": True, "by": "bo", "amount": 300}


@contextmanager
def harness(kind: str) -> Iterator[Any]:
    if kind == "sfn":
        with SfnHarness(expense, single) as s:
            yield s
    elif kind == "sqs":
        with SqsHarness(expense, single, backend="memory") as q:
            yield q
    else:
        with Harness(expense, single, backend="memory") as h:
            yield h


def refused(h: Any, rid: str, name: str, payload: Any, **kw: Any) -> Any:
    """The delivery's 409 (an InvalidRunState): its code, and the iteration it names."""
    with pytest.raises(InvalidRunState) as caught:
        h.send_event(rid, name, payload, **kw)
    return caught.value.code, getattr(caught.value, "iteration", None)


def node_status(h: Any, rid: str, key: str) -> str | None:
    rec = h.engine.store.get_node(rid, key)
    return None if rec is None else rec.status.value


@pytest.mark.parametrize("kind", KINDS)
def test_a_retried_rejection_never_approves_the_next_iteration(kind: str) -> None:
    with harness(kind) as h:
        rid = h.start("expense-approval", 500)
        assert h.run(rid) == "WAITING"
        assert h.waiting_for(rid) == {"event": "approval", "iteration": 0}
        # the first iteration, no iteration named: exactly as a workflow without loops
        assert h.send_event(rid, "approval", REJECT) == "delivered"
        # the 202 was lost and the client retries while the run is between iterations: refused
        assert refused(h, rid, "approval", REJECT) == ("event_iteration_required", 1)
        assert h.run(rid) == "WAITING"
        assert h.waiting_for(rid) == {"event": "approval", "iteration": 1}
        # a late retry, once the next iteration waits: refused too, and that wait still waits
        assert refused(h, rid, "approval", REJECT) == ("event_iteration_required", 1)
        assert node_status(h, rid, "approve~00001") == "WAITING" and h.status(rid) == "WAITING"
        # the retry naming its iteration is answered as before; another payload for it is a conflict
        assert h.send_event(rid, "approval", REJECT, iteration=0) == "delivered"
        assert refused(h, rid, "approval", APPROVE, iteration=0)[0] == "invalid_run_state"
        assert node_status(h, rid, "approve~00001") == "WAITING" and h.status(rid) == "WAITING"
        # the approval of iteration 1, named
        assert h.send_event(rid, "approval", APPROVE, iteration=1) == "delivered"
        assert h.run(rid) == "WAITING"
        assert h.waiting_for(rid) == {"event": "receipt", "iteration": 1}
        assert h.engine.output_of(rid, "pay~00001") == {"amount": 300, "approved_by": "bo", "at": "decide~00001"}
        assert h.send_event(rid, "receipt", {"no": 7}, iteration=1) == "delivered"
        assert h.run(rid) == "SUCCEEDED"
        assert h.output(rid) == {"receipt": {"no": 7}, "filed": "file~00001"}
        c = counts(rid)
        assert c["revise"] == 1 and c["decide~00001"] == 1 and "revise~00001" not in c
        assert all(n == 1 for n in c.values()), c


@pytest.mark.parametrize("kind", KINDS)
def test_an_approval_for_an_iteration_not_reached_yet_is_buffered_for_it(kind: str) -> None:
    with harness(kind) as h:
        rid = h.start("expense-approval", 500)
        assert h.run(rid) == "WAITING"
        assert h.send_event(rid, "approval", APPROVE, iteration=1) == "buffered"
        assert h.send_event(rid, "approval", APPROVE, iteration=1) == "buffered"  # a retry: the same answer
        assert refused(h, rid, "approval", REJECT, iteration=1)[0] == "invalid_run_state"
        assert node_status(h, rid, "approve") == "WAITING"  # iteration 0's wait is not touched
        assert h.send_event(rid, "approval", REJECT, iteration=0) == "delivered"
        # iteration 1's wait finds its buffered approval: the run goes on to the receipt
        assert h.run(rid) == "WAITING"
        assert h.waiting_for(rid) == {"event": "receipt", "iteration": 1}
        assert node_status(h, rid, "approve~00001") == "SUCCEEDED"
        assert h.engine.output_of(rid, "pay~00001")["approved_by"] == "bo"
        # after it: a retry of the buffered delivery is still answered as before (it was consumed)
        assert h.send_event(rid, "approval", APPROVE, iteration=1) == "delivered"
        assert all(n == 1 for n in counts(rid).values()), counts(rid)


def test_an_iteration_past_its_wait_without_the_event_is_refused() -> None:
    with harness("memory") as h:
        rid = h.start("expense-approval", 500)
        assert h.run(rid) == "WAITING"
        assert h.send_event(rid, "approval", {**REJECT, "cap": 50}, iteration=0) == "delivered"
        # iteration 1 checks 50: paid without approval, so approve~00001 is never reached
        assert h.run(rid) == "WAITING"
        assert h.waiting_for(rid) == {"event": "receipt", "iteration": 1}
        assert node_status(h, rid, "approve~00001") is None
        assert refused(h, rid, "approval", APPROVE, iteration=1) == ("event_iteration_passed", 2)
        assert refused(h, rid, "approval", APPROVE) == ("event_iteration_required", 2)
        assert refused(h, rid, "approval", APPROVE, iteration=8) == ("event_iteration_unknown", None)
        assert h.engine.store.get_event(rid, "approval~00001") is None  # nothing stored for it
        assert h.send_event(rid, "approval", {**REJECT, "cap": 50}, iteration=0) == "delivered"  # a retry
        # the receipt wait is inside the loop too (after the loop's start): it needs its iteration
        assert refused(h, rid, "receipt", "r-1") == ("event_iteration_required", 1)
        assert refused(h, rid, "receipt", "r-1", iteration=0) == ("event_iteration_passed", 1)
        assert h.send_event(rid, "receipt", "r-1", iteration=1) == "delivered"
        assert h.run(rid) == "SUCCEEDED"
        assert h.engine.output_of(rid, "pay~00001") == {"amount": 50, "approved_by": "auto", "at": "check~00001"}


def test_a_workflow_without_loops_takes_events_as_before_and_only_iteration_0() -> None:
    with harness("memory") as h:
        rid = h.start("single-approval", 1)
        assert h.send_event(rid, "approval", "yes") == "buffered"  # before the wait: kept for it
        assert h.send_event(rid, "approval", "yes", iteration=0) == "buffered"  # the same event
        assert refused(h, rid, "approval", "no")[0] == "invalid_run_state"  # another payload
        assert refused(h, rid, "approval", "yes", iteration=1) == ("event_iteration_unknown", 0)
        assert h.run(rid) == "SUCCEEDED"
        assert h.output(rid) == {"decision": "yes"}


@pytest.mark.parametrize("kind", ["memory", "sqs"])
@pytest.mark.parametrize("recover", ["retry", "sweep"])
def test_a_crash_at_api_event_with_an_iteration_is_finished_by_a_retry_or_the_sweeper(kind: str, recover: str) -> None:
    with harness(kind) as h:
        rid = h.start("expense-approval", 500)
        assert h.run(rid) == "WAITING"
        assert h.send_event(rid, "approval", REJECT) == "delivered"
        assert h.run(rid) == "WAITING" and h.waiting_for(rid) == {"event": "approval", "iteration": 1}
        # the API dies after storing iteration 1's approval, before completing the wait
        h.crash_at("api_event", node="approve~00001")
        with pytest.raises(InjectedCrash):
            h.send_event(rid, "approval", APPROVE, iteration=1)
        assert h.engine.store.get_event(rid, "approval~00001") is not None
        assert node_status(h, rid, "approve~00001") == "WAITING"
        # a client retrying without the iteration is refused: it must name it
        assert refused(h, rid, "approval", APPROVE) == ("event_iteration_required", 1)
        if recover == "sweep":
            h.advance(3600)
            assert h.sweep() >= 1
            assert node_status(h, rid, "approve~00001") == "SUCCEEDED"
        # the client's retry naming the iteration: answered as if the first call had returned
        assert h.send_event(rid, "approval", APPROVE, iteration=1) == "delivered"
        assert refused(h, rid, "approval", REJECT, iteration=1)[0] == "invalid_run_state"
        assert h.run(rid) == "WAITING" and h.waiting_for(rid) == {"event": "receipt", "iteration": 1}
        assert h.engine.output_of(rid, "pay~00001")["approved_by"] == "bo"
        assert node_status(h, rid, "approve~00002") is None  # no next iteration was approved
        assert all(n == 1 for n in counts(rid).values()), counts(rid)
