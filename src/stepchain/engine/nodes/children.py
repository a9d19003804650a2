"""What the call and parallel node kinds share: child runs, started durably and joined.

A call/parallel node (the *parent node*) starts one child run per branch and waits (WAITING, no
worker held) until the children have ended; then it is *joined*: its output is the child's output
(call) or ``{branch: output}`` (parallel), or it fails. The kind-specific part is a :data:`Verdict`
function (:mod:`~stepchain.engine.nodes.call`, :mod:`~stepchain.engine.nodes.parallel`).

Exactly one child per (parent run, node key, branch, generation): the child's run id is derived
from them (:func:`child_run_id`) and its creation is a conditional write keyed by that id (an
idempotency key), so a crashed or duplicate parent activation finds the same child. The child's
RUN item carries ``parent`` (``<parent run id>/<node key>/<branch>``).

When a run with a parent ends (any path: its last checkpoint, a failure, a transport's give-up,
a cancel through the API), :func:`stepchain.engine.lifecycle.run_ended` notifies the parent node,
the transport's way (``RunLifecycle.rejoin``): on a queue the node's ``join`` activation; on Step
Functions (no messages) the join right there and the parent task's token completed. The join
reads the children's RUN items (the durable truth) and commits the parent node with one
conditional write (WAITING -> SUCCEEDED/FAILED): repeated notifications are harmless. A
notification lost to a crash is re-sent by the sweeper (:func:`stuck_join`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from stepchain.define.workflow import CHILD_KINDS, Node, Workflow
from stepchain.deploy.asl_parts import _callback_task, _input
from stepchain.engine.nodes import stream
from stepchain.engine.nodes.base import NodeKindHandler, ViewScope
from stepchain.engine.nodes.child_state import child_start, joined_state
from stepchain.engine.nodes.recovery import Recovery, RecoveryView, default_recovery
from stepchain.engine.nodes.scope import ActivationScope, KindServices
from stepchain.engine.routing import successor
from stepchain.engine.shared import LEASE_GRACE_MS, error_of, key_of
from stepchain.exceptions import TerminalError, ValidationError, VersionMismatch, WorkflowNotFound
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.logs import LambdaContextLike, logger
from stepchain.observe.ledger import NodeView
from stepchain.store.base import ACTIVE_RUN, FinishResult, NewRun, NodeChanges, NodeInit
from stepchain.store.records import Invocation, NodeRecord, NodeStatus, RunRecord, RunStatus, node_key

#: what a kind makes of its children: None (wait), ("ok", output ref) or ("fail", error)
Verdict = tuple[str, Any] | None
Judge = Callable[[KindServices, Node, str, dict[str, RunRecord]], Verdict]


def child_run_id(run_id: str, key: str, branch: str, generation: int = 0) -> str:
    """The child's run id: the parent's time prefix and a hash of (parent, node key, branch,
    generation): 24 hex chars like any run id, a valid Step Functions execution name."""
    digest = hashlib.sha256(f"{run_id}/{key}/{branch}/g{generation}".encode()).hexdigest()
    return run_id[:12] + digest[:12]


def split_parent(parent: str) -> tuple[str, str, str]:
    """``<parent run id>/<node key>/<branch>`` -> its three parts."""
    run_id, key, branch = parent.split("/", 2)
    return run_id, key, branch


def child_ids(node: Node, run_id: str, key: str, generation: int) -> dict[str, str]:
    """Branch -> child run id of one generation of the node."""
    return {b: child_run_id(run_id, key, b, generation) for b, _ in node.branches}


def child_runs(wf: Workflow, run_id: str, recs: Iterable[NodeRecord]) -> list[str]:
    """Child run ids of the run's call/parallel nodes (their current generation)."""
    out: list[str] = []
    for rec in recs:
        if wf.has_node(rec.node) and (node := wf.node(rec.node)).kind in CHILD_KINDS:
            out.extend(child_ids(node, run_id, rec.key, rec.generation).values())
    return out


