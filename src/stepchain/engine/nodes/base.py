"""The contract every node kind implements (one module per kind, see :mod:`stepchain.engine.nodes`).

A kind gets an :class:`~stepchain.engine.nodes.scope.ActivationScope` (what it may read and use
for this node), never the worker.
"""

from __future__ import annotations

from stepchain.engine.nodes.scope import ActivationScope
from stepchain.messages import Outcome
from stepchain.records import NodeRecord, NodeStatus


class NodeKindHandler:
    """What one node kind does; the shared path (claim, commit, served-from-checkpoint) is the
    worker's, which calls these hooks with the activation's scope."""

    #: the status this kind holds a node in between activations (a sleep's SLEEPING, a wait's or a
    #: call's WAITING): meeting it, the claim goes on with the record (:meth:`on_busy`)
    held: NodeStatus | None = None

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
