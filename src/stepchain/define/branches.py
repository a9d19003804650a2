"""The definitions of the call and parallel node kinds (``Workflow.call``, ``Workflow.parallel``):
their checks and their :class:`~stepchain.define.workflow.Node`. The engine side is
:mod:`stepchain.engine.nodes.children`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

from stepchain.define.workflow import ON_ERROR, Node, NodeKind, Workflow
from stepchain.exceptions import ValidationError

_BRANCH = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_WORKFLOW = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def child_name(parent: Workflow, workflow: str | Workflow) -> str:
    """The child workflow's name; a Workflow object is kept with ``parent`` (registered with it)."""
    if isinstance(workflow, Workflow):
        parent._children[workflow.name] = workflow
        return workflow.name
    if not isinstance(workflow, str) or not _WORKFLOW.match(workflow):
        raise ValidationError(f"a child workflow is a Workflow or a workflow name, got {workflow!r}")
    return workflow


def call_node(parent: Workflow, workflow: str | Workflow, name: str | None) -> Node:
    child = child_name(parent, workflow)
    return Node(name or f"call_{child.replace('-', '_')}", NodeKind.CALL, timeout_s=30, branches=(("call", child),))


def parallel_node(parent: Workflow, branches: Mapping[str, str | Workflow], name: str | None, on_error: str) -> Node:
    if on_error not in ON_ERROR:
        raise ValidationError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if not branches:
        raise ValidationError("parallel needs at least one branch")
    pairs = []
    for branch, workflow in branches.items():
        if not isinstance(branch, str) or not _BRANCH.match(branch):
            raise ValidationError(f"branch name {branch!r} must match [a-z][a-z0-9_]*, at most 48 chars")
        pairs.append((branch, child_name(parent, workflow)))
    node = Node(name or f"parallel_{len(parent.nodes)}", NodeKind.PARALLEL, timeout_s=30, on_error=on_error)
    return replace(node, branches=tuple(pairs))
