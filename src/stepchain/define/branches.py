"""The definitions of the call and parallel node kinds (``Workflow.call``, ``Workflow.parallel``):
their checks and their :class:`~stepchain.define.workflow.Node`. The engine side is
:mod:`stepchain.engine.nodes.children`."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Protocol, TypeVar

from stepchain.define.nodes import ON_ERROR, Node, NodeKind
from stepchain.exceptions import ValidationError

_BRANCH = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_WORKFLOW = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


W = TypeVar("W")


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


def child_name(workflow: object, children: dict[str, N], kind: type[N]) -> str:
    """The child workflow's name; a workflow object (of ``kind``) is kept in ``children``."""
    if isinstance(workflow, kind):
        children[workflow.name] = workflow
        return workflow.name
    if not isinstance(workflow, str) or not _WORKFLOW.match(workflow):
        raise ValidationError(f"a child workflow is a Workflow or a workflow name, got {workflow!r}")
    return workflow


def call_node(child: str, name: str | None) -> Node:
    """``child``: the child workflow's name (:func:`child_name`)."""
    return Node(name or f"call_{child.replace('-', '_')}", NodeKind.CALL, timeout_s=30, branches=(("call", child),))


def parallel_node(
    branches: Mapping[str, W], resolve: Callable[[W], str], position: int, name: str | None, on_error: str
) -> Node:
    """``resolve`` names each branch's child workflow (:func:`child_name`); ``position``: the node's index."""
    if on_error not in ON_ERROR:
        raise ValidationError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if not branches:
        raise ValidationError("parallel needs at least one branch")
    pairs = []
    for branch, workflow in branches.items():
        if not isinstance(branch, str) or not _BRANCH.match(branch):
            raise ValidationError(f"branch name {branch!r} must match [a-z][a-z0-9_]*, at most 48 chars")
        pairs.append((branch, resolve(workflow)))
    node = Node(name or f"parallel_{position}", NodeKind.PARALLEL, timeout_s=30, on_error=on_error)
    return replace(node, branches=tuple(pairs))
