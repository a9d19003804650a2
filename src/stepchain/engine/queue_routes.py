"""Which SQS queue an activation of a node goes to (the SQS transport), from ``STEPCHAIN_QUEUES``.

Lambda caps one function's whole environment at 4 KB, so the generated template cannot list every node:
``STEPCHAIN_QUEUES`` holds one entry per worker function, keyed by its :func:`route_key`, and ``"*"``, the
control function's queue (sleeps, waits, failures, fan-in: every node that runs no user code). Each
function's route key is computed from the node definitions alone, the way ``stepchain template`` groups
steps into functions (:func:`stepchain.deploy.samgen.plan`), so the runtime needs no per-node list and no
order of the workflows: the function a step names (``function="XFunction"``), else a digest of the
settings that decide its function (:func:`stepchain.engine.fusion.settings_key`; steps that agree share
one). The variable therefore grows with the number of worker functions, never with the number of nodes.

An entry keyed by a node id (the format of older templates, and of tests and local runtimes that give
``{"*": url}``) still wins for that node; a node no entry names goes to ``"*"``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from stepchain.define.workflow import Node, Workflow
from stepchain.engine.fusion import settings_key

#: route keys of default-named functions start with this; a logical id (letters and digits) never does
DIGEST_PREFIX = "s-"


def route_key(node: Node) -> str:
    """The key of the function that serves user step ``node`` in ``STEPCHAIN_QUEUES``."""
    if node.function:
        return node.function
    return DIGEST_PREFIX + hashlib.sha256(settings_key(node).encode()).hexdigest()[:12]


def node_queues(workflows: Iterable[Workflow], queues: Mapping[str, str]) -> dict[str, str]:
    """``{node id: queue url, "*": default}`` for every node of ``workflows`` that ``queues`` (the
    environment's map, by route key or by node id) names; what :class:`stepchain.handoff.sqs.SqsHandoff`
    sends by. A node id in two workflows runs in one function (the generator checks it)."""
    out: dict[str, str] = {}
    for wf in workflows:
        for node in wf.nodes:
            url = queues.get(node.id) or (queues.get(route_key(node)) if node.runs_user_code else None)
            if url:
                out.setdefault(node.id, url)
    if "*" in queues:
        out["*"] = queues["*"]
    return out


__all__ = ["DIGEST_PREFIX", "node_queues", "route_key"]
