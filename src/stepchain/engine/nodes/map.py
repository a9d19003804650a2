"""The map node kind: fan out one activation per item of a list, run them in ``max_concurrency``
lanes (item i, i+w, i+2w ...), and join their outputs into a list.

Each item is a step activation (:func:`stepchain.engine.nodes.step.run_step`). After an item's
checkpoint the map says what comes next (the next item of its lane, or at a lane's end, the
join); the join commits the map node like any other, so the chain goes on from there.
"""

from __future__ import annotations

from typing import Any

from stepchain.define.nodes import Node
from stepchain.define.workflow import Workflow
from stepchain.deploy.asl_parts import TASK_TIMEOUT_MARGIN_S, _ids, _input, _loop
from stepchain.engine.nodes import stream
from stepchain.engine.nodes.base import NodeKindHandler
from stepchain.engine.nodes.recovery import Overdue, Recovery, RecoveryView, default_recovery, lost
from stepchain.engine.nodes.scope import ActivationScope, KindServices
from stepchain.engine.nodes.step import run_step
from stepchain.engine.shared import activation, key_of
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.logs import LambdaContextLike
from stepchain.store.base import NodeChanges, NodeInit
from stepchain.store.records import Invocation, NodeRecord, NodeStatus, node_key


def fan_out(w: KindServices, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
    key = key_of(msg)
    rec = w.claim(wf, node, msg, key, lctx)
    if isinstance(rec, Outcome):
        return rec
    input_ref = w.input_of(wf, node, msg, rec)
    if input_ref is None:
        return w.release(msg, key, rec, "predecessor not finished")
    now = w.clock.now_ms()
    items = w.codec.decode(input_ref)
    too_wide = w.limits.map_error(node.id, len(items)) if isinstance(items, list) else None
    if not isinstance(items, list) or too_wide:
        got = type(items).__name__
        err = {"node": node.id, "type": "TypeError", "message": f"map {node.id!r} needs a list, got {got}"}
        err = too_wide or err
        w.fail(msg, key, err, NodeChanges(NodeStatus.FAILED, now, error=err, ended=True), owner=rec.owner)
        return Outcome(OutcomeKind.FAILED, error=err)
    for i, item in enumerate(items):
        ref = w.codec.encode(item, scope=f"{msg.run_id}/{key}/items")
        item_key = node_key(node.id, i, msg.iteration)
        w.store.put_node_if_absent(NodeInit(msg.run_id, item_key, node.id, ref, index=i), now)
    events = [("started", {"attempt": rec.attempts}, "started"), ("fanned_out", {"items": len(items)}, "fanned_out")]
    stream.write(w, wf, node, msg, rec, events)
    inv = Invocation(now, w.clock.now_ms(), "fanned_out")
    state = w.state_of(wf, node, msg, rec)  # kept with the map: its join passes it on (items only read input)
    changes = NodeChanges(
        NodeStatus.FANNED_OUT, now, items_total=len(items), invocation=inv, prior=rec, state_ref=state
    )
    w.store.finish(msg.run_id, key, changes, owner=rec.owner)
    if not items:
        return join(w, wf, node, msg)
    window = node.max_concurrency or len(items)
    first = tuple(activation(msg, node.id, i) for i in range(min(window, len(items))))
    return Outcome(OutcomeKind.FANOUT, next=first, items=len(items))


def resume_fan_out(w: KindServices, node: Node, msg: Activation, rec: NodeRecord) -> Outcome:
    """The map was fanned out before (then the worker died, or this is a duplicate): re-activate
    the head of every lane whose previous item is done but whose next item never started."""
    total = rec.items_total or 0
    window = node.max_concurrency or total
    items = {i.index: i for i in w.store.list_nodes(msg.run_id, f"{key_of(msg)}#") if i.index is not None}
    heads = []
    for i, item in sorted(items.items()):
        prev = items.get(i - window)
        if item.status is NodeStatus.PENDING and (i < window or (prev and prev.status is NodeStatus.SUCCEEDED)):
            heads.append(activation(msg, node.id, i))
    return Outcome(OutcomeKind.FANOUT, next=tuple(heads), items=total)


def after_item(w: KindServices, wf: Workflow, node: Node, msg: Activation) -> Outcome:
    """An item is done: the map runs ``max_concurrency`` lanes (item i, i+w, i+2w ...); start
    the next item of this lane, or, at a lane's end, try the join."""
    assert msg.index is not None
    parent = w.store.get_node(msg.run_id, node_key(node.id, None, msg.iteration))
    total = parent.items_total if parent is not None and parent.items_total is not None else 0
    window = node.max_concurrency or total
    nxt_i = msg.index + window
    if nxt_i < total:
        nxt_rec = w.store.get_node(msg.run_id, node_key(node.id, nxt_i, msg.iteration))
        if nxt_rec is not None and nxt_rec.status is NodeStatus.PENDING:
            return Outcome(OutcomeKind.DONE, next=(activation(msg, node.id, nxt_i),))
        return Outcome(OutcomeKind.DONE)
    joined = join(w, wf, node, msg.with_(index=None))
    return Outcome(OutcomeKind.DONE, next=joined.next if joined.kind is OutcomeKind.DONE else ())


def join(w: KindServices, wf: Workflow, node: Node, msg: Activation) -> Outcome:
    """Fan-in: when every item succeeded, the map's output is the list of their outputs."""
    key = node_key(node.id, None, msg.iteration)
    parent = w.store.get_node(msg.run_id, key)
    if parent is None:
        return Outcome(OutcomeKind.DROPPED, detail="map node missing")
    if parent.status is NodeStatus.SUCCEEDED:
        if msg.action == "join":  # Step Functions' join after its Map: the last item already joined
            return Outcome(OutcomeKind.DONE, detail="joined")
        return w.served_from_checkpoint(wf, node, msg.with_(index=None), parent)
    items = w.store.list_nodes(msg.run_id, f"{key}#")
    failed = [i for i in items if i.status is NodeStatus.FAILED]
    if failed:
        return Outcome(OutcomeKind.FAILED, error=failed[0].error)
    if (
        parent.status is not NodeStatus.FANNED_OUT
        or len(items) < (parent.items_total or 0)
        or any(i.status is not NodeStatus.SUCCEEDED for i in items)
    ):
        return Outcome(OutcomeKind.DROPPED, detail="items still running")
    now = w.clock.now_ms()
    out_ref = w.codec.encode([w.codec.decode(i.output_ref) for i in items], scope=f"{msg.run_id}/{key}")
    done = {"items": len(items), "cost": {"usd": sum(i.cost_usd for i in items)}}
    stream.write(w, wf, node, msg.with_(index=None), parent, [("succeeded", done, "succeeded")])
    changes = NodeChanges(
        NodeStatus.SUCCEEDED,
        now,
        output_ref=out_ref,
        ended=True,
        add_duration_ms=sum(i.duration_ms for i in items),
        add_cost_nano=sum(round(i.cost_usd * 1e9) for i in items),
        add_input_tokens=sum(i.input_tokens for i in items),
        add_output_tokens=sum(i.output_tokens for i in items),
        state_ref=parent.state_ref,
    )
    out = w.commit(wf, node, msg.with_(index=None), key, changes, owner=None, expect=(NodeStatus.FANNED_OUT,))
    if out.kind is OutcomeKind.DROPPED:
        return Outcome(OutcomeKind.DONE, detail="joined by another item")
    return out


def lost_items(view: RecoveryView) -> list[Activation]:
    """The sweeper's view of a fanned-out map: the items whose activation was lost (a lane's head,
    an item after its lane's previous one), and the lane-end item to re-issue when every item
    succeeded long ago but the map never joined (served from its checkpoint, it joins)."""
    parent, node = view.rec, view.node
    total = parent.items_total or 0
    window = node.max_concurrency or total
    its = (r for r in view.nodes.values() if r.node == node.id and r.iteration == parent.iteration)
    items = {r.index: r for r in its if r.index is not None}
    msgs = [
        view.act.with_(index=i) for i, item in sorted(items.items()) if _item_lost(i, item, items, window, view.overdue)
    ]
    joining = _joining_item(items, total, window, view.overdue)
    if joining is not None:
        msgs.append(view.act.with_(index=joining))
    return msgs


def _item_lost(i: int, item: NodeRecord, items: dict[int, NodeRecord], window: int, overdue: Overdue) -> bool:
    if item.status is not NodeStatus.PENDING:
        return lost(item, overdue)
    prev = items.get(i - window)
    if i < window:
        due = item.created_ms
    elif prev is not None and prev.status is NodeStatus.SUCCEEDED:
        due = prev.ended_ms or prev.created_ms
    else:
        return False  # waits for its lane's previous item
    return overdue(due, item.updated_ms)


def _joining_item(items: dict[int, NodeRecord], total: int, window: int, overdue: Overdue) -> int | None:
    done = [r for r in items.values() if r.status is NodeStatus.SUCCEEDED]
    if not total or len(done) != total:
        return None
    last = max(done, key=lambda r: r.ended_ms or 0)
    ends = [r for r in done if r.index is not None and r.index + window >= total]
    if not ends or not overdue(last.ended_ms):
        return None
    return max(ends, key=lambda r: r.ended_ms or 0).index  # it joins


def _item_processor(node: Node) -> dict[str, Any]:
    states: dict[str, Any] = {}
    item = f"{node.id}.item"
    _loop(
        states,
        item,
        node.function_name,
        _ids({"node": node.id, "index.$": "$.index"}),
        on_done=f"{item}.done",
        timeout_s=node.timeout_s + TASK_TIMEOUT_MARGIN_S,
        policy=node.retry,
        catch_to=None,  # the error fails the Map state, whose Catch marks the run failed
        failed=f"{item}.failed",
        dropped=f"{item}.failed",
    )
    states[f"{item}.done"] = {"Type": "Succeed"}
    states[f"{item}.failed"] = {"Type": "Fail", "Error": "stepchain.ItemFailed", "Cause": f"an item of {node.id}"}
    return {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": item, "States": states}


class MapHandler(NodeKindHandler):
    def activate(self, scope: ActivationScope) -> Outcome:
        w, wf, node, msg = scope.services, scope.wf, scope.node, scope.msg
        if msg.action == "join":
            return join(w, wf, node, msg)
        assert scope.lctx is not None
        if msg.index is not None:  # an item: a step
            return run_step(w, wf, node, msg, scope.lctx)
        return fan_out(w, wf, node, msg, scope.lctx)

    def on_busy(self, scope: ActivationScope, rec: NodeRecord) -> NodeRecord | Outcome | None:
        if rec.status is not NodeStatus.FANNED_OUT:
            return None
        return resume_fan_out(scope.services, scope.node, scope.msg, rec)

    def owns_successor(self, scope: ActivationScope) -> bool:
        return scope.msg.index is not None

    def after_checkpoint(self, scope: ActivationScope) -> Outcome:
        return after_item(scope.services, scope.wf, scope.node, scope.msg)

    def recover(self, view: RecoveryView) -> Recovery:
        if view.rec.status is NodeStatus.FANNED_OUT:
            return Recovery(msgs=lost_items(view))
        return default_recovery(view)

    def asl_states(self, states: dict[str, Any], node: Node, nxt: str, failed: str) -> None:
        """The fan-out Task (FANOUT + items, or DONE) -> ``.route`` Choice -> ``.items`` Map (an
        item: a Task each) -> ``.join`` Task (action "join") -> next."""
        timeout = node.timeout_s + TASK_TIMEOUT_MARGIN_S
        items, join = f"{node.id}.items", f"{node.id}.join"
        _loop(
            states,
            node.id,
            node.function_name,
            _input({"node": node.id}),
            on_done=f"{node.id}.route",  # FANOUT and DONE are both returned
            timeout_s=timeout,
            policy=node.retry,
            catch_to=failed,
        )
        states[f"{node.id}.route"] = {
            "Type": "Choice",
            "Choices": [{"Variable": "$.status", "StringEquals": "FANOUT", "Next": items}],
            "Default": nxt,  # DONE: no items, or joined before: go on
        }
        states[items] = {
            "Type": "Map",
            "ItemsPath": "$.items",
            "MaxConcurrency": node.max_concurrency,
            "ItemSelector": _ids({"index.$": "$$.Map.Item.Value"}),
            "ItemProcessor": _item_processor(node),
            "ResultPath": None,
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": failed}],
            "Next": join,
        }
        _loop(
            states,
            join,
            node.function_name,
            _ids({"node": node.id, "action": "join"}),
            on_done=nxt,
            timeout_s=timeout,
            policy=node.retry,
            catch_to=failed,
        )
