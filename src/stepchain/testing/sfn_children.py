""":class:`~stepchain.testing.SfnHarness`: is a run's execution only waiting for child runs that
wait themselves (for an event, or for their own children)? Then it does not move on its own."""

from __future__ import annotations

import json
from typing import Any, Protocol

from stepchain.engine.nodes.children import child_ids
from stepchain.store.records import NodeStatus


class _Driver(Protocol):
    _inflight: int
    _lock: Any
    engine: Any
    registry: Any
    store: Any

    def _moving(self, run_id: str) -> str | None: ...

    def history(self, run_id: str, redrive: int | None = None) -> list[dict[str, Any]]: ...


def waiting_for_children(h: _Driver, run_id: str) -> bool:
    """:func:`_waiting_for_children` under the invocation lock: an invocation that ends a child
    between the reads of the node and of its children would make them disagree. Never waits for the
    lock: an invocation that holds it is running, so the run moves (and ``run()``'s progress clock,
    which counts real seconds without progress, must keep ticking meanwhile)."""
    if not h._lock.acquire(blocking=False):
        return False
    try:
        return _waiting_for_children(h, run_id)
    finally:
        h._lock.release()


def _waiting_for_children(h: _Driver, run_id: str) -> bool:
    """True when no invocation runs, a call/parallel node of the run waits, and none of its
    children's executions moves on its own (a child that ended while the node still waits is the
    sweeper's to join: a lost notification). The run's own execution must be parked on the
    callback of the task the node recorded: one whose task invocation died (a crash after the node
    went WAITING) runs the task again on its own (a new token), and that starts a child whose start
    was lost."""
    if h._inflight:
        return False
    run = h.engine.get_run(run_id)
    if run.status.finished:
        return False
    token = parked_on(h.history(run_id))
    if token is None:
        return False
    waiting = False
    for node in h.registry.get(run.workflow, run.version).nodes:
        if not node.branches:  # not a call/parallel node
            continue
        # every loop iteration of the node has its own key (``<node>~00002``)
        recs = [r for r in h.store.list_nodes(run_id, node.id) if r.node == node.id and r.index is None]
        for rec in (r for r in recs if r.status is NodeStatus.WAITING and r.task_token == token):
            waiting = True
            for cid in child_ids(node, run_id, rec.key, rec.generation).values():
                child = h.store.get_run(cid)
                if child is None or child.status.finished:
                    continue
                if h._moving(cid) is not None:  # None too when it never started (the sweeper starts it)
                    return False
    return waiting


def parked_on(events: list[dict[str, Any]]) -> str | None:
    """The task token an execution waits on (its last task submitted, no event since), else None."""
    if not events or events[-1]["type"] != "TaskSubmitted":
        return None
    scheduled = next(e for e in reversed(events) if e["type"] == "TaskScheduled")
    payload = json.loads(scheduled["taskScheduledEventDetails"]["parameters"]).get("Payload", {})
    token = payload.get("token")
    return str(token) if token else None
