""":class:`~stepchain.testing.SfnHarness`: is a run's execution only waiting for child runs that
wait themselves (for an event, or for their own children)? Then it does not move on its own."""

from __future__ import annotations

from typing import Any, Protocol

from stepchain.define.workflow import CHILD_KINDS
from stepchain.engine.nodes.children import child_ids
from stepchain.store.records import NodeStatus


class _Driver(Protocol):
    _inflight: int
    engine: Any
    registry: Any
    store: Any

    def _moving(self, run_id: str) -> str | None: ...


def waiting_for_children(h: _Driver, run_id: str) -> bool:
    """True when no invocation runs, a call/parallel node of the run waits, and none of its
    children's executions moves on its own (a child that ended while the node still waits is the
    sweeper's to join: a lost notification)."""
    if h._inflight:
        return False
    run = h.engine.get_run(run_id)
    if run.status.finished:
        return False
    waiting = False
    for node in h.registry.get(run.workflow, run.version).nodes:
        if node.kind not in CHILD_KINDS:
            continue
        rec = h.store.get_node(run_id, node.id)
        if rec is None or rec.status is not NodeStatus.WAITING:
            continue
        waiting = True
        for cid in child_ids(node, run_id, rec.key, rec.generation).values():
            child = h.store.get_run(cid)
            if child is None or child.status.finished:
                continue
            try:
                if h._moving(cid) is not None:
                    return False
            except Exception:  # its execution never started (the sweeper starts it)
                continue
    return waiting
