"""Fork a run from a node: a NEW run of the same workflow version that starts at a chosen node (and
loop iteration), with the source's checkpoints before it copied by reference (``POST
/runs/{id}/fork``, ``RunService.fork``, ``h.fork``). See ARCHITECTURE.md, *Forking a run*.

What is copied ("the checkpoints before it"): every SUCCEEDED node record of the source in an
earlier iteration, and those of the chosen iteration at an earlier chain position (a loop's
earlier iterations plus this iteration's nodes before the chosen one). A map node is copied as its
own record (its output is the joined list); its item records are not. A call/parallel node is
copied with its output; its child runs are not (the fork's view lists no children for it). Nothing
else is copied: no ``ctx.each``/``ctx.once`` progress (completed nodes never read it), no events,
no crash events, no stream. Unfinished nodes of a RUNNING source are not copied.

Refused: a node the workflow does not have (404 ``step_not_found``; a node of a call/parallel child
runs in the child run: fork that run), a map item (400; the API's pattern: 422), a node (or
iteration) that never ran in the source (409), a state edit that does not validate against the state
model (400), a state edit on a workflow without a state or at the run's first node (409
``state_not_declared``: it starts from the model's defaults), a source run of another caller (404,
as every run route).

Order of writes: the copies (transactions of 100, :mod:`stepchain.store.fork`), then ONE
transaction with the RUN item (``forked_from``), the chosen node PENDING with its input and the
idempotency record, then the first activation. A crash before the RUN item leaves invisible
copies (no run lists or shows them; they expire); after it, the run is RUNNING with its first node
PENDING: the sweeper (or a retry with the same ``Idempotency-Key``) re-issues it, as for a start.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError as PydanticValidationError

from stepchain.define.workflow import Workflow
from stepchain.engine import budget
from stepchain.engine.routing import source_of
from stepchain.engine.shared import new_run_id
from stepchain.exceptions import IdempotencyConflict, InvalidRunState, StateNotDeclared, StepNotFound, ValidationError
from stepchain.handoff.messages import Activation
from stepchain.store.base import NewRun, NodeInit
from stepchain.store.fork import copy_item
from stepchain.store.records import NodeRecord, NodeStatus, RunRecord, RunStatus, node_key

if TYPE_CHECKING:
    from stepchain.engine.worker import Worker


def _before(wf: Workflow, rec: NodeRecord, node: str, iteration: int) -> bool:
    """Is ``rec`` a completed checkpoint before ``node`` in ``iteration`` (what a fork copies)?"""
    if rec.index is not None or rec.status is not NodeStatus.SUCCEEDED or not wf.has_node(rec.node):
        return False
    return rec.iteration < iteration or (rec.iteration == iteration and wf.position(rec.node) < wf.position(node))


def _target(wf: Workflow, node: str, iteration: int) -> str:
    if "#" in node:
        raise ValidationError(f"{node!r} is a map item: fork from its map node (a fork starts the map again)")
    if not wf.has_node(node):
        raise StepNotFound(
            f"workflow {wf.name!r} has no step {node!r} (a step of a call/parallel child runs in the child run: "
            "fork that run)"
        )
    if iteration < 0:
        raise ValidationError(f"iteration must be 0 or more, got {iteration}")
    return node_key(node, None, iteration)  # an iteration the run never reached: 409 "never ran"


def _edited_state(w: Worker, wf: Workflow, base_ref: str | None, edits: Mapping[str, Any]) -> Any:
    """The state the chosen node starts from: the source's, with ``edits``' fields set (validated)."""
    if wf.state is None:
        raise StateNotDeclared(f"workflow {wf.name!r} declares no state (Workflow(state=...)) to edit")
    unknown = sorted(set(edits) - set(wf.state.model_fields))
    if unknown:
        raise ValidationError(f"state {wf.state.__name__} has no fields {unknown}")
    base = wf.state() if base_ref is None else wf.state.model_validate(w.codec.decode(base_ref))
    try:
        value = wf.state.model_validate({**base.model_dump(mode="json"), **dict(edits)})
    except PydanticValidationError as exc:
        raise ValidationError(f"edited state does not match {wf.state.__name__}: {exc.errors()[0]['msg']}") from exc
    return value.model_dump(mode="json")


def fork(
    w: Worker,
    run_id: str,
    node: str,
    *,
    iteration: int = 0,
    input: Any = None,
    replace_input: bool = False,
    state: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    owner: str | None = None,
) -> tuple[RunRecord, bool]:
    """Fork run ``run_id`` at ``node`` (loop iteration ``iteration``): returns the new run and
    whether it was created (False: an earlier request with the same idempotency key made it)."""
    source = w.get_run(run_id)
    wf = w.registry.get(source.workflow, source.version)
    key = _target(wf, node, iteration)
    items = w.store.node_items(run_id)
    records = {rec.key: rec for rec in map(NodeRecord.from_item, items)}
    chosen = records.get(key)
    if chosen is None:
        raise InvalidRunState(f"node {key!r} never ran in run {run_id}: fork from a node it reached")
    copies = {k: r for k, r in records.items() if _before(wf, r, node, iteration)}
    src = source_of(wf, key, copies)  # the copy the node's input (and state) comes from
    now = w.clock.now_ms()
    fork_id = new_run_id(now)
    input_ref = chosen.input_ref or (copies[src].output_ref if src is not None else None)
    if src is None and wf.first().id == node and iteration == 0:
        input_ref = input_ref or source.input_ref  # the first node: the run's input
    if replace_input:
        input_ref = w.codec.encode(input, scope=f"{fork_id}/fork/input")
    if input_ref is None:
        raise InvalidRunState(f"node {key!r} of run {run_id} has no completed input to start from")
    state_ref = None
    if state is not None:
        if src is None:
            raise StateNotDeclared(f"{key!r} starts from the state's defaults (no node before it): edit its input")
        value = _edited_state(w, wf, copies[src].state_ref, state)
        state_ref = w.codec.encode(value, scope=f"{fork_id}/fork/state")
    request = {"fork": run_id, "node": key, "replace": replace_input, "input": input if replace_input else None}
    request["state"] = state
    request_hash = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
    run = _retried(w, wf, idempotency_key, owner, request_hash)
    if run is None:
        extra = budget.start_fields(wf, None)
        budget.reserve(w, wf, owner, extra)  # a caller's daily budget, as a start (before anything is written)
        made = [copy_item(i, fork_id, run_id, state_ref if i["sk"] == f"N#{src}" else None) for i in items]
        made = [m for m in made if str(m["sk"])[2:] in copies]
        w.store.put_copies(made, on_chunk=lambda n: w.probe.reached("api_fork_copy", fork_id, key, str(n)))
        origin = {"run_id": run_id, "node": node, "iteration": iteration}
        new = NewRun(
            fork_id,
            wf.name,
            wf.version,
            source.input_ref,
            now,
            NodeInit(fork_id, key, node, input_ref),
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            owner=owner,
            extra={**extra, "forked_from": origin},
        )
        run, created = w.store.create_run(new)
    else:
        created = False
    if not created:  # a retried fork: re-issue its first activation only if it may have been lost
        first = w.store.get_node(run.run_id, key)
        if not (run.status is RunStatus.RUNNING and first is not None and first.status is NodeStatus.PENDING):
            return run, False
    # Dying here leaves the fork RUNNING with its first node PENDING: the sweeper re-issues it.
    w.probe.reached("api_fork", run.run_id, key)
    w.lifecycle.start(run, Activation(run.run_id, run.workflow, run.version, node, iteration=iteration, src=src))
    return run, created


def _retried(
    w: Worker, wf: Workflow, idempotency_key: str | None, owner: str | None, request_hash: str
) -> RunRecord | None:
    """The run an earlier fork with this idempotency key made (one read, before any copy is written:
    a retry copies nothing again); :class:`IdempotencyConflict` for another request under the key."""
    if idempotency_key is None:
        return None
    found = w.store.idempotent_run(wf.name, idempotency_key, owner)
    if found is None:
        return None
    if found[1] != request_hash:
        raise IdempotencyConflict(f"idempotency key {idempotency_key!r} was used with a different request")
    return w.get_run(found[0])


__all__ = ["fork"]
