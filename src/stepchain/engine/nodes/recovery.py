"""What the sweeper asks a node kind: is this node stuck, and what re-issue moves it on?

The sweeper (:mod:`stepchain.engine.sweeper`) reads a run's node records and, for each node, hands its
kind a :class:`RecoveryView`; the kind's
:meth:`~stepchain.engine.nodes.base.NodeKindHandler.recover` answers with a :class:`Recovery`
(activations to re-issue, stored events whose delivery to finish, parent nodes to join). The rule
every kind shares (a lost activation, a successor never created) is :func:`default_recovery`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from stepchain.define.workflow import Node, Workflow
from stepchain.engine.nodes.scope import KindServices
from stepchain.engine.routing import successor
from stepchain.handoff.messages import Activation
from stepchain.store.records import NodeRecord, NodeStatus, RunRecord, node_key

#: "is the later of these moments (and the run's last update) more than the grace period ago?"
Overdue = Callable[..., bool]


@dataclass
class Recovery:
    """What the sweeper does for one node (nothing, when all are empty)."""

    msgs: list[Activation] = field(default_factory=list)  # activations to re-issue
    events: list[str] = field(default_factory=list)  # stored events whose delivery to finish
    joins: list[Activation] = field(default_factory=list)  # call/parallel nodes to join (children ended)

    def add(self, other: Recovery) -> None:
        self.msgs.extend(other.msgs)
        self.events.extend(other.events)
        self.joins.extend(other.joins)


@dataclass(frozen=True)
class RecoveryView:
    """One node of an active run as the sweeper found it."""

    services: KindServices
    wf: Workflow
    run: RunRecord
    node: Node
    rec: NodeRecord  #: the node's record (a map's parent record, not an item's)
    nodes: dict[str, NodeRecord]  #: every record of the run, by key
    act: Activation  #: the node's activation, should it be re-issued
    src: str | None  #: in a routed workflow: the node whose output is this one's input
    overdue: Overdue


def default_recovery(view: RecoveryView) -> Recovery:
    """SUCCEEDED long ago with no successor: re-issue the node (served from its checkpoint, it
    re-issues the successor or finishes the run); an activation lost on its way: re-issue it."""
    rec, out = view.rec, Recovery()
    if rec.status is NodeStatus.SUCCEEDED:
        # a fused chain's successor is absent while its invocation runs it (until ``chain_until``)
        if successor_missing(view) and view.overdue(rec.ended_ms, rec.updated_ms, rec.chain_until_ms):
            out.msgs.append(view.act)
    elif rec.status is NodeStatus.PENDING and not input_ready(view):
        pass  # released by an early activation: its predecessor hands on when it is done
    elif lost(rec, view.overdue):
        out.msgs.append(view.act)
    return out


def successor_missing(view: RecoveryView) -> bool:
    """The node's successor (on the route it took) was never created (or it was the last node)."""
    succ = successor(view.wf, view.node, view.rec.iteration, view.rec.route)
    return succ is None or node_key(succ[0].id, None, succ[1]) not in view.nodes


def has_successor(view: RecoveryView) -> bool:
    return successor(view.wf, view.node, view.rec.iteration, view.rec.route) is not None


def input_ready(view: RecoveryView) -> bool:
    rec = view.rec
    prev = view.wf.prev_of(view.node.id)
    prev_key = view.src or (None if prev is None else node_key(prev.id, None, rec.iteration))
    done = prev_key is not None and (p := view.nodes.get(prev_key)) is not None and p.status is NodeStatus.SUCCEEDED
    return rec.input_ref is not None or prev_key is None or done


def lost(rec: NodeRecord, overdue: Overdue) -> bool:
    """Is this node's own activation lost (a node with nothing else to wait for)?"""
    if rec.status in (NodeStatus.PENDING, NodeStatus.CONTINUING):
        return overdue(rec.created_ms, rec.updated_ms)
    if rec.status in (NodeStatus.SLEEPING, NodeStatus.RETRYING):
        return overdue(rec.wake_at_ms, rec.updated_ms)
    if rec.status is NodeStatus.RUNNING:
        return overdue(rec.lease_until_ms)
    return False


__all__ = ["Overdue", "Recovery", "RecoveryView", "default_recovery", "input_ready", "lost", "successor_missing"]
