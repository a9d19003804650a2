"""The wait node kind: wait for a named event (delivered through the API) until a deadline.

The node completes when both the event and the WAITING node exist, whichever came first: the
activation that starts waiting finds a buffered event, or the API's delivery finds the node
waiting (:func:`complete_wait`, also called by :class:`~stepchain.engine.runs.RunService`).
"""

from __future__ import annotations

from typing import Any

from stepchain.define.nodes import Node
from stepchain.define.state import StateBox, state_update
from stepchain.define.workflow import Workflow
from stepchain.deploy.asl_parts import FAILED, SIGNAL_ERRORS, TASK_TIMEOUT_MARGIN_S, _callback_task, _ids, _input, _task
from stepchain.engine.nodes import stream
from stepchain.engine.nodes.base import NodeKindHandler
from stepchain.engine.nodes.recovery import Recovery, RecoveryView, default_recovery, has_successor
from stepchain.engine.nodes.scope import ActivationScope, KindServices
from stepchain.engine.routing import event_key
from stepchain.engine.shared import key_of
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.logs import LambdaContextLike
from stepchain.store.base import NodeChanges, RunChanges
from stepchain.store.records import Invocation, NodeRecord, NodeStatus, RunRecord, RunStatus


def wait(w: KindServices, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
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
        state = w.state_of(wf, node, msg, rec)  # kept with the wait: its successor goes on from it
        waiting_for = {"event": node.event, "iteration": msg.iteration, "deadline": deadline}
        started = ("started", {"attempt": rec.attempts}, "started")
        stream.write(w, wf, node, msg, rec, [started, ("waiting_for", waiting_for, "waiting")])
        changes = NodeChanges(
            NodeStatus.WAITING,
            now,
            wake_at_ms=deadline,
            event_name=node.event,
            task_token=msg.token,
            state_ref=state,
        )
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


def wait_deadline(w: KindServices, wf: Workflow, node: Node, msg: Activation) -> Outcome:
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
    stream.write(w, wf, node, msg, rec, [("failed", {"error": err}, "failed")])
    changes = NodeChanges(NodeStatus.FAILED, now, error=err, ended=True, invocation=inv, prior=rec)
    w.fail(msg, key, err, changes, expect=(NodeStatus.WAITING,))
    return Outcome(OutcomeKind.FAILED, error=err)


def complete_wait(
    w: KindServices, wf: Workflow, run: RunRecord, rec: NodeRecord, payload_ref: str, *, api: bool = False
) -> bool:
    node = wf.node(rec.node)
    now = w.clock.now_ms()
    msg = Activation(run.run_id, run.workflow, run.version, node.id, token=rec.task_token, iteration=rec.iteration)
    inv = Invocation(rec.started_ms or rec.created_ms, now, "event")
    state = merged_state(w, wf, node, rec, payload_ref)
    stream.write(w, wf, node, msg, rec, [("succeeded", {"event": node.event}, "succeeded")])
    changes = NodeChanges(
        NodeStatus.SUCCEEDED, now, output_ref=payload_ref, ended=True, invocation=inv, prior=rec, state_ref=state
    )
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


def merged_state(w: KindServices, wf: Workflow, node: Node, rec: NodeRecord, payload_ref: str) -> str | None:
    """The durable state after the wait: the one it waited with, the event's payload merged in
    (``into_state``). A function of the two references: completing the wait again gives the same."""
    if wf.state is None or not node.into_state:
        return None  # the commit passes on the state the wait holds
    box = StateBox(wf.state, rec.state_ref, w.codec.decode)
    box.update(state_update(w.codec.decode(payload_ref)))
    return w.codec.encode(box.dump(), scope=f"{rec.run_id}/{rec.key}/state")


class WaitHandler(NodeKindHandler):
    held = NodeStatus.WAITING
    callback_task = True

    def activate(self, scope: ActivationScope) -> Outcome:
        assert scope.lctx is not None
        return wait(scope.services, scope.wf, scope.node, scope.msg, scope.lctx)

    def recover(self, view: RecoveryView) -> Recovery:
        """WAITING with its event stored: finish the event's delivery; past its deadline: the
        deadline check. SUCCEEDED, its successor never created: also finish the event's delivery
        (it moves the run out of WAITING and completes a Step Functions callback)."""
        rec, node = view.rec, view.node
        assert node.event is not None
        name = event_key(node.event, rec.iteration)
        if rec.status is NodeStatus.WAITING:
            if view.services.store.get_event(view.run.run_id, name) is not None:
                return Recovery(events=[name])
            if rec.wake_at_ms is not None and view.overdue(rec.wake_at_ms):
                return Recovery(msgs=[view.act.with_(action="timeout")])
            return Recovery()
        out = default_recovery(view)
        if rec.status is NodeStatus.SUCCEEDED and out.msgs and has_successor(view):
            out.events.append(name)
        return out

    def asl_states(self, states: dict[str, Any], node: Node, nxt: str, failed: str) -> None:
        """The wait task sleeps in Step Functions until SendTaskSuccess (the event) or its timeout."""
        expire = f"{node.id}.expire"
        # Retry: not States.Timeout (that is the event's deadline: it goes to <wait>.expire)
        catch = [
            {"ErrorEquals": ["States.Timeout"], "ResultPath": "$.error", "Next": expire},
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failed},
        ]
        payload = _input({"node": node.id, "token.$": "$$.Task.Token"})
        _callback_task(states, node, nxt, payload, catch, TimeoutSeconds=node.seconds)
        timeout = node.timeout_s + TASK_TIMEOUT_MARGIN_S
        # DONE: the event did arrive (its SendTaskSuccess was lost); any signal: the run failed
        states[expire] = _task(
            node.function_name,
            _ids({"node": node.id, "action": "expire"}),
            next_state=nxt,
            timeout_s=timeout,
            policy=node.retry,
            catch_to=failed,
            signals=[{"ErrorEquals": list(SIGNAL_ERRORS), "ResultPath": "$.error", "Next": FAILED}],
        )
