"""The interface every node kind implements (one module per kind, see :mod:`stepchain.engine.nodes`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stepchain.define.workflow import Node, Workflow
from stepchain.handoff.messages import Activation, Outcome
from stepchain.logs import LambdaContextLike
from stepchain.store.records import NodeRecord, NodeStatus

if TYPE_CHECKING:
    from stepchain.engine.worker import Worker


class NodeKindHandler:
    """What one node kind does; the shared path (claim, commit, served-from-checkpoint) is the
    :class:`~stepchain.engine.worker.Worker`'s, which calls these hooks."""

    #: the status this kind holds a node in between activations (a sleep's SLEEPING, a wait's or a
    #: call's WAITING): meeting it, the claim goes on with the record (:meth:`on_busy`)
    held: NodeStatus | None = None

    def activate(self, w: Worker, wf: Workflow, node: Node, msg: Activation, lctx: LambdaContextLike) -> Outcome:
        """Make progress on one activation of ``node`` and name what comes next."""
        raise NotImplementedError

    def on_busy(self, w: Worker, node: Node, msg: Activation, rec: NodeRecord) -> NodeRecord | Outcome | None:
        """The claim found the node held in a state of this kind (fanned out, sleeping, waiting):
        the claim's answer (the record to go on with, or the outcome to report). ``None``: not a
        state of this kind (the claim reports the node as dropped). By default: the record, when it
        is in :attr:`held`."""
        return rec if self.held is not None and rec.status is self.held else None

    def owns_successor(self, node: Node, msg: Activation) -> bool:
        """True when, after this activation's checkpoint, the kind (not the chain) says what comes
        next (a map item: the next item of its lane, or the join)."""
        return False

    def after_checkpoint(self, w: Worker, wf: Workflow, node: Node, msg: Activation) -> Outcome:
        """What comes after the checkpoint when :meth:`owns_successor` is True (also when a
        completed activation is met again late: its handoff may have been lost)."""
        raise NotImplementedError
