"""The sleep node kind: pass its input on after ``seconds``, without holding a worker."""

from __future__ import annotations

from stepchain.define.nodes import Node
from stepchain.define.workflow import Workflow
from stepchain.engine.nodes import stream
from stepchain.engine.nodes.base import NodeKindHandler
from stepchain.engine.nodes.scope import ActivationScope, KindServices
from stepchain.engine.shared import key_of
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.logs import LambdaContextLike
from stepchain.store.base import NodeChanges
from stepchain.store.records import Invocation, NodeStatus


def sleep(w: KindServices, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
    key = key_of(msg)
    rec = w.claim(wf, node, msg, key, lctx)
    if isinstance(rec, Outcome):
        return rec
    now = w.clock.now_ms()
    if rec.status is NodeStatus.RUNNING:  # first activation: start sleeping
        input_ref = w.input_of(wf, node, msg, rec)
        if input_ref is None:
            return w.release(msg, key, rec, "predecessor not finished")
        wake = now + node.seconds * 1000
        events = [("started", {"attempt": rec.attempts}, "started"), ("waiting_for", {"wake_at": wake}, "waiting")]
        stream.write(w, wf, node, msg, rec, events)
        state = w.state_of(wf, node, msg, rec)  # kept with the sleep: it passes the state on
        changes = NodeChanges(NodeStatus.SLEEPING, now, wake_at_ms=wake, input_ref=input_ref, state_ref=state)
        w.store.finish(msg.run_id, key, changes, owner=rec.owner)
        return Outcome(OutcomeKind.WAIT, wake_at_ms=wake)
    if rec.status is not NodeStatus.SLEEPING or rec.wake_at_ms is None:
        return Outcome(OutcomeKind.DROPPED, detail=f"sleep node is {rec.status.value}")
    if now < rec.wake_at_ms:
        return Outcome(OutcomeKind.WAIT, wake_at_ms=rec.wake_at_ms)
    inv = Invocation(rec.started_ms or rec.created_ms, now, "slept")
    stream.write(w, wf, node, msg, rec, [("succeeded", {}, "succeeded")])
    changes = NodeChanges(NodeStatus.SUCCEEDED, now, output_ref=rec.input_ref, ended=True, invocation=inv, prior=rec)
    return w.commit(wf, node, msg, key, changes, owner=None, expect=(NodeStatus.SLEEPING,))


class SleepHandler(NodeKindHandler):
    held = NodeStatus.SLEEPING

    def activate(self, scope: ActivationScope) -> Outcome:
        assert scope.lctx is not None
        return sleep(scope.services, scope.wf, scope.node, scope.msg, scope.lctx)