# ---------------------------------------------------------------------------------- the parent node
class ChildrenHandler(NodeKindHandler):
    """A call or parallel node: it waits (WAITING) while its children run; ``judge`` says what their
    ends make of it (:mod:`stepchain.engine.nodes.call`, :mod:`stepchain.engine.nodes.parallel`)."""

    held = NodeStatus.WAITING
    callback_task = True
    children_per_generation = True

    def __init__(self, judge: Judge, *, reads_child_outputs: bool = False) -> None:
        self.judge = judge
        self.reads_child_outputs = reads_child_outputs

    def join_here(self, scope: ActivationScope) -> tuple[Outcome, NodeRecord | None] | None:
        return join(scope.services, scope.wf, scope.node, scope.msg, self.judge)

    def recover(self, view: RecoveryView) -> Recovery:
        """WAITING or SUCCEEDED: a child never created (re-issue the node: it creates it), or a
        child's notification lost (join the node: :func:`stepchain.engine.lifecycle.rejoin`)."""
        if view.rec.status not in (NodeStatus.WAITING, NodeStatus.SUCCEEDED):
            return default_recovery(view)
        stuck = stuck_join(view.services, view.wf, view.node, view.run.run_id, view.rec, view.overdue, self.judge)
        if stuck == "start":  # a child run was never created: the node's activation creates it
            return Recovery(msgs=[view.act])
        if stuck == "join":
            return Recovery(joins=[view.act.with_(action="join")])
        return Recovery()

    def view_rows(self, scope: ViewScope, node: Node, nv: NodeView) -> None:
        roll_up(scope, node, nv)

    def asl_states(self, states: dict[str, Any], node: Node, nxt: str, failed: str) -> None:
        """A call/parallel node: its task starts the child runs (their own executions) and waits for
        its token, which the join completes when the children have ended (engine/nodes/children.py)."""
        catch = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failed}]
        # its input as every node's (``_input``): a routed-to node's predecessor is not its chain's
        _callback_task(states, node, nxt, _input({"node": node.id, "token.$": "$$.Task.Token"}), catch)

    def activate(self, scope: ActivationScope) -> Outcome:
        assert scope.lctx is not None
        return activate(scope.services, scope.wf, scope.node, scope.msg, scope.lctx, self.judge)


def activate(
    w: KindServices, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike, judge: Judge
) -> Outcome:
    """First activation: wait (WAITING, the task token kept), start the children, try the join.
    Met again (a duplicate, a takeover, Step Functions' retry with a new token): the same, idempotently."""
    if msg.action == "join":
        return join(w, wf, node, msg, judge)[0]
    key = key_of(msg)
    rec = w.claim(wf, node, msg, key, lctx)
    if isinstance(rec, Outcome):
        return rec
    now = w.clock.now_ms()
    current = rec
    if rec.status is NodeStatus.RUNNING:
        input_ref = w.input_of(wf, node, msg, rec)
        if input_ref is None:
            return w.release(msg, key, rec, "predecessor not finished")
        state = w.state_of(wf, node, msg, rec)  # kept with the node: children start from it (share_state)
        kids = child_ids(node, msg.run_id, key, rec.generation)
        events: list[stream.Event] = [
            ("started", {"attempt": rec.attempts}, "started"),
            ("child_started", {"children": kids}, "children"),
        ]
        stream.write(w, wf, node, msg, rec, events)
        changes = NodeChanges(NodeStatus.WAITING, now, input_ref=input_ref, task_token=msg.token, state_ref=state)
        if w.store.finish(msg.run_id, key, changes, owner=rec.owner) is not FinishResult.OK:
            return Outcome(OutcomeKind.DROPPED, detail="lease lost")
        current = replace(
            rec, status=NodeStatus.WAITING, input_ref=input_ref, task_token=msg.token, owner=None, state_ref=state
        )
    elif rec.status is NodeStatus.WAITING and msg.token and msg.token != rec.task_token:
        # Step Functions ran the task again (a new token): remember the live one
        changes = NodeChanges(NodeStatus.WAITING, now, task_token=msg.token)
        if w.store.finish(msg.run_id, key, changes, expect=(rec.status,)) is FinishResult.OK:
            current = replace(rec, task_token=msg.token)
    elif rec.status is not NodeStatus.WAITING:
        return Outcome(OutcomeKind.DROPPED, detail=f"{node.kind.value} node is {rec.status.value}")
    if current.input_ref is None:
        return Outcome(OutcomeKind.DROPPED, detail="no input")
    try:
        start_children(w, wf, node, msg.run_id, key, current)
    except (WorkflowNotFound, VersionMismatch, TerminalError, ValidationError) as exc:  # no deployment of this
        # one can run the child (or give it the state it shares: a child without state, a mismatch)
        err = error_of(exc, key)
        w.fail(msg, key, err, NodeChanges(NodeStatus.FAILED, now, error=err, ended=True), expect=(NodeStatus.WAITING,))
        return Outcome(OutcomeKind.FAILED, error=err)
    after = w.store.get_node(msg.run_id, key)
    if after is not None and after.status is NodeStatus.CANCELLED:  # the run was cancelled meanwhile: its
        # cancel may have cascaded before these children existed
        w.cancel_runs(list(child_ids(node, msg.run_id, key, current.generation).values()))
        return Outcome(OutcomeKind.DROPPED, detail="cancelled")
    out = join(w, wf, node, msg, judge, after)[0]
    return Outcome(OutcomeKind.SUSPENDED) if out.kind is OutcomeKind.DROPPED else out


