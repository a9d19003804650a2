"""What a node kind may use: the narrow, typed scope of one activation.

A kind never sees the :class:`~stepchain.engine.worker.Worker` (nor imports it): the worker builds
an :class:`ActivationScope` for the activation (the workflow, the node, the message, the Lambda
context) over :class:`KindServices`, the operations a kind needs from the shared path (claim,
input, release, commit, fail, served-from-checkpoint), the store, codec, clock and probe, and the
run lifecycle port (child runs, task tokens: no kind names a transport).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stepchain.clock import Clock
from stepchain.define.context import CostMeter
from stepchain.define.limits import RunLimits
from stepchain.define.workflow import Node, Registry, Workflow
from stepchain.engine.shared import key_of
from stepchain.handoff.base import RunLifecycle
from stepchain.handoff.messages import Activation, Outcome
from stepchain.logs import LambdaContextLike
from stepchain.probe import Probe
from stepchain.store.base import CheckpointStore, NodeChanges
from stepchain.store.payloads import PayloadCodec
from stepchain.store.records import Invocation, NodeRecord, NodeStatus, RunRecord


class KindServices(Protocol):
    """The shared path and the ports a node kind may use (the worker provides them)."""

    store: CheckpointStore
    codec: PayloadCodec
    clock: Clock
    probe: Probe
    limits: RunLimits
    registry: Registry

    @property
    def lifecycle(self) -> RunLifecycle: ...

    def get_run(self, run_id: str) -> RunRecord: ...

    def claim(
        self, wf: Workflow, node: Node, msg: Activation, key: str, lctx: LambdaContextLike
    ) -> NodeRecord | Outcome: ...

    def input_of(self, wf: Workflow, node: Node, msg: Activation, rec: NodeRecord) -> str | None: ...

    def state_of(self, wf: Workflow, node: Node, msg: Activation, own: NodeRecord | None = None) -> str | None: ...

    def release(self, msg: Activation, key: str, rec: NodeRecord, why: str) -> Outcome: ...

    def served_from_checkpoint(self, wf: Workflow, node: Node, msg: Activation, rec: NodeRecord) -> Outcome: ...

    def ledger(
        self, status: NodeStatus, now: int, t0: float, cost: CostMeter, inv: Invocation, **kw: Any
    ) -> NodeChanges: ...

    def commit(
        self,
        wf: Workflow,
        node: Node,
        msg: Activation,
        key: str,
        changes: NodeChanges,
        *,
        owner: str | None,
        expect: tuple[NodeStatus, ...] = ...,
    ) -> Outcome: ...

    def fail(
        self,
        msg: Activation,
        key: str,
        err: dict[str, str],
        changes: NodeChanges,
        *,
        owner: str | None = ...,
        expect: tuple[NodeStatus, ...] = ...,
    ) -> None: ...

    def cancel_runs(self, run_ids: Sequence[str]) -> None:
        """Cancel these (child) runs without notifying their parent (the run lifecycle's cancel)."""
        ...


@dataclass(frozen=True)
class ActivationScope:
    """One activation of one node: what its kind reads (``wf``, ``node``, ``msg``) and may use
    (``services``). ``lctx`` is None when the kind is called after a checkpoint (no claim)."""

    services: KindServices
    wf: Workflow
    node: Node
    msg: Activation
    lctx: LambdaContextLike | None = None

    @property
    def key(self) -> str:
        """The node's key in its run (``<node>``, ``<node>#<index>``, ``<node>@<iteration>``)."""
        return key_of(self.msg)


__all__ = ["ActivationScope", "KindServices"]
