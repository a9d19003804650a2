"""The engine: a worker core, one module per node kind, and a run service.

* :mod:`stepchain.engine.worker`: :class:`Worker`, the path every activation takes (claim, lease
  and takeover, input, commit, served-from-checkpoint);
* :mod:`stepchain.engine.nodes`: what each node kind does (step, map, sleep, wait);
* :mod:`stepchain.engine.runs`: :class:`RunService`, the API-side run lifecycle.

:class:`Engine` composes them for callers that hold one object (the AWS runtime, the harnesses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stepchain.clock import Clock
from stepchain.define.limits import RunLimits
from stepchain.define.workflow import Registry, Workflow
from stepchain.engine.runs import RunService
from stepchain.engine.shared import LEASE_GRACE_MS, new_run_id
from stepchain.engine.worker import Worker
from stepchain.handoff.base import Handoff
from stepchain.handoff.messages import Activation, Outcome
from stepchain.logs import LambdaContextLike
from stepchain.probe import Probe
from stepchain.store.base import CheckpointStore
from stepchain.store.payloads import PayloadCodec
from stepchain.store.records import RunRecord


class Engine:
    """A :class:`Worker` and a :class:`RunService` over the same store, codec, transport and probe."""

    def __init__(
        self,
        registry: Registry | Sequence[Workflow],
        store: CheckpointStore,
        codec: PayloadCodec,
        handoff: Handoff,
        *,
        clock: Clock | None = None,
        probe: Probe | None = None,
    ) -> None:
        reg = registry if isinstance(registry, Registry) else Registry(registry)
        self.worker = Worker(reg, store, codec, handoff, clock=clock, probe=probe)
        self.runs = RunService(self.worker)
        handoff.probe = self.worker.probe

    # The parts are the worker's (the run service reads them there): setting one here sets it
    # for both (tests swap the registry, the probe, the limits of a running engine).
    @property
    def registry(self) -> Registry:
        return self.worker.registry

    @registry.setter
    def registry(self, registry: Registry) -> None:
        self.worker.registry = registry

    @property
    def store(self) -> CheckpointStore:
        return self.worker.store

    @store.setter
    def store(self, store: CheckpointStore) -> None:
        self.worker.store = store

    @property
    def codec(self) -> PayloadCodec:
        return self.worker.codec

    @codec.setter
    def codec(self, codec: PayloadCodec) -> None:
        self.worker.codec = codec

    @property
    def handoff(self) -> Handoff:
        return self.worker.handoff

    @handoff.setter
    def handoff(self, handoff: Handoff) -> None:
        self.worker.handoff = handoff

    @property
    def clock(self) -> Clock:
        return self.worker.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self.worker.clock = clock

    @property
    def probe(self) -> Probe:
        return self.worker.probe

    @probe.setter
    def probe(self, probe: Probe) -> None:
        self.worker.probe = probe

    @property
    def limits(self) -> RunLimits:
        """Per-run limits (:mod:`stepchain.define.limits`); tests may replace them."""
        return self.worker.limits

    @limits.setter
    def limits(self, limits: RunLimits) -> None:
        self.worker.limits = limits

    # the worker side
    def process(self, msg: Activation, lambda_context: LambdaContextLike) -> Outcome:
        """Make durable progress on one activation (:meth:`Worker.process`)."""
        return self.worker.process(msg, lambda_context)

    # the run lifecycle (RunService)
    def start(self, workflow: str, input: Any, *, idempotency_key: str | None = None) -> tuple[RunRecord, bool]:
        return self.runs.start(workflow, input, idempotency_key=idempotency_key)

    def get_run(self, run_id: str) -> RunRecord:
        return self.runs.get_run(run_id)

    def output_of(self, run_id: str, step: str) -> Any:
        return self.runs.output_of(run_id, step)

    def deliver_event(self, run_id: str, name: str, payload: Any, *, iteration: int | None = None) -> str:
        return self.runs.deliver_event(run_id, name, payload, iteration=iteration)

    def finish_event(self, run_id: str, name: str) -> str:
        return self.runs.finish_event(run_id, name)

    def cancel(self, run_id: str) -> RunRecord:
        return self.runs.cancel(run_id)

    def finish_cancel(self, run: RunRecord, *, api: bool = False) -> None:
        self.runs.finish_cancel(run, api=api)

    def redrive(
        self, run_id: str, *, input: Any = None, replace_input: bool = False, keep_progress: bool | None = None
    ) -> RunRecord:
        return self.runs.redrive(run_id, input=input, replace_input=replace_input, keep_progress=keep_progress)

    def fork(self, run_id: str, node: str, **kw: Any) -> tuple[RunRecord, bool]:
        """Fork a run at ``node`` (:meth:`RunService.fork`: iteration, input, replace_input, state,
        idempotency_key, owner)."""
        return self.runs.fork(run_id, node, **kw)

    def fail_node(self, run_id: str, node: str, err: dict[str, str]) -> Outcome:
        return self.runs.fail_node(run_id, node, err)


__all__ = ["LEASE_GRACE_MS", "Engine", "RunService", "Worker", "new_run_id"]
