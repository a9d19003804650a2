"""The nodes of a workflow definition: :class:`NodeKind` and :class:`Node` (what
:class:`~stepchain.define.workflow.Workflow` chains; the node kinds' builders, e.g.
:mod:`stepchain.define.branches`, make them without importing the workflow)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from stepchain.define.step_options import RetryPolicy

if TYPE_CHECKING:
    from stepchain.define.context import StepContext

StepFn = Callable[["StepContext", Any], Any]


class NodeKind(StrEnum):
    STEP = "step"
    MAP = "map"
    SLEEP = "sleep"
    WAIT = "wait"
    CALL = "call"  # run another workflow as a child run (engine/nodes/call.py)
    PARALLEL = "parallel"  # one child run per branch, joined into {branch: output} (engine/nodes/parallel.py)


#: node kinds whose work is done by child runs (engine/nodes/children.py)
CHILD_KINDS = (NodeKind.CALL, NodeKind.PARALLEL)
#: what a parallel node does with a failed branch: fail the node, or collect ``{"error": ...}``
ON_ERROR = ("fail", "collect")


@dataclass(frozen=True)
class Node:
    id: str
    kind: NodeKind
    fn: StepFn | None = None
    retry: RetryPolicy = RetryPolicy()  # noqa: RUF009  (a frozen dataclass: immutable)
    timeout_s: int = 60
    max_concurrency: int = 0  # map only; 0 = unlimited
    seconds: int = 0  # sleep only
    event: str | None = None  # wait only
    function: str | None = None  # Lambda function (logical id) that runs it; default derived
    memory_mb: int = 512  # the function's memory (compute-cost ledger, `stepchain template`)
    # Function settings `stepchain template` deploys (stepchain.deploy.samgen): reserved concurrency (the default of
    # the function's <Name>ReservedConcurrency parameter), extra environment values, extra IAM policies
    # (SAM `Policies` items, CloudFormation intrinsics in long form). Not part of the chain's shape.
    reserved_concurrency: int | None = None
    environment: tuple[tuple[str, Any], ...] = field(default=(), compare=False)
    policies: tuple[Any, ...] = field(default=(), compare=False)
    #: the successors a routing step may choose (node ids or ``END``); empty: the chain's next node
    routes: tuple[str, ...] = ()
    #: call / parallel only: (branch, workflow name) of each child run; a call has one branch, "call"
    branches: tuple[tuple[str, str], ...] = ()
    on_error: str = "fail"  # parallel only: "fail" | "collect"
    #: wait only: merge the event's payload (a dict of state fields) into the run's durable state
    into_state: bool = False
    #: call / parallel only: a child starts from the run's state and its changes merge back at the join
    share_state: bool = False
    estimate_usd: float = 0.0  # step only: what one attempt may spend, checked against the run's budget
    #: step only: False keeps the step out of fused chains (it always starts in its own invocation,
    #: stepchain.engine.fusion); not part of the chain's shape
    fuse: bool = field(default=True, compare=False)
    #: step only: its concurrency and rate limits (stepchain.define.flow); not part of the chain's shape
    limits: tuple[Any, ...] = field(default=(), compare=False)

    @property
    def runs_user_code(self) -> bool:
        return self.kind in (NodeKind.STEP, NodeKind.MAP)

    @property
    def has_items(self) -> bool:
        """A map: its items are addressed by index."""
        return self.kind is NodeKind.MAP

    @property
    def waits_for_event(self) -> bool:
        """A wait node (its ``event`` names what it waits for)."""
        return self.kind is NodeKind.WAIT and bool(self.event)

    @property
    def function_name(self) -> str:
        """Logical id of the Lambda function that executes this node."""
        if self.function:
            return self.function
        if not self.runs_user_code:
            return "ControlFunction"
        return "".join(part.capitalize() for part in self.id.split("_")) + "Function"

    def signature(self) -> dict[str, Any]:
        sig: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "seconds": self.seconds,
            "event": self.event,
            "max_concurrency": self.max_concurrency,
        }
        if self.routes:  # absent otherwise: the versions of workflows without routes do not change
            sig["routes"] = list(self.routes)
        if self.kind in CHILD_KINDS:  # only then: the versions of other workflows stay what they were
            sig["branches"] = [list(b) for b in self.branches]
            sig["on_error"] = self.on_error
        if self.into_state:  # only then: the versions of other workflows stay what they were
            sig["into_state"] = True
        if self.share_state:
            sig["share_state"] = True
        return sig


__all__ = ["CHILD_KINDS", "ON_ERROR", "Node", "NodeKind", "StepFn"]