def start_children(w: KindServices, wf: Workflow, node: Node, run_id: str, key: str, rec: NodeRecord) -> None:
    """Start every branch's child run unless it exists (then re-issue its first activation only if
    that may have been lost, as a retried start does)."""
    assert rec.input_ref is not None
    owner: str | None = None  # a child run is its parent's caller's (who may then read it)
    for branch, cid in child_ids(node, run_id, key, rec.generation).items():
        workflow = dict(node.branches)[branch]
        existing = w.store.get_run(cid)
        if existing is not None and existing.status is not RunStatus.RUNNING:
            continue  # it moved past its first node (or ended): nothing of its start can be lost
        child_wf = w.registry.get(workflow)
        first = child_wf.first()
        now = w.clock.now_ms()
        if existing is None:
            if owner is None and (parent := w.store.get_run(run_id)) is not None:
                owner = parent.owner
            new = NewRun(
                cid,
                child_wf.name,
                child_wf.version,
                rec.input_ref,
                now,
                NodeInit(cid, first.id, first.id, rec.input_ref, state_ref=child_start(w, wf, node, rec, child_wf)),
                idempotency_key=f"child-{cid}",
                request_hash=hashlib.sha256(f"{cid}|{rec.input_ref}".encode()).hexdigest(),
                extra={"parent": f"{run_id}/{key}/{branch}"},
                owner=owner,
            )
            existing, created = w.store.create_run(new)
            if created:
                logger.info("child run started", extra={"run_id": run_id, "node": key, "child": cid})
                w.lifecycle.start(existing, Activation(cid, existing.workflow, existing.version, first.id))
                continue
        first_rec = w.store.get_node(cid, first.id)
        if existing.status is RunStatus.RUNNING and first_rec is not None and first_rec.status is NodeStatus.PENDING:
            w.lifecycle.start(existing, Activation(cid, existing.workflow, existing.version, first.id))


def children_of(w: KindServices, node: Node, run_id: str, rec: NodeRecord) -> dict[str, RunRecord] | None:
    """Branch -> child run of the node's current generation; None while one is not created yet."""
    out = {}
    for branch, cid in child_ids(node, run_id, rec.key, rec.generation).items():
        child = w.store.get_run(cid)
        if child is None:
            return None
        out[branch] = child
    return out


def child_error(key: str, branch: str, child: RunRecord) -> dict[str, str]:
    """The error of a failed (or cancelled) child, as the parent node records it."""
    what = "was cancelled" if child.status is RunStatus.CANCELLED else "failed"
    cause = child.error or {}
    detail = f": {cause.get('type', '')}: {cause.get('message', '')}" if cause else ""
    return {
        "node": key,
        "type": "ChildRunCancelled" if child.status is RunStatus.CANCELLED else "ChildRunFailed",
        "message": f"child run {child.run_id} ({child.workflow}, branch {branch}) {what}{detail}"[:1000],
        "child": child.run_id,
    }


