"""The wait node kind: wait for a named event (delivered through the API) until a deadline.

The node completes when both the event and the WAITING node exist, whichever came first: the
activation that starts waiting finds a buffered event, or the API's delivery finds the node
waiting (:func:`complete_wait`, also called by :class:`~stepchain.engine.runs.RunService`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stepchain.define.workflow import Node, Workflow
from stepchain.engine.nodes.base import NodeKindHandler
from stepchain.engine.routing import event_key
from stepchain.engine.shared import key_of
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.logs import LambdaContextLike
from stepchain.store.base import NodeChanges, RunChanges
from stepchain.store.records import Invocation, NodeRecord, NodeStatus, RunRecord, RunStatus

if TYPE_CHECKING:
    from stepchain.engine.worker import Worker


def wait(w: Worker, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
    if msg.action in ("timeout", "expire"):
        return wait_deadline(w, wf, node, msg)
    key = key_of(msg)
    rec = w.claim(wf, node, msg, key, lctx)
    if isinstance(rec, Outcome):
        return rec
    now = w.clock.now_ms()
    if rec.status is NodeStatus.RUNNING:  # first activation: start waiting
        if w.input_of(wf, node, msg, rec) is None and wf.prev_of(node.id) is not None:
            return w.release(msg, key, rec, "predecessor not finished")
        deadline = now + node.seconds * 1000
        changes = NodeChanges(NodeStatus.WAITING, now, wake_at_ms=deadline, event_name=node.event, task_token=msg.token)
        w.store.finish(msg.run_id, key, changes, owner=rec.owner)
        w.store.update_run(
            msg.run_id, RunChanges(now, status=RunStatus.WAITING, current=key), expect=(RunStatus.RUNNING,)
        )
    elif rec.status is NodeStatus.WAITING and msg.token and msg.token != rec.task_token:
        # Step Functions re-ran the wait task (a new token): remember the live one.
        changes = NodeChanges(NodeStatus.WAITING, now, task_token=msg.token)
        w.store.finish(msg.run_id, key, changes, expect=(NodeStatus.WAITING,))
    elif rec.status is not NodeStatus.WAITING:
        return Outcome(OutcomeKind.DROPPED, detail=f"wait node is {rec.status.value}")
    waiting = w.store.get_node(msg.run_id, key)
    if waiting is None or waiting.status is not NodeStatus.WAITING:
        return Outcome(OutcomeKind.DROPPED)
    assert node.event is not None
    buffered = w.store.get_event(msg.run_id, event_key(node.event, msg.iteration))
    if buffered is not None:
        complete_wait(w, wf, w.get_run(msg.run_id), waiting, buffered)
    return Outcome(OutcomeKind.SUSPENDED, wake_at_ms=waiting.wake_at_ms)


def wait_deadline(w: Worker, wf: Workflow, node: Node, msg: Activation) -> Outcome:
    key = key_of(msg)
    rec = w.store.get_node(msg.run_id, key)
    if rec is None or rec.status is not NodeStatus.WAITING or rec.wake_at_ms is None:
        return Outcome(OutcomeKind.DROPPED, detail="wait is over")
    now = w.clock.now_ms()
    if msg.action == "timeout" and now < rec.wake_at_ms:
        return Outcome(OutcomeKind.SUSPENDED, wake_at_ms=rec.wake_at_ms)
    err = {
        "node": key,
        "type": "EventTimeout",
        "message": f"event {node.event!r} not received within {node.seconds} s",
    }
    inv = Invocation(rec.started_ms or rec.created_ms, now, "timed_out")
    changes = NodeChanges(NodeStatus.FAILED, now, error=err, ended=True, invocation=inv, prior=rec)
    w.fail(msg, key, err, changes, expect=(NodeStatus.WAITING,))
    return Outcome(OutcomeKind.FAILED, error=err)


def complete_wait(
    w: Worker, wf: Workflow, run: RunRecord, rec: NodeRecord, payload_ref: str, *, api: bool = False
) -> bool:
    node = wf.node(rec.node)
    now = w.clock.now_ms()
    msg = Activation(run.run_id, run.workflow, run.version, node.id, token=rec.task_token, iteration=rec.iteration)
    inv = Invocation(rec.started_ms or rec.created_ms, now, "event")
    changes = NodeChanges(NodeStatus.SUCCEEDED, now, output_ref=payload_ref, ended=True, invocation=inv, prior=rec)
    out = w.commit(wf, node, msg, rec.key, changes, owner=None, expect=(NodeStatus.WAITING,))
    if out.kind is not OutcomeKind.DONE:
        return False
    if out.next:
        w.store.update_run(
            run.run_id,
            RunChanges(now, status=RunStatus.RUNNING, current=key_of(out.next[0])),
            expect=(RunStatus.WAITING,),
        )
    if api:  # the API's call: dying here leaves the successor unissued (the sweeper re-issues it)
        w.probe.reached("api_event", run.run_id, rec.key)
    w.lifecycle.resume_wait(msg, out.next[0] if out.next else None)
    return True


class WaitHandler(NodeKindHandler):
    held = NodeStatus.WAITING

    def activate(self, w: Worker, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
        return wait(w, wf, node, msg, lctx)
