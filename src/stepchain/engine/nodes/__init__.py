"""One module per node kind, each behind :class:`~stepchain.engine.nodes.base.NodeKindHandler`.

The worker looks a node's handler up here by its kind: adding a kind is one module, one entry in
:data:`HANDLERS`, its ASL fragment (:mod:`stepchain.deploy.asl`) and its tests.
"""

from __future__ import annotations

from stepchain.define.workflow import Node, NodeKind
from stepchain.engine.nodes import call, parallel
from stepchain.engine.nodes.base import NodeKindHandler
from stepchain.engine.nodes.map import MapHandler
from stepchain.engine.nodes.sleep import SleepHandler
from stepchain.engine.nodes.step import StepHandler
from stepchain.engine.nodes.wait import WaitHandler

HANDLERS: dict[NodeKind, NodeKindHandler] = {
    NodeKind.STEP: StepHandler(),
    NodeKind.MAP: MapHandler(),
    NodeKind.SLEEP: SleepHandler(),
    NodeKind.WAIT: WaitHandler(),
    NodeKind.CALL: call.HANDLER,
    NodeKind.PARALLEL: parallel.HANDLER,
}


def handler_for(node: Node) -> NodeKindHandler:
    """The handler of the node's kind."""
    return HANDLERS[node.kind]


__all__ = ["HANDLERS", "NodeKindHandler", "handler_for"]
