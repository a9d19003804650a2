"""Where a run goes after a node: the chain's next node, or the route a routing step chose.

A route to a node at or before the routing node's chain position starts the next iteration; a
forward route (and the chain's own next node) stays in the iteration. So a node's successor is a
function of (node, iteration, stored route): a late redelivery and the sweeper re-issue the same
successor the first commit did.
"""

from __future__ import annotations

from stepchain.define.routing import END, Route
from stepchain.define.workflow import Node, Workflow
from stepchain.exceptions import IterationLimitExceeded, UnknownRoute
from stepchain.handoff.messages import Activation
from stepchain.store.records import NodeRecord, NodeStatus, node_key

#: an output reference up to this size travels in the successor's activation (no read for its input)
MAX_INPUT_IN_MESSAGE = 4096


def event_key(name: str, iteration: int = 0) -> str:
    """The stored name of event ``name`` for the wait of loop iteration ``iteration`` (``V#`` item)."""
    return name if iteration == 0 else f"{name}~{iteration:05d}"


def split_event_key(stored: str) -> tuple[str, int]:
    """``(event name, iteration)`` of a name made by :func:`event_key`."""
    name, _, it = stored.partition("~")
    return name, int(it) if it else 0


def successor(wf: Workflow, node: Node, iteration: int, route: str | None) -> tuple[Node, int] | None:
    """The node (and its iteration) after ``node`` at ``iteration`` took ``route``; None: the run ends."""
    if route == END:
        return None
    if route is None:
        nxt = wf.next_of(node.id)
        return None if nxt is None else (nxt, iteration)
    to = wf.node(route)
    return to, iteration + 1 if wf.position(to.id) <= wf.position(node.id) else iteration


def chosen_route(wf: Workflow, node: Node, iteration: int, output: object) -> tuple[object, str | None]:
    """Split a step's return value into (output, route), checking the route: raises
    :class:`UnknownRoute` or :class:`IterationLimitExceeded` (terminal: the run fails)."""
    if not isinstance(output, Route):
        return output, None
    if output.to not in node.routes:
        declared = list(node.routes) or "none"
        raise UnknownRoute(f"step {node.id!r} routed to {output.to!r}, not among its routes ({declared})")
    nxt = successor(wf, node, iteration, output.to)
    if nxt is not None and nxt[1] >= wf.max_iterations:
        raise IterationLimitExceeded(
            f"step {node.id!r} routed to {output.to!r}, which would start iteration {nxt[1]}: "
            f"workflow {wf.name!r} allows {wf.max_iterations} iterations per run (Workflow(max_iterations=...))"
        )
    return output.value, output.to


def next_activation(
    wf: Workflow, node: Node, msg: Activation, route: str | None, output_ref: str | None
) -> Activation | None:
    """The successor's activation, carrying the key of its input's node and (when short) the input."""
    nxt = successor(wf, node, msg.iteration, route)
    if nxt is None:
        return None
    short = output_ref if output_ref is not None and len(output_ref) <= MAX_INPUT_IN_MESSAGE else None
    src = node_key(node.id, None, msg.iteration)
    return Activation(msg.run_id, msg.workflow, msg.version, nxt[0].id, iteration=nxt[1], src=src, input=short)


def source_of(wf: Workflow, key: str, nodes: dict[str, NodeRecord]) -> str | None:
    """The key of the completed node whose successor is ``key`` (for a re-issued activation), or None."""
    for rec in nodes.values():
        if rec.index is not None or rec.status is not NodeStatus.SUCCEEDED or not wf.has_node(rec.node):
            continue
        nxt = successor(wf, wf.node(rec.node), rec.iteration, rec.route)
        if nxt is not None and node_key(nxt[0].id, None, nxt[1]) == key:
            return rec.key
    return None


__all__ = [
    "MAX_INPUT_IN_MESSAGE",
    "chosen_route",
    "event_key",
    "next_activation",
    "source_of",
    "split_event_key",
    "successor",
]
