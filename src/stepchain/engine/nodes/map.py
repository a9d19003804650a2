"""The map node kind: fan out one activation per item of a list, run them in ``max_concurrency``
lanes (item i, i+w, i+2w ...), and join their outputs into a list.

Each item is a step activation (:func:`stepchain.engine.nodes.step.run_step`). After an item's
checkpoint the map says what comes next (the next item of its lane, or at a lane's end, the
join); the join commits the map node like any other, so the chain goes on from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stepchain.define.workflow import Node, Workflow
from stepchain.engine.nodes.base import NodeKindHandler
from stepchain.engine.nodes.step import run_step
from stepchain.engine.shared import activation, key_of
from stepchain.handoff.messages import Activation, Outcome, OutcomeKind
from stepchain.logs import LambdaContextLike
from stepchain.store.base import NodeChanges, NodeInit
from stepchain.store.records import Invocation, NodeRecord, NodeStatus, node_key

if TYPE_CHECKING:
    from stepchain.engine.worker import Worker


def fan_out(w: Worker, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
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
    inv = Invocation(now, w.clock.now_ms(), "fanned_out")
    changes = NodeChanges(NodeStatus.FANNED_OUT, now, items_total=len(items), invocation=inv, prior=rec)
    w.store.finish(msg.run_id, key, changes, owner=rec.owner)
    if not items:
        return join(w, wf, node, msg)
    window = node.max_concurrency or len(items)
    first = tuple(activation(msg, node.id, i) for i in range(min(window, len(items))))
    return Outcome(OutcomeKind.FANOUT, next=first, items=len(items))


def resume_fan_out(w: Worker, node: Node, msg: Activation, rec: NodeRecord) -> Outcome:
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


def after_item(w: Worker, wf: Workflow, node: Node, msg: Activation) -> Outcome:
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


def join(w: Worker, wf: Workflow, node: Node, msg: Activation) -> Outcome:
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
    changes = NodeChanges(
        NodeStatus.SUCCEEDED,
        now,
        output_ref=out_ref,
        ended=True,
        add_duration_ms=sum(i.duration_ms for i in items),
        add_cost_nano=sum(round(i.cost_usd * 1e9) for i in items),
        add_input_tokens=sum(i.input_tokens for i in items),
        add_output_tokens=sum(i.output_tokens for i in items),
    )
    out = w.commit(wf, node, msg.with_(index=None), key, changes, owner=None, expect=(NodeStatus.FANNED_OUT,))
    if out.kind is OutcomeKind.DROPPED:
        return Outcome(OutcomeKind.DONE, detail="joined by another item")
    return out


class MapHandler(NodeKindHandler):
    def activate(self, w: Worker, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
        if msg.index is not None:  # an item: a step
            return run_step(w, wf, node, msg, lctx)
        if msg.action == "join":
            return join(w, wf, node, msg)
        return fan_out(w, wf, node, msg, lctx)

    def on_busy(self, w: Worker, node: Node, msg: Activation, rec: NodeRecord) -> NodeRecord | Outcome | None:
        return resume_fan_out(w, node, msg, rec) if rec.status is NodeStatus.FANNED_OUT else None

    def owns_successor(self, node: Node, msg: Activation) -> bool:
        return msg.index is not None

    def after_checkpoint(self, w: Worker, wf: Workflow, node: Node, msg: Activation) -> Outcome:
        return after_item(w, wf, node, msg)
