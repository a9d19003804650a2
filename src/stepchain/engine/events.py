"""Which loop iteration's wait an event is for (``RunService.deliver_event``, approval tokens).

Each loop iteration of a wait node has its own key (``approve~00002``) and its own stored event
(``approval~00002``, :func:`~stepchain.engine.routing.event_key`). An event delivery either names
its iteration or not:

* named (``iteration=N``): the event is for the wait of iteration N, and only that one. Idempotent
  per (event, iteration): a retry finds the stored event and is answered as before (the same
  payload) or refused (another payload, 409). An iteration the run has not reached yet is buffered
  for it. An iteration the run is past without that event (its wait timed out, or the iteration
  never reached the wait) is refused: 409 ``event_iteration_passed``. An iteration this wait can
  never have (a wait outside any loop has only iteration 0; none at or beyond the workflow's
  ``max_iterations``) is refused: 409 ``event_iteration_unknown``.
* unnamed: a wait outside any loop takes it for iteration 0, exactly as before. A wait inside a
  loop (:func:`in_loop`) takes it only while it is unambiguous: the run is in its first iteration
  (0) and that iteration's wait has not completed. Otherwise (the wait of the run's iteration
  completed, the run is between iterations, or waits in iteration N > 0) the delivery is refused
  with 409 ``event_iteration_required`` naming the iteration the run waits in, or will wait in
  next (:func:`next_wait_iteration`): a retried delivery (its first 202 lost) is then never taken
  for the next iteration's wait, whenever it arrives.
"""

from __future__ import annotations

from typing import Any

from stepchain.define.workflow import Node, Workflow
from stepchain.engine.routing import event_key
from stepchain.exceptions import EventIterationError
from stepchain.store.base import CheckpointStore
from stepchain.store.records import NodeRecord, RunRecord, RunStatus, parse_node_key

__all__ = ["event_target", "in_loop", "mint_iteration", "next_wait_iteration", "waiting_for"]


def in_loop(wf: Workflow, wait: Node) -> bool:
    """Whether ``wait`` can run in a loop iteration after the first: some route goes back (to a node
    at or before the routing node) to a node at or before ``wait``. Decided from the routes alone."""
    pos = wf.position(wait.id)
    for n in wf.nodes:
        for to in n.routes:
            if wf.has_node(to) and wf.position(to) <= wf.position(n.id) and wf.position(to) <= pos:
                return True
    return False


def _waits(store: CheckpointStore, wf: Workflow, run_id: str, wait: Node) -> tuple[int, dict[int, NodeRecord | None]]:
    """(the run's latest iteration, the wait's record by iteration): one query of the run's nodes. An
    iteration that went past the wait's chain position without it (a forward route skipped it) maps
    to None: within an iteration a run only moves forward, so that iteration never reaches the wait."""
    latest, waits, beyond = 0, {}, set()
    pos = wf.position(wait.id)
    for rec in store.list_nodes(run_id):
        latest = max(latest, rec.iteration)
        if rec.node == wait.id and rec.index is None:
            waits[rec.iteration] = rec
        elif wf.has_node(rec.node) and wf.position(rec.node) > pos:
            beyond.add(rec.iteration)
    found: dict[int, NodeRecord | None] = {i: None for i in beyond}
    found.update(waits)
    return latest, found


def _over(waits: dict[int, NodeRecord | None], iteration: int) -> bool:
    """Whether the wait of ``iteration`` is over (completed, failed, or skipped)."""
    if iteration not in waits:
        return False
    rec = waits[iteration]
    return rec is None or rec.status.finished


def next_wait_iteration(latest: int, waits: dict[int, NodeRecord | None]) -> int:
    """The iteration whose wait the run waits in now or reaches next: the run's latest iteration,
    or the one after it once that iteration's wait is over."""
    return latest + 1 if _over(waits, latest) else latest


def event_target(store: CheckpointStore, wf: Workflow, run_id: str, wait: Node, iteration: int | None) -> int:
    """The iteration an event delivered now (naming ``iteration`` or not) is for; raises
    :class:`~stepchain.exceptions.EventIterationError` (409) where the module docstring says."""
    name = wait.event or ""
    if not in_loop(wf, wait):
        if iteration not in (None, 0):
            raise EventIterationError(
                "event_iteration_unknown",
                f"the wait for {name!r} is not inside a loop: it has only iteration 0, not {iteration}",
                name,
                0,
            )
        return 0
    if iteration is not None and iteration >= wf.max_iterations:
        raise EventIterationError(
            "event_iteration_unknown",
            f"workflow {wf.name!r} has at most {wf.max_iterations} iterations (0..{wf.max_iterations - 1})",
            name,
            None,
        )
    latest, waits = _waits(store, wf, run_id, wait)
    nxt = next_wait_iteration(latest, waits)
    if iteration is None:
        if nxt == 0:
            return 0
        raise EventIterationError(
            "event_iteration_required",
            f"the wait for {name!r} is inside a loop and the run is in iteration {latest}: name the "
            f"iteration the event is for (?iteration=N); the run waits in, or will wait next in, iteration {nxt}",
            name,
            nxt,
        )
    passed = latest > iteration or _over(waits, iteration)
    if passed and store.get_event(run_id, event_key(name, iteration)) is None:
        raise EventIterationError(
            "event_iteration_passed",
            f"iteration {iteration} of run {run_id} is past its wait for {name!r} without this event "
            f"(timed out, or not reached in that iteration); the run waits in, or will wait next in, iteration {nxt}",
            name,
            nxt,
        )
    return iteration


def mint_iteration(store: CheckpointStore, wf: Workflow, run_id: str, wait: Node) -> int:
    """The iteration an approval token minted now (without an explicit one) is bound to: the one the
    run waits in now, or reaches next (0 outside a loop)."""
    if not in_loop(wf, wait):
        return 0
    return next_wait_iteration(*_waits(store, wf, run_id, wait))


def waiting_for(wf: Workflow | None, run: RunRecord) -> dict[str, Any] | None:
    """``{"event": name, "iteration": n}`` while the run waits for an event (its ``current`` is a
    wait node's key), else None: what a client names in ``POST /runs/{id}/events/{name}?iteration=n``."""
    if wf is None or run.status is not RunStatus.WAITING or not run.current:
        return None
    node_id, iteration, index = parse_node_key(run.current)
    if run.paused == "budget":  # a step held by the run's dollar budget (stepchain.engine.budget)
        return {"event": "budget", "iteration": iteration}
    if index is not None or not wf.has_node(node_id):
        return None
    node = wf.node(node_id)
    if not node.waits_for_event:
        return None
    return {"event": node.event, "iteration": iteration}