def join(
    w: KindServices, wf: Workflow, node: Node, msg: Activation, judge: Judge, rec: NodeRecord | None = None
) -> tuple[Outcome, NodeRecord | None]:
    """Commit the node if its children say so (one conditional write, WAITING -> SUCCEEDED or
    FAILED); else DROPPED. A node already joined is served from its checkpoint (a late join
    re-issues its successor)."""
    key = key_of(msg)
    rec = rec or w.store.get_node(msg.run_id, key)
    if rec is None:
        return Outcome(OutcomeKind.DROPPED, detail="node missing"), None
    if rec.status is NodeStatus.SUCCEEDED:
        if msg.action == "join" and rec.ended_ms is not None and w.clock.now_ms() - rec.ended_ms <= LEASE_GRACE_MS:
            return Outcome(OutcomeKind.DONE, detail="joined"), rec  # another child's notification, just now
        return w.served_from_checkpoint(wf, node, msg, rec), rec
    if rec.status is not NodeStatus.WAITING:
        return Outcome(OutcomeKind.DROPPED, detail=f"node is {rec.status.value}"), rec
    kids = children_of(w, node, msg.run_id, rec)
    verdict = None if kids is None else judge(w, node, key, kids)
    if verdict is None:
        return Outcome(OutcomeKind.DROPPED, detail="children still running"), rec
    assert kids is not None
    now = w.clock.now_ms()
    state: str | None = None
    out_ref: str | None = verdict[1] if verdict[0] == "ok" else None
    if verdict[0] == "ok":
        try:
            state = joined_state(w, wf, node, rec, kids)  # the branches' state changes, in branch order
        except (TerminalError, ValidationError) as exc:  # a branch's state does not fit the parent's model
            verdict = "fail", error_of(exc, key)
    ended = {b: {"run_id": c.run_id, "status": c.status.value} for b, c in kids.items() if c.status.finished}
    end: stream.Event = (
        ("failed", {"error": verdict[1]}, "failed") if verdict[0] == "fail" else ("succeeded", {}, "succeeded")
    )
    stream.write(w, wf, node, msg, rec, [("child_ended", {"children": ended}, "children_ended"), end])
    if verdict[0] == "fail":
        err = verdict[1]
        inv = Invocation(rec.started_ms or rec.created_ms, now, "failed")
        changes = NodeChanges(NodeStatus.FAILED, now, error=err, ended=True, invocation=inv, prior=rec)
        w.fail(msg, key, err, changes, expect=(NodeStatus.WAITING,))
        w.cancel_runs([c.run_id for c in kids.values() if c.status in ACTIVE_RUN])
        return Outcome(OutcomeKind.FAILED, error=err), rec
    inv = Invocation(rec.started_ms or rec.created_ms, now, "joined")
    changes = NodeChanges(
        NodeStatus.SUCCEEDED, now, output_ref=out_ref, ended=True, invocation=inv, prior=rec, state_ref=state
    )
    out = w.commit(wf, node, msg.with_(action="run"), key, changes, owner=None, expect=(NodeStatus.WAITING,))
    if out.kind is OutcomeKind.DROPPED:  # joined by another notification meanwhile
        return Outcome(OutcomeKind.DONE, detail="joined by another child"), rec
    return out, rec


def stuck_join(
    w: KindServices,
    wf: Workflow,
    node: Node,
    run_id: str,
    rec: NodeRecord,
    overdue: Callable[..., bool],
    judge: Judge,
) -> str:
    """The sweeper's view of a parent node: ``"start"`` (a child was never created: re-issue the
    node's activation), ``"join"`` (its children ended long ago, or it joined long ago and its
    successor never started: :func:`stepchain.engine.lifecycle.rejoin`), or ``""``."""
    if rec.status is NodeStatus.SUCCEEDED:
        succ = successor(wf, node, rec.iteration, rec.route)  # in the node's own iteration
        started = succ is not None and w.store.get_node(run_id, node_key(succ[0].id, None, succ[1])) is not None
        return "join" if not started and overdue(rec.ended_ms, rec.updated_ms) else ""
    if rec.status is not NodeStatus.WAITING:
        return ""
    kids = children_of(w, node, run_id, rec)
    if kids is None:
        return "start" if overdue(rec.updated_ms) else ""
    if judge(w, node, rec.key, kids) is None:
        return ""
    return "join" if overdue(*(c.ended_ms or c.updated_ms for c in kids.values() if c.status.finished)) else ""


# ---------------------------------------------------------------------------------- the ledger
#: the totals of a child run that are added to its parent's
ROLLED_UP = ("invocations", "compute_ms", "cost_usd", "compute_usd", "input_tokens", "output_tokens")


def roll_up(scope: ViewScope, node: Node, nv: NodeView) -> None:
    """Add the node's child runs (every generation, recursively) to the run's view: listed in
    ``children`` (id, node, branch, status, their totals) and their costs added to ``totals``."""
    view = scope.view
    rec = scope.store.get_node(view.run_id, nv.key)
    for gen in range((rec.generation if rec else 0) + 1):
        for branch, cid in child_ids(node, view.run_id, nv.key, gen).items():
            child = scope.store.get_run(cid)
            if child is None:
                continue
            cv = scope.describe_child(child)
            sub = {k: cv.totals[k] for k in ROLLED_UP}
            view.children.append(
                {
                    "run_id": cid,
                    "workflow": child.workflow,
                    "node": nv.key,
                    "branch": branch,
                    "generation": gen,
                    "status": child.status.value,
                    "totals": sub,
                }
            )
            for k in ROLLED_UP:
                view.totals[k] += sub[k]
