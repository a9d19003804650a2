"""Child workflows (``wf.call``) and parallel branches (``wf.parallel``) on every harness.

The workflow (``child_orders.py``) is an order that calls a ``charge`` child and fans out to
``inventory``/``shipping``/``email`` branches. What is checked, from the workflows' own counters
and by listing runs: each child run is started exactly once (under a crash at every worker
boundary, at ``api_start``/``api_cancel``/``api_redrive``, and with every message delivered twice),
the parent's output is right, a failing branch fails or is collected by policy, a cancel cascades,
the sweeper repairs a lost child->parent notification, and the children's costs roll up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError
from child_orders import BANK, COUNTS, FAILING, expected, orders_wf, reset
from tests.matrix import spread

from stepchain import Workflow
from stepchain.engine.nodes.children import child_run_id
from stepchain.testing import WORKER_BOUNDARIES, Harness, InjectedCrash, SfnHarness, SqsHarness

ORDER = {"id": "o1", "lines": [3, 4]}
CHILDREN = ("charge", "inventory", "shipping", "email")
FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")
#: a queue transport's recovery: let this much virtual time pass, then run the sweeper
SWEEP_S = 600


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    reset()
    yield
    reset()


@contextmanager
def harness(kind: str, *workflows: Workflow, **kw: Any) -> Iterator[Harness]:
    if kind == "memory":
        h: Harness = Harness(*workflows, backend="memory", **kw)
    elif kind == "moto":
        h = Harness(*workflows, **kw)
    elif kind == "sqs":
        h = SqsHarness(*workflows, backend="memory", **kw)
    else:
        h = SfnHarness(*workflows, backend="memory", poll_timeout_s=6.0, **kw)
    with h:
        yield h


def settle(h: Harness, run_id: str, rounds: int = 6) -> str:
    """Run; while the run has not ended, recover as a deployment does: time passes, the sweeper runs."""
    for i in range(rounds + 1):
        try:
            status = h.run(run_id)
        except TimeoutError:  # SfnHarness: an execution waits for a token nobody will send
            status = "RUNNING"
        except ClientError:  # SfnHarness: the run's execution was never started (the sweeper starts it)
            status = "RUNNING"
        if status in FINISHED or i == rounds:
            return status
        h.advance(SWEEP_S)
        h.sweep()
    return status


def runs_of(h: Harness, workflow: str) -> list[Any]:
    return h.store.list_runs(workflow, limit=100).runs


def check_children_once(h: Harness, run_id: str) -> None:
    """Each child workflow ran as exactly one run, a child of the right node, each step once."""
    for name in CHILDREN:
        runs = runs_of(h, name)
        assert len(runs) == 1, (name, [r.run_id for r in runs])
        node, branch = ("pay", "call") if name == "charge" else ("fulfil", name)
        assert runs[0].parent == f"{run_id}/{node}/{branch}"
        assert runs[0].run_id == child_run_id(run_id, node, branch)
    assert COUNTS["charge/authorize"] == 1
    for name in CHILDREN[1:]:
        assert COUNTS[f"{name}/work"] == 1, dict(COUNTS)
    for step in ("price", "fulfil_input", "confirm"):
        assert COUNTS[f"orders/{step}"] == 1, dict(COUNTS)


# ------------------------------------------------------------------------------- happy path
@pytest.mark.parametrize("kind", ["memory", "moto", "sqs", "sfn"])
def test_orders_call_a_child_and_join_parallel_branches(kind: str) -> None:
    with harness(kind, orders_wf()) as h:
        run_id = h.start("orders", ORDER)
        assert settle(h, run_id, rounds=0) == "SUCCEEDED"
        assert h.output(run_id) == expected(ORDER)
        check_children_once(h, run_id)
        assert BANK == {"o1": 1}
        assert all(h.status(r.run_id) == "SUCCEEDED" for name in CHILDREN for r in runs_of(h, name))
        assert h.output(runs_of(h, "charge")[0].run_id) == {"charged": 7, "receipt": "r-o1"}


@pytest.mark.parametrize("kind", ["memory", "sqs", "sfn"])
def test_duplicate_delivery_starts_each_child_once(kind: str) -> None:
    with harness(kind, orders_wf(), duplicate_delivery=True) as h:
        run_id = h.start("orders", ORDER)
        assert settle(h, run_id) == "SUCCEEDED"
        assert h.output(run_id) == expected(ORDER)
        check_children_once(h, run_id)
        assert BANK == {"o1": 1}


# ------------------------------------------------------------- a crash at every boundary
TARGETS = (None, "pay", "fulfil", "authorize", "capture", "work", "confirm")
MEMORY_CASES = [(b, n, s) for b in WORKER_BOUNDARIES for n in TARGETS for s in (0, 1)]


def crash_run(h: Harness, boundary: str, node: str | None, skip: int) -> str:
    h.crash_at(boundary, node=node, skip=skip)
    try:
        run_id = h.start("orders", ORDER)
    except InjectedCrash:  # before_handoff of the first node is inside the API's start: the sweeper finishes it
        (run_id,) = [r.run_id for r in runs_of(h, "orders")]
    assert settle(h, run_id) == "SUCCEEDED", h.view(run_id).error
    assert h.output(run_id) == expected(ORDER)
    check_children_once(h, run_id)
    # the card is charged once; a crash in the effect's own window re-runs it (at-least-once there)
    assert BANK["o1"] == 1 or (boundary == "effect_window" and BANK["o1"] == 2)
    return run_id


@pytest.mark.parametrize(("boundary", "node", "skip"), MEMORY_CASES)
def test_a_crash_at_any_worker_boundary_starts_each_child_once(boundary: str, node: str | None, skip: int) -> None:
    with harness("memory", orders_wf()) as h:
        crash_run(h, boundary, node, skip)
        if node is None and skip == 0 and boundary not in ("mid_item", "item_window"):  # no ctx.each here
            assert h.probe.crashes


TRANSPORT_CASES = [
    (kind, b, n, s)
    for kind in ("sqs", "sfn")
    for b, n, s in (
        ("after_claim", "pay", 0),
        ("after_checkpoint", "capture", 0),  # the child's last checkpoint, before it notifies
        ("after_checkpoint", "pay", 0),  # the join's commit, before the successor
        ("before_handoff", "pay", 1),  # the join activation (SQS); none on Step Functions
        ("before_handoff", "authorize", 0),  # the child's start
        ("after_claim", "fulfil", 0),
        ("after_checkpoint", "work", 1),
        ("effect_window", "capture", 0),
    )
]


# each case on one transport (the join activation's before_handoff exists on SQS only); make test-full: both
@pytest.mark.parametrize(
    ("kind", "boundary", "node", "skip"),
    spread(TRANSPORT_CASES, prefer={("before_handoff", "pay", 1): "sqs", ("before_handoff", "authorize", 0): "sfn"}),
)
def test_a_crash_on_a_real_transport_starts_each_child_once(kind: str, boundary: str, node: str, skip: int) -> None:
    with harness(kind, orders_wf()) as h:
        crash_run(h, boundary, node, skip)
        assert h.probe.crashes or (kind == "sfn" and boundary == "before_handoff" and node == "pay")


@pytest.mark.parametrize("kind", ["memory", "sqs", "sfn"])
def test_a_crash_inside_the_api_start_is_finished_by_the_sweeper(kind: str) -> None:
    with harness(kind, orders_wf()) as h:
        h.crash_at("api_start")
        with pytest.raises(InjectedCrash):
            h.start("orders", ORDER)
        (run_id,) = h.runs()
        assert settle(h, run_id) == "SUCCEEDED"
        check_children_once(h, run_id)


# ------------------------------------------------------------------------ failures, policies
@pytest.mark.parametrize("kind", ["memory", "sqs", "sfn"])
def test_a_failed_branch_fails_the_node_and_cancels_the_others(kind: str) -> None:
    FAILING.add("inventory")
    with harness(kind, orders_wf(nap_s=60)) as h:  # shipping and email sleep a minute first
        run_id = h.start("orders", ORDER)
        assert settle(h, run_id) == "FAILED"
        err = h.view(run_id).error
        assert err is not None and err["type"] == "ChildRunFailed" and err["node"] == "fulfil"
        assert "branch inventory" in err["message"] and "inventory is down" in err["message"]
        (inv,) = runs_of(h, "inventory")
        assert err["child"] == inv.run_id and h.status(inv.run_id) == "FAILED"
        for name in ("shipping", "email"):  # done before the failure was seen, or cancelled: never left running
            (r,) = runs_of(h, name)
            assert h.status(r.run_id) in ("SUCCEEDED", "CANCELLED")
        assert COUNTS["orders/confirm"] == 0
        if kind != "sfn":  # on Step Functions a Wait state skips virtual time at once: no order is sure
            assert [h.status(runs_of(h, n)[0].run_id) for n in ("shipping", "email")] == ["CANCELLED"] * 2
            assert COUNTS["shipping/work"] == COUNTS["email/work"] == 0


@pytest.mark.parametrize("kind", ["memory", "sqs", "sfn"])
def test_collect_gives_a_failed_branch_an_error_value(kind: str) -> None:
    FAILING.add("shipping")
    with harness(kind, orders_wf(on_error="collect")) as h:
        run_id = h.start("orders", ORDER)
        assert settle(h, run_id) == "SUCCEEDED"
        out = h.output(run_id)["branches"]
        assert out["inventory"] == {"inventory": "inventory-ok-o1"} and out["email"] == {"email": "email-ok-o1"}
        (ship,) = runs_of(h, "shipping")
        assert out["shipping"] == {
            "error": {
                "run_id": ship.run_id,
                "status": "FAILED",
                "type": "TerminalError",
                "message": "shipping is down",
            }
        }


@pytest.mark.parametrize("kind", ["memory", "sfn"])
def test_a_failed_call_fails_the_run_and_a_redrive_starts_a_new_child(kind: str) -> None:
    FAILING.add("charge")
    with harness(kind, orders_wf()) as h:
        run_id = h.start("orders", ORDER)
        assert settle(h, run_id) == "FAILED"
        err = h.view(run_id).error
        assert err is not None and (err["type"], err["node"]) == ("ChildRunFailed", "pay")
        assert "card declined" in err["message"]
        FAILING.clear()
        h.redrive(run_id)
        assert settle(h, run_id) == "SUCCEEDED"
        assert h.output(run_id) == expected(ORDER)
        charges = {r.run_id: h.status(r.run_id) for r in runs_of(h, "charge")}
        first, second = child_run_id(run_id, "pay", "call", 0), child_run_id(run_id, "pay", "call", 1)
        assert charges == {first: "FAILED", second: "SUCCEEDED"}  # a new generation; the old one stays
        assert COUNTS["orders/price"] == 1  # completed parent nodes are not run again
        assert [(c["run_id"], c["generation"]) for c in h.view(run_id).children if c["node"] == "pay"] == [
            (first, 0),
            (second, 1),
        ]


# ----------------------------------------------------------------------------- cancel cascade
def approval_parent() -> Workflow:
    child = Workflow("approval")
    child.wait_for_event("approved", timeout_s=3600)

    @child.step()
    def record(ctx: Any, ev: Any) -> Any:
        return {"approved": ev}

    parent = Workflow("request")

    @parent.step()
    def ask(ctx: Any, x: Any) -> Any:
        return x

    parent.call(child, name="approve")
    parent.parallel({"a": child, "b": child}, name="both")
    return parent


@pytest.mark.parametrize("kind", ["memory", "sqs", "sfn"])
def test_cancelling_the_parent_cancels_its_children(kind: str) -> None:
    with harness(kind, approval_parent()) as h:
        run_id = h.start("request", 1)
        assert h.run(run_id) == "RUNNING"  # the parent waits for its child, which waits for an event
        (child,) = runs_of(h, "approval")
        assert h.status(child.run_id) == "WAITING"
        h.cancel(run_id)
        settle(h, run_id, rounds=0)
        assert h.status(run_id) == "CANCELLED" and h.status(child.run_id) == "CANCELLED"
        assert [c["status"] for c in h.view(run_id).children] == ["CANCELLED"]


def test_a_cancel_that_dies_midway_cascades_through_the_sweeper() -> None:
    with harness("memory", approval_parent()) as h:
        run_id = h.start("request", 1)
        h.run(run_id)
        (child,) = runs_of(h, "approval")
        h.crash_at("api_cancel")  # the run CANCELLED, nothing else done
        with pytest.raises(InjectedCrash):
            h.cancel(run_id)
        assert h.status(child.run_id) == "WAITING"
        h.advance(SWEEP_S)
        h.sweep()
        assert h.status(child.run_id) == "CANCELLED"


@pytest.mark.parametrize("kind", ["memory", "sfn"])
def test_cancelling_a_child_fails_its_parent_node(kind: str) -> None:
    with harness(kind, approval_parent()) as h:
        run_id = h.start("request", 1)
        h.run(run_id)
        (child,) = runs_of(h, "approval")
        h.cancel(child.run_id)
        assert settle(h, run_id) == "FAILED"
        err = h.view(run_id).error
        assert err is not None and (err["type"], err["node"], err["child"]) == (
            "ChildRunCancelled",
            "approve",
            child.run_id,
        )


@pytest.mark.parametrize("kind", ["memory", "sqs", "sfn"])
def test_events_to_children_complete_the_parent(kind: str) -> None:
    with harness(kind, approval_parent()) as h:
        run_id = h.start("request", 1)
        h.run(run_id)
        (child,) = runs_of(h, "approval")
        h.send_event(child.run_id, "approved", "yes")
        h.run(run_id)
        kids = sorted(r.run_id for r in runs_of(h, "approval") if r.run_id != child.run_id)
        assert len(kids) == 2
        for kid in kids:
            h.send_event(kid, "approved", kid[-4:])
        assert settle(h, run_id) == "SUCCEEDED"
        by_branch = {b: {"approved": child_run_id(run_id, "both", b)[-4:]} for b in ("a", "b")}
        assert h.output(run_id) == by_branch


# ------------------------------------------------------------------- sweeper, lost notification
@pytest.mark.parametrize("kind", ["memory", "sqs", "sfn"])
def test_the_sweeper_joins_a_parent_whose_child_notification_was_lost(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stepchain.engine import worker

    lost: list[str] = []
    monkeypatch.setattr(worker, "run_ended", lambda w, run: lost.append(run.run_id))  # the process died there
    with harness(kind, orders_wf()) as h:
        run_id = h.start("orders", ORDER)
        assert h.run(run_id) == "RUNNING"
        (charge,) = runs_of(h, "charge")
        assert lost == [charge.run_id] and h.status(charge.run_id) == "SUCCEEDED"
        assert h.status(run_id) == "RUNNING" and COUNTS["orders/fulfil_input"] == 0  # stuck at pay
        monkeypatch.undo()
        assert h.sweep() == 0  # nothing is overdue yet
        h.advance(SWEEP_S)
        assert h.sweep() == 1
        assert settle(h, run_id, rounds=0) == "SUCCEEDED"
        assert h.output(run_id) == expected(ORDER)
        check_children_once(h, run_id)
        swept = [e for e in h.view(run_id).crash_events if e["kind"] == "swept"]
        assert [e["node"] for e in swept] == ["pay"]


# ------------------------------------------------------------------------------------- ledger
def test_the_parent_ledger_lists_its_children_and_rolls_up_their_cost() -> None:
    with harness("moto", orders_wf()) as h:
        run_id = h.start("orders", ORDER)
        assert h.run(run_id) == "SUCCEEDED"
        view = h.view(run_id)
        kids = {c["branch"]: c for c in view.children}
        assert set(kids) == {"call", "inventory", "shipping", "email"}
        assert all(c["status"] == "SUCCEEDED" for c in kids.values())
        assert kids["call"]["run_id"] == runs_of(h, "charge")[0].run_id and kids["call"]["node"] == "pay"
        # charge: 0.01 $, 100/10 tokens; each branch 0.002 $, 20/2 tokens; the parent's own steps none
        assert view.totals["cost_usd"] == pytest.approx(0.016)
        assert (view.totals["input_tokens"], view.totals["output_tokens"]) == (160, 16)
        own = sum(n.invocations for n in view.nodes)
        assert view.totals["invocations"] == own + sum(c["totals"]["invocations"] for c in kids.values())
        child_view = h.view(kids["inventory"]["run_id"])
        assert child_view.parent == f"{run_id}/fulfil/inventory" and child_view.children == []
        assert child_view.totals["cost_usd"] == pytest.approx(0.002)


def test_a_new_child_per_run_and_node_while_concurrent_parents_run() -> None:
    with harness("memory", orders_wf()) as h:
        t0 = time.monotonic()
        ids = [h.start("orders", {"id": f"o{i}", "lines": [i]}) for i in range(5)]
        h.run()
        assert all(h.status(r) == "SUCCEEDED" for r in ids)
        assert len(runs_of(h, "charge")) == 5 and len(runs_of(h, "email")) == 5
        assert {r.parent for r in runs_of(h, "charge")} == {f"{r}/pay/call" for r in ids}
        assert time.monotonic() - t0 < 30


def test_children_started_while_the_parent_is_being_cancelled_are_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    from stepchain.engine.nodes import children

    start = children.start_children

    def cancelled_meanwhile(w: Any, wf: Any, node: Any, run_id: str, key: str, rec: Any) -> None:
        h.engine.runs.cancel(run_id)  # the cancel's cascade runs before the children exist
        start(w, wf, node, run_id, key, rec)

    monkeypatch.setattr(children, "start_children", cancelled_meanwhile)
    with harness("memory", approval_parent()) as h:
        run_id = h.start("request", 1)
        h.run()
        (child,) = runs_of(h, "approval")
        assert h.status(run_id) == "CANCELLED" and h.status(child.run_id) == "CANCELLED"


@pytest.mark.parametrize("skip", [0, 1])
def test_a_redrive_that_dies_midway_still_starts_one_new_child(skip: int) -> None:
    FAILING.add("charge")
    with harness("memory", orders_wf()) as h:
        run_id = h.start("orders", ORDER)
        assert settle(h, run_id) == "FAILED"
        FAILING.clear()
        h.crash_at("api_redrive", skip=skip)
        with pytest.raises(InjectedCrash):
            h.redrive(run_id)
        status = settle(h, run_id)
        if status == "FAILED":  # the sweeper rolled a half-done redrive back (ARCHITECTURE.md): redrive again
            h.redrive(run_id)
            status = settle(h, run_id)
        assert status == "SUCCEEDED" and h.output(run_id) == expected(ORDER)
        assert sorted(h.status(r.run_id) for r in runs_of(h, "charge")) == ["FAILED", "SUCCEEDED"]


def test_the_api_shows_a_parents_children_and_a_childs_parent() -> None:
    from tests.functional.test_api import call

    with harness("memory", orders_wf()) as h:
        run_id = h.start("orders", ORDER)
        h.run()
        body = call(h, "get-run", path=f"/runs/{run_id}").json
        assert body["status"] == "SUCCEEDED" and body["totals"]["cost_usd"] == pytest.approx(0.016)
        assert sorted((c["node"], c["branch"], c["status"]) for c in body["children"]) == [
            ("fulfil", "email", "SUCCEEDED"),
            ("fulfil", "inventory", "SUCCEEDED"),
            ("fulfil", "shipping", "SUCCEEDED"),
            ("pay", "call", "SUCCEEDED"),
        ]
        kid = call(h, "get-run", path=f"/runs/{body['children'][0]['run_id']}").json
        assert kid["parent"] == f"{run_id}/pay/call" and kid["output"] == {"charged": 7, "receipt": "r-o1"}


@pytest.mark.parametrize("kind", ["memory", "sqs"])
def test_a_child_workflow_this_deployment_does_not_know_fails_the_node(kind: str) -> None:
    wf = Workflow("boss")
    wf.call("nowhere", name="delegate")
    with harness(kind, wf) as h:
        run_id = h.start("boss", 1)
        assert h.run(run_id) == "FAILED"
        err = h.view(run_id).error
        assert err is not None and (err["node"], err["type"]) == ("delegate", "WorkflowNotFound")


def test_the_text_timeline_lists_the_children() -> None:
    from stepchain.observe.timeline import render_text

    with harness("memory", orders_wf()) as h:
        run_id = h.start("orders", ORDER)
        h.run()
        text = render_text(h.view(run_id))
        (charge,) = runs_of(h, "charge")
        assert f"child {charge.run_id} (charge) of pay/call: SUCCEEDED" in text
        assert text.count("\nchild ") == 4
