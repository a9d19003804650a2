"""The contract every node kind implements (one module per kind, see :mod:`stepchain.engine.nodes`).

A kind gets an :class:`~stepchain.engine.nodes.scope.ActivationScope` (what it may read and use
for this node), never the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stepchain.define.workflow import Node
from stepchain.deploy.asl_parts import TASK_TIMEOUT_MARGIN_S, _input, _loop
from stepchain.engine.nodes.recovery import Recovery, RecoveryView, default_recovery
from stepchain.engine.nodes.scope import ActivationScope
from stepchain.handoff.messages import Outcome
from stepchain.observe.ledger import NodeView, RunView
from stepchain.store.base import CheckpointStore
from stepchain.store.records import NodeRecord, NodeStatus, RunRecord


@dataclass(frozen=True)
class ViewScope:
    """What a kind may read to add its rows to a run's view."""

    store: CheckpointStore
    view: RunView  #: the run's view (the kind appends to ``children`` and adds to ``totals``)
    describe_child: Callable[[RunRecord], RunView]  #: another run's view, its kinds' rows included


class NodeKindHandler:
    """What one node kind does; the shared path (claim, commit, served-from-checkpoint) is the
    worker's, which calls these hooks with the activation's scope."""

    #: the status this kind holds a node in between activations (a sleep's SLEEPING, a wait's or a
    #: call's WAITING): meeting it, the claim goes on with the record (:meth:`on_busy`)
    held: NodeStatus | None = None
    #: its Step Functions task waits for a task token (``.waitForTaskToken``): SendTaskSuccess resumes it
    callback_task: bool = False
    #: a redrive of a failed node of this kind starts a new generation (new child runs)
    children_per_generation: bool = False
    #: its join reads its children's outputs and writes its own (the deploy grants it the payloads)
    reads_child_outputs: bool = False
    #: a plain step: it may run inline after its predecessor, and its successor after it
    #: (:func:`stepchain.engine.fusion.fusable`)
    fusable: bool = False

    def activate(self, scope: ActivationScope) -> Outcome:
        """Make progress on one activation of ``scope.node`` and name what comes next."""
        raise NotImplementedError

    def on_busy(self, scope: ActivationScope, rec: NodeRecord) -> NodeRecord | Outcome | None:
        """The claim found the node held in a state of this kind (fanned out, sleeping, waiting):
        the claim's answer (the record to go on with, or the outcome to report). ``None``: not a
        state of this kind (the claim reports the node as dropped). By default: the record, when it
        is in :attr:`held`."""
        return rec if self.held is not None and rec.status is self.held else None

    def owns_successor(self, scope: ActivationScope) -> bool:
        """True when, after this activation's checkpoint, the kind (not the chain) says what comes
        next (a map item: the next item of its lane, or the join)."""
        return False

    def join_here(self, scope: ActivationScope) -> tuple[Outcome, NodeRecord | None] | None:
        """A child run of this node ended: join the node now (where the transport carries runs
        itself); the outcome and the node's record (its task token). None: this kind has no
        children."""
        return None

    def after_checkpoint(self, scope: ActivationScope) -> Outcome:
        """What comes after the checkpoint when :meth:`owns_successor` is True (also when a
        completed activation is met again late: its handoff may have been lost)."""
        raise NotImplementedError

    def recover(self, view: RecoveryView) -> Recovery:
        """The sweeper's rule for a node of this kind in an active run: what to re-issue (see
        :mod:`stepchain.engine.nodes.recovery`). By default: a lost activation, a missing successor."""
        return default_recovery(view)

    def view_rows(self, scope: ViewScope, node: Node, nv: NodeView) -> None:
        """Add this node's own rows to the run's view (``nv`` is the ledger's row of the node). By
        default none."""
        return None

    def asl_states(self, states: dict[str, Any], node: Node, nxt: str, failed: str) -> None:
        """Add the node's Step Functions states to ``states`` (its main state is named ``node.id``;
        ``nxt``: the state after it; ``failed``: the Catch target that marks the run failed). By
        default one Task on the node's function whose signals loop back to it (a step, a sleep)."""
        timeout = node.timeout_s + TASK_TIMEOUT_MARGIN_S
        ref = _input({"node": node.id})
        _loop(
            states, node.id, node.function_name, ref, on_done=nxt, timeout_s=timeout, policy=node.retry, catch_to=failed
        )
