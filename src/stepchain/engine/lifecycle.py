"""The run lifecycle's engine side: a run's end notifies its parent node, and a cancel finishes
(tombstones, cascade to child runs, the transport stopped).

The worker (a run's last checkpoint, a failure, a transport's give-up), the run service (a
cancel through the API) and the sweeper (a notification lost to a crash) call these. How a
parent node is resumed is the transport's (:meth:`~stepchain.handoff.base.RunLifecycle.rejoin`:
a ``join`` activation on a queue; on Step Functions the join right here and the parent task's
token completed); what a node makes of its children is its kind's
(:meth:`~stepchain.engine.nodes.base.NodeKindHandler.join_here`).
"""

from __future__ import annotations

from collections.abc import Iterable

from stepchain.engine.nodes import handler_for, stream
from stepchain.engine.nodes.children import child_runs, split_parent
from stepchain.engine.nodes.scope import ActivationScope, KindServices
from stepchain.handoff.messages import Activation, Outcome
from stepchain.logs import logger
from stepchain.store.base import ACTIVE_RUN, NodeChanges, NodeInit, RunChanges
from stepchain.store.records import NodeRecord, NodeStatus, RunRecord, RunStatus, node_key, parse_node_key


def run_ended(s: KindServices, run: RunRecord) -> None:
    """``run`` ended (SUCCEEDED, FAILED or CANCELLED): its ``run.*`` stream event (lifecycle
    events only); if it is a child, notify its parent node."""
    if run.status is not RunStatus.CANCELLED:  # a cancel's event is finish_cancel's
        stream.run_ended(s, run)
    if not run.parent:
        return
    parent_id, key, _ = split_parent(run.parent)
    parent = s.store.get_run(parent_id)
    if parent is None or parent.status.finished:
        return
    node_id, iteration, index = parse_node_key(key)
    rejoin(
        s, Activation(parent_id, parent.workflow, parent.version, node_id, index, action="join", iteration=iteration)
    )


def rejoin(s: KindServices, msg: Activation) -> None:
    """Have the parent node ``msg`` names joined, the transport's way (see the module doc)."""

    def here() -> tuple[Outcome, NodeRecord | None] | None:
        wf = s.registry.find(msg.workflow, msg.version)
        if wf is None:
            return None
        node = wf.node(msg.node)
        return handler_for(node).join_here(ActivationScope(s, wf, node, msg))

    s.lifecycle.rejoin(msg, here)


def cancel_runs(s: KindServices, run_ids: Iterable[str]) -> None:
    """Cancel these (child) runs: the run service's cancel, without notifying their parent."""
    for cid in run_ids:
        child = s.store.update_run(
            cid, RunChanges(s.clock.now_ms(), status=RunStatus.CANCELLED, ended=True), expect=ACTIVE_RUN
        )
        if child is None:
            continue
        try:
            finish_cancel(s, child)
        except Exception:  # the child is CANCELLED and in the active index: the sweeper finishes the cancel
            logger.warning("finishing a child's cancel failed; the sweeper finishes it", exc_info=True)


def finish_cancel(s: KindServices, run: RunRecord, *, api: bool = False) -> None:
    """The rest of a cancel, once the run is CANCELLED: tombstones, stop the transport, and
    leave the sweeper's index. Idempotent (the sweeper calls it for a cancel that died)."""
    run_id, now = run.run_id, s.clock.now_ms()
    stream.run_ended(s, run)  # run.cancelled (lifecycle events only); again when the sweeper finishes it
    wf = s.registry.find(run.workflow, run.version)  # None: a retired version still cancels
    existing = {r.key: r for r in s.store.list_nodes(run_id)}
    for rec in existing.values():
        if not rec.status.finished and rec.status is not NodeStatus.RUNNING:
            s.store.finish(run_id, rec.key, NodeChanges(NodeStatus.CANCELLED, now, ended=True), expect=(rec.status,))
    # a node running now hands on within its iteration or to the next: cover the latest and the next
    latest = max((r.iteration for r in existing.values()), default=0)
    its = (latest, latest + 1) if wf and any(n.routes for n in wf.nodes) else (0,)
    for node, it in ((n, i) for n in (wf.nodes if wf else ()) for i in its):
        key = node_key(node.id, None, it)  # tombstones: a late claim of a node never started finds CANCELLED
        if key not in existing:
            s.store.put_node_if_absent(NodeInit(run_id, key, node.id, None, status=NodeStatus.CANCELLED), now)
    if api:
        s.probe.reached("api_cancel", run_id, run.current or "")
    for child_id in child_runs(wf, run_id, existing.values()) if wf else ():  # the cancel cascades
        child = s.store.update_run(child_id, RunChanges(now, status=RunStatus.CANCELLED, ended=True), expect=ACTIVE_RUN)
        if child is not None:
            finish_cancel(s, child)
    s.lifecycle.cancel(run)
    s.store.update_run(run_id, RunChanges(now, settled=True), expect=(RunStatus.CANCELLED,))


__all__ = ["cancel_runs", "finish_cancel", "rejoin", "run_ended"]
