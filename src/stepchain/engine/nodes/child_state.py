"""Durable run state across child runs (``wf.call(..., share_state=True)``, ``wf.parallel(...,
share_state=True)``): what a child starts from, and what the join makes of the branches' changes.

* **Start.** A child starts from the parent's state as it was when the node began waiting (the
  state the WAITING record holds, fixed while it waits), read as the child's model (fields the child
  does not declare are dropped). It is written on the child's first node with the child's creation
  (the same conditional write), so a crashed or duplicate parent activation gives it the same state.
* **Join.** Each branch's changes are the difference between its final state and that start
  (:func:`stepchain.define.state.branch_changes`, per the parent's reducers), merged into the held
  state branch by branch in declared order: append concatenates in branch order, add sums, merge
  updates (a later branch's key wins), replace takes the last branch in declared order that changed
  it. A failed (``on_error="collect"``) or cancelled branch contributes nothing. The result is a
  function of durable records only (the held state, the children's final node records), computed
  again by a repeated or crashed join and written with the node's one conditional commit
  (WAITING -> SUCCEEDED): applied exactly once.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from stepchain.define.state import StateBox, apply_update, branch_changes, read_state
from stepchain.define.workflow import Node, Workflow
from stepchain.engine.nodes.scope import KindServices
from stepchain.exceptions import ValidationError
from stepchain.observe.ledger import latest_state_ref
from stepchain.store.records import NodeRecord, RunRecord, RunStatus


def _model(wf: Workflow) -> type[BaseModel]:
    if wf.state is None:
        raise ValidationError(f"share_state: child workflow {wf.name!r} declares no state (Workflow(state=...))")
    return wf.state


def _held(w: KindServices, wf: Workflow, rec: NodeRecord) -> BaseModel:
    """The parent's state the node waits with (the model's defaults when none is stored)."""
    assert wf.state is not None
    return StateBox(wf.state, rec.state_ref, w.codec.decode).value


def _start(parent: BaseModel, child: type[BaseModel]) -> dict[str, Any]:
    return read_state(child, parent.model_dump(mode="json")).model_dump(mode="json")


def child_start(w: KindServices, wf: Workflow, node: Node, rec: NodeRecord, child_wf: Workflow) -> str | None:
    """The state reference a child run's first node starts from; None when the node shares none."""
    if not node.share_state or wf.state is None:
        return None
    start = _start(_held(w, wf, rec), _model(child_wf))
    return w.codec.encode(start, scope=f"{rec.run_id}/{rec.key}/state")


def joined_state(w: KindServices, wf: Workflow, node: Node, rec: NodeRecord, kids: dict[str, RunRecord]) -> str | None:
    """The parent's state after the join (``kids`` in declared branch order); None: unchanged."""
    if not node.share_state or wf.state is None:
        return None
    held = _held(w, wf, rec)
    merged = held
    for child in kids.values():
        if child.status is not RunStatus.SUCCEEDED:
            continue
        child_wf = w.registry.get(child.workflow, child.version)
        model = _model(child_wf)
        order = {n.id: i for i, n in enumerate(child_wf.nodes)}
        end_ref = latest_state_ref(w.store.list_nodes(child.run_id), order)
        if end_ref is None:
            continue
        end = read_state(model, w.codec.decode(end_ref)).model_dump(mode="json")
        changes = branch_changes(wf.state, _start(held, model), end)
        if changes:
            merged = apply_update(wf.state, merged, changes)
    return w.codec.encode(merged.model_dump(mode="json"), scope=f"{rec.run_id}/{rec.key}/state")


__all__ = ["child_start", "joined_state"]
